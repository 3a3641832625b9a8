package relocator

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns wraps one of them (or,
// for a source reference that cannot be normalised, the reference package's
// error); test with errors.Is.
var (
	// ErrInvalidKind is returned by ParseKind and New for an unknown mapping kind.
	ErrInvalidKind = errors.New("invalid mapping kind")

	// ErrInvalidPrefix is returned by New for an invalid repository prefix
	// (one-to-one, prefix) or target repository (many-to-one).
	ErrInvalidPrefix = errors.New("invalid repository prefix")

	// ErrDigestRequired is returned by Map for a many-to-one mapping when no
	// digest is given: many-to-one pushes by digest only.
	ErrDigestRequired = errors.New("digest required")

	// ErrInvalidTarget is returned by Map when the relocated reference would
	// not be a valid reference (for example a name longer than 255 characters).
	ErrInvalidTarget = errors.New("invalid target reference")

	// ErrCollision is returned by Check when two distinct source repositories
	// would map to the same target repository.
	ErrCollision = errors.New("target repository collision")
)

// valueError names a user-supplied value and what is wrong with it, e.g.
//
//	repository prefix "Example.com/User": must be lower case
//
// while wrapping a sentinel (and the underlying cause, if any) for errors.Is.
type valueError struct {
	subject  string // "repository prefix", "target repository", "mapping"
	value    string
	problem  string
	sentinel error
	cause    error
}

func (e *valueError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%s %q: %s: %v", e.subject, e.value, e.problem, e.cause)
	}
	return fmt.Sprintf("%s %q: %s", e.subject, e.value, e.problem)
}

func (e *valueError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.sentinel, e.cause}
	}
	return []error{e.sentinel}
}
