package layout

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// orderImage is one image's layout members, by name under LayoutPath, and
// the blobs that only stream: a layer too big to hold (more than
// maxManifestSize) and a small one.
type orderImage struct {
	files map[string]string // name under LayoutPath -> content
	blobs int               // how many blobs
}

func newOrderImage(t *testing.T, refName string) orderImage {
	t.Helper()
	big := make([]byte, maxManifestSize+1)
	rand.Read(big)
	small := []byte("a small layer")
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	bd, sd := descFor(ocispec.MediaTypeImageLayerGzip, big), descFor(ocispec.MediaTypeImageLayerGzip, small)
	cd := descFor(ocispec.MediaTypeImageConfig, config)
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: []ocispec.Descriptor{sd, bd}})
	md := descFor(ocispec.MediaTypeImageManifest, m)
	md.Annotations = map[string]string{ocispec.AnnotationRefName: refName}
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, Manifests: []ocispec.Descriptor{md}})
	blob := func(d digest.Digest) string { return "blobs/sha256/" + d.Encoded() }
	return orderImage{files: map[string]string{
		ocispec.ImageLayoutFile: `{"imageLayoutVersion":"1.0.0"}`,
		ocispec.ImageIndexFile:  string(idx),
		blob(bd.Digest):         string(big),
		blob(sd.Digest):         string(small),
		blob(cd.Digest):         string(config),
		blob(md.Digest):         string(m),
	}, blobs: 4}
}

const orderMapping = `{"registry.example.com/team/app:1.0":"vendor.example/app:1.0"}`

// porterOrder lays out an archive as porter 1.x's archive writes it: its
// folder walked in name order (filepath.Walk), every name prefixed by
// "./", the root itself as "./": the layout (blobs, index.json,
// oci-layout), then bundle.json, then relocation-mapping.json.
func (img orderImage) porterOrder() []entry {
	dir := func(name string) entry {
		return entry{tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}, ""}
	}
	es := []entry{dir("./"), dir("./artifacts/"), dir("./artifacts/layout/"), dir("./artifacts/layout/blobs/"), dir("./artifacts/layout/blobs/sha256/")}
	for _, name := range slices.Sorted(maps.Keys(img.files)) {
		es = append(es, file("./"+LayoutPath+"/"+name, img.files[name]))
	}
	return append(es, file("./"+BundleFile, testBundle), file("./"+MappingFile, orderMapping))
}

// inOrder lays out an archive with the named members, in that order:
// "bundle.json", "relocation-mapping.json", a layout name such as
// "index.json", "manifest" for the manifest, "small" for the config and
// the small layer, "big" for the big layer.
func (img orderImage) inOrder(names ...string) []entry {
	var es []entry
	for _, n := range names {
		switch n {
		case BundleFile:
			es = append(es, file(n, testBundle))
		case MappingFile:
			es = append(es, file(n, orderMapping))
		case "manifest", "small", "big":
			for _, name := range slices.Sorted(maps.Keys(img.files)) {
				body := img.files[name]
				kind := "small"
				switch {
				case len(body) > maxManifestSize:
					kind = "big"
				case looksLikeManifest([]byte(body)):
					kind = "manifest"
				}
				if strings.HasPrefix(name, "blobs/") && kind == n {
					es = append(es, file(LayoutPath+"/"+name, body))
				}
			}
		default:
			es = append(es, file(LayoutPath+"/"+n, img.files[n]))
		}
	}
	return es
}

// TestArchiveAnyOrder: whatever the order of an archive's members, with
// or without "./" prefixes, gzipped or plain, OpenArchive finds the
// bundle, the mapping and the images, and Stream gives every blob; an
// archive whose metadata is at the front is read once, any other twice.
func TestArchiveAnyOrder(t *testing.T) {
	img := newOrderImage(t, "vendor.example/app:1.0")
	L, I := ocispec.ImageLayoutFile, ocispec.ImageIndexFile
	front := img.inOrder(BundleFile, MappingFile, L, I, "manifest", "small", "big")
	for _, tc := range []struct {
		name    string
		entries []entry
		reads   int    // times read from the start, streaming included
		why     string // what Rereads says before the stream
		mapping bool
	}{
		{"metadata first", front, 1, "", true},
		{"metadata first without a mapping", img.inOrder(BundleFile, L, I, "manifest", "small", "big"), 1, "", false},
		{"mapping after the manifests", img.inOrder(BundleFile, L, I, "manifest", MappingFile, "small", "big"), 1, "", true},
		{"porter 1.x: name order, ./ prefixes, mapping last", img.porterOrder(), 2, "bundle.json after the blobs", true},
		{"bundle.json after a small blob", img.inOrder(L, I, "manifest", "small", BundleFile, MappingFile, "big"), 2, "bundle.json after the blobs", true},
		{"index.json after the layers", img.inOrder(BundleFile, MappingFile, L, "manifest", "small", "big", I), 2, "index.json after the blobs", true},
		{"oci-layout last", img.inOrder(BundleFile, I, "manifest", "small", "big", L), 2, "oci-layout after the blobs", false},
		{"manifest after the layers", img.inOrder(BundleFile, L, I, "small", "big", "manifest"), 2, "manifests after the layers", false},
		{"bundle.json and mapping last", img.inOrder(L, I, "manifest", "small", "big", BundleFile, MappingFile), 2, "bundle.json after the blobs", true},
	} {
		for _, gz := range []bool{true, false} {
			name := tc.name + map[bool]string{true: ", gzipped", false: ", plain"}[gz]
			t.Run(name, func(t *testing.T) {
				tmp := setTempDir(t)
				path := filepath.Join(t.TempDir(), "app.tgz")
				os.WriteFile(path, makeTar(t, gz, tc.entries...), 0o644)
				a, err := OpenArchive(context.Background(), path)
				if err != nil {
					t.Fatal(err)
				}
				defer a.Close()
				if string(a.BundleJSON) != testBundle {
					t.Errorf("bundle.json = %q", a.BundleJSON)
				}
				if got := string(a.RelocationMapping); tc.mapping && got != orderMapping || !tc.mapping && a.RelocationMapping != nil {
					t.Errorf("relocation-mapping.json = %q, want it: %v", got, tc.mapping)
				}
				if _, err := a.Find("vendor.example/app:1.0", ""); err != nil {
					t.Errorf("Find: %v", err)
				}
				if got := a.Rereads(func(digest.Digest) bool { return true }); got != tc.why {
					t.Errorf("Rereads = %q, want %q", got, tc.why)
				}
				if n, err := streamAll(t, a); err != nil || n != img.blobs {
					t.Fatalf("streamed %d blobs, %v; want %d", n, err, img.blobs)
				}
				if got := a.Reads(); got != tc.reads {
					t.Errorf("read %d times, want %d", got, tc.reads)
				}
				assertEmpty(t, tmp)
			})
		}
	}
}

// TestArchiveMappingAfterPause: an archive that puts bundle.json and the
// layout's metadata before every blob is read once, its images looked up
// as soon as the metadata is in; a relocation-mapping.json after the big
// blobs would have changed where they are found, so it is an error naming
// it, not silently ignored.
func TestArchiveMappingAfterPause(t *testing.T) {
	t.Parallel()
	img := newOrderImage(t, "vendor.example/app:1.0")
	path := filepath.Join(t.TempDir(), "app.tgz")
	os.WriteFile(path, makeTar(t, true, img.inOrder(BundleFile, ocispec.ImageLayoutFile, ocispec.ImageIndexFile, "manifest", "small", "big", MappingFile)...), 0o644)
	a, err := OpenArchive(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.RelocationMapping != nil {
		t.Fatalf("mapping %q read before the pause", a.RelocationMapping)
	}
	_, err = streamAll(t, a)
	if !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), MappingFile) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Stream: %v; want ErrInvalidArchive naming %s and the archive", err, MappingFile)
	}
}

// TestArchiveSmallBlobsOnce: an archive with its metadata last whose blobs
// are all small enough to hold is read once: the first read holds them.
func TestArchiveSmallBlobsOnce(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "app.tgz")
	if err := WriteArchive(path, []byte(testBundle), testLayout(t)); err != nil {
		t.Fatal(err)
	}
	var es []entry
	var bundle entry
	eachEntry(t, path, func(h *tar.Header, body string) {
		e := entry{*h, body}
		if h.Name == BundleFile {
			bundle = e
			return
		}
		es = append(es, e)
	})
	os.WriteFile(path, makeTar(t, true, append(es, bundle)...), 0o644)
	a, err := OpenArchive(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if why := a.Rereads(func(digest.Digest) bool { return true }); why != "" {
		t.Errorf("Rereads = %q, want none", why)
	}
	if n, err := streamAll(t, a); err != nil || n == 0 {
		t.Fatalf("streamed %d blobs, %v", n, err)
	}
	if got := a.Reads(); got != 1 {
		t.Errorf("read %d times, want 1", got)
	}
}

// eachEntry calls fn for every entry of the gzipped tar at path.
func eachEntry(t *testing.T, path string, fn func(h *tar.Header, body string)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		fn(h, string(body))
	}
}
