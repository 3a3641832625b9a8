package fixup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// exportRegistry is an in-memory, read-only remotes.Resolver: content by
// digest (in any repository) and tags by normalised reference. It counts
// blob fetches.
type exportRegistry struct {
	mu      sync.Mutex
	content map[digest.Digest][]byte
	media   map[digest.Digest]string
	tags    map[string]digest.Digest
	fetches map[digest.Digest]int
	corrupt map[digest.Digest]bool
}

func newExportRegistry() *exportRegistry {
	return &exportRegistry{content: map[digest.Digest][]byte{}, media: map[digest.Digest]string{},
		tags: map[string]digest.Digest{}, fetches: map[digest.Digest]int{}, corrupt: map[digest.Digest]bool{}}
}

func (r *exportRegistry) put(mediaType string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	r.content[d], r.media[d] = data, mediaType
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

func (r *exportRegistry) putJSON(t *testing.T, mediaType string, v any) ocispec.Descriptor {
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return r.put(mediaType, data)
}

// image stores a one-config image with the given layers.
func (r *exportRegistry) image(t *testing.T, seed string, layers ...ocispec.Descriptor) ocispec.Descriptor {
	config := r.put(ocispec.MediaTypeImageConfig, []byte(`{"os":"linux","seed":"`+seed+`"}`))
	return r.putJSON(t, ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: config, Layers: layers,
	})
}

func (r *exportRegistry) tag(ref string, d ocispec.Descriptor) {
	r.tags[reference.TagNameOnly(reference.TrimNamed(mustNamed(ref))).String()] = d.Digest
	if t, ok := mustNamed(ref).(reference.Tagged); ok {
		r.tags[reference.TrimNamed(mustNamed(ref)).String()+":"+t.Tag()] = d.Digest
	}
}

func mustNamed(ref string) reference.Named {
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		panic(err)
	}
	return n
}

func (r *exportRegistry) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var d digest.Digest
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		d = digest.Digest(ref[i+1:])
	} else {
		d = r.tags[ref]
	}
	data, ok := r.content[d]
	if !ok {
		return "", ocispec.Descriptor{}, errdefs.ErrNotFound
	}
	return ref, ocispec.Descriptor{MediaType: r.media[d], Digest: d, Size: int64(len(data))}, nil
}

func (r *exportRegistry) Fetcher(ctx context.Context, ref string) (remotes.Fetcher, error) {
	return remotes.FetcherFunc(func(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		data, ok := r.content[desc.Digest]
		if !ok {
			return nil, errdefs.ErrNotFound
		}
		r.fetches[desc.Digest]++
		if r.corrupt[desc.Digest] {
			data = bytes.ToUpper(data)
		}
		return io.NopCloser(bytes.NewReader(data)), nil
	}), nil
}

func (r *exportRegistry) Pusher(ctx context.Context, ref string) (remotes.Pusher, error) {
	return nil, errors.New("read-only registry")
}

// exportFixture is a registry with a single-platform image and a
// two-platform index that share a layer, and a bundle that refers to them
// (once twice, once with its contentDigest) and to a helm chart.
type exportFixture struct {
	reg            *exportRegistry
	app, multi     ocispec.Descriptor
	shared         ocispec.Descriptor
	bundleJSON     []byte
	bundle         *Bundle
	appRef, mulRef string
}

func newExportFixture(t *testing.T) *exportFixture {
	reg := newExportRegistry()
	shared := reg.put(ocispec.MediaTypeImageLayerGzip, bytes.Repeat([]byte("shared layer "), 1000))
	app := reg.image(t, "app", shared, reg.put(ocispec.MediaTypeImageLayerGzip, []byte("app layer")))
	amd := reg.image(t, "amd64", shared)
	arm := reg.image(t, "arm64", shared, reg.put(ocispec.MediaTypeImageLayerGzip, []byte("arm layer")))
	amd.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm.Platform = &ocispec.Platform{OS: "linux", Architecture: "arm64"}
	multi := reg.putJSON(t, ocispec.MediaTypeImageIndex, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{amd, arm},
	})
	appRef, mulRef := "registry.example.com/team/app:1.0", "busybox:1.36"
	reg.tag(appRef, app)
	reg.tag(mulRef, multi)
	bundleJSON := []byte(`{"schemaVersion":"v1.0.0","name":"app","version":"1.0.0",
  "invocationImages":[{"imageType":"docker","image":"` + appRef + `"}],
  "images":{
    "again":{"image":"` + appRef + `"},
    "multi":{"image":"` + mulRef + `","contentDigest":"` + multi.Digest.String() + `"},
    "chart":{"imageType":"helm","image":"charts/x:1"}},
  "x-unknown":{"kept":true}}
`)
	b, err := Parse(bundleJSON)
	if err != nil {
		t.Fatal(err)
	}
	return &exportFixture{reg: reg, app: app, multi: multi, shared: shared, bundleJSON: bundleJSON, bundle: b, appRef: appRef, mulRef: mulRef}
}

func TestExport(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	fx := newExportFixture(t)
	var mu sync.Mutex
	kinds := map[EventKind]int{}
	res, err := Export(context.Background(), fx.bundle, ExportOptions{ClientOptions: ClientOptions{Resolver: fx.reg, Jobs: 3, OnEvent: func(e Event) {
		mu.Lock()
		kinds[e.Kind]++
		mu.Unlock()
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 2 || len(res.Skipped) != 1 {
		t.Fatalf("images %d, skipped %d; want 2 and 1", len(res.Images), len(res.Skipped))
	}
	if kinds[ImageDone] != 2 || kinds[ImageFailed] != 0 || kinds[BlobCopied] == 0 {
		t.Fatalf("events: %v", kinds)
	}
	// Every blob of the registry (all platforms) is in the layout, each
	// fetched once although three manifests share one layer.
	for d, data := range fx.reg.content {
		if !res.Layout.Exists(ocispec.Descriptor{Digest: d, Size: int64(len(data))}) {
			t.Errorf("%s (%s) missing from the layout", d, fx.reg.media[d])
		}
	}
	if n := fx.reg.fetches[fx.shared.Digest]; n != 1 {
		t.Errorf("shared layer fetched %d times, want 1", n)
	}
	if res.Images[0].BytesCopied+res.Images[1].BytesCopied != fx.shared.Size+int64(len("app layer")+len("arm layer"))+configSizes(fx) {
		t.Errorf("bytes copied: %+v", res.Images)
	}
	// One index entry per reference, named exactly as written.
	idx := res.Layout.Index()
	got := map[string]digest.Digest{}
	for _, m := range idx.Manifests {
		got[m.Annotations[ocispec.AnnotationRefName]] = m.Digest
	}
	if len(got) != 2 || got[fx.appRef] != fx.app.Digest || got[fx.mulRef] != fx.multi.Digest {
		t.Fatalf("index entries: %v", got)
	}
	if err := res.Close(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("left in $TMPDIR: %v", ents)
	}
}

// configSizes is the size of the three configs of the fixture.
func configSizes(fx *exportFixture) (n int64) {
	for d, mt := range fx.reg.media {
		if mt == ocispec.MediaTypeImageConfig {
			n += int64(len(fx.reg.content[d]))
		}
	}
	return n
}

func TestExportArchiveRoundTrip(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	fx := newExportFixture(t)
	out := t.TempDir()
	a, b := filepath.Join(out, "a.tgz"), filepath.Join(out, "b.tgz")
	for _, p := range []string{a, b} {
		if err := ExportArchive(context.Background(), fx.bundle, fx.bundleJSON, p, ExportOptions{ClientOptions: ClientOptions{Resolver: fx.reg}}); err != nil {
			t.Fatal(err)
		}
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Fatal("two exports differ")
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("left in $TMPDIR: %v", ents)
	}

	// Load it back: bundle.json byte for byte, every image resolvable and
	// complete from the layout alone.
	bundle, th, err := LoadArchive(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	if !bytes.Equal(th.BundleJSON, fx.bundleJSON) {
		t.Fatal("bundle.json changed")
	}
	src := LayoutSource{Store: th.Layout, Path: a}
	ctx := context.Background()
	for _, img := range bundle.Images {
		if !img.Relocatable() {
			continue
		}
		want, _ := img.Digest()
		root, err := src.Resolve(ctx, img, want)
		if err != nil {
			t.Fatalf("%s: %v", img.Ref, err)
		}
		f, _ := src.Fetcher(ctx, img)
		g, err := walk(ctx, f, root)
		if err != nil {
			t.Fatalf("%s: %v", img.Ref, err)
		}
		for _, bl := range g.blobs {
			rc, err := f.Fetch(ctx, bl)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Fatal(err)
			}
			rc.Close()
		}
	}
}

func TestExportFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(fx *exportFixture)
		is     error
		want   string
	}{
		{"contentDigest the registry does not serve", func(fx *exportFixture) {
			fx.bundleJSON = bytes.Replace(fx.bundleJSON, []byte(fx.multi.Digest.String()), []byte(fx.app.Digest.String()), 1)
		}, ErrDigestMismatch, "busybox:1.36"},
		{"corrupt blob", func(fx *exportFixture) { fx.reg.corrupt[fx.shared.Digest] = true }, ErrDigestMismatch, fx0shared},
		{"missing image", func(fx *exportFixture) { delete(fx.reg.tags, "registry.example.com/team/app:1.0") }, errdefs.ErrNotFound, "registry.example.com/team/app:1.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			fx := newExportFixture(t)
			tc.change(fx)
			b, err := Parse(fx.bundleJSON)
			if err != nil {
				t.Fatal(err)
			}
			out := t.TempDir()
			err = ExportArchive(context.Background(), b, fx.bundleJSON, filepath.Join(out, "app.tgz"), ExportOptions{ClientOptions: ClientOptions{Resolver: fx.reg}})
			want := tc.want
			if want == fx0shared {
				want = fx.shared.Digest.String()
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrSource) {
				t.Fatalf("got %v, want %v naming %s", err, tc.is, want)
			}
			if tc.is == ErrDigestMismatch {
				for d, n := range fx.reg.fetches {
					if n > 1 && fx.reg.media[d] != ocispec.MediaTypeImageManifest {
						t.Errorf("%s fetched %d times: a digest mismatch was retried", d, n)
					}
				}
			}
			for _, dir := range []string{tmp, out} {
				if ents, _ := os.ReadDir(dir); len(ents) != 0 {
					t.Errorf("left in %s: %v", dir, ents)
				}
			}
		})
	}
}

// fx0shared stands for the fixture's shared layer digest in the table.
const fx0shared = "<shared layer digest>"
