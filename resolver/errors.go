package resolver

import (
	"errors"
	"fmt"

	"github.com/containerd/containerd/remotes/docker"
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
	ErrRetriesExhausted = errors.New("retries exhausted")
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
