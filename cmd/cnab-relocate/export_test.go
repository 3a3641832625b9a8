package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// export's archive format follows --output's name: .tar is a plain tar
// (tar reads it, fixup relocates it), .tgz and .tar.gz are that same tar
// gzipped; any other name is bad usage, refused before a registry is
// contacted, with nothing written.
func TestExportOutputExtension(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Fatalf("tar on PATH, to read the plain archive: %v", err)
	}
	var requests atomic.Int64
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		reg.ServeHTTP(w, r)
	}))
	defer src.Close()
	srcHost := strings.TrimPrefix(src.URL, "http://")
	img, err := registrytest.NewClient(src.URL, nil, "", "").PushImage(context.Background(),
		registrytest.ImageSpec{Repo: "acme/app", Tag: "1.0", Layers: []int{64 << 10}, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.json")
	data, _ := json.Marshal(map[string]any{
		"schemaVersion": "v1.0.0", "name": "app", "version": "1.0.0",
		"invocationImages": []any{map[string]any{"imageType": "docker", "image": img.Ref(srcHost)}},
	})
	if err := os.WriteFile(bundle, data, 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("refused names", func(t *testing.T) {
		out := t.TempDir()
		before := requests.Load()
		for _, name := range []string{"app.zip", "app", "app.gz", "app.tar.bz2", "app.tgz.bak"} {
			p := filepath.Join(out, name)
			code, stdout, stderr := runCLI("export", bundle, "--output", p)
			if code != exitUsage || !strings.Contains(stderr, p) || !strings.Contains(stderr, ".tgz or .tar.gz (gzip) or .tar (plain tar)") {
				t.Errorf("export --output %s: exit %d, stderr %q (stdout %q); want exit 2 naming the file and the accepted extensions", name, code, stderr, stdout)
			}
		}
		if ents, _ := os.ReadDir(out); len(ents) != 0 {
			t.Errorf("refused exports left %d files in the output directory", len(ents))
		}
		if n := requests.Load() - before; n != 0 {
			t.Errorf("refused exports made %d requests to the source registry, want none", n)
		}
	})

	t.Run("refused split sizes", func(t *testing.T) {
		out := t.TempDir()
		before := requests.Load()
		for _, size := range []string{"0", "-1", "-4GiB", "abc", "4G", "1.5", "1e6", ""} {
			p := filepath.Join(out, "app.tgz")
			code, stdout, stderr := runCLI("export", bundle, "--output", p, "--split-size", size)
			if code != exitUsage || !strings.Contains(stderr, "--split-size "+size+":") {
				t.Errorf("export --split-size %q: exit %d, stderr %q (stdout %q); want exit 2 naming the flag and the value", size, code, stderr, stdout)
			}
		}
		if ents, _ := os.ReadDir(out); len(ents) != 0 {
			t.Errorf("refused exports left %d files in the output directory", len(ents))
		}
		if n := requests.Load() - before; n != 0 {
			t.Errorf("refused exports made %d requests to the source registry, want none", n)
		}
	})

	export := func(t *testing.T, name string) (string, []byte) {
		t.Helper()
		p := filepath.Join(dir, name)
		if code, _, stderr := runCLI("export", bundle, "--output", p, "--quiet"); code != 0 {
			t.Fatalf("export --output %s: exit %d: %s", name, code, stderr)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return p, data
	}
	plainPath, plain := export(t, "app.tar")
	if bytes.HasPrefix(plain, []byte{0x1f, 0x8b}) {
		t.Fatal("app.tar starts with gzip's magic number; want a plain tar")
	}
	list, err := exec.Command(tarBin, "-tf", plainPath).CombinedOutput()
	if err != nil {
		t.Fatalf("tar -tf app.tar: %v\n%s", err, list)
	}
	for _, want := range []string{"bundle.json\n", "artifacts/layout/index.json\n", "artifacts/layout/blobs/sha256/" + img.Root.Digest.Encoded() + "\n"} {
		if !strings.Contains(string(list), want) {
			t.Errorf("tar -tf app.tar does not list %q:\n%s", want, list)
		}
	}
	for _, name := range []string{"app.tgz", "app.tar.gz", "APP.TGZ"} {
		_, data := export(t, name)
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Errorf("%s is not gzip: %v", name, err)
			continue
		}
		inner, err := io.ReadAll(zr)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if !bytes.Equal(inner, plain) {
			t.Errorf("%s holds a tar of %d bytes that is not app.tar (%d bytes)", name, len(inner), len(plain))
		}
	}

	dst := registrytest.StartMemory(false)
	defer dst.Close()
	mapping := filepath.Join(dir, "mapping.json")
	if code, _, stderr := runCLI("fixup", plainPath, "--repository-prefix", dst.Host+"/team", "--relocation-mapping", mapping, "--quiet"); code != 0 {
		t.Fatalf("fixup app.tar: exit %d: %s", code, stderr)
	}
	var m map[string]string
	if data, err := os.ReadFile(mapping); err != nil || json.Unmarshal(data, &m) != nil {
		t.Fatalf("mapping: %v %s", err, data)
	}
	target := m[img.Ref(srcHost)]
	if !strings.HasPrefix(target, dst.Host+"/team/acme-app-") || !strings.HasSuffix(target, ":1.0") {
		t.Fatalf("mapping %v; want %s mapped into %s/team", m, img.Ref(srcHost), dst.Host)
	}
	repo := strings.TrimSuffix(strings.TrimPrefix(target, dst.Host+"/"), ":1.0")
	if d, err := dst.Client().HeadManifest(context.Background(), repo, "1.0"); err != nil || d.Digest != img.Root.Digest {
		t.Errorf("target %s holds %v (%v), want %s", target, d.Digest, err, img.Root.Digest)
	}
}
