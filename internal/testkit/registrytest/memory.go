package registrytest

import (
	"io"
	"log"
	"net/http/httptest"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Memory is go-containerregistry's in-process registry (pkg/registry),
// served over plain HTTP on 127.0.0.1: a registry kept by others for
// hermetic unit tests and runnable examples, with no binary to install.
// Its blobs are shared by all repositories.
type Memory struct {
	srv *httptest.Server
	// Host is "127.0.0.1:PORT".
	Host string
	// URL is "http://127.0.0.1:PORT".
	URL string
}

// StartMemory starts an in-process registry; with referrers it serves the
// OCI 1.1 referrers API. Close stops it.
func StartMemory(referrers bool) *Memory {
	h := registry.New(registry.WithReferrersSupport(referrers), registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(h)
	return &Memory{srv: srv, Host: srv.Listener.Addr().String(), URL: srv.URL}
}

// Client returns a client of the registry.
func (m *Memory) Client() *Client { return NewClient(m.URL, nil, "", "") }

// Close stops the registry.
func (m *Memory) Close() { m.srv.Close() }
