// Package retry is the one place that decides how long to wait before a
// request or a transfer is tried again, and whether a network failure is
// worth another try. The resolver's transport retries single requests with
// it; the copy engine retries whole transfers with it.
package retry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"time"
)

const (
	backoffBase = 100 * time.Millisecond
	backoffMax  = 5 * time.Second
)

// Default is how many times a failure is retried when the caller does not
// say.
const Default = 4

// Count returns the number of retries n asks for: Default when n is nil,
// else *n, never below 0.
func Count(n *int) int {
	if n == nil {
		return Default
	}
	return max(*n, 0)
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

// Sleep waits d, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Policy says which errors are worth another try and how long to wait
// before it.
type Policy struct {
	// Retries is how many times a failure is retried (0: none).
	Retries int
	// Retryable reports whether err is worth another try.
	Retryable func(err error) bool
	// Wait is the wait before retry attempt+1 after err; Backoff when nil
	// or when it returns 0.
	Wait func(err error, attempt int) time.Duration
	// Logger receives a debug record per retry; nil discards.
	Logger *slog.Logger
}

// Do calls try until it succeeds, at most p.Retries+1 times, while the
// error is retryable. It stops at once when ctx ends, returning ctx's
// error.
func (p Policy) Do(ctx context.Context, what string, try func(attempt int) error) error {
	for attempt := 0; ; attempt++ {
		err := try(attempt)
		if err == nil {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if attempt >= p.Retries || (p.Retryable != nil && !p.Retryable(err)) {
			return err
		}
		var wait time.Duration
		if p.Wait != nil {
			wait = p.Wait(err, attempt)
		}
		if wait <= 0 {
			wait = Backoff(attempt)
		}
		if p.Logger != nil {
			p.Logger.Debug("retrying", "what", what, "attempt", attempt+1, "wait", wait, "err", err)
		}
		if serr := Sleep(ctx, wait); serr != nil {
			return serr
		}
	}
}

// TransientNetError reports whether err is a network failure that a retry
// may cure: a reset or refused connection, an unexpected EOF, a timeout.
// TLS failures are not: a retry would only repeat them.
func TransientNetError(err error) bool {
	if err == nil || TLSFailure(err) {
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

// TLSFailure reports whether err is a TLS failure that a retry would only
// repeat: a certificate that does not verify, a handshake the server
// refused, a server that does not speak TLS.
func TLSFailure(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		alert    tls.AlertError
		header   tls.RecordHeaderError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &alert) || errors.As(err, &header) ||
		// An alert from the server (a client certificate it refused) is
		// an unexported type inside a *net.OpError.
		strings.Contains(err.Error(), "remote error: tls:")
}
