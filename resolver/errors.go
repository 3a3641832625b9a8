package resolver

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/remotes/docker"
	remoteserrors "github.com/containerd/containerd/remotes/errors"

	"github.com/cnabio/cnab-relocate/internal/errbody"
	"github.com/cnabio/cnab-relocate/internal/retry"
)

var (
	// ErrCACert is returned when a CA certificate file cannot be read or holds no certificate.
	ErrCACert = errors.New("invalid CA certificate")
	// ErrDockerConfig is returned when the docker CLI configuration cannot be read.
	ErrDockerConfig = errors.New("invalid docker configuration")
	// ErrAuthentication is matched by every *AuthError.
	ErrAuthentication = errors.New("authentication failed")
	// ErrRetriesExhausted marks a transient failure (a 408, 429 or 5xx
	// status, a connection error) that the transport already retried as
	// many times as it was allowed to. A caller should not retry it again:
	// that would multiply the retries.
	ErrRetriesExhausted = retry.ErrExhausted
)

// AuthError is returned when authenticating to a registry host fails: no
// credentials where some are required, credentials the registry or its
// token server rejected, or a token server that could not be reached. It
// matches ErrAuthentication, and docker.ErrInvalidAuthorization when the
// credentials were missing or rejected (retrying will not help).
type AuthError struct {
	// Host is the registry host (host[:port]) that asked for credentials.
	Host string
	// User is the user name sent, if any.
	User string
	// Source is where the credentials came from: the config.json path or
	// the credential helper.
	Source string
	// Rejected is true when the credentials were missing, could not be
	// read, or were refused: trying again will not help.
	Rejected bool
	// Err is the cause.
	Err error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("authentication to %s failed: %v", e.Host, e.Err)
}

func (e *AuthError) Unwrap() []error {
	if e.Rejected {
		return []error{ErrAuthentication, docker.ErrInvalidAuthorization, e.Err}
	}
	return []error{ErrAuthentication, e.Err}
}

// StatusError is a registry's answer with an HTTP status it was not asked
// for, made where the response is read: by the resolver's own requests
// (Manifest, PushBlob, PushManifest, ...), by its transport, and, through
// TypedError, from what containerd's remotes report. Callers branch on its
// fields (StatusCode, Codes), never on its text; Temporary says whether
// another try may succeed.
//
// The transport returns a transient status (408, 429, 5xx) as a
// StatusError instead of a response: after its last retry of a replayable
// request (then it matches ErrRetriesExhausted), or at once for a streaming
// request it cannot replay. The second case matters for containerd, which
// replays a request on 408 and 429 itself by asking for a new body: for a
// push that body is a new pipe, which resets the writer feeding it. As an
// error, the failure reaches the writer, and the caller retries the whole
// transfer, waiting RetryAfter if the server said so.
type StatusError struct {
	// Host is the host[:port] that answered.
	Host   string
	Method string
	URL    string // redacted
	// StatusCode is the HTTP status, Status its text (e.g. "503 Service
	// Unavailable").
	StatusCode int
	Status     string
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
	// Codes are the codes of every error in the body, in order.
	Codes []string
	// Err is the error it was read from (containerd's), if any.
	Err error

	request bool   // Error starts with the request
	text    string // what Error says instead, when not ""
}

func (e *StatusError) Error() string {
	if e.text != "" {
		return e.text
	}
	s := e.Status
	if e.request {
		// The request (an upload's URL without its long state token),
		// the status and what the registry said.
		u := e.URL
		if p, err := url.Parse(u); err == nil {
			p.RawQuery = ""
			u = p.String()
		}
		s = e.Method + " " + u + ": " + e.Status
		if e.Code != "" {
			s += ": " + e.Code
			if e.Message != "" {
				s += ": " + e.Message
			}
		}
		return s
	}
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

func (e *StatusError) Unwrap() error { return e.Err }

// RegistryAnswer returns the status and the registry's error codes: what
// the retry classifier reads.
func (e *StatusError) RegistryAnswer() (int, []string) {
	codes := e.Codes
	if len(codes) == 0 && e.Code != "" {
		codes = []string{e.Code}
	}
	return e.StatusCode, codes
}

// WaitHint is the server's Retry-After, 0 when it sent none: the wait
// before another try.
func (e *StatusError) WaitHint() time.Duration { return e.RetryAfter }

// Temporary reports whether another try may succeed: a transient status
// (408, 429, 5xx) whose error code does not say why, an upload session the
// registry forgot (BLOB_UPLOAD_UNKNOWN). Not after the transport's last
// retry.
func (e *StatusError) Temporary() bool { return retry.Retryable(e) }

// newStatusError describes resp, whose body (at most the first 64 KiB of
// it) is body, as a *StatusError.
func newStatusError(resp *http.Response, body []byte) *StatusError {
	se := &StatusError{StatusCode: resp.StatusCode, Status: resp.Status, Codes: errbody.Codes(body)}
	se.Code, se.Message, se.Detail = errbody.Parse(body)
	if req := resp.Request; req != nil {
		se.Method, se.Host, se.URL = req.Method, req.URL.Host, req.URL.Redacted()
	}
	return se
}

// fetchStatus finds the status in containerd's fetcher errors, which are
// plain text: "unexpected status code URL: 403 Forbidden".
var fetchStatus = regexp.MustCompile(`unexpected status code (\S+): (([1-5][0-9][0-9])\b[^-]*)`)

// TypedError returns err with a registry's answer in it as a *StatusError,
// where containerd's remotes report one otherwise: as a
// remotes/errors.ErrUnexpectedStatus, or, from its fetcher, only as text
// ("unexpected status code URL: 403 Forbidden"). The *StatusError wraps
// err; it says what err says, but for a bare ErrUnexpectedStatus, whose
// text is a whole URL and no reason: then it says the request, the status
// and what the registry said. Nil, errors with a *StatusError in them, and
// errors without an answer are returned as they are.
func TypedError(err error) error {
	var se *StatusError
	if err == nil || errors.As(err, &se) {
		return err
	}
	var us remoteserrors.ErrUnexpectedStatus
	if errors.As(err, &us) {
		se = &StatusError{Method: us.RequestMethod, StatusCode: us.StatusCode, Status: us.Status, Codes: errbody.Codes(us.Body), Err: err}
		se.Code, se.Message, se.Detail = errbody.Parse(us.Body)
		if u, perr := url.Parse(us.RequestURL); perr == nil {
			se.Host, se.URL = u.Host, u.Redacted()
		}
		if _, direct := err.(remoteserrors.ErrUnexpectedStatus); direct {
			se.request = true
		} else {
			se.text = err.Error()
		}
		return se
	}
	if m := fetchStatus.FindStringSubmatch(err.Error()); m != nil {
		code, _ := strconv.Atoi(m[3])
		se = &StatusError{Method: http.MethodGet, StatusCode: code, Status: strings.TrimSpace(m[2]), Err: err, text: err.Error()}
		if u, perr := url.Parse(m[1]); perr == nil {
			se.Host, se.URL = u.Host, u.Redacted()
		}
		return se
	}
	return err
}
