package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// A split export (parts of at most 1 MiB over some 4.5 MiB of images) is
// the plain export cut in pieces: each part at most SIZE, their
// concatenation byte for byte the plain archive, each reported with its
// sha256. Inside the air gap the parts relocate, from ARCHIVE.000 or from
// ARCHIVE, and verify; a removed middle part is exit 1 naming it, a
// removed last part "truncated after" the one before, a corrupt part a
// corrupt archive; in all three nothing is tagged in the target.
func TestSplitArchive(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	c := src.Client()
	specs := map[string]registrytest.ImageSpec{
		"inv": {Repo: "vendor/installer", Tag: "1.0", Layers: []int{1500 << 10, 300 << 10}, Seed: 51},
		"web": {Repo: "vendor/web", Tag: "2.0", Layers: []int{700 << 10}, Seed: 52, OCI: true, Platforms: []string{"linux/amd64", "linux/arm64"}},
		"db":  {Repo: "vendor/db", Tag: "3.0", Layers: []int{1200 << 10}, Seed: 53},
	}
	images := map[string]registrytest.Image{}
	for k, s := range specs {
		img, err := c.PushImage(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		images[k] = img
	}
	ref := func(k string) string { return src.Host + "/" + images[k].Repo + ":" + images[k].Tag }
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, map[string]any{
		"schemaVersion": "v1.0.0", "name": "split", "version": "1.0.0",
		"invocationImages": []any{map[string]any{"imageType": "docker", "image": ref("inv")}},
		"images": map[string]any{
			"web": map[string]any{"imageType": "oci", "image": ref("web")},
			"db":  map[string]any{"imageType": "docker", "image": ref("db")},
		},
	})

	whole := filepath.Join(dir, "whole.tgz")
	if r := cli(t, nil, "export", bundlePath, "--output", whole); r.code != 0 {
		t.Fatalf("export exited %d", r.code)
	}
	wholeBytes, _ := os.ReadFile(whole)
	out := filepath.Join(dir, "parts", "app.tgz")
	os.Mkdir(filepath.Dir(out), 0o755)
	r := cli(t, nil, "export", bundlePath, "--output", out, "--split-size", "1MiB")
	if r.code != 0 {
		t.Fatalf("split export exited %d", r.code)
	}
	const size = 1 << 20
	var parts []string
	var joined []byte
	for i := 0; ; i++ {
		p := fmt.Sprintf("%s.%03d", out, i)
		data, err := os.ReadFile(p)
		if err != nil {
			break
		}
		parts = append(parts, p)
		joined = append(joined, data...)
		if len(data) > size {
			t.Errorf("%s is %d bytes, more than 1MiB", p, len(data))
		}
		if line := p + "  " + strconv.Itoa(len(data)) + " bytes  " + digest.FromBytes(data).String(); !strings.Contains(r.stdout, line) {
			t.Errorf("export's output lacks the line %q", line)
		}
	}
	if len(parts) < 4 {
		t.Fatalf("%d parts of 1MiB for %d bytes", len(parts), len(wholeBytes))
	}
	if !bytes.Equal(joined, wholeBytes) {
		t.Fatalf("the %d parts joined (%d bytes) differ from the plain export (%d bytes)", len(parts), len(joined), len(wholeBytes))
	}
	if got := dirEntries(t, filepath.Dir(out)); len(got) != len(parts) {
		t.Errorf("the output directory holds %v, want only the %d parts", got, len(parts))
	}

	// The JSON report lists the same parts: the export is reproducible.
	again := filepath.Join(dir, "again", "app.tgz")
	os.Mkdir(filepath.Dir(again), 0o755)
	r = cli(t, nil, "export", bundlePath, "--output", again, "--split-size", "1MiB", "--format", "json")
	if r.code != 0 {
		t.Fatalf("split export --format json exited %d", r.code)
	}
	var rep struct {
		Archive string
		Size    int64
		Parts   []struct {
			Path   string
			Size   int64
			Digest string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("--format json: %v", err)
	}
	if rep.Archive != again || rep.Size != int64(len(wholeBytes)) || len(rep.Parts) != len(parts) {
		t.Fatalf("report %+v; want %s, %d bytes in %d parts", rep, again, len(wholeBytes), len(parts))
	}
	for i, p := range rep.Parts {
		data, _ := os.ReadFile(parts[i])
		if p.Path != strings.Replace(parts[i], out, again, 1) || p.Size != int64(len(data)) || p.Digest != digest.FromBytes(data).String() {
			t.Errorf("report part %d is %+v; want %s's twin, %d bytes, %s", i, p, parts[i], len(data), digest.FromBytes(data))
		}
	}

	// Re-packing from the parts gives the plain archive again.
	repacked := filepath.Join(dir, "repacked.tgz")
	if r := cli(t, nil, "export", parts[0], "--output", repacked); r.code != 0 {
		t.Fatalf("export of the parts exited %d", r.code)
	}
	if data, _ := os.ReadFile(repacked); !bytes.Equal(data, wholeBytes) {
		t.Error("export of the parts differs from the plain export")
	}

	src.Close() // the air gap
	for _, arg := range []string{parts[0], out} {
		dst := registrytest.Start(t, registrytest.Options{})
		mapPath := filepath.Join(t.TempDir(), "mapping.json")
		outBundle := filepath.Join(t.TempDir(), "bundle.json")
		r := cli(t, nil, "fixup", arg, "--repository-prefix", dst.Host+"/inside", "--relocation-mapping", mapPath, "--output-bundle", outBundle)
		if r.code != 0 {
			t.Fatalf("fixup %s exited %d", arg, r.code)
		}
		if r := cli(t, nil, "verify", outBundle); r.code != 0 {
			t.Errorf("verify after fixup %s exited %d", arg, r.code)
		}
		dst.Close()
	}

	// Broken sets of parts, each relocated into an empty registry.
	broken := func(t *testing.T, change func(dir string, parts []string)) (result, *registrytest.Registry, []string) {
		t.Helper()
		d := t.TempDir()
		var copies []string
		for _, p := range parts {
			q := filepath.Join(d, filepath.Base(p))
			data, _ := os.ReadFile(p)
			if err := os.WriteFile(q, data, 0o644); err != nil {
				t.Fatal(err)
			}
			copies = append(copies, q)
		}
		change(d, copies)
		dst := registrytest.Start(t, registrytest.Options{})
		return cli(t, nil, "fixup", copies[0], "--repository-prefix", dst.Host+"/inside", "--relocation-mapping", filepath.Join(d, "m.json")), dst, copies
	}
	for _, tc := range []struct {
		name   string
		change func(dir string, parts []string) string // returns what stderr must say
		code   int
	}{
		{"middle part removed", func(_ string, ps []string) string {
			os.Remove(ps[len(ps)/2])
			return ps[len(ps)/2] + " is missing"
		}, 1},
		{"last part removed", func(_ string, ps []string) string {
			os.Remove(ps[len(ps)-1])
			return "truncated after " + ps[len(ps)-2]
		}, 1},
		{"corrupt part", func(_ string, ps []string) string {
			p := ps[len(ps)/2]
			data, _ := os.ReadFile(p)
			for i := len(data) / 2; i < len(data)/2+64; i++ {
				data[i] ^= 0x5a
			}
			os.WriteFile(p, data, 0o644)
			return "invalid thick bundle archive"
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want string
			r, dst, copies := broken(t, func(d string, ps []string) { want = tc.change(d, ps) })
			if r.code != tc.code || !strings.Contains(r.stderr, want) {
				t.Errorf("fixup %s: exit %d; want exit %d saying %q", copies[0], r.code, tc.code, want)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(copies[0]), "m.json")); err == nil {
				t.Error("a failed fixup wrote the relocation mapping")
			}
			noTags(t, dst, whole, images)
		})
	}
}

// noTags checks that none of the images is in dst under the name fixup
// gives it (from a dry run on archive): no tag, no root manifest.
func noTags(t *testing.T, dst *registrytest.Registry, archive string, images map[string]registrytest.Image) {
	t.Helper()
	mapPath := filepath.Join(t.TempDir(), "dry.json")
	if r := cli(t, nil, "fixup", archive, "--repository-prefix", dst.Host+"/inside", "--dry-run", "--relocation-mapping", mapPath); r.code != 0 {
		t.Fatalf("dry run exited %d", r.code)
	}
	var m map[string]string
	readJSON(t, mapPath, &m)
	if len(m) != len(images) {
		t.Fatalf("dry-run mapping %v; want %d images", m, len(images))
	}
	ctx := context.Background()
	dc := dst.Client()
	for from, to := range m {
		named, err := reference.ParseNormalizedNamed(to)
		if err != nil {
			t.Fatal(err)
		}
		repo := reference.Path(named)
		if tags, err := dc.Tags(ctx, repo); err == nil && len(tags) > 0 {
			t.Errorf("%s: target %s has tags %v after a failed fixup", from, repo, tags)
		}
		for _, img := range images {
			if d, err := dc.HeadManifest(ctx, repo, img.Root.Digest.String()); err == nil {
				t.Errorf("%s: target %s holds root %s after a failed fixup", from, repo, d.Digest)
			}
		}
	}
}
