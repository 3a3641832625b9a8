package resolver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cnabio/cnab-relocate/internal/retry"

	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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
	// Insecure lists hosts (HOST, HOST:PORT or an IP CIDR, as in docker's
	// insecure-registries) that may be reached over plain HTTP or over TLS
	// without certificate verification. HOST alone matches every port.
	Insecure []string
	// CertsDir is docker's per-host certificate directory: for a registry
	// HOST[:PORT], CertsDir/HOST[:PORT]/*.crt are trusted CAs and
	// NAME.cert with NAME.key a client certificate. Default:
	// /etc/docker/certs.d. Set it to "-" to ignore it.
	CertsDir string
	// Retries is how many times a transient failure is retried. Nil means
	// 4; a pointer to 0 means none.
	Retries *int
	// Tracker records upload status; containerd's in-memory tracker by
	// default. Resolver.Tracker returns it.
	Tracker docker.StatusTracker
	// Transport is the base round tripper; a tuned http.Transport by default.
	// Tests use it to count or break requests. When set, TLS settings of
	// this package are not applied to it.
	Transport http.RoundTripper
	// UserAgent is sent with every request. Default: "cnab-relocate".
	UserAgent string
	// Logger receives debug records about retries and, when it takes
	// debug records, one per request sent and its answer (method, URL,
	// status, the registry's error code and message, Docker-Content-Digest,
	// redirects, time taken; never a credential). Discards by default.
	Logger *slog.Logger
}

// New returns a resolver configured by opts. It is safe for concurrent use.
// Configuration files are read here, so errors in them surface now and name
// the file.
func New(opts Options) (*Resolver, error) {
	h, err := newHosts(opts)
	if err != nil {
		return nil, err
	}
	if opts.Tracker == nil {
		opts.Tracker = docker.NewInMemoryTracker()
	}
	headers := http.Header{}
	ua := opts.UserAgent
	if ua == "" {
		ua = "cnab-relocate"
	}
	headers.Set("User-Agent", ua)
	return &Resolver{
		Resolver: authErrors{docker.NewResolver(docker.ResolverOptions{
			Hosts:   h.registryHosts,
			Headers: headers,
			Tracker: opts.Tracker,
		})},
		hosts:   h,
		ua:      ua,
		tracker: opts.Tracker,
	}, nil
}

// Tracker returns the tracker the resolver records push status in
// (Options.Tracker, or one of its own): it tells a blob mounted from
// another repository from one that was already there.
func (r *Resolver) Tracker() docker.StatusTracker { return r.tracker }

// authErrors returns an *AuthError from Resolve as it is, without
// containerd's guess in front of it ("pull access denied, repository does
// not exist or may require authorization"): the error says which host
// refused which credentials.
type authErrors struct {
	remotes.Resolver
}

func (r authErrors) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	name, desc, err := r.Resolver.Resolve(ctx, ref)
	var ae *AuthError
	if err != nil && errors.As(err, &ae) {
		err = ae
	}
	return name, desc, err
}

// hosts builds one RegistryHost per registry host, and one transport per
// host any request goes to (registry, token realm, or where a registry
// redirects): TLS settings and the HTTP fallback belong to the host a
// request is sent to, never to the host that redirected it there. Both are
// cached so connections are reused across images.
type hosts struct {
	opts    Options
	retries int
	// roots is the system roots plus Options.CACerts, loaded on first use:
	// parsing the system's certificates costs a run about 30 ms of CPU,
	// which a run over plain HTTP, or one that leaves TLS to Go's own use
	// of the system roots (no CACerts, no certs.d for the host), never pays.
	roots      func() (*x509.CertPool, error)
	creds      *credentials
	authorizer docker.Authorizer
	client     *http.Client
	apiClient  *http.Client // for Resolver.send: drops Authorization on a redirect to another host
	logger     *slog.Logger

	mu         sync.Mutex
	cache      map[string]docker.RegistryHost
	transports map[string]http.RoundTripper
}

func newHosts(opts Options) (*hosts, error) {
	if opts.CertsDir == "" {
		opts.CertsDir = "/etc/docker/certs.d"
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	roots := sync.OnceValues(func() (*x509.CertPool, error) { return systemRootsWith(opts.CACerts) })
	if len(opts.CACerts) > 0 {
		// A CA file that cannot be read is an error now, not at the first
		// TLS connection.
		if _, err := roots(); err != nil {
			return nil, err
		}
	}
	creds, err := loadCredentials(opts.ConfigDir)
	if err != nil {
		return nil, err
	}
	// Once per resolver: a command that reads it twice makes two.
	logger.Debug("docker config read", "path", creds.file.Filename, "found", creds.found)
	h := &hosts{opts: opts, retries: retry.Count(opts.Retries), roots: roots, creds: creds, logger: logger,
		cache: map[string]docker.RegistryHost{}, transports: map[string]http.RoundTripper{}}
	rt := h.retrying(perHost{h})
	h.client = &http.Client{Transport: rt}
	// Token servers may live on other hosts. A token request carries the
	// credentials of the registry that named the realm; a redirect to
	// another host does not get them.
	authClient := &http.Client{Transport: rt, CheckRedirect: stripAuthOnRedirect}
	h.authorizer = newAuthorizer(authClient, creds)
	// The resolver's own requests (Resolver.send) are authorised for the
	// registry; a redirect elsewhere (to blob storage) drops that.
	h.apiClient = authClient
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
	rh := docker.RegistryHost{
		Client:       h.client,
		Authorizer:   h.authorizer,
		Host:         apiHost,
		Scheme:       "https",
		Path:         "/v2",
		Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve | docker.HostCapabilityPush,
	}
	h.cache[host] = rh
	return []docker.RegistryHost{rh}, nil
}

// perHost sends each request with the transport of the host it goes to.
type perHost struct{ h *hosts }

func (p perHost) RoundTrip(req *http.Request) (*http.Response, error) {
	return p.h.transport(req.URL.Host).RoundTrip(req)
}

// transport returns the transport for requests to host (host[:port]): its
// TLS settings (certs.d, --insecure-registry) and, for loopback and
// insecure hosts, HTTPS first with a fallback to plain HTTP when the server
// does not speak TLS, as docker treats insecure registries.
func (h *hosts) transport(host string) http.RoundTripper {
	h.mu.Lock()
	defer h.mu.Unlock()
	if rt, ok := h.transports[host]; ok {
		return rt
	}
	insecure := h.isInsecure(host)
	rt := h.baseTransport(host, insecure)
	if debugging(h.logger) {
		// Inside the HTTP fallback: each scheme tried shows.
		rt = debugTransport{next: rt, logger: h.logger}
	}
	if insecure || docker.IsLocalhost(host) {
		rt = docker.NewHTTPFallback(rt)
	}
	h.transports[host] = rt
	return rt
}

func (h *hosts) isInsecure(host string) bool {
	hostname := host
	if hn, _, err := net.SplitHostPort(host); err == nil {
		hostname = hn
	}
	ip := net.ParseIP(strings.Trim(hostname, "[]"))
	for _, i := range h.opts.Insecure {
		i = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(i, "http://"), "https://"), "/")
		if i == host || i == hostname {
			return true
		}
		// A CIDR, as in docker's insecure-registries.
		if _, n, err := net.ParseCIDR(i); err == nil && ip != nil && n.Contains(ip) {
			return true
		}
	}
	return false
}

// baseTransport returns a new transport for host.
func (h *hosts) baseTransport(host string, insecure bool) http.RoundTripper {
	base := h.opts.Transport
	if base == nil {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // only for --insecure-registry hosts
		if len(h.opts.CACerts) > 0 {
			cfg.RootCAs, _ = h.roots() // loaded, and checked, in newHosts
		} // else nil: Go verifies with the system roots, loaded at the first handshake
		h.certsDir(host, cfg)
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

// retrying always wraps rt, even with no retries, so that containerd never
// replays a push body itself (see StatusError).
func (h *hosts) retrying(rt http.RoundTripper) http.RoundTripper {
	return &retryTransport{base: rt, retries: h.retries, logger: h.logger}
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
	system, err := h.roots()
	if err != nil {
		return // not with CACerts: newHosts has checked them
	}
	roots := system.Clone()
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
