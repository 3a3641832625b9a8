// Package retry is the one place that decides whether a failure is worth
// another try (Retryable) and how long to wait before it (Wait, on the
// clock of Sleep). The resolver's transport retries single requests with
// it; the copy engine retries whole transfers with it. No other package
// classifies errors for retrying: classify_test.go fails if one does.
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
	"net/http"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/content"
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

// Clock is what waits are measured on: the real clock by default, a
// test's FakeClock through WithClock.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

type clockKey struct{}

// WithClock returns ctx whose waits (Sleep, and so Policy.Do and the
// resolver's transport under it) are measured on c, so that a test sees
// every backoff and Retry-After without waiting them out.
func WithClock(ctx context.Context, c Clock) context.Context {
	return context.WithValue(ctx, clockKey{}, c)
}

// ClockOf returns ctx's clock: the one WithClock gave it, else the real
// one.
func ClockOf(ctx context.Context) Clock {
	if c, ok := ctx.Value(clockKey{}).(Clock); ok {
		return c
	}
	return realClock{}
}

// Sleep waits d on ctx's clock, or until ctx ends (then it returns ctx's
// error).
func Sleep(ctx context.Context, d time.Duration) error {
	var c <-chan time.Time
	if clock, ok := ctx.Value(clockKey{}).(Clock); ok {
		c = clock.After(d)
	} else {
		t := time.NewTimer(d)
		defer t.Stop()
		c = t.C
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c:
		return nil
	}
}

// Policy says how often a failure is tried again and how long to wait
// before it; whether it is worth it is Retryable's to say.
type Policy struct {
	// Retries is how many times a failure is retried (0: none).
	Retries int
	// Wait is the wait before retry attempt+1 after err; the package's
	// Wait when nil or when it returns 0.
	Wait func(err error, attempt int) time.Duration
	// Logger receives a debug record per retry; nil discards.
	Logger *slog.Logger
}

// Do calls try until it succeeds, at most p.Retries+1 times, while its
// error is Retryable. It stops at once when ctx ends, returning ctx's
// error. An error try marks Permanent is returned without the mark.
func (p Policy) Do(ctx context.Context, what string, try func(attempt int) error) error {
	for attempt := 0; ; attempt++ {
		err := try(attempt)
		if err == nil {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if attempt >= p.Retries || !Retryable(err) {
			if pe, ok := err.(permanent); ok {
				return pe.err
			}
			return err
		}
		var wait time.Duration
		if p.Wait != nil {
			wait = p.Wait(err, attempt)
		}
		if wait <= 0 {
			wait = Wait(err, attempt)
		}
		if p.Logger != nil {
			p.Logger.Debug("retrying", "what", what, "attempt", attempt+1, "wait", wait, "err", err)
		}
		if serr := Sleep(ctx, wait); serr != nil {
			return serr
		}
	}
}

// Hinted is an error that says how long to wait before another try: a
// server's Retry-After (resolver.StatusError).
type Hinted interface {
	error
	WaitHint() time.Duration
}

// Wait is the wait before retry attempt+1 after err: the wait err hints
// at (see Hinted) when it hints at one, else Backoff(attempt).
func Wait(err error, attempt int) time.Duration {
	var h Hinted
	if errors.As(err, &h) {
		if d := h.WaitHint(); d > 0 {
			return d
		}
	}
	return Backoff(attempt)
}

// ErrExhausted marks a transient failure that was already retried as many
// times as allowed (the resolver's transport gave up on a request): trying
// the whole transfer again would multiply the retries.
var ErrExhausted = errors.New("retries exhausted")

// Permanent returns err marked as not worth another try: Retryable reports
// false for it and for what wraps it; Policy.Do returns err without the
// mark. Nil stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

type permanent struct{ err error }

func (e permanent) Error() string { return e.err.Error() }
func (e permanent) Unwrap() error { return e.err }

// Answer is an error that carries a registry's answer: the HTTP status
// of its response and the error codes of its body (distribution's
// errors[].code, e.g. "BLOB_UPLOAD_UNKNOWN"). resolver.StatusError is one.
type Answer interface {
	error
	RegistryAnswer() (status int, codes []string)
}

// answerCodes are the codes with which a registry says why it failed with
// a 5xx (or a 408, 429): an answer, not a hiccup, that another try would
// only repeat.
var answerCodes = []string{
	"MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNVERIFIED", "BLOB_UNKNOWN",
	"NAME_INVALID", "TAG_INVALID", "DIGEST_INVALID", "SIZE_INVALID", "DENIED", "UNSUPPORTED",
}

// TransientStatus reports whether an HTTP status says "try again later":
// 408, 429, 500, 502, 503, 504. Any other 4xx, and a 5xx that says the
// registry cannot (501, 505) or will not soon (507 Insufficient Storage),
// is an answer. The resolver's transport turns the responses it reports
// into errors (see Retryable for which of those are retried).
func TransientStatus(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// Retryable reports whether err is worth another try, of the request (the
// resolver's transport) or of the whole transfer (the copy engine). It is
// the one classifier of this module:
//
//   - not: nil, cancellation and deadlines, errors marked Permanent,
//     errors matching ErrExhausted, TLS and certificate failures (see
//     TLSFailure), and every error it does not recognise;
//   - a registry's answer (see Answer): a TransientStatus unless the
//     registry's error code says why (MANIFEST_INVALID, DENIED, ...); and
//     BLOB_UPLOAD_UNKNOWN (the upload session vanished: a new one is
//     started), and a 400 DIGEST_INVALID, which distribution 2.8 answers
//     while it writes the same content for another client: everything
//     sent was verified first, so another try finds it written;
//   - a network failure that a retry may cure: a reset or refused
//     connection, a broken pipe, an EOF or unexpected EOF, a timeout, any
//     other *net.OpError, and the reset of containerd's upload pipe
//     (content.ErrReset, io.ErrClosedPipe).
func Retryable(err error) bool {
	var pe permanent
	switch {
	case err == nil, errors.As(err, &pe),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrExhausted), TLSFailure(err):
		return false
	}
	var a Answer
	if errors.As(err, &a) {
		status, codes := a.RegistryAnswer()
		switch {
		case slices.Contains(codes, "BLOB_UPLOAD_UNKNOWN"):
			return true
		case status == http.StatusBadRequest && slices.Contains(codes, "DIGEST_INVALID"):
			return true
		case !TransientStatus(status):
			return false
		}
		for _, c := range codes {
			if slices.Contains(answerCodes, c) {
				return false
			}
		}
		return true
	}
	return netFailure(err)
}

// netFailure reports whether err is a network failure that a retry may
// cure (see Retryable).
func netFailure(err error) bool {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, content.ErrReset) || errors.Is(err, io.ErrClosedPipe) {
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
		alert  tls.AlertError
		header tls.RecordHeaderError
	)
	return CertificateFailure(err) || errors.As(err, &alert) || errors.As(err, &header) ||
		// An alert from the server (a client certificate it refused) is
		// an unexported type inside a *net.OpError, and a plain-HTTP
		// answer to a TLS hello is a plain error of net/http: neither
		// has a type to match.
		strings.Contains(err.Error(), "remote error: tls:") ||
		PlainHTTP(err)
}

// CertificateFailure reports whether err is a certificate the client
// could not verify: signed by an unknown authority, for another host, or
// otherwise invalid.
func CertificateFailure(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

// PlainHTTP reports whether err is net/http's report of a server that
// answered a TLS hello in plain HTTP. net/http makes it from a
// tls.RecordHeaderError and returns it as a plain error: its text is all
// there is.
func PlainHTTP(err error) bool {
	return strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}
