package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cnabio/cnab-relocate/internal/errbody"
	"github.com/cnabio/cnab-relocate/internal/retry"
)

const (
	// retryAfterMax bounds a server's Retry-After so a misbehaving server
	// cannot stall a run for hours.
	retryAfterMax = 60 * time.Second
)

// StatusError is a transient HTTP status (408, 429, 5xx) that the transport
// returns as an error instead of a response: after its last retry of a
// replayable request (then it matches ErrRetriesExhausted), or at once for a
// streaming request it cannot replay. The second case matters for
// containerd, which replays a request on 408 and 429 itself by asking for a
// new body: for a push that body is a new pipe, which resets the writer
// feeding it. As an error, the failure reaches the writer, and the caller
// retries the whole transfer, waiting RetryAfter if the server said so.
type StatusError struct {
	Method     string
	URL        string // redacted
	StatusCode int
	Status     string // e.g. "503 Service Unavailable"
	// RetryAfter is the server's Retry-After (bounded to a minute); 0 when
	// it sent none.
	RetryAfter time.Duration
	// Attempts is how many times the request was sent.
	Attempts int
	// Exhausted is true when the transport retried the request and gave up.
	Exhausted bool
	// Code, Message and Detail are the registry's error from the body, when
	// it sent one: the first error whose code is not UNKNOWN (distribution
	// 2.8 puts UNKNOWN first in some 500s, before the code that says why).
	Code, Message, Detail string
}

func (e *StatusError) Error() string {
	s := e.Status
	if e.Code != "" {
		s += ": " + e.Code
		if e.Message != "" {
			s += ": " + e.Message
		}
		if e.Detail != "" {
			s += " (" + e.Detail + ")"
		}
	}
	if e.Attempts > 1 {
		return fmt.Sprintf("%s (after %d attempts)", s, e.Attempts)
	}
	return s
}

// Is makes an exhausted StatusError match ErrRetriesExhausted.
func (e *StatusError) Is(target error) bool {
	return target == ErrRetriesExhausted && e.Exhausted
}

// exhaustedError is a connection error after the last retry.
type exhaustedError struct {
	err      error
	attempts int
}

func (e *exhaustedError) Error() string {
	return fmt.Sprintf("%v (after %d attempts)", e.err, e.attempts)
}
func (e *exhaustedError) Unwrap() []error { return []error{ErrRetriesExhausted, e.err} }

// retryTransport retries replayable requests on transient failures, at
// most retries times, with exponential backoff and jitter, honouring
// Retry-After. Every transient status it does not retry (the last one, or
// any for a request it cannot replay) becomes a *StatusError, so that
// containerd's own immediate retries of 408 and 429 never happen: the
// number of requests is bounded by retries+1.
type retryTransport struct {
	base    http.RoundTripper
	retries int
	logger  *slog.Logger

	// gates holds, per host, the time before which no request is sent:
	// a 429 slows every request to that host, not only the one refused.
	gates sync.Map // host -> *gate
}

type gate struct {
	mu    sync.Mutex
	until time.Time
}

// hold waits until host's gate opens.
func (t *retryTransport) hold(ctx context.Context, host string) error {
	g, ok := t.gates.Load(host)
	if !ok {
		return nil
	}
	g.(*gate).mu.Lock()
	wait := time.Until(g.(*gate).until)
	g.(*gate).mu.Unlock()
	if wait <= 0 {
		return nil
	}
	return retry.Sleep(ctx, wait)
}

// close shuts host's gate for d.
func (t *retryTransport) close(host string, d time.Duration) {
	v, _ := t.gates.LoadOrStore(host, &gate{})
	g := v.(*gate)
	g.mu.Lock()
	if until := time.Now().Add(d); until.After(g.until) {
		g.until = until
	}
	g.mu.Unlock()
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	replay := replayable(req)
	for attempt := 0; ; attempt++ {
		r := req
		if attempt > 0 && req.Body != nil && req.Body != http.NoBody {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r = req.Clone(req.Context())
			r.Body = body
		}
		if err := t.hold(req.Context(), req.URL.Host); err != nil {
			return nil, err
		}
		resp, err := t.base.RoundTrip(r)
		if !transient(resp, err) {
			return resp, err
		}
		last := !replay || attempt >= t.retries || req.Context().Err() != nil
		wait := retry.Backoff(attempt)
		var ra time.Duration
		var body []byte
		if resp != nil {
			if d, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
				wait, ra = d, d
			}
			body, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusTooManyRequests {
				t.close(req.URL.Host, wait)
			}
		}
		if last {
			if resp != nil {
				se := &StatusError{
					Method: req.Method, URL: req.URL.Redacted(), StatusCode: resp.StatusCode, Status: resp.Status,
					RetryAfter: ra, Attempts: attempt + 1, Exhausted: replay && attempt > 0,
				}
				se.Code, se.Message, se.Detail = errbody.Parse(body)
				return nil, se
			}
			if replay && attempt > 0 {
				return nil, &exhaustedError{err: err, attempts: attempt + 1}
			}
			return nil, err
		}
		t.logger.Debug("retrying", "method", req.Method, "url", req.URL.Redacted(), "attempt", attempt+1, "wait", wait, "status", status(resp), "err", err)
		if err := retry.Sleep(req.Context(), wait); err != nil {
			return nil, err
		}
	}
}

func status(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// replayable reports whether req can be sent again: no body, or a POST
// body that GetBody can recreate (token requests). PUT and PATCH bodies
// are containerd pushes, streamed from the source through a pipe whose
// GetBody resets the writer feeding it: they are retried whole by the
// caller.
func replayable(req *http.Request) bool {
	if req.Body == nil || req.Body == http.NoBody {
		return true
	}
	return req.GetBody != nil && req.Method == http.MethodPost && !strings.Contains(req.URL.Path, "/blobs/uploads/")
}

// transient reports whether a response or error is worth retrying.
func transient(resp *http.Response, err error) bool {
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return false
		}
		return retry.TransientNetError(err)
	}
	switch resp.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// retryAfter parses a Retry-After header (seconds or an HTTP date).
func retryAfter(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	} else {
		return 0, false
	}
	return min(max(d, 0), retryAfterMax), true
}
