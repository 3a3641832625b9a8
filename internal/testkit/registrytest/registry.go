package registrytest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"go/build"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultBinary is where Debian's docker-registry package installs the registry.
const DefaultBinary = "/usr/bin/docker-registry"

// Impl is a registry implementation.
type Impl string

// The registry implementations the tests run. scripts/install-deps.sh
// installs the two distributions; GGCR is built from this module.
const (
	// Distribution28 is Debian's docker-registry, distribution 2.8:
	// $REGISTRY_BIN, else DefaultBinary.
	Distribution28 Impl = ""
	// Distribution3 is distribution v3 (go install
	// github.com/distribution/distribution/v3/cmd/registry@v3.1.2):
	// $REGISTRY_V3_BIN, else registry in GOPATH's bin.
	Distribution3 Impl = "distribution3"
	// GGCR is go-containerregistry's registry with the OCI referrers API
	// (internal/cmd/ggcrregistry), plain HTTP, no auth, blobs in memory:
	// $REGISTRY_GGCR_BIN, else built once per test process.
	GGCR Impl = "ggcr"
)

// Impls lists the implementations, for tests that run on each.
var Impls = []Impl{Distribution28, Distribution3, GGCR}

// String names the implementation.
func (i Impl) String() string {
	switch i {
	case Distribution28:
		return "distribution-2.8"
	case Distribution3:
		return "distribution-3"
	}
	return string(i)
}

// Options configures a registry. The zero value is a plain-HTTP registry without auth.
type Options struct {
	// TLS serves HTTPS with a server certificate for 127.0.0.1, ::1 and localhost, signed by a CA
	// made for this registry (Registry.CAFile, CAPEM, CertPool). Default plain HTTP.
	TLS bool
	// Htpasswd maps user names to passwords; when non-empty the registry requires HTTP Basic auth
	// (distribution's htpasswd auth, bcrypt hashes). Default no auth.
	Htpasswd map[string]string
	// User is the Htpasswd user that HTTPClient and Client authenticate as. Default the first
	// user name in sorted order.
	User string
	// Binary is the registry executable. Default $REGISTRY_BIN, else DefaultBinary.
	Binary string
	// StartTimeout bounds the wait for the registry to answer GET /v2/. Default 10s.
	StartTimeout time.Duration
	// Impl is the registry implementation. Default Distribution28.
	Impl Impl
	// TokenAuth, when set, makes the registry require bearer tokens from a
	// token server the test runs (Registry.Tokens). Not with Htpasswd.
	TokenAuth *TokenAuth
	// AllowLayerURLs accepts manifests whose layers carry URLs (foreign,
	// non-distributable layers): distribution's validation.manifests.urls.allow.
	// Default: refused, as distribution does.
	AllowLayerURLs bool
	// SparseIndexes accepts an index whose manifests are not all in the
	// repository (distribution v3's validation.manifests.indexes.platforms:
	// none). Distribution 2.8 has no such setting: Start fails with it.
	// Default: refused, as distribution does.
	SparseIndexes bool
}

// Registry is a running distribution registry process. Its fields are set once it is ready and
// must not be changed. Its methods are safe for concurrent use.
type Registry struct {
	// Host is "127.0.0.1:PORT".
	Host string
	// URL is "http://127.0.0.1:PORT" or, with TLS, "https://127.0.0.1:PORT" (no trailing slash).
	URL string
	// Dir is the temporary directory holding config.yml, registry.log, the storage under data/,
	// the htpasswd file and the TLS files. Close removes it.
	Dir string
	// LogFile is the registry's log (level warn, stdout and stderr).
	LogFile string
	// CAFile is the PEM file of the CA that signed the server certificate; "" without TLS.
	CAFile string
	// CAPEM is the content of CAFile; nil without TLS.
	CAPEM []byte
	// CertPool holds the CA; nil without TLS.
	CertPool *x509.CertPool
	// Username and Password are the credentials HTTPClient and Client use; "" without Htpasswd.
	Username, Password string
	// Tokens is the token server with Options.TokenAuth; nil without.
	Tokens    *TokenServer
	tokenCert string

	token     string // sent back by this registry in X-Registrytest-Id, to tell it from others
	cmd       *exec.Cmd
	exited    chan struct{}
	transport *http.Transport
	closeOnce sync.Once
	closeErr  error
}

// Start starts a registry for the test and stops it, removing its files, when the test ends. It
// fails the test (t.Fatal, never a skip) if the registry cannot start, for instance when the
// binary is missing: run scripts/install-deps.sh. If the test failed, the end of the registry's
// log is logged.
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	r, err := StartProcess(context.Background(), opts)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if tail := r.LogTail(); tail != "" {
				t.Logf("registry %s log (end):\n%s", r.Host, tail)
			}
		}
		if err := r.Close(); err != nil {
			t.Errorf("registrytest: %v", err)
		}
	})
	return r
}

// StartProcess starts a registry and waits until it answers GET /v2/. ctx bounds the start only;
// the process runs until Close, which the caller must call. The error wraps ErrNoRegistry when
// the binary is missing, and includes the end of the registry's log when the process failed.
func StartProcess(ctx context.Context, opts Options) (*Registry, error) {
	bin, err := executable(opts)
	if err != nil {
		return nil, err
	}
	if opts.Impl == GGCR && (opts.TLS || len(opts.Htpasswd) > 0 || opts.AllowLayerURLs) {
		return nil, fmt.Errorf("registrytest: %s serves plain HTTP without auth or options", opts.Impl)
	}
	if opts.SparseIndexes && opts.Impl != Distribution3 {
		return nil, fmt.Errorf("registrytest: %s has no setting for sparse indexes (distribution v3 has)", opts.Impl)
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}

	dir, err := os.MkdirTemp("", "registrytest-")
	if err != nil {
		return nil, fmt.Errorf("starting registry: %w", err)
	}
	r := &Registry{Dir: dir, LogFile: filepath.Join(dir, "registry.log"), token: randomHex(16)}
	if err := r.prepare(opts); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting registry: %w", err)
	}

	const attempts = 5
	for attempt := 1; ; attempt++ {
		err := r.launch(ctx, bin, opts, timeout)
		if err == nil {
			return r, nil
		}
		tail := r.LogTail()
		r.stop()
		// Another process may take the port between our probe and the registry's bind.
		if attempt < attempts && errors.Is(err, errExited) && strings.Contains(tail, "address already in use") {
			continue
		}
		os.RemoveAll(dir)
		if tail != "" {
			return nil, fmt.Errorf("starting registry %s: %w; log:\n%s", bin, err, tail)
		}
		return nil, fmt.Errorf("starting registry %s: %w", bin, err)
	}
}

var errExited = errors.New("registry process exited")

// prepare writes what does not depend on the port: TLS files, htpasswd, the client transport.
func (r *Registry) prepare(opts Options) error {
	if err := os.MkdirAll(filepath.Join(r.Dir, "data"), 0o755); err != nil {
		return err
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.TLS {
		certs, err := makeCerts(r.Dir)
		if err != nil {
			return err
		}
		r.CAFile, r.CAPEM = certs.caFile, certs.caPEM
		r.CertPool = x509.NewCertPool()
		r.CertPool.AppendCertsFromPEM(certs.caPEM)
		tlsConfig.RootCAs = r.CertPool
	}
	if len(opts.Htpasswd) > 0 {
		content, err := htpasswdFile(opts.Htpasswd)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(r.Dir, "htpasswd"), []byte(content), 0o600); err != nil {
			return err
		}
		user := opts.User
		if user == "" {
			users := make([]string, 0, len(opts.Htpasswd))
			for u := range opts.Htpasswd {
				users = append(users, u)
			}
			sort.Strings(users)
			user = users[0]
		}
		pass, ok := opts.Htpasswd[user]
		if !ok {
			return fmt.Errorf("Options.User %q is not in Options.Htpasswd", user)
		}
		r.Username, r.Password = user, pass
	} else if opts.User != "" {
		return fmt.Errorf("Options.User %q set without Options.Htpasswd", opts.User)
	}
	if opts.TokenAuth != nil {
		if len(opts.Htpasswd) > 0 {
			return errors.New("Options.TokenAuth and Options.Htpasswd are exclusive")
		}
		ts, cert, err := newTokenServer(*opts.TokenAuth, r.Dir)
		if err != nil {
			return err
		}
		r.Tokens, r.tokenCert = ts, cert
	}
	r.transport = &http.Transport{
		Proxy:               nil, // never send loopback traffic to an HTTP(S)_PROXY
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSClientConfig:     tlsConfig,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     90 * time.Second,
	}
	return nil
}

// launch picks a port, writes the configuration, starts the process and waits for it.
func (r *Registry) launch(ctx context.Context, bin string, opts Options, timeout time.Duration) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	r.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	scheme := "http"
	if opts.TLS {
		scheme = "https"
	}
	r.URL = scheme + "://" + r.Host
	configFile := filepath.Join(r.Dir, "config.yml")
	if err := os.WriteFile(configFile, []byte(r.config(opts)), 0o600); err != nil {
		return err
	}
	logf, err := os.OpenFile(r.LogFile, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(bin, "serve", configFile)
	if opts.Impl == GGCR {
		cmd = exec.Command(bin, "-addr", r.Host, "-id", r.token)
	}
	cmd.Dir = r.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = childEnv()
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	r.cmd = cmd
	exited := make(chan struct{})
	r.exited = exited
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	return r.waitReady(ctx, timeout)
}

// config returns the registry's config.yml.
func (r *Registry) config(opts Options) string {
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: %s
  headers:
    X-Registrytest-Id: [%s]
`, q(filepath.Join(r.Dir, "data")), q(r.Host), q(randomHex(16)), q(r.token))
	if opts.TLS {
		fmt.Fprintf(&b, "  tls:\n    certificate: %s\n    key: %s\n",
			q(filepath.Join(r.Dir, "server.pem")), q(filepath.Join(r.Dir, "server-key.pem")))
	}
	if len(opts.Htpasswd) > 0 {
		fmt.Fprintf(&b, "auth:\n  htpasswd:\n    realm: registrytest\n    path: %s\n", q(filepath.Join(r.Dir, "htpasswd")))
	}
	if r.Tokens != nil {
		fmt.Fprintf(&b, "auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
			q(r.Tokens.URL), q(tokenService), q(tokenIssuer), q(r.tokenCert))
	}
	if opts.AllowLayerURLs || opts.SparseIndexes {
		b.WriteString("validation:\n  manifests:\n")
	}
	if opts.AllowLayerURLs {
		b.WriteString("    urls:\n      allow:\n        - ^https?://\n")
	}
	if opts.SparseIndexes {
		b.WriteString("    indexes:\n      platforms: none\n")
	}
	return b.String()
}

// waitReady polls GET /v2/ until this registry (recognised by its X-Registrytest-Id header)
// answers 200 or 401, the process exits, ctx ends or the timeout passes.
func (r *Registry) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Transport: r.transport, Timeout: 2 * time.Second}
	var lastErr error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/v2/", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch {
			case resp.Header.Get("X-Registrytest-Id") != r.token:
				lastErr = fmt.Errorf("GET %s/v2/: answered by another server", r.URL)
			case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized:
				return nil
			default:
				lastErr = fmt.Errorf("GET %s/v2/: %s", r.URL, resp.Status)
			}
		} else {
			lastErr = err
		}
		select {
		case <-r.exited:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("registry not ready after %s: %w", timeout, lastErr)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// stop ends the process: SIGTERM, then SIGKILL after 5s.
func (r *Registry) stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	select {
	case <-r.exited:
	default:
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(5 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.exited
		}
	}
	r.cmd = nil
}

// Close stops the registry and removes Dir. It is safe to call more than once.
func (r *Registry) Close() error {
	r.closeOnce.Do(func() {
		r.stop()
		if r.Tokens != nil {
			r.Tokens.Close()
		}
		if r.transport != nil {
			r.transport.CloseIdleConnections()
		}
		if err := os.RemoveAll(r.Dir); err != nil {
			r.closeErr = fmt.Errorf("removing registry directory: %w", err)
		}
	})
	return r.closeErr
}

// LogTail returns the last lines (at most 4 KiB) of the registry's log.
func (r *Registry) LogTail() string {
	f, err := os.Open(r.LogFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 4096
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		if _, err := f.Seek(fi.Size()-max, io.SeekStart); err != nil {
			return ""
		}
	}
	data, _ := io.ReadAll(f)
	if len(data) == max {
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	return strings.TrimRight(string(data), "\n")
}

// Transport returns the registry's shared transport: it trusts the registry's CA and sends no
// credentials. Do not modify it.
func (r *Registry) Transport() *http.Transport { return r.transport }

// HTTPClient returns a client that trusts the registry's CA and, with Htpasswd, sends Basic auth
// as Username to the registry's host (preemptively, as distribution's htpasswd auth expects).
func (r *Registry) HTTPClient() *http.Client {
	if r.Tokens != nil {
		return &http.Client{Transport: &adminTokens{base: r.transport, ts: r.Tokens}}
	}
	if r.Username == "" {
		return &http.Client{Transport: r.transport}
	}
	return &http.Client{Transport: &basicAuthTransport{base: r.transport, host: r.Host, user: r.Username, pass: r.Password}}
}

// Client returns a Client for the registry that authenticates as Username.
func (r *Registry) Client() *Client {
	return NewClient(r.URL, r.HTTPClient(), r.Username, r.Password)
}

type basicAuthTransport struct {
	base             http.RoundTripper
	host, user, pass string
}

func (t *basicAuthTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == t.host && req.Header.Get("Authorization") == "" {
		req = req.Clone(req.Context())
		req.SetBasicAuth(t.user, t.pass)
	}
	return t.base.RoundTrip(req)
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// childEnv is our environment without REGISTRY_* variables, which would override config.yml.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			env = append(env, kv)
		}
	}
	return env
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// executable returns the executable of opts' implementation.
func executable(opts Options) (string, error) {
	bin, env := opts.Binary, ""
	switch opts.Impl {
	case Distribution28:
		env = "REGISTRY_BIN"
		if bin == "" {
			bin = os.Getenv(env)
		}
		if bin == "" {
			bin = DefaultBinary
		}
	case Distribution3:
		env = "REGISTRY_V3_BIN"
		if bin == "" {
			bin = os.Getenv(env)
		}
		if bin == "" {
			bin = filepath.Join(build.Default.GOPATH, "bin", "registry")
		}
	case GGCR:
		env = "REGISTRY_GGCR_BIN"
		if bin == "" {
			bin = os.Getenv(env)
		}
		if bin == "" {
			return buildGGCR()
		}
	default:
		return "", fmt.Errorf("registrytest: unknown implementation %q", opts.Impl)
	}
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%w: no executable %s for %s (set %s to use another path)", ErrNoRegistry, bin, opts.Impl, env)
	}
	return bin, nil
}

var ggcrOnce struct {
	sync.Once
	bin string
	err error
}

// buildGGCR builds internal/cmd/ggcrregistry once per process, into a
// temporary directory that stays for the process's life.
func buildGGCR() (string, error) {
	ggcrOnce.Do(func() {
		dir, err := os.MkdirTemp("", "registrytest-ggcr-")
		if err != nil {
			ggcrOnce.err = err
			return
		}
		bin := filepath.Join(dir, "ggcrregistry")
		cmd := exec.Command("go", "build", "-o", bin, "github.com/cnabio/cnab-relocate/internal/cmd/ggcrregistry")
		if out, err := cmd.CombinedOutput(); err != nil {
			ggcrOnce.err = fmt.Errorf("%w: building ggcrregistry: %v\n%s", ErrNoRegistry, err, out)
			return
		}
		ggcrOnce.bin = bin
	})
	return ggcrOnce.bin, ggcrOnce.err
}
