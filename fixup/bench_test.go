package fixup

// Benchmarks of the engine's CPU work, without a network: planning a big
// bundle, walking content graphs, and whole relocations against an
// in-memory registry (so that a regression in per-image or per-blob
// overhead shows). `make bench` runs them after the end-to-end comparison
// with crane (internal/cmd/bench).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/relocator"
)

// benchBundleJSON returns a bundle.json with n relocatable images (the
// first an invocation image) on host, each with a tag and a contentDigest,
// and one image of another type.
func benchBundleJSON(n int, host string) []byte {
	entry := func(i int) map[string]any {
		return map[string]any{
			"imageType":     []string{"docker", "oci"}[i%2],
			"image":         fmt.Sprintf("%s/team-%d/app-%03d:1.%d", host, i%7, i, i%5),
			"contentDigest": digest.FromString(fmt.Sprint("image ", i)).String(),
		}
	}
	images := map[string]any{"disk": map[string]any{"imageType": "vm", "image": "https://images.example/disk.qcow2"}}
	for i := 1; i < n; i++ {
		images[fmt.Sprintf("app-%03d", i)] = entry(i)
	}
	doc := map[string]any{
		"schemaVersion":    "v1.0.0",
		"name":             "bench",
		"version":          "1.0.0",
		"invocationImages": []any{entry(0)},
		"images":           images,
		"custom":           map[string]any{"io.example": map[string]any{"keep": true}},
	}
	data, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return data
}

// BenchmarkPlan maps a 100-image bundle (NewPlan: every target name and the
// collision check), for each kind of mapping.
func BenchmarkPlan(b *testing.B) {
	data := benchBundleJSON(100, "registry.example.com")
	bun, err := Parse(data)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		kind relocator.Kind
		repo string
	}{
		{relocator.OneToOne, "registry.corp/team"},
		{relocator.Prefix, "registry.corp/team"},
		{relocator.ManyToOne, "registry.corp/team/app"},
	} {
		b.Run(string(tc.kind), func(b *testing.B) {
			m, err := relocator.New(tc.kind, tc.repo)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				p, err := NewPlan(bun, m)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Entries) != 100 {
					b.Fatalf("%d entries, want 100", len(p.Entries))
				}
			}
		})
	}
}

// BenchmarkParse parses the same 100-image bundle.
func BenchmarkParse(b *testing.B) {
	data := benchBundleJSON(100, "registry.example.com")
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStore is content by digest, safe for concurrent use.
type benchStore struct {
	mu   sync.Mutex
	data map[digest.Digest][]byte
}

func newBenchStore() *benchStore { return &benchStore{data: map[digest.Digest][]byte{}} }

func (s *benchStore) put(mediaType string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	s.mu.Lock()
	s.data[d] = data
	s.mu.Unlock()
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

func (s *benchStore) putJSON(mediaType string, v any) ocispec.Descriptor {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return s.put(mediaType, data)
}

// Fetch makes benchStore a remotes.Fetcher.
func (s *benchStore) Fetch(_ context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	s.mu.Lock()
	data, ok := s.data[desc.Digest]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%s: %w", desc.Digest, errdefs.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// benchImage stores an image: per platform a config and layers (the shared
// ones first, then its own of layerSize bytes), and an index (OCI) or a
// manifest list (Docker) when there is more than one platform.
func benchImage(s *benchStore, seed string, platforms, layers, layerSize int, oci bool, shared ...ocispec.Descriptor) ocispec.Descriptor {
	manifestType, indexType, configType, layerType := images.MediaTypeDockerSchema2Manifest, images.MediaTypeDockerSchema2ManifestList, images.MediaTypeDockerSchema2Config, images.MediaTypeDockerSchema2LayerGzip
	if oci {
		manifestType, indexType, configType, layerType = ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageLayerGzip
	}
	var manifests []ocispec.Descriptor
	for p := range platforms {
		ls := append([]ocispec.Descriptor(nil), shared...)
		for l := range layers {
			data := bytes.Repeat([]byte(fmt.Sprintf("%s/%d/%d;", seed, p, l)), layerSize/8+1)[:layerSize]
			ls = append(ls, s.put(layerType, data))
		}
		platform := ocispec.Platform{OS: "linux", Architecture: []string{"amd64", "arm64", "s390x", "ppc64le"}[p%4], Variant: fmt.Sprint(p / 4)}
		cfg := s.putJSON(configType, ocispec.Image{Platform: platform, RootFS: ocispec.RootFS{Type: "layers"}, Config: ocispec.ImageConfig{Labels: map[string]string{"seed": seed}}})
		m := s.putJSON(manifestType, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: manifestType, Config: cfg, Layers: ls})
		m.Platform = &platform
		manifests = append(manifests, m)
	}
	if platforms == 1 {
		root := manifests[0]
		root.Platform = nil
		return root
	}
	return s.putJSON(indexType, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: indexType, Manifests: manifests})
}

// BenchmarkWalk walks content graphs from an in-memory fetcher: the
// manifests are fetched, verified and parsed; blobs are listed, not read.
func BenchmarkWalk(b *testing.B) {
	s := newBenchStore()
	base := s.put(ocispec.MediaTypeImageLayerGzip, []byte("shared base layer"))
	for _, tc := range []struct {
		name              string
		platforms, layers int
	}{
		{"manifest-10-layers", 1, 10},
		{"index-2x10-layers", 2, 10},
		{"index-16x50-layers", 16, 50},
	} {
		root := benchImage(s, tc.name, tc.platforms, tc.layers, 64, true, base)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				g, err := walk(context.Background(), s, root)
				if err != nil {
					b.Fatal(err)
				}
				if want := tc.platforms*(tc.layers+1) + 1; len(g.blobs) != want {
					b.Fatalf("%d blobs, want %d", len(g.blobs), want)
				}
			}
		})
	}
}

// benchRegistry is an in-memory registry for the engine: a
// remotes.Resolver whose fetchers read benchStore (the source) and whose
// pushers record what lands in each target repository. Pushing a blob or
// manifest that a repository already has answers ErrAlreadyExists, as
// containerd's pusher does after its HEAD; so does a mount from a
// repository of the same registry that has the blob.
type benchRegistry struct {
	src *benchStore
	// srcTags maps source host/repo:tag to root descriptors.
	srcTags map[string]ocispec.Descriptor

	mu    sync.Mutex
	repos map[string]map[digest.Digest]bool // target "host/repo" -> content
	tags  map[string]ocispec.Descriptor     // target "host/repo:tag" -> root
	calls int                               // target Resolve and Writer calls (a HEAD each)
}

func (r *benchRegistry) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.repos = map[string]map[digest.Digest]bool{}
	r.tags = map[string]ocispec.Descriptor{}
	r.calls = 0
}

func (r *benchRegistry) Resolve(_ context.Context, ref string) (string, ocispec.Descriptor, error) {
	if d, ok := r.srcTags[ref]; ok {
		return ref, d, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if d, ok := r.tags[ref]; ok {
		return ref, d, nil
	}
	if name, dg, ok := strings.Cut(ref, "@"); ok {
		if r.repos[name][digest.Digest(dg)] {
			return ref, ocispec.Descriptor{Digest: digest.Digest(dg)}, nil
		}
	}
	return "", ocispec.Descriptor{}, fmt.Errorf("%s: %w", ref, errdefs.ErrNotFound)
}

func (r *benchRegistry) Fetcher(context.Context, string) (remotes.Fetcher, error) {
	return r.src, nil
}

// Pusher takes host/repo[:tag]@digest, as the engine gives it (parsed
// without the reference regexps, to keep the fake's cost out of the
// measurement).
func (r *benchRegistry) Pusher(_ context.Context, ref string) (remotes.Pusher, error) {
	name, dg, _ := strings.Cut(ref, "@")
	p := &benchPusher{r: r, repo: name, root: digest.Digest(dg)}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		p.repo, p.tag = name[:i], name[i+1:]
	}
	p.host, _, _ = strings.Cut(p.repo, "/")
	return p, nil
}

type benchPusher struct {
	r    *benchRegistry
	host string
	repo string
	tag  string
	root digest.Digest
}

func (p *benchPusher) Push(ctx context.Context, desc ocispec.Descriptor) (content.Writer, error) {
	return p.Writer(ctx, content.WithDescriptor(desc), content.WithRef(desc.Digest.String()))
}

func (p *benchPusher) Writer(_ context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	var wo content.WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return nil, err
		}
	}
	r := p.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.repos[p.repo][wo.Desc.Digest] {
		return nil, fmt.Errorf("%s: %w", wo.Desc.Digest, errdefs.ErrAlreadyExists)
	}
	for k, v := range wo.Desc.Annotations {
		if !strings.HasPrefix(k, mountLabel) {
			continue
		}
		for _, from := range strings.Split(v, ",") {
			if r.repos[p.host+"/"+from][wo.Desc.Digest] {
				r.addLocked(p.repo, wo.Desc.Digest)
				return nil, fmt.Errorf("mounted %s: %w", wo.Desc.Digest, errdefs.ErrAlreadyExists)
			}
		}
	}
	return &benchWriter{p: p, desc: wo.Desc, h: digest.Canonical.Digester()}, nil
}

func (r *benchRegistry) addLocked(repo string, d digest.Digest) {
	if r.repos[repo] == nil {
		r.repos[repo] = map[digest.Digest]bool{}
	}
	r.repos[repo][d] = true
}

// benchWriter digests what it is given and records the content on Commit.
type benchWriter struct {
	p    *benchPusher
	desc ocispec.Descriptor
	h    digest.Digester
	n    int64
}

func (w *benchWriter) Write(b []byte) (int, error) {
	w.n += int64(len(b))
	return w.h.Hash().Write(b)
}

func (w *benchWriter) Close() error          { return nil }
func (w *benchWriter) Digest() digest.Digest { return w.h.Digest() }
func (w *benchWriter) Truncate(n int64) error {
	return fmt.Errorf("truncate: %w", errdefs.ErrNotImplemented)
}
func (w *benchWriter) Status() (content.Status, error) {
	return content.Status{Ref: w.desc.Digest.String(), Offset: w.n, Total: w.desc.Size}, nil
}

func (w *benchWriter) Commit(_ context.Context, size int64, expected digest.Digest, _ ...content.Opt) error {
	if w.n != size || w.h.Digest() != expected {
		return fmt.Errorf("commit %s: got %d bytes with digest %s: %w", expected, w.n, w.h.Digest(), errdefs.ErrFailedPrecondition)
	}
	r := w.p.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addLocked(w.p.repo, expected)
	if w.p.tag != "" && expected == w.p.root {
		r.tags[w.p.repo+":"+w.p.tag] = ocispec.Descriptor{MediaType: w.desc.MediaType, Digest: expected, Size: size}
	}
	return nil
}

// benchScenario stores n images on source.example, like internal/cmd/bench's
// bundle scaled down: a shared base layer in every image, multiarch of them
// with two platforms, three small layers per platform. It returns the
// registry and the bundle.
func benchScenario(b *testing.B, n, multiarch, layerSize int) (*benchRegistry, *Bundle) {
	s := newBenchStore()
	r := &benchRegistry{src: s, srcTags: map[string]ocispec.Descriptor{}}
	r.reset()
	base := s.put(images.MediaTypeDockerSchema2LayerGzip, bytes.Repeat([]byte("base"), layerSize/4))
	entry := func(i int) map[string]any {
		platforms := 1
		if i >= 1 && i <= multiarch {
			platforms = 2
		}
		root := benchImage(s, fmt.Sprint("image ", i), platforms, 3, layerSize, i%2 == 1, base)
		ref := fmt.Sprintf("source.example/vendor/app-%02d:1.0", i)
		r.srcTags[ref] = root
		return map[string]any{"image": ref, "contentDigest": root.Digest.String()}
	}
	images := map[string]any{}
	inv := entry(0)
	for i := 1; i < n; i++ {
		images[fmt.Sprintf("app-%02d", i)] = entry(i)
	}
	data, err := json.Marshal(map[string]any{"schemaVersion": "v1.0.0", "name": "bench", "version": "1.0.0", "invocationImages": []any{inv}, "images": images})
	if err != nil {
		b.Fatal(err)
	}
	bun, err := Parse(data)
	if err != nil {
		b.Fatal(err)
	}
	return r, bun
}

// BenchmarkRelocate runs the whole engine (plan, blobs, manifests) on a
// 12-image bundle against an in-memory registry: per-image and per-blob
// overhead, not bytes (layers are 4 KiB). cold starts from an empty target
// each time; warm relocates into a target that has everything.
func BenchmarkRelocate(b *testing.B) {
	const n = 12
	r, bun := benchScenario(b, n, 3, 4<<10)
	m, err := relocator.New(relocator.OneToOne, "target.example/team")
	if err != nil {
		b.Fatal(err)
	}
	opts := Options{Mapping: m, ClientOptions: ClientOptions{Resolver: r}}
	relocate := func(b *testing.B) *Result {
		res, err := Relocate(context.Background(), bun, opts)
		if err != nil {
			b.Fatal(err)
		}
		return res
	}
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			r.reset()
			b.StartTimer()
			relocate(b)
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "images/s")
		b.ReportMetric(float64(r.calls), "target-calls/op") // the last run's
	})
	b.Run("warm", func(b *testing.B) {
		r.reset()
		relocate(b)
		r.calls = 0
		b.ReportAllocs()
		for b.Loop() {
			res := relocate(b)
			if !res.Images[0].Present {
				b.Fatal("warm run: the image is not reported present")
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "images/s")
		b.ReportMetric(float64(r.calls)/float64(b.N), "target-calls/op")
	})
}
