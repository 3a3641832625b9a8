package resolver

import "errors"

var (
	// ErrCACert is returned when a CA certificate file cannot be read or holds no certificate.
	ErrCACert = errors.New("invalid CA certificate")
	// ErrDockerConfig is returned when the docker CLI configuration cannot be read.
	ErrDockerConfig = errors.New("invalid docker configuration")
)
