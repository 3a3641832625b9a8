package retry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/content"
)

// answer is a registry's answer, as resolver.StatusError carries one.
type answer struct {
	status int
	codes  []string
}

func (a answer) Error() string                   { return fmt.Sprintf("%d %v", a.status, a.codes) }
func (a answer) RegistryAnswer() (int, []string) { return a.status, a.codes }

func TestPolicyDo(t *testing.T) {
	t.Parallel()
	transient := fmt.Errorf("transient: %w", syscall.ECONNRESET)
	fatal := errors.New("fatal")
	p := Policy{Retries: 3}
	for _, tc := range []struct {
		name     string
		fails    []error // what attempt i returns; nil after the list
		wantErr  error
		attempts int
	}{
		{"succeeds at once", nil, nil, 1},
		{"succeeds on the last retry", []error{transient, transient, transient}, nil, 4},
		{"gives up after Retries", []error{transient, transient, transient, transient, transient}, transient, 4},
		{"stops on what is not retryable", []error{transient, fatal, transient}, fatal, 2},
		{"stops on what is marked permanent, and returns it unmarked", []error{transient, Permanent(transient)}, transient, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := NewFakeClock(true)
			ctx := WithClock(context.Background(), clock)
			n := 0
			err := p.Do(ctx, "x", func(attempt int) error {
				if attempt != n {
					t.Errorf("attempt %d, want %d", attempt, n)
				}
				n++
				if attempt < len(tc.fails) {
					return tc.fails[attempt]
				}
				return nil
			})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) || n != tc.attempts {
				t.Errorf("Do = %v after %d attempts, want %v after %d", err, n, tc.wantErr, tc.attempts)
			}
			if _, marked := err.(permanent); marked {
				t.Errorf("Do returned the Permanent mark: %#v", err)
			}
			// One backoff per retry, each within its bounds, none slept.
			waits := clock.Waits()
			if len(waits) != tc.attempts-1 {
				t.Errorf("waited %d times (%v), want %d", len(waits), waits, tc.attempts-1)
			}
			for i, w := range waits {
				if hi := backoffBase << i; w < hi/2 || w > hi {
					t.Errorf("wait %d = %v, want within [%v, %v]", i, w, hi/2, hi)
				}
			}
		})
	}
	t.Run("Wait overrides the backoff", func(t *testing.T) {
		clock := NewFakeClock(true)
		p := Policy{Retries: 2, Wait: func(error, int) time.Duration { return 7 * time.Second }}
		p.Do(WithClock(context.Background(), clock), "x", func(int) error { return transient })
		if got := clock.Waits(); !slices.Equal(got, []time.Duration{7 * time.Second, 7 * time.Second}) {
			t.Errorf("waits %v, want two of 7s", got)
		}
	})
	t.Run("a server's hint sets the wait; none, the backoff", func(t *testing.T) {
		clock := NewFakeClock(true)
		fails := []error{hinted{answer{429, nil}, 3 * time.Second}, hinted{answer{503, nil}, 0}}
		Policy{Retries: 2}.Do(WithClock(context.Background(), clock), "x", func(a int) error {
			if a < len(fails) {
				return fmt.Errorf("pushing: %w", fails[a])
			}
			return nil
		})
		if w := clock.Waits(); len(w) != 2 || w[0] != 3*time.Second || w[1] < backoffBase || w[1] > 2*backoffBase {
			t.Errorf("waits %v, want 3s, then a backoff in [%v, %v]", w, backoffBase, 2*backoffBase)
		}
	})
	t.Run("a cancelled context ends the waiting", func(t *testing.T) {
		clock := NewFakeClock(false) // never advanced: the wait lasts until ctx ends
		ctx, cancel := context.WithCancel(WithClock(context.Background(), clock))
		done := make(chan error)
		go func() { done <- Policy{Retries: 5}.Do(ctx, "x", func(int) error { return transient }) }()
		for clock.Pending() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Do = %v, want context.Canceled", err)
		}
	})
}

func TestCountAndBackoff(t *testing.T) {
	t.Parallel()
	zero, three := 0, 3
	if Count(nil) != Default || Count(&zero) != 0 || Count(&three) != 3 {
		t.Errorf("Count: nil %d, 0 %d, 3 %d", Count(nil), Count(&zero), Count(&three))
	}
	for a := 0; a < 20; a++ {
		if d := Backoff(a); d < backoffBase/2 || d > backoffMax {
			t.Errorf("Backoff(%d) = %v, outside [%v, %v]", a, d, backoffBase/2, backoffMax)
		}
	}
}

// TestRetryable is the table of what is worth another try, class by class.
func TestRetryable(t *testing.T) {
	t.Parallel()
	opErr := func(err error) error {
		return &url.Error{Op: "Put", URL: "http://127.0.0.1:1/v2/a/blobs/uploads/x", Err: &net.OpError{Op: "read", Net: "tcp", Err: err}}
	}
	exhausted := fmt.Errorf("%w: 503", ErrExhausted)
	for _, tc := range []struct {
		class string
		err   error
		want  bool
	}{
		{"nil", nil, false},
		{"unknown error", errors.New("something else"), false},
		{"unknown error, wrapped", fmt.Errorf("pushing: %w", os.ErrPermission), false},
		{"cancellation", fmt.Errorf("x: %w", context.Canceled), false},
		{"deadline", context.DeadlineExceeded, false},
		{"marked permanent", Permanent(opErr(syscall.ECONNRESET)), false},
		{"exhausted by the transport", exhausted, false},

		{"TLS: unknown authority", &url.Error{Op: "Get", URL: "https://h/v2/", Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}, false},
		{"TLS: wrong host", x509.HostnameError{Certificate: &x509.Certificate{}, Host: "h"}, false},
		{"TLS: invalid certificate", x509.CertificateInvalidError{Reason: x509.Expired}, false},
		{"TLS: alert", tls.AlertError(42), false},
		{"TLS: not TLS at all", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, false},
		{"TLS: server refused the client certificate", opErr(errors.New("remote error: tls: bad certificate")), false},
		{"TLS: plain HTTP answer", errors.New(`Get "https://h/v2/": http: server gave HTTP response to HTTPS client`), false},

		{"status 500", answer{500, nil}, true},
		{"status 502", answer{502, []string{"UNKNOWN"}}, true},
		{"status 503", answer{503, nil}, true},
		{"status 504", answer{504, nil}, true},
		{"status 408", answer{408, nil}, true},
		{"status 429", answer{429, []string{"TOOMANYREQUESTS"}}, true},
		{"status 500 whose code says why", answer{500, []string{"UNKNOWN", "MANIFEST_INVALID"}}, false},
		{"status 503 DENIED", answer{503, []string{"DENIED"}}, false},
		{"status 501", answer{501, nil}, false},
		{"status 505", answer{505, nil}, false},
		{"status 507", answer{507, []string{"UNKNOWN"}}, false},
		{"status 413", answer{413, []string{"SIZE_INVALID"}}, false},
		{"status 400", answer{400, nil}, false},
		{"status 401", answer{401, []string{"UNAUTHORIZED"}}, false},
		{"status 403", answer{403, []string{"DENIED"}}, false},
		{"status 404", answer{404, []string{"MANIFEST_UNKNOWN"}}, false},
		{"status 409 TAG_INVALID", answer{409, []string{"TAG_INVALID"}}, false},
		{"BLOB_UPLOAD_UNKNOWN: a new upload", answer{404, []string{"BLOB_UPLOAD_UNKNOWN"}}, true},
		{"400 DIGEST_INVALID under overlapping jobs (distribution 2.8)", answer{400, []string{"DIGEST_INVALID"}}, true},
		{"an answer wrapped", fmt.Errorf("pushing: %w", answer{503, nil}), true},

		{"connection reset", opErr(syscall.ECONNRESET), true},
		{"connection refused", opErr(syscall.ECONNREFUSED), true},
		{"broken pipe", fmt.Errorf("write: %w", syscall.EPIPE), true},
		{"early EOF", &url.Error{Op: "Get", URL: "http://h/", Err: io.EOF}, true},
		{"unexpected EOF mid-body", fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), true},
		{"timeout", &url.Error{Op: "Get", URL: "http://h/", Err: timeoutErr{}}, true},
		{"other network failure", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("no route")}, true},
		{"containerd's upload pipe reset", fmt.Errorf("failed to copy: %w", content.ErrReset), true},
		{"a closed pipe", io.ErrClosedPipe, true},
	} {
		t.Run(tc.class, func(t *testing.T) {
			if got := Retryable(tc.err); got != tc.want {
				t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// hinted is an answer with a server's Retry-After.
type hinted struct {
	answer
	wait time.Duration
}

func (h hinted) WaitHint() time.Duration { return h.wait }

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestFakeClock(t *testing.T) {
	t.Parallel()
	c := NewFakeClock(false)
	start := c.Now()
	ch := c.After(time.Second)
	c.Advance(999 * time.Millisecond)
	select {
	case <-ch:
		t.Fatal("released before its time")
	default:
	}
	c.Advance(time.Millisecond)
	select {
	case <-ch:
	default:
		t.Fatal("not released at its time")
	}
	if got := c.Now().Sub(start); got != time.Second {
		t.Errorf("Now moved %v, want 1s", got)
	}
}
