package registrytest

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is a plain-HTTP reverse proxy on 127.0.0.1 in front of a Registry that counts the
// requests going through it. It streams bodies both ways and rewrites the registry's Location
// headers to itself, so upload sessions keep going through it. Its methods are safe for
// concurrent use.
type Proxy struct {
	// Host is "127.0.0.1:PORT".
	Host string
	// URL is "http://127.0.0.1:PORT".
	URL string

	target    *url.URL
	srv       *http.Server
	ln        net.Listener
	transport *http.Transport
	done      chan struct{}

	mu       sync.Mutex
	counts   map[string]int
	requests []string
	uploaded atomic.Int64
}

// NewCountingProxy starts a Proxy in front of target (plain HTTP or TLS; the proxy itself speaks
// plain HTTP). Credentials pass through unchanged. It panics if it cannot listen on 127.0.0.1,
// as httptest.NewServer does. Close it when done.
func NewCountingProxy(target *Registry) *Proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("registrytest: proxy: " + err.Error())
	}
	tu, err := url.Parse(target.URL)
	if err != nil {
		panic("registrytest: proxy: " + err.Error())
	}
	p := &Proxy{
		Host:   ln.Addr().String(),
		URL:    "http://" + ln.Addr().String(),
		target: tu,
		ln:     ln,
		done:   make(chan struct{}),
		counts: map[string]int{},
		transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSClientConfig:     &tls.Config{RootCAs: target.CertPool, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.target)
		},
		Transport:      p.transport,
		ModifyResponse: p.rewriteLocation,
		ErrorLog:       log.New(io.Discard, "", 0),
	}
	p.srv = &http.Server{Handler: p.count(rp), ReadHeaderTimeout: 30 * time.Second}
	go func() {
		defer close(p.done)
		_ = p.srv.Serve(ln)
	}()
	return p
}

// Counts returns how many requests of each kind went through, keyed "METHOD KIND" with KIND one
// of: ping (/v2/), manifest, blob (/blobs/<digest>), upload (/blobs/uploads/...), tags,
// catalog, referrers, other. A PUT to an upload (the one that completes it) counts as
// "PUT blob"; a POST with ?mount= counts as "POST mount", not "POST upload".
func (p *Proxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		m[k] = v
	}
	return m
}

// Requests returns every request so far as "METHOD PATH?QUERY" ("METHOD PATH" without a
// query), in the order they arrived.
func (p *Proxy) Requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.requests...)
}

// BytesUploaded returns the request body bytes sent to blob upload URLs (POST, PATCH and PUT)
// that the proxy forwarded.
func (p *Proxy) BytesUploaded() int64 { return p.uploaded.Load() }

// Reset forgets the counts, the requests and the bytes uploaded.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
	p.requests = nil
	p.uploaded.Store(0)
}

// Close stops the proxy, closing open connections.
func (p *Proxy) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		_ = p.srv.Close()
	}
	<-p.done
	p.transport.CloseIdleConnections()
}

func (p *Proxy) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := classify(r)
		line := r.Method + " " + r.URL.Path
		if r.URL.RawQuery != "" {
			line += "?" + r.URL.RawQuery
		}
		p.mu.Lock()
		p.counts[kind]++
		p.requests = append(p.requests, line)
		p.mu.Unlock()
		if kind == "POST upload" || kind == "POST mount" || kind == "PATCH upload" || kind == "PUT blob" {
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = &countingBody{ReadCloser: r.Body, n: &p.uploaded}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// rewriteLocation points the registry's absolute Location headers at the proxy.
func (p *Proxy) rewriteLocation(resp *http.Response) error {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil
	}
	u, err := url.Parse(loc)
	if err != nil || !u.IsAbs() || u.Host != p.target.Host {
		return nil
	}
	u.Scheme, u.Host = "http", p.Host
	resp.Header.Set("Location", u.String())
	return nil
}

var (
	manifestPath = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)
	uploadPath   = regexp.MustCompile(`^/v2/.+/blobs/uploads(/[^/]*)?$`)
	blobPath     = regexp.MustCompile(`^/v2/.+/blobs/[^/]+:[^/]+$`)
	tagsPath     = regexp.MustCompile(`^/v2/.+/tags/list$`)
	referrers    = regexp.MustCompile(`^/v2/.+/referrers/[^/]+$`)
)

// classify returns the Counts key of a request.
func classify(r *http.Request) string {
	path := r.URL.Path
	kind := "other"
	switch {
	case path == "/v2/" || path == "/v2":
		kind = "ping"
	case path == "/v2/_catalog":
		kind = "catalog"
	case uploadPath.MatchString(path):
		kind = "upload"
		switch {
		case r.Method == http.MethodPut:
			kind = "blob"
		case r.Method == http.MethodPost && r.URL.Query().Has("mount"):
			kind = "mount"
		}
	case blobPath.MatchString(path):
		kind = "blob"
	case manifestPath.MatchString(path):
		kind = "manifest"
	case tagsPath.MatchString(path):
		kind = "tags"
	case referrers.MatchString(path):
		kind = "referrers"
	}
	return r.Method + " " + kind
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
