package fixup

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
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/retry"
	"github.com/cnabio/cnab-relocate/internal/verify"
	"github.com/cnabio/cnab-relocate/layout"
)

var _ Source = LayoutSource{}

// thickBlob stores data in s and returns its descriptor.
func thickBlob(t *testing.T, s *layout.Store, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := s.WriteBlob(context.Background(), d, strings.NewReader(string(data))); err != nil {
		t.Fatal(err)
	}
	return d
}

func thickJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// thickManifest stores a one-layer image and returns its manifest.
func thickManifest(t *testing.T, s *layout.Store, seed string) ocispec.Descriptor {
	config := thickBlob(t, s, ocispec.MediaTypeImageConfig, []byte(`{"os":"linux","seed":"`+seed+`"}`))
	layer := thickBlob(t, s, ocispec.MediaTypeImageLayerGzip, []byte("layer "+seed))
	return thickBlob(t, s, ocispec.MediaTypeImageManifest, thickJSON(t, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: config, Layers: []ocispec.Descriptor{layer},
	}))
}

// thickLayout makes a layout with a single-platform image named by its
// full reference and a two-platform index named by its tag alone, as
// crane and skopeo write it.
func thickLayout(t *testing.T) (s *layout.Store, app, multi ocispec.Descriptor) {
	t.Helper()
	s, err := layout.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	app = thickManifest(t, s, "app")
	amd, arm := thickManifest(t, s, "amd64"), thickManifest(t, s, "arm64")
	amd.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm.Platform = &ocispec.Platform{OS: "linux", Architecture: "arm64"}
	multi = thickBlob(t, s, ocispec.MediaTypeImageIndex, thickJSON(t, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{amd, arm},
	}))
	s.AddRef(app, "example.com/team/app:1.0")
	s.AddRef(multi, "2.0")
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	return s, app, multi
}

func thickImage(t *testing.T, ref string) Image {
	t.Helper()
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		t.Fatal(err)
	}
	return Image{Field: "images.x", Ref: ref, Named: named}
}

func TestLayoutSourceResolve(t *testing.T) {
	t.Parallel()
	s, app, multi := thickLayout(t)
	src := LayoutSource{Store: s, Path: "app-1.0.tgz"}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ref  string
		want digest.Digest
		got  digest.Digest
	}{
		{"by full reference", "example.com/team/app:1.0", "", app.Digest},
		{"by contentDigest", "example.com/renamed/app:9", app.Digest, app.Digest},
		{"by the digest in the reference", "example.com/renamed/app@" + app.Digest.String(), "", app.Digest},
		{"by tag alone", "example.com/team/multi:2.0", "", multi.Digest},
		{"by tag alone, digest agrees", "example.com/team/multi:2.0", multi.Digest, multi.Digest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := thickImage(t, tc.ref)
			d, err := src.Resolve(ctx, img, tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if d.Digest != tc.got || d.MediaType == "" || d.Size == 0 || d.Annotations != nil {
				t.Fatalf("got %+v, want %s", d, tc.got)
			}
			f, err := src.Fetcher(ctx, img)
			if err != nil {
				t.Fatal(err)
			}
			g, err := walk(ctx, f, d)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range g.blobs {
				rc, err := f.Fetch(ctx, b)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, rc); err != nil {
					t.Fatal(err)
				}
				rc.Close()
			}
		})
	}

	t.Run("digest mismatch", func(t *testing.T) {
		_, err := src.Resolve(ctx, thickImage(t, "example.com/team/app:1.0"), digest.FromString("other"))
		if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "example.com/team/app:1.0") {
			t.Fatalf("got %v, want a digest mismatch naming the image", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		_, err := src.Resolve(ctx, thickImage(t, "example.com/team/missing:1"), "")
		if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "example.com/team/missing:1") {
			t.Fatalf("got %v, want not found naming the image", err)
		}
	})
	t.Run("no layout", func(t *testing.T) {
		_, err := LayoutSource{Path: "x.tgz"}.Resolve(ctx, thickImage(t, "example.com/a:1"), "")
		if !errdefs.IsNotFound(err) {
			t.Fatalf("got %v, want not found", err)
		}
	})
	if h, r := src.Location(thickImage(t, "example.com/a:1")); h != "" || r != "" {
		t.Errorf("Location = %q, %q", h, r)
	}
	if n := src.Name(Image{}); n != "thick bundle app-1.0.tgz" {
		t.Errorf("Name = %q", n)
	}
}

func TestLayoutSourceCorruptBlob(t *testing.T) {
	t.Parallel()
	s, app, _ := thickLayout(t)
	src := LayoutSource{Store: s, Path: "app.tgz"}
	ctx := context.Background()
	img := thickImage(t, "example.com/team/app:1.0")
	f, _ := src.Fetcher(ctx, img)
	g, err := walk(ctx, f, app)
	if err != nil {
		t.Fatal(err)
	}
	layer := g.blobs[len(g.blobs)-1]
	p := filepath.Join(s.Dir(), "blobs", "sha256", layer.Digest.Encoded())
	data, _ := os.ReadFile(p)
	data[0] ^= 1
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Straight from the layout, and through the engine's own check.
	rc, err := f.Fetch(ctx, layer)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, rc)
	rc.Close()
	if !errors.Is(err, ErrDigestMismatch) || !errors.Is(err, layout.ErrDigestMismatch) {
		t.Fatalf("got %v, want a digest mismatch", err)
	}
	if retry.Retryable(err) {
		t.Fatal("a corrupt blob in a layout would be retried")
	}
	rc, err = f.Fetch(ctx, layer)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, verify.NewReader(rc, layer))
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("got %v, want a digest mismatch", err)
	}
	if retry.Retryable(err) {
		t.Fatal("a corrupt blob in a layout would be retried")
	}
}

const thickBundle = `{"schemaVersion":"v1.0.0","name":"app","version":"1.0.0",
  "invocationImages":[{"imageType":"docker","image":"example.com/team/app:1.0"}],
  "images":{"multi":{"image":"example.com/team/multi:2.0"},"chart":{"imageType":"helm","image":"charts/x"}}}
`

func TestLoadArchive(t *testing.T) {
	s, _, multi := thickLayout(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "app-1.0.tgz")
	if err := layout.WriteArchive(path, []byte(thickBundle), s.Dir()); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	b, a, err := LoadArchive(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if string(a.BundleJSON) != thickBundle || string(b.Raw()) != thickBundle || b.Path() != path || len(b.Images) != 3 {
		t.Fatalf("loaded %+v from %s", b, b.Path())
	}
	// Read as a stream: nothing is extracted.
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("left in $TMPDIR: %v", ents)
	}
	src := ArchiveSource{Archive: a}
	for _, img := range b.Images {
		if !img.Relocatable() {
			continue
		}
		if _, err := src.Resolve(context.Background(), img, ""); err != nil {
			t.Errorf("%s: %v", img.Ref, err)
		}
	}
	if d, _ := src.Resolve(context.Background(), b.Images[2], ""); d.Digest != multi.Digest {
		t.Errorf("%s resolved to %s", b.Images[2].Ref, d.Digest)
	}

	for _, tc := range []struct {
		name   string
		bundle string
		want   string
	}{
		{"malformed bundle.json", `{"name":`, "bundle.json"},
		{"no invocation image", `{"name":"x"}`, "invocation image"},
		{"bad reference", `{"invocationImages":[{"image":"Not A Ref"}]}`, "Not A Ref"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			p := filepath.Join(dir, "bad.tgz")
			if err := layout.WriteArchive(p, []byte(tc.bundle), ""); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadArchive(context.Background(), p)
			if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an input error naming %s and %s", err, p, tc.want)
			}
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Fatalf("left in $TMPDIR: %v", ents)
			}
		})
	}
	t.Run("not an archive", func(t *testing.T) {
		p := filepath.Join(dir, "missing.tgz")
		_, _, err := LoadArchive(context.Background(), p)
		if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), p) {
			t.Fatalf("got %v", err)
		}
	})
}
