package registrytest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ProxyOptions configures a Proxy. The zero value gives a proxy that only counts.
type ProxyOptions struct {
	// Faults are the faults to inject, on a seeded schedule and by rules. The zero value injects
	// none.
	Faults FaultOptions
	// Latency is waited before each request is counted, faulted or forwarded, as a remote
	// registry's round trip would be; 0 adds none. A request whose client gives up meanwhile is
	// dropped without being counted.
	Latency time.Duration
	// PageTags, when > 0, answers tag lists in pages of at most that many
	// tags (or the client's n, if smaller), in lexical order, with a Link
	// header to the next page, as registries that paginate do, whatever
	// the target does (distribution 2.8 does not).
	PageTags int
	// LimitTags, when > 0, asks the target for tag lists in pages of at
	// most that many tags: a client's n above it (or none) is lowered to
	// it, and the registry pages with its own Link headers
	// (distribution 3 does).
	LimitTags int
}

// Proxy is a plain-HTTP reverse proxy on 127.0.0.1 in front of a registry. It counts the
// requests going through it by kind, and optionally delays every request (ProxyOptions.Latency)
// and injects faults (ProxyOptions.Faults): error statuses, 429 with Retry-After, connection
// resets in the middle of response and request bodies, delays and corrupted bytes. It streams
// bodies both ways and rewrites the target's absolute Location headers to itself, so upload
// sessions keep going through it. Credentials pass through unchanged. Its methods are safe for
// concurrent use.
type Proxy struct {
	// Host is "127.0.0.1:PORT".
	Host string
	// URL is "http://127.0.0.1:PORT".
	URL string

	target     *url.URL
	latency    time.Duration
	pageTags   int
	limitTagsN int
	srv        *http.Server
	rp         *httputil.ReverseProxy
	transport  *http.Transport
	done       chan struct{}

	mu       sync.Mutex
	counts   map[string]int
	requests []string
	uploaded atomic.Int64
	rng      *rand.Rand
	faults   FaultOptions
	used     []int // uses of each rule
	injected map[string]int
	log      []string
	hook     Hook
}

// Hook sees a request that went through a Proxy after it is counted and before any fault or
// the target: it returns true when it answered the request itself through w (which it may
// also hijack, to reset the connection), false to let it go on as it is, or with the changes it
// made to r (a wrapped body, say). Tests that need exact answers to some requests write one.
type Hook func(w http.ResponseWriter, r *http.Request) bool

// NewProxy starts a Proxy in front of target (plain HTTP or TLS, its CertPool trusted; the proxy
// itself speaks plain HTTP). It panics if it cannot listen on 127.0.0.1, as httptest.NewServer
// does. Close it when done.
func NewProxy(target *Registry, opts ProxyOptions) *Proxy {
	return NewProxyURL(target.URL, target.CertPool, opts)
}

// NewProxyURL starts a Proxy in front of the server at targetURL ("http://127.0.0.1:5000",
// "https://...": a registry, another Proxy, an httptest server), trusting pool for TLS (nil: the
// system roots). It panics if targetURL is not an http or https URL or if it cannot listen on
// 127.0.0.1, as httptest.NewServer does. Close it when done.
func NewProxyURL(targetURL string, pool *x509.CertPool, opts ProxyOptions) *Proxy {
	tu, err := url.Parse(targetURL)
	if err != nil || (tu.Scheme != "http" && tu.Scheme != "https") || tu.Host == "" {
		panic("registrytest: proxy: invalid target URL " + targetURL)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("registrytest: proxy: " + err.Error())
	}
	faults := opts.Faults
	if faults.Faults == nil {
		faults.Faults = TransientFaults
	}
	p := &Proxy{
		Host:       ln.Addr().String(),
		URL:        "http://" + ln.Addr().String(),
		target:     tu,
		latency:    opts.Latency,
		pageTags:   opts.PageTags,
		limitTagsN: opts.LimitTags,
		done:       make(chan struct{}),
		counts:     map[string]int{},
		rng:        rand.New(rand.NewPCG(faults.Seed, faults.Seed^0x9e3779b97f4a7c15)),
		faults:     faults,
		used:       make([]int, len(faults.Rules)),
		injected:   map[string]int{},
		transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        func(pr *httputil.ProxyRequest) { pr.SetURL(p.target) },
		Transport:      p.transport,
		ModifyResponse: p.rewriteLocation,
		ErrorLog:       log.New(io.Discard, "", 0),
	}
	p.srv = &http.Server{
		Handler:           http.HandlerFunc(p.serve),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() {
		defer close(p.done)
		_ = p.srv.Serve(ln)
	}()
	return p
}

// Counts returns how many requests of each kind arrived, faulted or not, keyed "METHOD KIND"
// with KIND one of: ping (/v2/), manifest, blob (/blobs/<digest>), upload (/blobs/uploads/...),
// tags, catalog, referrers, other. A PUT to an upload (the one that completes it) counts as
// "PUT blob"; a POST with ?mount= counts as "POST mount", not "POST upload".
func (p *Proxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return copyCounts(p.counts)
}

// Requests returns every request so far as "METHOD PATH?QUERY" ("METHOD PATH" without a
// query), in the order they arrived, faulted or not.
func (p *Proxy) Requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.requests...)
}

// BytesUploaded returns the request body bytes sent to blob upload URLs (POST, PATCH and PUT)
// that the proxy forwarded; what a fault swallows (FaultStatus, FaultResetRequest) is not
// counted.
func (p *Proxy) BytesUploaded() int64 { return p.uploaded.Load() }

// Injected returns how many faults of each kind were injected, keyed by Fault.String.
func (p *Proxy) Injected() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return copyCounts(p.injected)
}

// Log returns one line per injected fault, "FAULT METHOD PATH", in the order they were decided.
func (p *Proxy) Log() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.log...)
}

// Reset forgets the counts, the requests, the bytes uploaded, the injected faults and their
// log. The fault schedule goes on where it was: rules keep their uses, the random generator its
// state.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
	p.requests = nil
	p.uploaded.Store(0)
	p.injected = map[string]int{}
	p.log = nil
}

// SetHook installs h as the proxy's hook (nil: none); requests that arrive from then on see it.
func (p *Proxy) SetHook(h Hook) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hook = h
}

// Close stops the proxy, closing open connections at once: a graceful
// Shutdown would wait out connections a client dialled and never used.
func (p *Proxy) Close() {
	_ = p.srv.Close()
	<-p.done
	p.transport.CloseIdleConnections()
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	if p.latency > 0 && !wait(r.Context(), p.latency) {
		return
	}
	f, frac, ok := p.record(r)
	p.mu.Lock()
	hook := p.hook
	p.mu.Unlock()
	if hook != nil && hook(w, r) {
		return
	}
	if ok && f.applies(r) {
		p.fault(w, r, f, frac)
		return
	}
	if r.Method == http.MethodGet && tagsPath.MatchString(r.URL.Path) {
		switch {
		case p.pageTags > 0:
			p.tagPage(w, r)
			return
		case p.limitTagsN > 0:
			p.limitTags(w, r)
			return
		}
	}
	p.forward(w, r)
}

// tagPage answers a tag list request with one page (see
// ProxyOptions.PageTags), from the target's whole list.
func (p *Proxy) tagPage(w http.ResponseWriter, r *http.Request) {
	u := *p.target
	u.Path = r.URL.Path
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, u.String(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := p.transport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&list) != nil {
		w.WriteHeader(resp.StatusCode)
		return
	}
	slices.Sort(list.Tags)
	q := r.URL.Query()
	n := p.pageTags
	if m, err := strconv.Atoi(q.Get("n")); err == nil && m > 0 && m < n {
		n = m
	}
	if last := q.Get("last"); last != "" {
		list.Tags = slices.DeleteFunc(list.Tags, func(t string) bool { return t <= last })
	}
	if len(list.Tags) > n {
		list.Tags = list.Tags[:n]
		next := url.Values{"n": {strconv.Itoa(n)}, "last": {list.Tags[n-1]}}
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(list)
}

// limitTags passes a tag list request on with n at most p.limitTagsN, so
// that the registry answers it in pages, with its own Link headers.
func (p *Proxy) limitTags(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if n, err := strconv.Atoi(q.Get("n")); err != nil || n <= 0 || n > p.limitTagsN {
		q.Set("n", strconv.Itoa(p.limitTagsN))
	}
	r.URL.RawQuery = q.Encode()
	p.forward(w, r)
}

// record counts r and decides its fault, if any, returning it with the fraction used for a
// random offset.
func (p *Proxy) record(r *http.Request) (Fault, float64, bool) {
	line := r.Method + " " + r.URL.Path
	if r.URL.RawQuery != "" {
		line += "?" + r.URL.RawQuery
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[classify(r)]++
	p.requests = append(p.requests, line)
	f, ok := p.pick(r)
	if !ok {
		return Fault{}, 0, false
	}
	frac := p.rng.Float64()
	p.injected[f.String()]++
	p.log = append(p.log, f.String()+" "+r.Method+" "+r.URL.Path)
	return f, frac, true
}

// forward passes r to the target through w, counting the bytes of upload bodies.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request) {
	switch classify(r) {
	case "POST upload", "POST mount", "PATCH upload", "PUT blob":
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &countingBody{ReadCloser: r.Body, n: &p.uploaded}
		}
	}
	p.rp.ServeHTTP(w, r)
}

// rewriteLocation points the target's absolute Location headers at the proxy.
func (p *Proxy) rewriteLocation(resp *http.Response) error {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil
	}
	u, err := url.Parse(loc)
	if err != nil || !u.IsAbs() || u.Host != p.target.Host {
		return nil
	}
	u.Scheme, u.Host = "http", p.Host
	resp.Header.Set("Location", u.String())
	return nil
}

// wait waits d, or less if ctx ends first; it reports whether d passed.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func copyCounts(c map[string]int) map[string]int {
	m := make(map[string]int, len(c))
	for k, v := range c {
		m[k] = v
	}
	return m
}

var (
	manifestPath = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)
	uploadPath   = regexp.MustCompile(`^/v2/.+/blobs/uploads(/[^/]*)?$`)
	blobPath     = regexp.MustCompile(`^/v2/.+/blobs/[^/]+:[^/]+$`)
	tagsPath     = regexp.MustCompile(`^/v2/.+/tags/list$`)
	referrers    = regexp.MustCompile(`^/v2/.+/referrers/[^/]+$`)
)

// classify returns the Counts key of a request.
func classify(r *http.Request) string {
	path := r.URL.Path
	kind := "other"
	switch {
	case path == "/v2/" || path == "/v2":
		kind = "ping"
	case path == "/v2/_catalog":
		kind = "catalog"
	case uploadPath.MatchString(path):
		kind = "upload"
		switch {
		case r.Method == http.MethodPut:
			kind = "blob"
		case r.Method == http.MethodPost && r.URL.Query().Has("mount"):
			kind = "mount"
		}
	case blobPath.MatchString(path):
		kind = "blob"
	case manifestPath.MatchString(path):
		kind = "manifest"
	case tagsPath.MatchString(path):
		kind = "tags"
	case referrers.MatchString(path):
		kind = "referrers"
	}
	return r.Method + " " + kind
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
