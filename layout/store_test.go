package layout

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var _ remotes.Fetcher = (*Store)(nil)

func descFor(mediaType string, data []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
}

// writeImage stores a one-layer image whose content depends on seed and
// returns its manifest descriptor.
func writeImage(t testing.TB, s *Store, seed string) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	config := []byte(`{"architecture":"amd64","os":"linux","seed":"` + seed + `"}`)
	layer := []byte("layer of " + seed)
	cd := descFor(ocispec.MediaTypeImageConfig, config)
	ld := descFor(ocispec.MediaTypeImageLayerGzip, layer)
	m, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    cd,
		Layers:    []ocispec.Descriptor{ld},
	})
	if err != nil {
		t.Fatal(err)
	}
	md := descFor(ocispec.MediaTypeImageManifest, m)
	for _, b := range []struct {
		d    ocispec.Descriptor
		data []byte
	}{{cd, config}, {ld, layer}, {md, m}} {
		if err := s.WriteBlob(ctx, b.d, strings.NewReader(string(b.data))); err != nil {
			t.Fatal(err)
		}
	}
	return md
}

func readAll(t *testing.T, s *Store, d ocispec.Descriptor) ([]byte, error) {
	t.Helper()
	rc, err := s.Fetch(context.Background(), d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestStoreRoundTrip(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "layout")
	s, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	app := writeImage(t, s, "app")
	nginx := writeImage(t, s, "nginx")
	tagged := writeImage(t, s, "tagged")
	plain := writeImage(t, s, "plain")
	s.AddRef(app, "registry.example.com/team/app:1.0")
	s.AddRef(nginx, "docker.io/library/nginx:1.25") // containerd style
	s.AddRef(tagged, "2.1")                         // crane / skopeo style
	s.AddRef(plain, "busybox")                      // no tag: implies latest
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(dir); err == nil {
		t.Fatal("Create over an existing layout: no error")
	}

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(s.Index().Manifests); got != 4 {
		t.Fatalf("index has %d entries, want 4", got)
	}
	for _, tc := range []struct {
		name string
		ref  string
		dgst digest.Digest
		want digest.Digest
	}{
		{"digest only", "example.com/other:9", app.Digest, app.Digest},
		{"full ref", "registry.example.com/team/app:1.0", "", app.Digest},
		{"normalised", "nginx:1.25", "", nginx.Digest},
		{"normalised with digest", "nginx:1.25@" + nginx.Digest.String(), nginx.Digest, nginx.Digest},
		{"tag only", "example.com/tagged:2.1", "", tagged.Digest},
		{"no tag, written as is", "busybox", "", plain.Digest},
		{"no tag, normalised", "docker.io/library/busybox:latest", "", plain.Digest},
		{"unknown digest, known name", "registry.example.com/team/app:1.0", digest.FromString("x"), app.Digest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := s.Find(tc.ref, tc.dgst)
			if err != nil {
				t.Fatal(err)
			}
			if d.Digest != tc.want {
				t.Fatalf("got %s, want %s", d.Digest, tc.want)
			}
			data, err := readAll(t, s, d)
			if err != nil {
				t.Fatal(err)
			}
			if digest.FromBytes(data) != tc.want {
				t.Fatal("fetched manifest has another digest")
			}
		})
	}

	_, err = s.Find("example.com/missing:3", "")
	if !errdefs.IsNotFound(err) || !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "example.com/missing:3") {
		t.Fatalf("Find of a missing image: %v", err)
	}
	_, err = s.Fetch(context.Background(), descFor("x", []byte("missing")))
	if !errdefs.IsNotFound(err) {
		t.Fatalf("Fetch of a missing blob: %v, want not found", err)
	}
	if !s.Exists(app) || s.Exists(descFor("x", []byte("missing"))) {
		t.Fatal("Exists is wrong")
	}
	if s.Exists(ocispec.Descriptor{Digest: "sha256:../../etc/passwd"}) {
		t.Fatal("Exists accepted an invalid digest")
	}
}

func TestFindAmbiguousTag(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := writeImage(t, s, "a")
	b := writeImage(t, s, "b")
	// Two entries with the same tag-only name, as another tool may write.
	idx := s.Index()
	for _, d := range []ocispec.Descriptor{a, b} {
		d.Annotations = map[string]string{ocispec.AnnotationRefName: "1.0"}
		idx.Manifests = append(idx.Manifests, d)
	}
	data, _ := json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Find("example.com/x:1.0", "")
	if !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), "example.com/x:1.0") {
		t.Fatalf("got %v, want an ambiguity naming the ref", err)
	}
	// The digest settles it.
	d, err := s.Find("example.com/x:1.0", b.Digest)
	if err != nil || d.Digest != b.Digest {
		t.Fatalf("Find by digest: %v, %v", d.Digest, err)
	}
}

func TestSaveSortedAndDeduplicated(t *testing.T) {
	t.Parallel()
	build := func(order []string) []byte {
		dir := t.TempDir()
		s, err := Create(dir)
		if err != nil {
			t.Fatal(err)
		}
		descs := map[string]ocispec.Descriptor{}
		for _, n := range []string{"a", "b", "c"} {
			descs[n] = writeImage(t, s, n)
		}
		for _, n := range order {
			s.AddRef(descs[n], "example.com/"+n+":1")
		}
		s.AddRef(descs["a"], "example.com/a:1") // again
		s.AddRef(descs["c"], "")                // unnamed
		s.AddRef(descs["c"], "")                // unnamed, again
		if err := s.Save(); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, "index.json"))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	one := build([]string{"c", "a", "b"})
	two := build([]string{"b", "c", "a"})
	if string(one) != string(two) {
		t.Fatalf("index.json depends on the order of AddRef:\n%s\n%s", one, two)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(one, &idx); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range idx.Manifests {
		names = append(names, m.Annotations[ocispec.AnnotationRefName])
	}
	if got, want := strings.Join(names, ","), ",example.com/a:1,example.com/b:1,example.com/c:1"; got != want {
		t.Fatalf("entries %q, want %q", got, want)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != ocispec.MediaTypeImageIndex {
		t.Fatalf("index header: %+v", idx)
	}

	// A name moves, as a tag does.
	dir := t.TempDir()
	s, _ := Create(dir)
	a, b := writeImage(t, s, "a"), writeImage(t, s, "b")
	s.AddRef(a, "example.com/x:1")
	s.AddRef(b, "example.com/x:1")
	if m := s.Index().Manifests; len(m) != 1 || m[0].Digest != b.Digest {
		t.Fatalf("after moving a name: %+v", m)
	}
}

func TestEmptyIndexIsAnArray(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Create(dir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"manifests":[]`) {
		t.Fatalf("index.json = %s", data)
	}
	layoutFile, _ := os.ReadFile(filepath.Join(dir, "oci-layout"))
	if strings.TrimSpace(string(layoutFile)) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Fatalf("oci-layout = %s", layoutFile)
	}
}

func TestWriteBlobChecks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d := descFor("x", []byte("hello"))
	for _, tc := range []struct {
		name string
		data string
	}{
		{"other bytes", "HELLO"},
		{"short", "hell"},
		{"long", "hello!"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.WriteBlob(ctx, d, strings.NewReader(tc.data))
			if !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("got %v, want a digest mismatch", err)
			}
			if s.Exists(d) {
				t.Fatal("a bad blob was stored")
			}
		})
	}
	if err := s.WriteBlob(ctx, ocispec.Descriptor{Digest: "sha256:../../x", Size: 1}, strings.NewReader("x")); err == nil {
		t.Fatal("invalid digest accepted")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.WriteBlob(cctx, d, strings.NewReader("hello")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if err := s.WriteBlob(ctx, d, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	// Already there: the reader is not read.
	if err := s.WriteBlob(ctx, d, errReader{}); err != nil {
		t.Fatal(err)
	}
	assertNoTemp(t, dir)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("read") }

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}

func TestFetchCorruptBlob(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := writeImage(t, s, "x")
	p := filepath.Join(dir, "blobs", "sha256", m.Digest.Encoded())
	data, _ := os.ReadFile(p)
	data[len(data)-2] ^= 1 // same size, other bytes
	os.WriteFile(p, data, 0o644)
	if _, err := readAll(t, s, m); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("corrupt blob: %v, want a digest mismatch", err)
	}
	os.WriteFile(p, data[:10], 0o644)
	if _, err := readAll(t, s, m); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("short blob: %v, want a digest mismatch", err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	valid := func(t *testing.T) string {
		dir := t.TempDir()
		if _, err := Create(dir); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	for _, tc := range []struct {
		name   string
		change func(dir string)
		want   string
	}{
		{"missing directory", func(dir string) { os.RemoveAll(dir) }, "oci-layout"},
		{"no oci-layout", func(dir string) { os.Remove(filepath.Join(dir, "oci-layout")) }, "oci-layout"},
		{"other version", func(dir string) {
			os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"2.0.0"}`), 0o644)
		}, `"2.0.0"`},
		{"oci-layout not JSON", func(dir string) { os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{`), 0o644) }, "oci-layout"},
		{"no index.json", func(dir string) { os.Remove(filepath.Join(dir, "index.json")) }, "index.json"},
		{"index.json not JSON", func(dir string) { os.WriteFile(filepath.Join(dir, "index.json"), []byte(`[`), 0o644) }, "index.json"},
		{"bad schemaVersion", func(dir string) {
			os.WriteFile(filepath.Join(dir, "index.json"), []byte(`{"schemaVersion":1,"manifests":[]}`), 0o644)
		}, "schemaVersion"},
		{"bad digest", func(dir string) {
			os.WriteFile(filepath.Join(dir, "index.json"), []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:../../etc","size":1}]}`), 0o644)
		}, "manifests[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := valid(t)
			tc.change(dir)
			_, err := Open(dir)
			if !errors.Is(err, ErrInvalidLayout) {
				t.Fatalf("got %v, want ErrInvalidLayout", err)
			}
			if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %s and %s", err, dir, tc.want)
			}
		})
	}
}
