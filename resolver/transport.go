package resolver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	backoffBase = 100 * time.Millisecond
	backoffMax  = 5 * time.Second
	// retryAfterMax bounds a server's Retry-After so a misbehaving server
	// cannot stall a run for hours.
	retryAfterMax = 60 * time.Second
)

// retryTransport retries replayable requests on transient failures.
type retryTransport struct {
	base    http.RoundTripper
	retries int
	logger  *slog.Logger
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !replayable(req) {
		return t.base.RoundTrip(req)
	}
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
		resp, err := t.base.RoundTrip(r)
		if attempt >= t.retries || !transient(resp, err) {
			return resp, err
		}
		wait := Backoff(attempt)
		if resp != nil {
			if ra, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
				wait = ra
			}
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		t.logger.Debug("retrying", "method", req.Method, "url", req.URL.Redacted(), "attempt", attempt+1, "wait", wait, "status", status(resp), "err", err)
		if err := sleep(req.Context(), wait); err != nil {
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

// replayable reports whether req can be sent again: no body, or a body
// that GetBody can recreate and that is not a streaming blob upload.
func replayable(req *http.Request) bool {
	if req.Body == nil || req.Body == http.NoBody {
		return true
	}
	if req.GetBody == nil {
		return false
	}
	// Blob uploads stream from the source through a pipe; replaying them
	// would reset the pipe under the writer. They are retried whole.
	return !strings.Contains(req.URL.Path, "/blobs/uploads/")
}

// transient reports whether a response or error is worth retrying.
func transient(resp *http.Response, err error) bool {
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return false
		}
		return IsTransientError(err)
	}
	switch resp.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// IsTransientError reports whether err is a network failure that a retry
// may cure: a reset or refused connection, an unexpected EOF, a timeout.
func IsTransientError(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe)
}

// Backoff returns the wait before retry attempt+1: exponential from 100ms,
// capped at 5s, with full jitter over its upper half.
func Backoff(attempt int) time.Duration {
	d := backoffBase << min(attempt, 10)
	if d > backoffMax {
		d = backoffMax
	}
	return d/2 + rand.N(d/2+1)
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

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
