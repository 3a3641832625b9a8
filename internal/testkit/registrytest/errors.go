package registrytest

import (
	"errors"
	"fmt"
	"net/http"
)

var (
	// ErrNoRegistry reports that the registry binary is missing: run scripts/install-deps.sh.
	ErrNoRegistry = errors.New("distribution registry binary not found (run scripts/install-deps.sh)")
	// ErrNotFound matches a *ResponseError with status 404.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized matches a *ResponseError with status 401.
	ErrUnauthorized = errors.New("unauthorized")
)

// ResponseError is an HTTP response from a registry with a status the request did not expect.
// errors.Is(err, ErrNotFound) and errors.Is(err, ErrUnauthorized) test its status.
type ResponseError struct {
	Method     string
	URL        string
	StatusCode int
	// Body is the start of the response body (the registry's JSON error), if any.
	Body string
}

func (e *ResponseError) Error() string {
	msg := fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// Is reports whether the status matches ErrNotFound (404) or ErrUnauthorized (401).
func (e *ResponseError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	}
	return false
}
