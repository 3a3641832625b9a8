package registrytest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// FaultKind is a kind of fault a FaultProxy injects.
type FaultKind string

// Fault kinds.
const (
	// FaultStatus answers Fault.Status (default 503) with an error body and, if Fault.RetryAfter
	// is set, a Retry-After header, without forwarding the request.
	FaultStatus FaultKind = "status"
	// FaultResetResponse forwards the request, then resets the connection (TCP RST) after
	// Fault.After bytes of the response body. Only GET requests with a 200 or 206 response are
	// affected; others pass.
	FaultResetResponse FaultKind = "reset-response"
	// FaultCloseResponse is FaultResetResponse with a clean close (FIN) instead of a reset: the
	// client sees the body end early (an unexpected EOF).
	FaultCloseResponse FaultKind = "close-response"
	// FaultResetRequest reads Fault.After bytes of the request body, then resets the connection.
	// The request is not forwarded. Only requests with a body (blob and manifest PUT, PATCH)
	// are affected; others pass.
	FaultResetRequest FaultKind = "reset-request"
	// FaultDelay waits Fault.Delay (default 200ms), then forwards the request.
	FaultDelay FaultKind = "delay"
	// FaultCorrupt forwards the request and flips one byte of a 200 response body, at offset
	// Fault.After: same length, wrong content.
	FaultCorrupt FaultKind = "corrupt"
)

// Fault is what a FaultProxy does to one request.
type Fault struct {
	Kind FaultKind
	// Status is the status FaultStatus answers. Default 503.
	Status int
	// RetryAfter is the Retry-After header FaultStatus sends ("0", "1"); "" sends none.
	RetryAfter string
	// After is the body offset at which the reset, close or corruption happens. If < 0, a
	// random offset within the body (drawn from the proxy's seeded generator) is used.
	After int64
	// Delay is how long FaultDelay waits. Default 200ms.
	Delay time.Duration
}

// String names the fault as Injected counts it: "status 503", "reset-response", ...
func (f Fault) String() string {
	if f.Kind == FaultStatus {
		return fmt.Sprintf("status %d", f.status())
	}
	return string(f.Kind)
}

func (f Fault) status() int {
	if f.Status == 0 {
		return http.StatusServiceUnavailable
	}
	return f.Status
}

// applies reports whether f can do anything to r.
func (f Fault) applies(r *http.Request) bool {
	switch f.Kind {
	case FaultResetResponse, FaultCloseResponse, FaultCorrupt:
		return r.Method == http.MethodGet
	case FaultResetRequest:
		return r.ContentLength > 0
	}
	return true
}

// FaultRule applies Fault to the requests Match accepts: to the first Times of them, or to all
// when Times is 0.
type FaultRule struct {
	Match func(*http.Request) bool
	Fault Fault
	Times int
}

// FaultOptions configures a FaultProxy. The zero value injects nothing.
type FaultOptions struct {
	// Seed seeds the random schedule (math/rand/v2 PCG): the same seed and the same sequence of
	// requests give the same faults.
	Seed uint64
	// Rate is the fraction of requests, in [0, 1], that get a fault drawn from Faults.
	Rate float64
	// Faults are drawn from uniformly, among those that apply to the request. Default
	// TransientFaults.
	Faults []Fault
	// Rules are checked first, in order; the first that matches (and has uses left) decides,
	// and the random schedule is not consulted for that request.
	Rules []FaultRule
}

// TransientFaults are the faults a client must survive by retrying: 500, 503, 429 with
// Retry-After 0 and 1 second, a connection reset in the middle of a response body and of a
// request body, a clean close in the middle of a response body, and a 200ms delay.
var TransientFaults = []Fault{
	{Kind: FaultStatus, Status: http.StatusInternalServerError},
	{Kind: FaultStatus, Status: http.StatusServiceUnavailable},
	{Kind: FaultStatus, Status: http.StatusTooManyRequests, RetryAfter: "0"},
	{Kind: FaultStatus, Status: http.StatusTooManyRequests, RetryAfter: "1"},
	{Kind: FaultResetResponse, After: -1},
	{Kind: FaultCloseResponse, After: -1},
	{Kind: FaultResetRequest, After: -1},
	{Kind: FaultDelay, Delay: 200 * time.Millisecond},
}

// FaultProxy is a plain-HTTP reverse proxy on 127.0.0.1 in front of a Registry that injects
// faults: error statuses, 429 with Retry-After, connection resets in the middle of response
// and request bodies, delays and corrupted bytes, on a seeded random schedule and by rules. It
// rewrites the registry's Location headers to itself, so upload sessions keep going through it.
// Its methods are safe for concurrent use.
type FaultProxy struct {
	// Host is "127.0.0.1:PORT".
	Host string
	// URL is "http://127.0.0.1:PORT".
	URL string

	target    *url.URL
	srv       *http.Server
	rp        *httputil.ReverseProxy
	transport *http.Transport
	done      chan struct{}

	mu       sync.Mutex
	rng      *rand.Rand
	opts     FaultOptions
	used     []int // uses of each rule
	counts   map[string]int
	injected map[string]int
	log      []string
}

// NewFaultProxy starts a FaultProxy in front of target (plain HTTP or TLS; the proxy itself
// speaks plain HTTP). It panics if it cannot listen on 127.0.0.1, as httptest.NewServer does.
// Close it when done.
func NewFaultProxy(target *Registry, opts FaultOptions) *FaultProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("registrytest: fault proxy: " + err.Error())
	}
	tu, err := url.Parse(target.URL)
	if err != nil {
		panic("registrytest: fault proxy: " + err.Error())
	}
	if opts.Faults == nil {
		opts.Faults = TransientFaults
	}
	p := &FaultProxy{
		Host:     ln.Addr().String(),
		URL:      "http://" + ln.Addr().String(),
		target:   tu,
		done:     make(chan struct{}),
		rng:      rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		opts:     opts,
		used:     make([]int, len(opts.Rules)),
		counts:   map[string]int{},
		injected: map[string]int{},
		transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSClientConfig:     &tls.Config{RootCAs: target.CertPool, MinVersion: tls.VersionTLS12},
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

// Close stops the proxy, closing open connections.
func (p *FaultProxy) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		_ = p.srv.Close()
	}
	<-p.done
	p.transport.CloseIdleConnections()
}

// Counts returns how many requests of each kind arrived, keyed as Proxy.Counts keys them
// ("GET blob", "PUT blob", "HEAD manifest", ...), faulted or not.
func (p *FaultProxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		m[k] = v
	}
	return m
}

// Injected returns how many faults of each kind were injected, keyed by Fault.String.
func (p *FaultProxy) Injected() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]int, len(p.injected))
	for k, v := range p.injected {
		m[k] = v
	}
	return m
}

// Log returns one line per injected fault, "FAULT METHOD PATH", in the order they were decided.
func (p *FaultProxy) Log() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.log...)
}

// decide returns the fault for r, if any, with the fraction used for a random offset.
func (p *FaultProxy) decide(r *http.Request) (Fault, float64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[classify(r)]++
	f, ok := p.pick(r)
	if !ok {
		return Fault{}, 0, false
	}
	frac := p.rng.Float64()
	p.injected[f.String()]++
	p.log = append(p.log, f.String()+" "+r.Method+" "+r.URL.Path)
	return f, frac, true
}

func (p *FaultProxy) pick(r *http.Request) (Fault, bool) {
	for i, rule := range p.opts.Rules {
		if rule.Times > 0 && p.used[i] >= rule.Times {
			continue
		}
		if rule.Match != nil && rule.Match(r) {
			p.used[i]++
			return rule.Fault, true
		}
	}
	if p.opts.Rate <= 0 || p.rng.Float64() >= p.opts.Rate {
		return Fault{}, false
	}
	var fit []Fault
	for _, f := range p.opts.Faults {
		if f.applies(r) {
			fit = append(fit, f)
		}
	}
	if len(fit) == 0 {
		return Fault{}, false
	}
	return fit[p.rng.IntN(len(fit))], true
}

func (p *FaultProxy) serve(w http.ResponseWriter, r *http.Request) {
	f, frac, ok := p.decide(r)
	if !ok || !f.applies(r) {
		p.rp.ServeHTTP(w, r)
		return
	}
	offset := func(length int64) int64 {
		if f.After >= 0 {
			return f.After
		}
		// Somewhere strictly inside the body, so that something arrives and something is lost.
		if length <= 1 {
			return 0
		}
		return 1 + int64(frac*float64(length-1))
	}
	switch f.Kind {
	case FaultStatus:
		if r.Body != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		}
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.status())
		fmt.Fprintf(w, `{"errors":[{"code":"UNAVAILABLE","message":"registrytest: injected %s","detail":null}]}`+"\n", f)
	case FaultDelay:
		d := f.Delay
		if d <= 0 {
			d = 200 * time.Millisecond
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
		p.rp.ServeHTTP(w, r)
	case FaultResetRequest:
		n := offset(r.ContentLength)
		_, _ = io.CopyN(io.Discard, r.Body, n)
		abort(w, false, true) // no response at all, not even a status line
	case FaultResetResponse, FaultCloseResponse, FaultCorrupt:
		p.rp.ServeHTTP(&faultWriter{ResponseWriter: w, fault: f, offset: offset}, r)
	default:
		p.rp.ServeHTTP(w, r)
	}
}

// abort takes the connection over and closes it: with reset, so that the peer gets a TCP RST
// (unread data is dropped), else cleanly. With flush, what was written of the response (its
// header and part of its body) is sent first.
func abort(w http.ResponseWriter, flush, reset bool) {
	rc := http.NewResponseController(w)
	if flush {
		_ = rc.Flush()
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok && reset {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

var errInjected = errors.New("registrytest: injected connection fault")

// faultWriter cuts or corrupts a response body at an offset.
type faultWriter struct {
	http.ResponseWriter
	fault   Fault
	offset  func(length int64) int64
	active  bool  // the response is one the fault applies to
	at      int64 // where the fault happens
	written int64
	aborted bool
}

func (w *faultWriter) WriteHeader(code int) {
	if code == http.StatusOK || (code == http.StatusPartialContent && w.fault.Kind != FaultCorrupt) {
		length, err := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64)
		if err != nil {
			length = 1
		}
		w.at = w.offset(length)
		w.active = w.at < length || w.fault.Kind != FaultCorrupt
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *faultWriter) Write(b []byte) (int, error) {
	if w.aborted {
		return 0, errInjected
	}
	if !w.active {
		return w.ResponseWriter.Write(b)
	}
	start := w.written
	end := start + int64(len(b))
	if w.at < start || w.at >= end {
		n, err := w.ResponseWriter.Write(b)
		w.written += int64(n)
		return n, err
	}
	if w.fault.Kind == FaultCorrupt {
		c := append([]byte(nil), b...)
		c[w.at-start] ^= 0xff
		n, err := w.ResponseWriter.Write(c)
		w.written += int64(n)
		return n, err
	}
	n, err := w.ResponseWriter.Write(b[:w.at-start])
	w.written += int64(n)
	if err != nil {
		return n, err
	}
	w.aborted = true
	abort(w.ResponseWriter, true, w.fault.Kind == FaultResetResponse)
	return n, errInjected
}

func (w *faultWriter) Flush() {
	if !w.aborted {
		_ = http.NewResponseController(w.ResponseWriter).Flush()
	}
}

func (w *faultWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// rewriteLocation points the registry's absolute Location headers at the proxy.
func (p *FaultProxy) rewriteLocation(resp *http.Response) error {
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

// MatchBlobGET matches GET (and HEAD, when head is true) requests for any of the blobs.
func MatchBlobGET(head bool, blobs ...digest.Digest) func(*http.Request) bool {
	return func(r *http.Request) bool {
		if r.Method != http.MethodGet && !(head && r.Method == http.MethodHead) {
			return false
		}
		if !blobPath.MatchString(r.URL.Path) {
			return false
		}
		for _, d := range blobs {
			if strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
				return true
			}
		}
		return false
	}
}

// MatchManifestGET matches GET requests for the manifest of repo (any repo when "") by any of
// refs (tags or digests).
func MatchManifestGET(repo string, refs ...string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		if r.Method != http.MethodGet || !manifestPath.MatchString(r.URL.Path) {
			return false
		}
		if repo != "" && !strings.HasPrefix(r.URL.Path, "/v2/"+repo+"/manifests/") {
			return false
		}
		for _, ref := range refs {
			if strings.HasSuffix(r.URL.Path, "/manifests/"+ref) {
				return true
			}
		}
		return false
	}
}

// MatchKind matches requests whose Counts key is one of kinds ("GET blob", "PUT blob", ...).
func MatchKind(kinds ...string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		k := classify(r)
		for _, want := range kinds {
			if k == want {
				return true
			}
		}
		return false
	}
}
