package resolver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cnabio/cnab-relocate/internal/retry"
)

const (
	// retryAfterMax bounds a server's Retry-After so a misbehaving server
	// cannot stall a run for hours.
	retryAfterMax = 60 * time.Second
)

// exhaustedError is a connection error after the last retry.
type exhaustedError struct {
	err      error
	attempts int
}

func (e *exhaustedError) Error() string {
	return fmt.Sprintf("%v (after %d attempts)", e.err, e.attempts)
}
func (e *exhaustedError) Unwrap() []error { return []error{ErrRetriesExhausted, e.err} }

// retryTransport retries replayable requests on the failures retry's
// classifier calls worth another try (retry.Retryable for network
// failures, retry.TransientStatus for statuses), at most retries times,
// with exponential backoff and jitter, honouring Retry-After, on the clock
// of the request's context. Every transient status it does not retry (the
// last one, or any for a request it cannot replay) becomes a
// *StatusError, so that
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
	wait := g.(*gate).until.Sub(retry.ClockOf(ctx).Now())
	g.(*gate).mu.Unlock()
	if wait <= 0 {
		return nil
	}
	return retry.Sleep(ctx, wait)
}

// close shuts host's gate for d.
func (t *retryTransport) close(ctx context.Context, host string, d time.Duration) {
	v, _ := t.gates.LoadOrStore(host, &gate{})
	g := v.(*gate)
	g.mu.Lock()
	if until := retry.ClockOf(ctx).Now().Add(d); until.After(g.until) {
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
		if err == nil && !retry.TransientStatus(resp.StatusCode) {
			return resp, nil
		}
		var se *StatusError
		wait := retry.Backoff(attempt)
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			se = newStatusError(resp, body)
			if d, ok := retryAfter(req.Context(), resp.Header.Get("Retry-After")); ok {
				// Even 0: the server says now.
				wait, se.RetryAfter = d, d
			}
			err = se
		}
		if !retry.Retryable(err) && se == nil {
			return nil, err
		}
		if se != nil && se.StatusCode == http.StatusTooManyRequests {
			t.close(req.Context(), req.URL.Host, wait)
		}
		// An idempotent request is sent again on any transient status:
		// the codes that make a 5xx an answer (see retry.Retryable) are
		// for whole transfers, which cost a new upload.
		last := !replay || attempt >= t.retries || req.Context().Err() != nil
		if last {
			if se != nil {
				se.Attempts, se.Exhausted = attempt+1, replay && attempt > 0
				return nil, se
			}
			if replay && attempt > 0 {
				return nil, &exhaustedError{err: err, attempts: attempt + 1}
			}
			return nil, err
		}
		t.logger.Debug("retrying", "method", req.Method, "url", req.URL.Redacted(), "attempt", attempt+1, "wait", wait, "status", status(se), "err", err)
		if err := retry.Sleep(req.Context(), wait); err != nil {
			return nil, err
		}
	}
}

func status(se *StatusError) int {
	if se == nil {
		return 0
	}
	return se.StatusCode
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

// retryAfter parses a Retry-After header (seconds or an HTTP date).
func retryAfter(ctx context.Context, v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(retry.ClockOf(ctx).Now())
	} else {
		return 0, false
	}
	return min(max(d, 0), retryAfterMax), true
}
