package fixup

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-relocate/relocator"
	"github.com/cnabio/cnab-relocate/resolver"
)

// release2 pushes team/app:2.0 (the shared layer, a new layer, a new
// config) to fx's registry and returns a bundle of it and the unchanged
// busybox index, with the new image's manifest and new blobs.
func (fx *exportFixture) release2(t *testing.T) (*Bundle, []byte, []digest.Digest) {
	t.Helper()
	ctx := context.Background()
	c := fx.reg.Client()
	var fresh []digest.Digest
	push := func(mediaType string, data []byte) ocispec.Descriptor {
		d, err := c.PushBlob(ctx, "team/app", data)
		if err != nil {
			t.Fatal(err)
		}
		d.MediaType = mediaType
		return d
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: push(ocispec.MediaTypeImageConfig, []byte(`{"os":"linux","seed":"app 2"}`)),
		Layers: []ocispec.Descriptor{fx.shared, push(ocispec.MediaTypeImageLayerGzip, []byte("app layer 2.0"))}}
	fresh = append(fresh, m.Config.Digest, m.Layers[1].Digest)
	data, _ := json.Marshal(m)
	md, err := c.PushManifest(ctx, "team/app", "2.0", ocispec.MediaTypeImageManifest, data)
	if err != nil {
		t.Fatal(err)
	}
	fresh = append(fresh, md.Digest)
	// A new repository whose image has the shared layer: a relocation of
	// the delta mounts it from where the base put it.
	n := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: push(ocispec.MediaTypeImageConfig, []byte(`{"os":"linux","seed":"new"}`)),
		Layers: []ocispec.Descriptor{fx.shared}}
	if _, err := c.PushBlob(ctx, "team/new", sharedLayer); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PushBlob(ctx, "team/new", []byte(`{"os":"linux","seed":"new"}`)); err != nil {
		t.Fatal(err)
	}
	data, _ = json.Marshal(n)
	nd, err := c.PushManifest(ctx, "team/new", "1.0", ocispec.MediaTypeImageManifest, data)
	if err != nil {
		t.Fatal(err)
	}
	fresh = append(fresh, n.Config.Digest, nd.Digest)
	ref := fx.proxy.Host + "/team/app:2.0"
	raw := []byte(`{"schemaVersion":"v1.0.0","name":"app","version":"2.0.0",
  "invocationImages":[{"imageType":"docker","image":"` + ref + `"}],
  "images":{"multi":{"image":"` + fx.mulRef + `","contentDigest":"` + fx.multi.Digest.String() + `"},
    "new":{"image":"` + fx.proxy.Host + `/team/new:1.0"}}}
`)
	b, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b, raw, fresh
}

// members lists a gzipped archive's regular files with their bytes.
func members(t *testing.T, path string) map[string][]byte {
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
	out := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			out[hdr.Name], _ = io.ReadAll(tr)
		}
	}
}

func fileDigest(t *testing.T, paths ...string) digest.Digest {
	h := sha256.New()
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		h.Write(data)
	}
	return digest.NewDigest(digest.SHA256, h)
}

func TestExportDelta(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fx := newExportFixture(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "app-1.tgz")
	if err := ExportArchive(ctx, fx.bundle, fx.bundleJSON, base, fx.options(t)); err != nil {
		t.Fatal(err)
	}
	// The same base, split: the record names the archive's sha256, that of
	// its parts one after the other.
	res, err := Export(ctx, fx.bundle, fx.options(t))
	if err != nil {
		t.Fatal(err)
	}
	parts, err := layout.WriteSplitArchive(filepath.Join(dir, "split-1.tgz"), 512, fx.bundleJSON, res.Dir)
	res.Close()
	if err != nil || len(parts) < 2 {
		t.Fatalf("split base: %d parts, %v", len(parts), err)
	}
	thin := filepath.Join(dir, "bundle-1.json")
	os.WriteFile(thin, fx.bundleJSON, 0o644)
	b2, raw2, fresh := fx.release2(t)
	for _, tc := range []struct{ name, base string }{{"archive base", base}, {"split base", filepath.Join(dir, "split-1.tgz")}, {"thin base", thin}} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(fx.proxy.Requests())
			out := filepath.Join(t.TempDir(), "app-2-delta.tgz")
			opts := fx.options(t)
			opts.Bases = []string{tc.base}
			if err := ExportArchive(ctx, b2, raw2, out, opts); err != nil {
				t.Fatal(err)
			}
			for _, r := range fx.proxy.Requests()[before:] {
				if strings.HasPrefix(r, "GET ") && strings.Contains(r, "/blobs/") && !slices.ContainsFunc(fresh, func(d digest.Digest) bool { return strings.HasSuffix(r, d.String()) }) {
					t.Errorf("fetched a blob the base holds: %s", r)
				}
			}
			m := members(t, out)
			if string(m[layout.BundleFile]) != string(raw2) {
				t.Error("bundle.json is not byte for byte the bundle")
			}
			var blobs []digest.Digest
			for name := range m {
				if rest, ok := strings.CutPrefix(name, layout.LayoutPath+"/blobs/sha256/"); ok {
					blobs = append(blobs, digest.NewDigestFromEncoded(digest.SHA256, rest))
				}
			}
			slices.Sort(blobs)
			want := slices.Clone(fresh)
			slices.Sort(want)
			if !slices.Equal(blobs, want) {
				t.Errorf("delta holds %v, want only the new %v", blobs, want)
			}
			var idx ocispec.Index
			json.Unmarshal(m[layout.LayoutPath+"/index.json"], &idx)
			var names []string
			for _, e := range idx.Manifests {
				names = append(names, e.Annotations[ocispec.AnnotationRefName])
			}
			if !slices.Contains(names, fx.mulRef) || !slices.Contains(names, fx.proxy.Host+"/team/app:2.0") {
				t.Errorf("index.json names %v, want every image", names)
			}
			var rec layout.Delta
			if err := json.Unmarshal(m[layout.DeltaFile], &rec); err != nil {
				t.Fatalf("%s: %v", layout.DeltaFile, err)
			}
			parts, _ := filepath.Glob(tc.base + "*")
			slices.Sort(parts)
			wantBase := layout.Base{Archive: filepath.Base(tc.base), Bundle: "app", Version: "1.0.0", Digest: fileDigest(t, parts...), Thin: tc.base == thin}
			for _, p := range parts {
				st, _ := os.Stat(p)
				wantBase.Size += st.Size()
			}
			if len(rec.Bases) != 1 || rec.Bases[0] != wantBase {
				t.Errorf("bases %+v, want %+v", rec.Bases, wantBase)
			}
			left := map[digest.Digest]layout.LeftOut{}
			for _, l := range rec.LeftOut {
				left[l.Digest] = l
			}
			if l := left[fx.shared.Digest]; l.Size != fx.shared.Size || !slices.Equal(l.Images, []string{fx.proxy.Host + "/team/app:2.0", fx.mulRef, fx.proxy.Host + "/team/new:1.0"}) {
				t.Errorf("shared layer left out as %+v", l)
			}
			if l := left[fx.multi.Digest]; l.Images == nil || l.MediaType != ocispec.MediaTypeImageIndex {
				t.Errorf("busybox index left out as %+v", l)
			}
			if len(rec.LeftOut)+len(fresh) != len(exportBlobsOf(t, fx, b2)) {
				t.Errorf("left out %d and wrote %d of %d", len(rec.LeftOut), len(fresh), len(exportBlobsOf(t, fx, b2)))
			}
			// A reader of the delta knows what it leaves out.
			a, err := layout.OpenArchive(ctx, out)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if a.Delta == nil || !a.LeftOut(fx.multi.Digest) || a.LeftOut(fresh[0]) {
				t.Errorf("OpenArchive: delta %v", a.Delta)
			}
		})
	}
}

// exportBlobsOf is a dry run of b's export: every blob and manifest.
func exportBlobsOf(t *testing.T, fx *exportFixture, b *Bundle) []*ExportBlob {
	opts := fx.options(t)
	opts.DryRun = true
	res, err := Export(context.Background(), b, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	return res.Blobs
}

func TestExportDryRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fx := newExportFixture(t)
	base := filepath.Join(t.TempDir(), "app-1.tgz")
	if err := ExportArchive(ctx, fx.bundle, fx.bundleJSON, base, fx.options(t)); err != nil {
		t.Fatal(err)
	}
	b2, _, fresh := fx.release2(t)
	before := len(fx.proxy.Requests())
	opts := fx.options(t)
	opts.DryRun, opts.Bases = true, []string{base}
	res, err := Export(ctx, b2, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	for _, r := range fx.proxy.Requests()[before:] {
		if strings.Contains(r, "/blobs/") {
			t.Errorf("a dry run fetched a blob: %s", r)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(res.Dir, "blobs", "sha256")); len(ents) != 0 {
		t.Errorf("a dry run wrote %d blobs", len(ents))
	}
	var written []digest.Digest
	for _, b := range res.Blobs {
		if !slices.ContainsFunc(res.Delta.LeftOut, func(l layout.LeftOut) bool { return l.Digest == b.Digest }) {
			written = append(written, b.Digest)
		}
	}
	slices.Sort(written)
	slices.Sort(fresh)
	if !slices.Equal(written, fresh) {
		t.Errorf("would write %v, want %v", written, fresh)
	}
}

func TestExportBadBase(t *testing.T) {
	t.Parallel()
	fx := newExportFixture(t)
	dir := t.TempDir()
	notArchive := filepath.Join(dir, "notes.tgz")
	os.WriteFile(notArchive, []byte("not an archive"), 0o644)
	// A thin base read through a source relocation mapping that does not
	// map its images.
	thin := filepath.Join(dir, "old-bundle.json")
	os.WriteFile(thin, []byte(`{"schemaVersion":"v1.0.0","name":"app","version":"0.9.0","invocationImages":[{"imageType":"docker","image":"`+fx.proxy.Host+`/team/old:0.9"}]}`), 0o644)
	for _, p := range []string{filepath.Join(dir, "missing.tgz"), notArchive, thin} {
		opts := fx.options(t)
		opts.Bases = []string{p}
		if p == thin {
			opts.SourceMapping = map[string]string{fx.appRef: fx.appRef, fx.mulRef: fx.mulRef}
		}
		out := filepath.Join(dir, "d.tgz")
		err := ExportArchive(context.Background(), fx.bundle, fx.bundleJSON, out, opts)
		if err == nil || !strings.Contains(err.Error(), "base "+p) || !errors.Is(err, ErrInvalidInput) {
			t.Errorf("base %s: %v, want an input error naming it", p, err)
		}
		if p == thin && !errors.Is(err, ErrNotMapped) {
			t.Errorf("thin base: %v, want ErrNotMapped", err)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("base %s: an archive was written", p)
		}
	}
}

// deltaRelocation is a target registry behind a counting proxy and the
// relocation of archives into it.
type deltaRelocation struct {
	dst   *registrytest.Memory
	proxy *registrytest.Proxy
}

func newDeltaRelocation(t *testing.T) *deltaRelocation {
	r := &deltaRelocation{dst: registrytest.StartMemory(false)}
	r.proxy = registrytest.NewProxyURL(r.dst.URL, nil, registrytest.ProxyOptions{})
	t.Cleanup(func() { r.proxy.Close(); r.dst.Close() })
	return r
}

func (r *deltaRelocation) relocate(t *testing.T, archive string) (*Result, error) {
	t.Helper()
	ctx := context.Background()
	b, a, err := LoadArchive(ctx, archive)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	m, _ := relocator.New(relocator.OneToOne, r.proxy.Host+"/prod")
	return Relocate(ctx, b, Options{Mapping: m, Source: ArchiveSource{Archive: a},
		ClientOptions: ClientOptions{ResolverOptions: resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"}}})
}

// writes are the requests since from that change the registry.
func (r *deltaRelocation) writes(from int) []string {
	var out []string
	for _, q := range r.proxy.Requests()[from:] {
		if !strings.HasPrefix(q, "GET ") && !strings.HasPrefix(q, "HEAD ") {
			out = append(out, q)
		}
	}
	return out
}

func TestRelocateDelta(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fx := newExportFixture(t)
	dir := t.TempDir()
	base, delta := filepath.Join(dir, "app-1.tgz"), filepath.Join(dir, "app-2-delta.tgz")
	if err := ExportArchive(ctx, fx.bundle, fx.bundleJSON, base, fx.options(t)); err != nil {
		t.Fatal(err)
	}
	b2, raw2, _ := fx.release2(t)
	opts := fx.options(t)
	opts.Bases = []string{base}
	if err := ExportArchive(ctx, b2, raw2, delta, opts); err != nil {
		t.Fatal(err)
	}

	t.Run("without its base: refused, nothing pushed", func(t *testing.T) {
		r := newDeltaRelocation(t)
		res, err := r.relocate(t, delta)
		if err == nil || !errors.Is(err, ErrBaseMissing) {
			t.Fatalf("got %v, want ErrBaseMissing", err)
		}
		for _, want := range []string{fx.shared.Digest.String(), fx.multi.Digest.String(), "relocate app-1.tgz first", fx.proxy.Host + "/team/app:2.0", fx.mulRef} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %s:\n%v", want, err)
			}
		}
		for _, img := range res.Images {
			if img.Err == nil {
				t.Errorf("%s relocated", img.Source)
			}
		}
		if w := r.writes(0); len(w) != 0 {
			t.Errorf("pushed %v", w)
		}
	})

	t.Run("after its base", func(t *testing.T) {
		r := newDeltaRelocation(t)
		if _, err := r.relocate(t, base); err != nil {
			t.Fatal(err)
		}
		from := len(r.proxy.Requests())
		res, err := r.relocate(t, delta)
		if err != nil {
			t.Fatal(err)
		}
		// Every image is there whole, by the digest it has at the source.
		c := r.dst.Client()
		want, err := Export(ctx, b2, func() ExportOptions { o := fx.options(t); o.DryRun = true; return o }())
		if err != nil {
			t.Fatal(err)
		}
		defer want.Close()
		for i, img := range res.Images {
			repo := strings.SplitN(strings.TrimPrefix(img.Target, r.proxy.Host+"/"), "@", 2)[0]
			repo = strings.SplitN(repo, ":", 2)[0]
			for _, bl := range want.Blobs {
				if !slices.Contains(bl.Images, b2.Images[i].Ref) || isManifest(bl.MediaType) {
					continue
				}
				if ok, err := c.BlobExists(ctx, repo, bl.Digest); err != nil || !ok {
					t.Errorf("%s: blob %s not in %s (%v)", img.Source, bl.Digest, repo, err)
				}
			}
		}
		// No blob the base holds was uploaded. (This registry finds a blob
		// in every repository once it has it: the mount into the new
		// repository is proved against distribution, in e2e.)
		for _, q := range r.writes(from) {
			if strings.HasPrefix(q, "PUT ") && strings.Contains(q, "digest="+strings.Replace(fx.shared.Digest.String(), ":", "%3A", 1)) {
				t.Errorf("uploaded the shared layer: %s", q)
			}
		}
		// A rerun: one request per image.
		from = len(r.proxy.Requests())
		if _, err := r.relocate(t, delta); err != nil {
			t.Fatal(err)
		}
		if got := r.proxy.Requests()[from:]; len(got) != len(res.Images) {
			t.Errorf("rerun: %d requests, want %d (one per image):\n%s", len(got), len(res.Images), strings.Join(got, "\n"))
		}
	})
}

// A changed index whose other child is unchanged: the delta leaves that
// child out, and a relocation of the delta checks it like every other
// left-out manifest, never taking it for the absent child of a sparse
// index (an archive may hold one: see absentFrom).
func TestRelocateDeltaIndexChildLeftOut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fx := newExportFixture(t)
	c := fx.reg.Client()
	spec := registrytest.ImageSpec{Repo: "team/idx", Tag: "1.0", Layers: []int{64}, Seed: 7, OCI: true, Platforms: []string{"linux/amd64", "linux/arm64"}}
	v1, err := c.PushImage(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	spec.Tag, spec.Platforms = "2.0", []string{"linux/amd64", "linux/s390x"}
	v2, err := c.PushImage(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	kept := v1.Manifests[0].Digest
	if v2.Manifests[0].Digest != kept || v2.Manifests[1].Digest == v1.Manifests[1].Digest {
		t.Fatalf("fixture: want the amd64 manifest shared and the other changed: %v, %v", v1.Manifests, v2.Manifests)
	}
	bundle := func(img registrytest.Image, version string) (*Bundle, []byte) {
		raw := []byte(`{"schemaVersion":"v1.0.0","name":"idx","version":"` + version + `","invocationImages":[{"imageType":"docker","image":"` + img.Ref(fx.proxy.Host) + `"}]}`)
		b, err := Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		return b, raw
	}
	dir := t.TempDir()
	base, delta := filepath.Join(dir, "idx-1.tgz"), filepath.Join(dir, "idx-2-delta.tgz")
	b1, raw1 := bundle(v1, "1.0.0")
	if err := ExportArchive(ctx, b1, raw1, base, fx.options(t)); err != nil {
		t.Fatal(err)
	}
	b2, raw2 := bundle(v2, "2.0.0")
	opts := fx.options(t)
	opts.Bases = []string{base}
	if err := ExportArchive(ctx, b2, raw2, delta, opts); err != nil {
		t.Fatal(err)
	}

	r := newDeltaRelocation(t)
	_, err = r.relocate(t, delta)
	if !errors.Is(err, ErrBaseMissing) || !strings.Contains(err.Error(), kept.String()) {
		t.Fatalf("delta alone: got %v, want ErrBaseMissing naming the left-out manifest %s", err, kept)
	}
	if w := r.writes(0); len(w) != 0 {
		t.Errorf("delta alone pushed %v", w)
	}

	r = newDeltaRelocation(t)
	if _, err := r.relocate(t, base); err != nil {
		t.Fatal(err)
	}
	res, err := r.relocate(t, delta)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Images[0].Digest; got != v2.Root.Digest {
		t.Errorf("relocated %s, want the index %s", got, v2.Root.Digest)
	}
}
