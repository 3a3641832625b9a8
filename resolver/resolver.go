package resolver

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
)

// Options configures a resolver. The zero value works: docker CLI
// credentials from the default location, system roots, 4 retries.
type Options struct {
	// ConfigDir is the docker CLI configuration directory. Default:
	// $DOCKER_CONFIG, else ~/.docker.
	ConfigDir string
	// CACerts are PEM files whose certificates are trusted in addition to
	// the system roots, for every host.
	CACerts []string
	// Insecure lists hosts (HOST or HOST:PORT) that may be reached over plain
	// HTTP or over TLS without certificate verification.
	Insecure []string
	// CertsDir is docker's per-host certificate directory. Default:
	// /etc/docker/certs.d. Set it to "-" to ignore it.
	CertsDir string
	// Retries is how many times a transient failure is retried. If 0, 4 is
	// used; if negative, requests are not retried.
	Retries int
	// Tracker records upload status; containerd's in-memory tracker by default.
	// A caller that wants to tell a mount from an existing blob passes its own.
	Tracker docker.StatusTracker
	// Transport is the base round tripper; a tuned http.Transport by default.
	// Tests use it to count or break requests. When set, TLS settings of
	// this package are not applied to it.
	Transport http.RoundTripper
	// UserAgent is sent with every request. Default: "cnab-relocate".
	UserAgent string
	// Logger receives debug records about retries; discards by default.
	Logger *slog.Logger
}

// New returns a resolver configured by opts. It is safe for concurrent use.
// Configuration files are read here, so errors in them surface now and name
// the file.
func New(opts Options) (remotes.Resolver, error) {
	h, err := newHosts(opts)
	if err != nil {
		return nil, err
	}
	headers := http.Header{}
	ua := opts.UserAgent
	if ua == "" {
		ua = "cnab-relocate"
	}
	headers.Set("User-Agent", ua)
	return docker.NewResolver(docker.ResolverOptions{
		Hosts:   h.registryHosts,
		Headers: headers,
		Tracker: opts.Tracker,
	}), nil
}

// hosts builds one RegistryHost per registry host, each with its own
// transport (TLS settings and HTTP fallback are per host), and caches them so
// connections are reused across images.
type hosts struct {
	opts       Options
	roots      *x509.CertPool
	creds      *credentials
	authorizer docker.Authorizer
	logger     *slog.Logger

	mu    sync.Mutex
	cache map[string]docker.RegistryHost
}

func newHosts(opts Options) (*hosts, error) {
	if opts.Retries == 0 {
		opts.Retries = 4
	}
	if opts.CertsDir == "" {
		opts.CertsDir = "/etc/docker/certs.d"
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	roots, err := systemRootsWith(opts.CACerts)
	if err != nil {
		return nil, err
	}
	creds, err := loadCredentials(opts.ConfigDir)
	if err != nil {
		return nil, err
	}
	h := &hosts{opts: opts, roots: roots, creds: creds, logger: logger, cache: map[string]docker.RegistryHost{}}
	// Token servers may live on other hosts; they get the shared roots and
	// the same retrying transport.
	authClient := &http.Client{Transport: h.retrying(h.baseTransport("", false))}
	h.authorizer = docker.NewDockerAuthorizer(
		docker.WithAuthClient(authClient),
		docker.WithAuthCreds(creds.lookup),
	)
	return h, nil
}

func systemRootsWith(files []string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w %s: %v", ErrCACert, f, err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w %s: no PEM certificate found", ErrCACert, f)
		}
	}
	return pool, nil
}

func (h *hosts) registryHosts(host string) ([]docker.RegistryHost, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if rh, ok := h.cache[host]; ok {
		return []docker.RegistryHost{rh}, nil
	}
	apiHost := host
	if host == "docker.io" {
		apiHost = "registry-1.docker.io"
	}
	insecure := h.isInsecure(host)
	rt := h.baseTransport(apiHost, insecure)
	if insecure || docker.IsLocalhost(host) {
		// HTTPS first, plain HTTP when the server does not speak TLS, as
		// docker treats insecure registries.
		rt = docker.NewHTTPFallback(rt)
	}
	rh := docker.RegistryHost{
		Client:       &http.Client{Transport: h.retrying(rt)},
		Authorizer:   h.authorizer,
		Host:         apiHost,
		Scheme:       "https",
		Path:         "/v2",
		Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve | docker.HostCapabilityPush,
	}
	h.cache[host] = rh
	return []docker.RegistryHost{rh}, nil
}

func (h *hosts) isInsecure(host string) bool {
	hostname := host
	if hn, _, err := net.SplitHostPort(host); err == nil {
		hostname = hn
	}
	for _, i := range h.opts.Insecure {
		i = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(i, "http://"), "https://"), "/")
		if i == host || i == hostname {
			return true
		}
	}
	return false
}

// baseTransport returns the transport for host ("" for token servers).
func (h *hosts) baseTransport(host string, insecure bool) http.RoundTripper {
	base := h.opts.Transport
	if base == nil {
		cfg := &tls.Config{RootCAs: h.roots, MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // only for --insecure-registry hosts
		if host != "" {
			h.certsDir(host, cfg)
		}
		base = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       cfg,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 2 * time.Minute,
			ExpectContinueTimeout: 5 * time.Second,
			MaxIdleConns:          100,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		}
	}
	return base
}

func (h *hosts) retrying(rt http.RoundTripper) http.RoundTripper {
	if h.opts.Retries < 0 {
		return rt
	}
	return &retryTransport{base: rt, retries: h.opts.Retries, logger: h.logger}
}

// certsDir applies docker's /etc/docker/certs.d/HOST/ conventions to cfg:
// *.crt are extra roots, NAME.cert with NAME.key are client certificates.
func (h *hosts) certsDir(host string, cfg *tls.Config) {
	if h.opts.CertsDir == "-" {
		return
	}
	dir := filepath.Join(h.opts.CertsDir, host)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	roots := h.roots.Clone()
	for _, e := range entries {
		name := filepath.Join(dir, e.Name())
		switch {
		case strings.HasSuffix(e.Name(), ".crt"):
			if pem, err := os.ReadFile(name); err == nil {
				roots.AppendCertsFromPEM(pem)
			}
		case strings.HasSuffix(e.Name(), ".cert"):
			key := strings.TrimSuffix(name, ".cert") + ".key"
			if pair, err := tls.LoadX509KeyPair(name, key); err == nil {
				cfg.Certificates = append(cfg.Certificates, pair)
			} else {
				h.logger.Warn("ignoring client certificate", "file", name, "err", err)
			}
		}
	}
	cfg.RootCAs = roots
}
