package fixup

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/retry"
	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/relocator"
	"github.com/cnabio/cnab-relocate/resolver"
)

// testRegistry is go-containerregistry's in-process registry
// (registrytest.Memory) behind a registrytest.Proxy whose hook counts every
// request by key (requestKey) and lets a test answer any of them itself
// (setFault). Like the registry it fronts, it has no cross-repository
// mounts (a mount request opens an upload), so transfers can be counted;
// its blobs are shared by all repositories. Upload bodies are taken whole
// by the hook before the registry sees them (see hook).
type testRegistry struct {
	// Host is "127.0.0.1:PORT", the proxy's.
	Host string
	// direct talks to the registry itself: what it reads and seeds is not
	// counted.
	direct *registrytest.Client

	mu     sync.Mutex
	counts map[string]int
	// fault, when set, sees every request first with its key and the
	// number of times that key was seen (1 for the first); it returns true
	// when it answered the request itself.
	fault func(w http.ResponseWriter, r *http.Request, key string, n int) bool
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	mem := registrytest.StartMemory(false)
	t.Cleanup(mem.Close)
	proxy := registrytest.NewProxyURL(mem.URL, nil, registrytest.ProxyOptions{})
	t.Cleanup(proxy.Close) // before the registry: cleanups run last first
	s := &testRegistry{Host: proxy.Host, direct: mem.Client(), counts: map[string]int{}}
	proxy.SetHook(s.hook)
	return s
}

// setFault installs f as the registry's fault hook.
func (s *testRegistry) setFault(f func(w http.ResponseWriter, r *http.Request, key string, n int) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// count returns how many requests with key arrived.
func (s *testRegistry) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[key]
}

// countWhere returns how many requests arrived whose key has f true.
func (s *testRegistry) countWhere(f func(key string) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, c := range s.counts {
		if f(k) {
			n += c
		}
	}
	return n
}

func (s *testRegistry) hook(w http.ResponseWriter, r *http.Request) bool {
	key := requestKey(r)
	s.mu.Lock()
	s.counts[key]++
	n := s.counts[key]
	fault := s.fault
	s.mu.Unlock()
	if fault != nil && fault(w, r, key, n) {
		return true
	}
	if strings.HasPrefix(key, "PUT blob ") {
		// go-containerregistry's registry reads an upload's body under the
		// lock of all uploads: one upload still streaming from a held
		// source would stall every other. Take the body whole first, as a
		// registry that stages uploads does, then pass it on.
		data, err := io.ReadAll(r.Body)
		if err != nil {
			return true // the client went away: nothing to store
		}
		if len(data) > 0 && digest.FromBytes(data).String() != r.URL.Query().Get("digest") {
			s.mu.Lock()
			s.counts["PUT blob body mismatch"]++ // a whole body of other content arrived
			s.mu.Unlock()
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(data)), int64(len(data))
	}
	return false
}

func (s *testRegistry) hasBlob(d digest.Digest) bool {
	ok, err := s.direct.BlobExists(context.Background(), "any", d) // blobs are shared
	return err == nil && ok
}

// storedManifest is a manifest as the registry serves it.
type storedManifest struct {
	mediaType string
	data      []byte
}

func (s *testRegistry) manifest(repo, ref string) (storedManifest, bool) {
	data, desc, err := s.direct.GetManifest(context.Background(), repo, ref)
	if err != nil {
		return storedManifest{}, false
	}
	return storedManifest{mediaType: desc.MediaType, data: data}, true
}

// repos lists the repositories that hold a manifest.
func (s *testRegistry) repos(t *testing.T) []string {
	t.Helper()
	r, err := s.direct.Catalog(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var (
	keyManifestPath = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)
	keyBlobPath     = regexp.MustCompile(`^/v2/(.+)/blobs/([a-z0-9]+:[a-f0-9]+)$`)
	keyUploadsPath  = regexp.MustCompile(`^/v2/(.+)/blobs/uploads/?$`)
	keyUploadPath   = regexp.MustCompile(`^/v2/(.+)/blobs/uploads/([^/]+)$`)
)

// requestKey names a request for counting and faults: "GET blob
// sha256:...", "PUT blob sha256:..." (the upload's completion), "POST
// upload", "HEAD manifest REF", "PUT manifest REF", "GET /v2/"; others are
// "METHOD PATH".
func requestKey(r *http.Request) string {
	p := r.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		return r.Method + " /v2/"
	case keyUploadsPath.MatchString(p):
		return r.Method + " upload"
	case keyUploadPath.MatchString(p):
		return r.Method + " blob " + r.URL.Query().Get("digest")
	case keyBlobPath.MatchString(p):
		return r.Method + " blob " + keyBlobPath.FindStringSubmatch(p)[2]
	case keyManifestPath.MatchString(p):
		return r.Method + " manifest " + keyManifestPath.FindStringSubmatch(p)[2]
	}
	return r.Method + " " + p
}

// writeRegistryError answers with status and a registry error body.
func writeRegistryError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"injected by the test"}]}`, code)
}

// seededImage is an image seeded into a testRegistry.
type seededImage struct {
	repo, tag string
	root      ocispec.Descriptor
	manifest  []byte // the root's bytes
	config    ocispec.Descriptor
	layers    []ocispec.Descriptor
}

// blobs returns the config and the layers.
func (i seededImage) blobs() []ocispec.Descriptor {
	return append([]ocispec.Descriptor{i.config}, i.layers...)
}

// seedLayer is the content of layer i of an image seeded with seed.
func seedLayer(seed byte, i, n int) []byte {
	data := make([]byte, n)
	for j := range data {
		data[j] = byte(j*int(seed+1)+i) ^ byte(j>>8)
	}
	return data
}

// seedImage stores a Docker schema 2 image with layers of the given sizes
// (content derived from seed) under repo:tag, past the proxy.
func (s *testRegistry) seedImage(t *testing.T, repo, tag string, seed byte, sizes ...int) seededImage {
	t.Helper()
	ctx := context.Background()
	img := seededImage{repo: repo, tag: tag}
	put := func(mediaType string, data []byte) ocispec.Descriptor {
		d, err := s.direct.PushBlob(ctx, repo, data)
		if err != nil {
			t.Fatal(err)
		}
		d.MediaType = mediaType
		return d
	}
	img.config = put(images.MediaTypeDockerSchema2Config, []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","seed":%d}`, seed)))
	for i, n := range sizes {
		img.layers = append(img.layers, put(images.MediaTypeDockerSchema2LayerGzip, seedLayer(seed, i, n)))
	}
	data, _ := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: images.MediaTypeDockerSchema2Manifest,
		Config:    img.config,
		Layers:    img.layers,
	})
	img.manifest = data
	root, err := s.direct.PushManifest(ctx, repo, tag, images.MediaTypeDockerSchema2Manifest, data)
	if err != nil {
		t.Fatal(err)
	}
	img.root = root
	return img
}

// faultReset answers by resetting the connection (TCP RST) after writing or
// reading n bytes of the body: for a GET, n bytes of data; for a PUT, after
// reading n bytes of the request body.
func faultReset(w http.ResponseWriter, r *http.Request, status int, data []byte, n int) {
	if r.Method == http.MethodGet {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(status)
		w.Write(data[:n])
		http.NewResponseController(w).Flush()
	} else {
		io.CopyN(io.Discard, r.Body, int64(n))
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	conn.(*net.TCPConn).SetLinger(0)
	conn.Close()
}

// relocateImages relocates the images of src into dst/team with a fresh
// resolver, retries for the engine (Options.Retries) and transportRetries
// for the resolver (resolver.Options.Retries; negative: no retrying
// transport at all), and returns the result and the error.
func relocateImages(t *testing.T, src, dst *testRegistry, retries, transportRetries int, imgs ...seededImage) (*Result, error) {
	t.Helper()
	return relocateImagesWith(t, nil, src, dst, retries, transportRetries, 4, imgs...)
}

// relocateImagesClock is relocateImages with its waits on clock.
func relocateImagesClock(t *testing.T, clock retry.Clock, src, dst *testRegistry, retries, transportRetries int, imgs ...seededImage) (*Result, error) {
	t.Helper()
	return relocateImagesWith(t, clock, src, dst, retries, transportRetries, 4, imgs...)
}

// relocateImagesJobs relocates with jobs at once, and no retries.
func relocateImagesJobs(t *testing.T, src, dst *testRegistry, jobs int, imgs ...seededImage) (*Result, error) {
	t.Helper()
	return relocateImagesWith(t, nil, src, dst, -1, -1, jobs, imgs...)
}

func relocateImagesWith(t *testing.T, clock retry.Clock, src, dst *testRegistry, retries, transportRetries, jobs int, imgs ...seededImage) (*Result, error) {
	t.Helper()
	var inv []any
	for _, img := range imgs {
		inv = append(inv, map[string]any{"image": src.Host + "/" + img.repo + ":" + img.tag})
	}
	return relocateInv(t, clock, dst, retries, transportRetries, jobs, inv)
}

// relocateInv relocates a bundle with the invocation images inv (as
// bundle.json has them) into dst/team; see relocateImages. Its waits
// (backoff, Retry-After) are on clock; nil: an automatic fake clock, so
// that none takes real time.
func relocateInv(t *testing.T, clock retry.Clock, dst *testRegistry, retries, transportRetries, jobs int, inv []any) (*Result, error) {
	t.Helper()
	doc, _ := json.Marshal(map[string]any{"name": "seeded", "version": "1.0.0", "invocationImages": inv})
	b, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	m, err := relocator.New(relocator.OneToOne, dst.Host+"/team")
	if err != nil {
		t.Fatal(err)
	}
	tracker := docker.NewInMemoryTracker()
	res, err := resolver.New(resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-", Tracker: tracker, Retries: retriesOpt(transportRetries)})
	if err != nil {
		t.Fatal(err)
	}
	if clock == nil {
		clock = retry.NewFakeClock(true)
	}
	ctx, cancel := context.WithTimeout(retry.WithClock(context.Background(), clock), 30*time.Second)
	defer cancel()
	return Relocate(ctx, b, Options{Mapping: m, ClientOptions: ClientOptions{Resolver: res, Retries: retriesOpt(retries), Jobs: jobs}})
}

// targetRepoOf returns the repository path img was relocated to.
func targetRepoOf(t *testing.T, r *Result, img seededImage) string {
	t.Helper()
	if r != nil {
		for _, i := range r.Images {
			if strings.HasSuffix(i.Source, "/"+img.repo+":"+img.tag) && i.Target != "" {
				named, err := reference.ParseNormalizedNamed(i.Target)
				if err != nil {
					t.Fatal(err)
				}
				return reference.Path(named)
			}
		}
	}
	t.Fatalf("%s:%s has no target in the result", img.repo, img.tag)
	return ""
}
func ptr[T any](v T) *T { return &v }

// retriesOpt is the tables' shorthand for a Retries option: 0 is the
// default, a negative number none.
func retriesOpt(n int) *int {
	if n == 0 {
		return nil
	}
	return ptr(max(n, 0))
}

func mustNamed(ref string) reference.Named {
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		panic(err)
	}
	return n
}

// The test registry's own accounting: keys, the per-key number a fault
// sees, and a whole upload body of other content than its digest.
func TestTestRegistryCounts(t *testing.T) {
	t.Parallel()
	s := newTestRegistry(t)
	var seen []int
	s.setFault(func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
		if key == "HEAD manifest 1.0" {
			seen = append(seen, n)
		}
		return false
	})
	img := s.seedImage(t, "vendor/app", "1.0", 1, 1<<10) // past the proxy: not counted
	c := registrytest.NewClient("http://"+s.Host, nil, "", "")
	ctx := context.Background()
	for range 2 {
		if _, err := c.HeadManifest(ctx, "vendor/app", "1.0"); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(seen, []int{1, 2}) {
		t.Errorf("the fault saw HEAD number %v, want [1 2]", seen)
	}
	// An upload of other bytes under the layer's digest: refused, and counted.
	post, err := http.Post("http://"+s.Host+"/v2/vendor/app/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	loc, _ := post.Request.URL.Parse(post.Header.Get("Location"))
	loc.RawQuery = "digest=" + img.layers[0].Digest.String()
	req, _ := http.NewRequest(http.MethodPut, loc.String(), strings.NewReader("other bytes"))
	put, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	put.Body.Close()
	if put.StatusCode < 400 {
		t.Errorf("a mismatched upload got %s", put.Status)
	}
	for key, want := range map[string]int{"HEAD manifest 1.0": 2, "POST upload": 1, "PUT blob " + img.layers[0].Digest.String(): 1, "PUT blob body mismatch": 1, "GET blob " + img.layers[0].Digest.String(): 0} {
		if got := s.count(key); got != want {
			t.Errorf("%s: %d, want %d", key, got, want)
		}
	}
}
