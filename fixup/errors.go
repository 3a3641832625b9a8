package fixup

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes/docker"

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
	// ErrBaseMissing is returned for an image of a delta archive whose
	// content left out of the delta (held by a base archive) is not in the
	// target, nor mountable into it: the base is to be relocated first.
	ErrBaseMissing = errors.New("left out of the delta archive and not in the target")
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
	// ErrUnsupportedResolver is matched by the first push through a
	// ClientOptions.Resolver whose pusher cannot stream (it is not a
	// containerd content.Ingester); nothing is pushed.
	ErrUnsupportedResolver = errors.New("unsupported resolver")
	// ErrNoPlatform is returned for an index none of whose manifests is
	// for a platform ClientOptions.Platforms selects.
	ErrNoPlatform = errors.New("no matching platform")
	// ErrSparseIndex is matched by a target registry's refusal of a sparse
	// index: an index pushed as it is while some of its manifests (the
	// platforms not selected) are absent.
	ErrSparseIndex = errors.New("sparse index refused")
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

	kinds []error
}

func (e *RegistryError) Error() string {
	msg := e.Err.Error()
	if slices.Contains(e.kinds, ErrAuthentication) && !errors.Is(e.Err, ErrAuthentication) {
		return "authentication failed: " + msg
	}
	return msg
}

func (e *RegistryError) Unwrap() []error { return append(slices.Clone(e.kinds), e.Err) }

// registryError describes err, from or on the way to registry host, as a
// *RegistryError: its status and code are those of the registry's answer
// in it (a *resolver.StatusError, which resolver.TypedError makes of
// containerd's reports); the sentinels it matches are read from types,
// never from message text. Cancellation, input errors and errors already
// described are returned as they are.
func registryError(host string, err error) error {
	var re *RegistryError
	if err == nil || errors.As(err, &re) || errors.Is(err, ErrInvalidInput) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	err = resolver.TypedError(err)
	re = &RegistryError{Host: host, Err: err}
	var se *resolver.StatusError
	if errors.As(err, &se) {
		re.StatusCode, re.Code, re.Message = se.StatusCode, se.Code, se.Message
	}
	switch {
	case retry.PlainHTTP(err):
		re.kinds = append(re.kinds, ErrPlainHTTP)
	case retry.CertificateFailure(err):
		re.kinds = append(re.kinds, ErrUnknownAuthority)
	case errors.Is(err, docker.ErrInvalidAuthorization) ||
		re.StatusCode == http.StatusUnauthorized || (se != nil && slices.Contains(se.Codes, "UNAUTHORIZED")):
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
