package fixup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
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
	"github.com/cnabio/cnab-relocate/relocator"
	"github.com/cnabio/cnab-relocate/resolver"
)

// regStub is a minimal in-memory registry (the subset of the distribution API
// that containerd's resolver, fetcher and pusher use), on 127.0.0.1, that
// counts requests and lets a test answer any of them itself. No
// cross-repository mounts: every blob is uploaded, so transfers can be
// counted.
type regStub struct {
	srv *httptest.Server
	// Host is "127.0.0.1:PORT".
	Host string

	mu        sync.Mutex
	blobs     map[digest.Digest][]byte
	manifests map[string]stubManifest // "repo:ref" (tag or digest)
	uploads   map[string]bool         // open upload sessions
	counts    map[string]int
	// fault, when set, sees every request first with its key and the
	// number of times that key was seen (1 for the first); it returns true
	// when it answered the request itself.
	fault func(w http.ResponseWriter, r *http.Request, key string, n int) bool
}

type stubManifest struct {
	mediaType string
	data      []byte
}

func newRegStub(t *testing.T) *regStub {
	t.Helper()
	s := &regStub{
		blobs:     map[digest.Digest][]byte{},
		manifests: map[string]stubManifest{},
		uploads:   map[string]bool{},
		counts:    map[string]int{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.srv.Config.ErrorLog = nil
	t.Cleanup(s.srv.Close)
	s.Host = s.srv.Listener.Addr().String()
	return s
}

// setFault installs f as the stub's fault hook.
func (s *regStub) setFault(f func(w http.ResponseWriter, r *http.Request, key string, n int) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// count returns how many requests with key arrived.
func (s *regStub) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[key]
}

func (s *regStub) hasBlob(d digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.blobs[d]
	return ok
}

func (s *regStub) manifest(repo, ref string) (stubManifest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.manifests[repo+":"+ref]
	return m, ok
}

// manifestCount is the number of manifests stored under any name.
func (s *regStub) manifestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.manifests)
}

var (
	stubManifestPath = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)
	stubBlobPath     = regexp.MustCompile(`^/v2/(.+)/blobs/([a-z0-9]+:[a-f0-9]+)$`)
	stubUploadsPath  = regexp.MustCompile(`^/v2/(.+)/blobs/uploads/?$`)
	stubUploadPath   = regexp.MustCompile(`^/v2/(.+)/blobs/uploads/([a-f0-9]+)$`)
)

// key names a request for counting and faults: "GET blob sha256:...",
// "PUT blob sha256:..." (the upload's completion), "POST upload",
// "HEAD manifest REF", "PUT manifest REF", "GET /v2/".
func stubKey(r *http.Request) string {
	p := r.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		return r.Method + " /v2/"
	case stubUploadsPath.MatchString(p):
		return r.Method + " upload"
	case stubUploadPath.MatchString(p):
		return r.Method + " blob " + r.URL.Query().Get("digest")
	case stubBlobPath.MatchString(p):
		return r.Method + " blob " + stubBlobPath.FindStringSubmatch(p)[2]
	case stubManifestPath.MatchString(p):
		return r.Method + " manifest " + stubManifestPath.FindStringSubmatch(p)[2]
	}
	return r.Method + " " + p
}

func stubError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"stub"}]}`, code)
}

func (s *regStub) serve(w http.ResponseWriter, r *http.Request) {
	key := stubKey(r)
	s.mu.Lock()
	s.counts[key]++
	n := s.counts[key]
	fault := s.fault
	s.mu.Unlock()
	if fault != nil && fault(w, r, key, n) {
		return
	}
	p := r.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		w.WriteHeader(http.StatusOK)
	case stubManifestPath.MatchString(p):
		m := stubManifestPath.FindStringSubmatch(p)
		s.serveManifest(w, r, m[1], m[2])
	case stubUploadsPath.MatchString(p) && r.Method == http.MethodPost:
		id := stubRandomID()
		s.mu.Lock()
		s.uploads[id] = true
		s.mu.Unlock()
		w.Header().Set("Location", "/v2/"+stubUploadsPath.FindStringSubmatch(p)[1]+"/blobs/uploads/"+id)
		w.Header().Set("Docker-Upload-UUID", id)
		w.WriteHeader(http.StatusAccepted)
	case stubUploadPath.MatchString(p) && r.Method == http.MethodPut:
		id := stubUploadPath.FindStringSubmatch(p)[2]
		s.mu.Lock()
		open := s.uploads[id]
		s.mu.Unlock()
		if !open {
			stubError(w, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
			return
		}
		want, err := digest.Parse(r.URL.Query().Get("digest"))
		if err != nil {
			stubError(w, http.StatusBadRequest, "DIGEST_INVALID")
			return
		}
		data, err := io.ReadAll(r.Body)
		if err != nil {
			return // broken upload: nothing stored
		}
		if digest.FromBytes(data) != want {
			s.mu.Lock()
			s.counts["PUT blob body mismatch"]++ // a whole body of the wrong content arrived
			s.mu.Unlock()
			stubError(w, http.StatusBadRequest, "DIGEST_INVALID")
			return
		}
		s.mu.Lock()
		delete(s.uploads, id)
		s.blobs[want] = data
		s.mu.Unlock()
		w.Header().Set("Docker-Content-Digest", want.String())
		w.WriteHeader(http.StatusCreated)
	case stubBlobPath.MatchString(p) && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		d := digest.Digest(stubBlobPath.FindStringSubmatch(p)[2])
		s.mu.Lock()
		data, ok := s.blobs[d]
		s.mu.Unlock()
		if !ok {
			stubError(w, http.StatusNotFound, "BLOB_UNKNOWN")
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Docker-Content-Digest", d.String())
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(data)
		}
	default:
		stubError(w, http.StatusMethodNotAllowed, "UNSUPPORTED")
	}
}

func (s *regStub) serveManifest(w http.ResponseWriter, r *http.Request, repo, ref string) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		m, ok := s.manifest(repo, ref)
		if !ok {
			stubError(w, http.StatusNotFound, "MANIFEST_UNKNOWN")
			return
		}
		w.Header().Set("Content-Type", m.mediaType)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(m.data).String())
		w.Header().Set("Content-Length", strconv.Itoa(len(m.data)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(m.data)
		}
	case http.MethodPut:
		data, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		d := digest.FromBytes(data)
		if strings.Contains(ref, ":") && digest.Digest(ref) != d {
			stubError(w, http.StatusBadRequest, "DIGEST_INVALID")
			return
		}
		var man ocispec.Manifest
		if err := json.Unmarshal(data, &man); err != nil {
			stubError(w, http.StatusBadRequest, "MANIFEST_INVALID")
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		var blobs []ocispec.Descriptor
		if man.Config.Digest != "" { // an index has no config and no layers
			blobs = append([]ocispec.Descriptor{man.Config}, man.Layers...)
		}
		for _, b := range blobs {
			if _, ok := s.blobs[b.Digest]; !ok {
				stubError(w, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN")
				return
			}
		}
		m := stubManifest{mediaType: r.Header.Get("Content-Type"), data: data}
		s.manifests[repo+":"+ref] = m
		s.manifests[repo+":"+d.String()] = m
		w.Header().Set("Docker-Content-Digest", d.String())
		w.WriteHeader(http.StatusCreated)
	default:
		stubError(w, http.StatusMethodNotAllowed, "UNSUPPORTED")
	}
}

func stubRandomID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// stubImage is an image seeded into a stub.
type stubImage struct {
	repo, tag string
	root      ocispec.Descriptor
	manifest  []byte // the root's bytes
	config    ocispec.Descriptor
	layers    []ocispec.Descriptor
}

// blobs returns the config and the layers.
func (i stubImage) blobs() []ocispec.Descriptor {
	return append([]ocispec.Descriptor{i.config}, i.layers...)
}

// seedImage stores a Docker schema 2 image with layers of the given sizes
// (content derived from seed) under repo:tag.
func (s *regStub) seedImage(repo, tag string, seed byte, sizes ...int) stubImage {
	img := stubImage{repo: repo, tag: tag}
	put := func(mediaType string, data []byte) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
		s.mu.Lock()
		s.blobs[d.Digest] = data
		s.mu.Unlock()
		return d
	}
	img.config = put(images.MediaTypeDockerSchema2Config, []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","seed":%d}`, seed)))
	for i, n := range sizes {
		data := make([]byte, n)
		for j := range data {
			data[j] = byte(j*int(seed+1)+i) ^ byte(j>>8)
		}
		img.layers = append(img.layers, put(images.MediaTypeDockerSchema2LayerGzip, data))
	}
	data, _ := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: images.MediaTypeDockerSchema2Manifest,
		Config:    img.config,
		Layers:    img.layers,
	})
	img.manifest = data
	img.root = ocispec.Descriptor{MediaType: images.MediaTypeDockerSchema2Manifest, Digest: digest.FromBytes(data), Size: int64(len(data))}
	m := stubManifest{mediaType: images.MediaTypeDockerSchema2Manifest, data: data}
	s.mu.Lock()
	s.manifests[repo+":"+tag] = m
	s.manifests[repo+":"+img.root.Digest.String()] = m
	s.mu.Unlock()
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

// stubRelocate relocates the images of src into dst/team with a fresh
// resolver, retries for the engine (Options.Retries) and transportRetries
// for the resolver (resolver.Options.Retries; negative: no retrying
// transport at all), and returns the result and the error.
func stubRelocate(t *testing.T, src, dst *regStub, retries, transportRetries int, imgs ...stubImage) (*Result, error) {
	t.Helper()
	return stubRelocateWith(t, nil, src, dst, retries, transportRetries, 4, imgs...)
}

// stubRelocateClock is stubRelocate with its waits on clock.
func stubRelocateClock(t *testing.T, clock retry.Clock, src, dst *regStub, retries, transportRetries int, imgs ...stubImage) (*Result, error) {
	t.Helper()
	return stubRelocateWith(t, clock, src, dst, retries, transportRetries, 4, imgs...)
}

// stubRelocateJobs relocates with jobs at once, and no retries.
func stubRelocateJobs(t *testing.T, src, dst *regStub, jobs int, imgs ...stubImage) (*Result, error) {
	t.Helper()
	return stubRelocateWith(t, nil, src, dst, -1, -1, jobs, imgs...)
}

func stubRelocateWith(t *testing.T, clock retry.Clock, src, dst *regStub, retries, transportRetries, jobs int, imgs ...stubImage) (*Result, error) {
	t.Helper()
	var inv []any
	for _, img := range imgs {
		inv = append(inv, map[string]any{"image": src.Host + "/" + img.repo + ":" + img.tag})
	}
	return stubRelocateInv(t, clock, dst, retries, transportRetries, jobs, inv)
}

// stubRelocateInv relocates a bundle with the invocation images inv (as
// bundle.json has them) into dst/team; see stubRelocate. Its waits
// (backoff, Retry-After) are on clock; nil: an automatic fake clock, so
// that none takes real time.
func stubRelocateInv(t *testing.T, clock retry.Clock, dst *regStub, retries, transportRetries, jobs int, inv []any) (*Result, error) {
	t.Helper()
	doc, _ := json.Marshal(map[string]any{"name": "stub", "version": "1.0.0", "invocationImages": inv})
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

// stubTargetRepo returns the repository path img was relocated to.
func stubTargetRepo(t *testing.T, r *Result, img stubImage) string {
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
