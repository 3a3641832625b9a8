package fixup

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/internal/verify"
	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-relocate/resolver"
	"github.com/containerd/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// exportFixture is an in-process registry, behind a counting proxy that
// the engine talks to, with a single-platform image and a two-platform
// index that share a layer, and a bundle that refers to them (once
// twice, once with its contentDigest) and to a helm chart.
type exportFixture struct {
	reg            *registrytest.Memory
	proxy          *registrytest.Proxy
	blobs          []ocispec.Descriptor // every config and layer
	app, multi     ocispec.Descriptor
	shared         ocispec.Descriptor
	bundleJSON     []byte
	bundle         *Bundle
	appRef, mulRef string
}

// sharedLayer is the layer both images have.
var sharedLayer = bytes.Repeat([]byte("shared layer "), 1000)

func newExportFixture(t *testing.T, rules ...registrytest.FaultRule) *exportFixture {
	t.Helper()
	ctx := context.Background()
	fx := &exportFixture{reg: registrytest.StartMemory(false)}
	fx.proxy = registrytest.NewProxyURL(fx.reg.URL, nil, registrytest.ProxyOptions{Faults: registrytest.FaultOptions{Rules: rules}})
	t.Cleanup(func() { fx.proxy.Close(); fx.reg.Close() })
	c := fx.reg.Client()
	blob := func(repo, mediaType string, data []byte) ocispec.Descriptor {
		d, err := c.PushBlob(ctx, repo, data)
		if err != nil {
			t.Fatal(err)
		}
		d.MediaType = mediaType
		if !slices.ContainsFunc(fx.blobs, func(b ocispec.Descriptor) bool { return b.Digest == d.Digest }) {
			fx.blobs = append(fx.blobs, d)
		}
		return d
	}
	manifest := func(repo, ref, mediaType string, v any) ocispec.Descriptor {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		d, err := c.PushManifest(ctx, repo, ref, mediaType, data)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	image := func(repo, ref, seed string, layers ...[]byte) ocispec.Descriptor {
		m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			Config: blob(repo, ocispec.MediaTypeImageConfig, []byte(`{"os":"linux","seed":"`+seed+`"}`))}
		for _, l := range layers {
			m.Layers = append(m.Layers, blob(repo, ocispec.MediaTypeImageLayerGzip, l))
		}
		return manifest(repo, ref, ocispec.MediaTypeImageManifest, m)
	}
	fx.shared = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(sharedLayer), Size: int64(len(sharedLayer))}
	fx.app = image("team/app", "1.0", "app", sharedLayer, []byte("app layer"))
	amd := image("library/busybox", "amd64", "amd64", sharedLayer)
	arm := image("library/busybox", "arm64", "arm64", sharedLayer, []byte("arm layer"))
	amd.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm.Platform = &ocispec.Platform{OS: "linux", Architecture: "arm64"}
	fx.multi = manifest("library/busybox", "1.36", ocispec.MediaTypeImageIndex, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{amd, arm},
	})
	fx.appRef, fx.mulRef = fx.proxy.Host+"/team/app:1.0", fx.proxy.Host+"/library/busybox:1.36"
	fx.bundleJSON = []byte(`{"schemaVersion":"v1.0.0","name":"app","version":"1.0.0",
  "invocationImages":[{"imageType":"docker","image":"` + fx.appRef + `"}],
  "images":{
    "again":{"image":"` + fx.appRef + `"},
    "multi":{"image":"` + fx.mulRef + `","contentDigest":"` + fx.multi.Digest.String() + `"},
    "chart":{"imageType":"helm","image":"charts/x:1"}},
  "x-unknown":{"kept":true}}
`)
	b, err := Parse(fx.bundleJSON)
	if err != nil {
		t.Fatal(err)
	}
	fx.bundle = b
	return fx
}

// options are the export options of the fixture: no credentials.
func (fx *exportFixture) options(t *testing.T) ExportOptions {
	return ExportOptions{ClientOptions: ClientOptions{ResolverOptions: resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"}}}
}

// blobGETs counts the GETs of blob d through the proxy.
func (fx *exportFixture) blobGETs(d digest.Digest) int {
	n := 0
	for _, r := range fx.proxy.Requests() {
		if strings.HasPrefix(r, "GET ") && strings.HasSuffix(r, "/blobs/"+d.String()) {
			n++
		}
	}
	return n
}

func TestExport(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	fx := newExportFixture(t)
	var mu sync.Mutex
	kinds := map[EventKind]int{}
	opts := fx.options(t)
	opts.Jobs = 3
	opts.OnEvent = func(e Event) {
		mu.Lock()
		kinds[e.Kind]++
		mu.Unlock()
	}
	res, err := Export(context.Background(), fx.bundle, opts)
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
	for _, d := range fx.blobs {
		if !res.Layout.Exists(d) {
			t.Errorf("%s (%s) missing from the layout", d.Digest, d.MediaType)
		}
	}
	if n := fx.blobGETs(fx.shared.Digest); n != 1 {
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
	for _, d := range fx.blobs {
		if d.MediaType == ocispec.MediaTypeImageConfig {
			n += d.Size
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
		if err := ExportArchive(context.Background(), fx.bundle, fx.bundleJSON, p, fx.options(t)); err != nil {
			t.Fatal(err)
		}
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Fatal("two exports differ")
	}
	// A plain tar is written in place, the gzipped one through a layout:
	// the same tar, and split the same parts.
	plain := filepath.Join(out, "a.tar")
	var parts []layout.Part
	for _, p := range []string{plain, filepath.Join(out, "split.tar")} {
		opts := fx.options(t)
		if p != plain {
			opts.SplitSize, opts.OnPart = 1000, func(part layout.Part) { parts = append(parts, part) }
		}
		if err := ExportArchive(context.Background(), fx.bundle, fx.bundleJSON, p, opts); err != nil {
			t.Fatal(err)
		}
	}
	zr, err := gzip.NewReader(bytes.NewReader(da))
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	dp, _ := os.ReadFile(plain)
	if !bytes.Equal(dp, unzipped) {
		t.Fatalf("the tar written in place (%d bytes) is not the gzipped archive's tar (%d bytes)", len(dp), len(unzipped))
	}
	var joined []byte
	for _, part := range parts {
		data, _ := os.ReadFile(part.Path)
		if digest.FromBytes(data) != part.Digest || int64(len(data)) != part.Size || part.Size > 1000 {
			t.Errorf("%s: %d bytes %s, reported %d bytes %s", part.Path, len(data), digest.FromBytes(data), part.Size, part.Digest)
		}
		joined = append(joined, data...)
	}
	if len(parts) < 3 || !bytes.Equal(joined, dp) {
		t.Errorf("%d parts written in place do not join into the plain tar", len(parts))
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("left in $TMPDIR: %v", ents)
	}

	// Load it back: bundle.json byte for byte, every image resolvable and
	// complete from the layout alone.
	bundle, arch, err := LoadArchive(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer arch.Close()
	if !bytes.Equal(arch.BundleJSON, fx.bundleJSON) {
		t.Fatal("bundle.json changed")
	}
	src := ArchiveSource{Archive: arch}
	ctx := context.Background()
	// Layout to layout: re-exporting the archive needs no registry and
	// gives the same bytes.
	fx.proxy.Close()
	c := filepath.Join(out, "c.tgz")
	opts := fx.options(t)
	opts.Source = src
	if err := ExportArchive(ctx, bundle, bundle.Raw(), c, opts); err != nil {
		t.Fatalf("re-export from the layout: %v", err)
	}
	if dc, _ := os.ReadFile(c); !bytes.Equal(dc, da) {
		t.Error("re-exporting an archive from its own layout changed it")
	}
	// The same from the archive as a stream, written in place.
	ct := filepath.Join(out, "c.tar")
	if err := ExportArchive(ctx, bundle, bundle.Raw(), ct, opts); err != nil {
		t.Fatalf("re-export from the layout to a tar: %v", err)
	}
	if dc, _ := os.ReadFile(ct); !bytes.Equal(dc, dp) {
		t.Error("re-exporting an archive in place changed it")
	}
	// Every image resolves, and every blob it needs streams from the
	// archive with its digest.
	need := map[digest.Digest]ocispec.Descriptor{}
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
			need[bl.Digest] = bl
		}
	}
	seen := 0
	err = arch.Stream(ctx, func(d digest.Digest) bool { _, ok := need[d]; return ok }, func(d digest.Digest, r io.Reader) error {
		seen++
		_, err := io.Copy(io.Discard, verify.NewReader(r, need[d]))
		return err
	})
	if err != nil || seen != len(need) {
		t.Fatalf("streamed %d of %d blobs: %v", seen, len(need), err)
	}
}

func TestExportFailures(t *testing.T) {
	corrupt := registrytest.FaultRule{
		Match: registrytest.MatchBlobGET(false, digest.FromBytes(sharedLayer)),
		Fault: registrytest.Fault{Kind: registrytest.FaultCorrupt, After: 10},
	}
	for _, tc := range []struct {
		name   string
		rules  []registrytest.FaultRule
		change func(fx *exportFixture)
		is     error
		want   string
	}{
		{"contentDigest the registry does not serve", nil, func(fx *exportFixture) {
			fx.bundleJSON = bytes.Replace(fx.bundleJSON, []byte(fx.multi.Digest.String()), []byte(fx.app.Digest.String()), 1)
		}, ErrDigestMismatch, "busybox:1.36"},
		{"corrupt blob", []registrytest.FaultRule{corrupt}, func(*exportFixture) {}, ErrDigestMismatch, fx0shared},
		{"missing image", nil, func(fx *exportFixture) {
			fx.bundleJSON = bytes.ReplaceAll(fx.bundleJSON, []byte("/team/app:1.0"), []byte("/team/app:gone"))
		}, errdefs.ErrNotFound, "/team/app:gone"},
		{"output directory missing", nil, func(*exportFixture) {}, ErrOutput, "missing/app"},
	} {
		for _, name := range []string{"app.tgz", "app.tar"} {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				tmp := t.TempDir()
				t.Setenv("TMPDIR", tmp)
				fx := newExportFixture(t, tc.rules...)
				tc.change(fx)
				b, err := Parse(fx.bundleJSON)
				if err != nil {
					t.Fatal(err)
				}
				out := t.TempDir()
				path := filepath.Join(out, name)
				if tc.is == ErrOutput {
					path = filepath.Join(out, "missing", name)
				}
				err = ExportArchive(context.Background(), b, fx.bundleJSON, path, fx.options(t))
				if tc.is == ErrOutput {
					if !errors.Is(err, ErrOutput) || !strings.Contains(err.Error(), path) {
						t.Fatalf("got %v, want ErrOutput naming %s", err, path)
					}
					// Found out before the first blob: none is fetched.
					for _, d := range fx.blobs {
						if n := fx.blobGETs(d.Digest); n > 0 {
							t.Errorf("%s fetched %d times for an archive that cannot be written", d.Digest, n)
						}
					}
					return
				}
				if tc.is == errdefs.ErrNotFound {
					// An image that cannot be planned fails the export before any blob moves.
					for _, d := range fx.blobs {
						if n := fx.blobGETs(d.Digest); n > 0 {
							t.Errorf("%s fetched %d times for an export that fails", d.Digest, n)
						}
					}
				}
				want := tc.want
				if want == fx0shared {
					want = fx.shared.Digest.String()
				}
				if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrSource) {
					t.Fatalf("got %v, want %v naming %s", err, tc.is, want)
				}
				if tc.is == ErrDigestMismatch {
					for _, d := range fx.blobs {
						if n := fx.blobGETs(d.Digest); n > 1 {
							t.Errorf("%s fetched %d times: a digest mismatch was retried", d.Digest, n)
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
}

// fx0shared stands for the fixture's shared layer digest in the table.
const fx0shared = "<shared layer digest>"
