package registrytest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// FaultKind is a kind of fault a Proxy injects.
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

// Fault is what a Proxy does to one request.
type Fault struct {
	Kind FaultKind
	// Status is the status FaultStatus answers. Default 503.
	Status int
	// RetryAfter is the Retry-After header FaultStatus sends ("0", "1"); "" sends none.
	RetryAfter string
	// Code and Message are the registry error FaultStatus answers with.
	// Default UNAVAILABLE and a message naming the fault.
	Code, Message string
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

// FaultOptions configures the faults a Proxy injects (ProxyOptions.Faults). The zero value
// injects nothing.
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

// pick returns the fault for r, if any: the first rule that matches and has uses left, else,
// at the configured rate, one of the faults that apply to r. The caller holds p.mu.
func (p *Proxy) pick(r *http.Request) (Fault, bool) {
	for i, rule := range p.faults.Rules {
		if rule.Times > 0 && p.used[i] >= rule.Times {
			continue
		}
		if rule.Match != nil && rule.Match(r) {
			p.used[i]++
			return rule.Fault, true
		}
	}
	if p.faults.Rate <= 0 || p.rng.Float64() >= p.faults.Rate {
		return Fault{}, false
	}
	var fit []Fault
	for _, f := range p.faults.Faults {
		if f.applies(r) {
			fit = append(fit, f)
		}
	}
	if len(fit) == 0 {
		return Fault{}, false
	}
	return fit[p.rng.IntN(len(fit))], true
}

// fault serves r with the fault f, which applies to it; frac places a random offset.
func (p *Proxy) fault(w http.ResponseWriter, r *http.Request, f Fault, frac float64) {
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
		code, msg := f.Code, f.Message
		if code == "" {
			code, msg = "UNAVAILABLE", "registrytest: injected "+f.String()
		}
		body, _ := json.Marshal(map[string]any{"errors": []any{map[string]any{"code": code, "message": msg, "detail": nil}}})
		w.Write(append(body, '\n'))
	case FaultDelay:
		d := f.Delay
		if d <= 0 {
			d = 200 * time.Millisecond
		}
		if !wait(r.Context(), d) {
			return
		}
		p.forward(w, r)
	case FaultResetRequest:
		n := offset(r.ContentLength)
		_, _ = io.CopyN(io.Discard, r.Body, n)
		abort(w, false, true) // no response at all, not even a status line
	case FaultResetResponse, FaultCloseResponse, FaultCorrupt:
		p.forward(&faultWriter{ResponseWriter: w, fault: f, offset: offset}, r)
	default:
		p.forward(w, r)
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
