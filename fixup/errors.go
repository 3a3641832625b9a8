package fixup

import (
	"errors"

	"github.com/cnabio/cnab-relocate/layout"
)

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
	// ErrSource marks failures on the source side (registry or layout).
	ErrSource = errors.New("source")
	// ErrTarget marks failures on the target side.
	ErrTarget = errors.New("target")
	// ErrOutput is returned when an output file cannot be written.
	ErrOutput = errors.New("output")
)

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
