package fixup

import (
	"context"
	"errors"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes/docker"
	remoteserrors "github.com/containerd/containerd/remotes/errors"

	"github.com/cnabio/cnab-relocate/internal/errbody"
	"github.com/cnabio/cnab-relocate/internal/retry"
	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-relocate/resolver"
)

// Sentinel errors. Every error of this package that they describe matches
// them with errors.Is; none names a command-line flag.
var (
	// ErrInvalidInput marks errors in what the caller gave: the bundle, an
	// image reference or digest in it, the options. The CLI exits 2 for them.
	ErrInvalidInput = errors.New("invalid input")
	// ErrInvalidBundle is returned when a bundle cannot be read or parsed.
	ErrInvalidBundle = errors.New("invalid bundle")
	// ErrInvalidImage is returned for a relocatable image whose reference or
	// contentDigest is not valid.
	ErrInvalidImage = errors.New("invalid image")
	// ErrDigestMismatch is returned when content does not have the size or
	// digest the bundle or the descriptor pointing at it says it has. It is
	// layout.ErrDigestMismatch, so errors from a layout match it as they are.
	ErrDigestMismatch = layout.ErrDigestMismatch
	// ErrNotFound is returned, wrapped, when an image, manifest or blob is
	// not where it was looked for. It is containerd's errdefs.ErrNotFound.
	ErrNotFound = errdefs.ErrNotFound
	// ErrSource marks failures on the source side (registry or layout).
	ErrSource = errors.New("source")
	// ErrTarget marks failures on the target side (registry or layout).
	ErrTarget = errors.New("target")
	// ErrOutput is returned when an output (a file, an image layout) cannot
	// be written.
	ErrOutput = errors.New("output")
	// ErrPlainHTTP is matched by a RegistryError from a registry that
	// answered HTTPS with plain HTTP: it must be declared insecure
	// (resolver.Options.Insecure) to be used.
	ErrPlainHTTP = errors.New("registry speaks plain HTTP")
	// ErrUnknownAuthority is matched by a RegistryError from a registry
	// whose certificate is not signed by a trusted authority
	// (resolver.Options.CACerts adds authorities).
	ErrUnknownAuthority = errors.New("certificate signed by an unknown authority")
	// ErrAuthentication is matched by a registry's refusal of the
	// credentials, or of their absence. It is resolver.ErrAuthentication.
	ErrAuthentication = resolver.ErrAuthentication
	// ErrNonDistributable is matched by the refusal of a manifest whose
	// non-distributable (foreign) layers were not copied
	// (ClientOptions.IncludeNonDistributable copies them), or by a target
	// that refuses layer URLs.
	ErrNonDistributable = errors.New("non-distributable layers")
	// ErrUnsupportedResolver is returned by NewClient for a resolver the
	// engine cannot push with.
	ErrUnsupportedResolver = errors.New("unsupported resolver")
)

// RegistryError is a failure at a registry, or on the way to it. Host is
// the registry's host[:port]; when the registry answered, StatusCode is its
// HTTP status and Code and Message its first error (e.g.
// "MANIFEST_BLOB_UNKNOWN"). It matches ErrPlainHTTP, ErrUnknownAuthority
// and ErrAuthentication where they apply, and whatever Err matches.
type RegistryError struct {
	Host       string
	StatusCode int
	Code       string
	Message    string
	Err        error

	kinds   []error
	summary string // what to say instead of Err's text ("" : Err's)
}

func (e *RegistryError) Error() string {
	msg := e.Err.Error()
	if e.summary != "" {
		msg = e.summary
	}
	if slices.Contains(e.kinds, ErrAuthentication) && !errors.Is(e.Err, ErrAuthentication) {
		return "authentication failed: " + msg
	}
	return msg
}

func (e *RegistryError) Unwrap() []error { return append(slices.Clone(e.kinds), e.Err) }

// fetchStatus finds the status in containerd's fetcher errors, which are
// plain strings: "unexpected status code URL: 403 Forbidden".
var fetchStatus = regexp.MustCompile(`unexpected status code \S+: ([1-5][0-9][0-9])\b`)

// registryError describes err, from or on the way to registry host, as a
// *RegistryError. Cancellation, input errors and errors already described
// are returned as they are.
func registryError(host string, err error) error {
	var re *RegistryError
	if err == nil || errors.As(err, &re) || errors.Is(err, ErrInvalidInput) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	re = &RegistryError{Host: host, Err: err}
	var us remoteserrors.ErrUnexpectedStatus
	var se *resolver.StatusError
	var de docker.Error
	switch {
	case errors.As(err, &us):
		re.StatusCode = us.StatusCode
		re.Code, re.Message, _ = errbody.Parse(us.Body)
		// containerd's text is the whole URL (an upload's is a long
		// state token) and no reason: say the request, the status and
		// what the registry said.
		if _, direct := err.(remoteserrors.ErrUnexpectedStatus); direct {
			u, _ := url.Parse(us.RequestURL)
			if u != nil {
				u.RawQuery = ""
				re.summary = us.RequestMethod + " " + u.String() + ": " + us.Status
			} else {
				re.summary = us.RequestMethod + ": " + us.Status
			}
			if re.Code != "" {
				re.summary += ": " + re.Code
				if re.Message != "" {
					re.summary += ": " + re.Message
				}
			}
		}
	case errors.As(err, &se):
		re.StatusCode, re.Code, re.Message = se.StatusCode, se.Code, se.Message
	case errors.As(err, &de):
		re.Code, re.Message = de.Code.Descriptor().Value, de.Message
	}
	if m := fetchStatus.FindStringSubmatch(err.Error()); m != nil && re.StatusCode == 0 {
		re.StatusCode, _ = strconv.Atoi(m[1])
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		re.kinds = append(re.kinds, ErrPlainHTTP)
	case strings.Contains(msg, "certificate signed by unknown authority") || (retry.TLSFailure(err) && strings.Contains(msg, "x509:")):
		re.kinds = append(re.kinds, ErrUnknownAuthority)
	case errors.Is(err, docker.ErrInvalidAuthorization) || re.StatusCode == 401 ||
		strings.Contains(msg, "401 Unauthorized") || strings.Contains(msg, "authorization"):
		re.kinds = append(re.kinds, ErrAuthentication)
	}
	return re
}

// inputError wraps err so that it matches ErrInvalidInput as well as its own
// sentinel.
type inputError struct{ err error }

func (e inputError) Error() string { return e.err.Error() }
func (e inputError) Unwrap() []error {
	return []error{ErrInvalidInput, e.err}
}

// invalid marks err as an input error.
func invalid(err error) error { return inputError{err} }

// sideError names the side (source or target) that failed.
type sideError struct {
	side error
	err  error
}

func (e sideError) Error() string { return e.err.Error() }
func (e sideError) Unwrap() []error {
	return []error{e.side, e.err}
}

// localError marks a failure to write a local file or layout: not worth a
// retry.
type localError struct{ err error }

func (e localError) Error() string   { return e.err.Error() }
func (e localError) Unwrap() []error { return []error{ErrOutput, e.err} }
