package layout

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// A delta record that does not parse, or names a base it does not list,
// makes the archive invalid, naming the record; extra files go only under
// artifacts/, outside the layout.
func TestDeltaRecord(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	layoutDir := filepath.Join(dir, "layout")
	s, err := Create(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	bundle := []byte(`{"name":"x","version":"1"}`)
	d := digest.FromString("x")
	for _, tc := range []struct{ name, record, want string }{
		{"not JSON", `{`, DeltaFile + ": unexpected end of JSON input"},
		{"schema", `{"schemaVersion":2}`, "schemaVersion 2: want 1"},
		{"bad digest", `{"schemaVersion":1,"bases":[{}],"leftOut":[{"digest":"sha256:zz"}]}`, `digest "sha256:zz"`},
		{"no such base", `{"schemaVersion":1,"bases":[],"leftOut":[{"digest":"` + d.String() + `","base":0}]}`, "base 0: there are 0 bases"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "d.tgz")
			if err := WriteArchive(p, bundle, layoutDir, File{Name: DeltaFile, Data: []byte(tc.record)}); err != nil {
				t.Fatal(err)
			}
			_, err := OpenArchive(context.Background(), p)
			if !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("got %v, want an invalid archive %s saying %q", err, p, tc.want)
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "d.tgz")
		rec := `{"schemaVersion":1,"bases":[{"archive":"a.tgz"}],"leftOut":[{"digest":"` + d.String() + `","size":1,"base":0,"images":["a"]}]}`
		if err := WriteArchive(p, bundle, layoutDir, File{Name: DeltaFile, Data: []byte(rec)}); err != nil {
			t.Fatal(err)
		}
		a, err := OpenArchive(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if a.Delta == nil || !a.LeftOut(d) || a.Delta.Bases[0].Archive != "a.tgz" {
			t.Errorf("delta %+v", a.Delta)
		}
		if _, err := a.Fetch(context.Background(), ocispec.Descriptor{Digest: d, Size: 1}); !errors.Is(err, ErrLeftOut) || !errors.Is(err, ErrNotFound) {
			t.Errorf("Fetch of a left-out manifest: %v, want ErrLeftOut", err)
		}
		h, err := ReadHoldings(context.Background(), p)
		data, _ := os.ReadFile(p)
		if err != nil || h.Digest != digest.FromBytes(data) || h.Size != int64(len(data)) || string(h.BundleJSON) != string(bundle) {
			t.Errorf("ReadHoldings: %+v, %v", h, err)
		}
	})
	for _, name := range []string{"bundle.json", LayoutPath + "/index.json", "artifacts/../x", "other/base.json", "/artifacts/x"} {
		p := filepath.Join(t.TempDir(), "d.tgz")
		if err := WriteArchive(p, bundle, layoutDir, File{Name: name, Data: []byte("{}")}); err == nil {
			t.Errorf("extra file %q: written", name)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("extra file %q: an archive was left", name)
		}
	}
}

// ReadHoldings reads a base in another tool's member order (porter's:
// "./" names, the layout before bundle.json), gzipped or plain, for every
// blob it holds, hashing the file's bytes.
func TestReadHoldingsPorterOrder(t *testing.T) {
	t.Parallel()
	img := newOrderImage(t, "registry.example.com/team/app:1.0")
	for _, gz := range []bool{true, false} {
		data := makeTar(t, gz, img.porterOrder()...)
		p := filepath.Join(t.TempDir(), "porter.tgz")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		h, err := ReadHoldings(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if h.Digest != digest.FromBytes(data) || h.Size != int64(len(data)) || string(h.BundleJSON) != testBundle {
			t.Errorf("gzip %v: digest %s size %d, want %s %d", gz, h.Digest, h.Size, digest.FromBytes(data), len(data))
		}
		if len(h.Blobs) != img.blobs {
			t.Errorf("gzip %v: %d blobs, want %d", gz, len(h.Blobs), img.blobs)
		}
		for name, body := range img.files {
			if rest, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
				if size, ok := h.Blobs[digest.NewDigestFromEncoded(digest.SHA256, rest)]; !ok || size != int64(len(body)) {
					t.Errorf("gzip %v: blob %s: size %d, %v", gz, rest, size, ok)
				}
			}
		}
	}
}
