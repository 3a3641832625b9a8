package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/remotes/docker/auth"
	"github.com/containerd/errdefs"
	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	clicredentials "github.com/docker/cli/cli/config/credentials"
)

// indexServer is the key the docker CLI stores Docker Hub credentials under.
const indexServer = "https://index.docker.io/v1/"

// credentials looks credentials up in a docker CLI configuration, the way
// the docker CLI does, and remembers what it found per host so that a
// credential helper runs once per host and run.
type credentials struct {
	file  *configfile.ConfigFile
	found bool // the file exists

	mu    sync.Mutex
	cache map[string]credential
}

// credential is what was found for one registry host.
type credential struct {
	user, secret string
	token        bool   // secret is an identity token
	source       string // where it came from, for messages
}

// configDir is the docker CLI configuration directory: $DOCKER_CONFIG, else
// ~/.docker. It is computed on each call (the docker CLI's config.Dir
// caches the first answer for the life of the process).
func configDir() string {
	if d := os.Getenv(config.EnvOverrideConfigDir); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".docker")
}

func loadCredentials(dir string) (*credentials, error) {
	if dir == "" {
		dir = configDir()
	}
	path := filepath.Join(dir, config.ConfigFileName)
	c := &credentials{cache: map[string]credential{}}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		c.file = configfile.New(path)
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrDockerConfig, path, err)
	}
	defer f.Close()
	cf := configfile.New(path)
	if err := cf.LoadFromReader(f); err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrDockerConfig, path, err)
	}
	// "auths" keys are matched leniently by the docker CLI ("https://HOST",
	// "HOST/v2/" and "HOST" all match HOST); make "credHelpers" keys as
	// lenient, so that a helper configured for "https://HOST" is used for
	// HOST too. An exact key wins.
	lenient := map[string]string{}
	for k, v := range cf.CredentialHelpers {
		if h := clicredentials.ConvertToHostname(k); h != k {
			lenient[h] = v
		}
	}
	for h, v := range lenient {
		if _, ok := cf.CredentialHelpers[h]; !ok {
			cf.CredentialHelpers[h] = v
		}
	}
	c.file, c.found = cf, true
	return c, nil
}

// key is the configuration key for a registry host: Docker Hub's hosts use
// the index server URL, as the docker CLI does; others their host[:port].
func key(host string) string {
	switch host {
	case "docker.io", "registry-1.docker.io", "index.docker.io":
		return indexServer
	}
	return host
}

// source describes where credentials for k come from.
func (c *credentials) source(k string) string {
	helper := c.file.CredentialsStore
	if h, ok := c.file.CredentialHelpers[k]; ok {
		helper = h
	}
	if helper != "" {
		return "credential helper docker-credential-" + helper
	}
	return c.file.Filename
}

// get returns the credential for host; a zero user and secret when there is
// none. It is safe for concurrent use.
func (c *credentials) get(host string) (credential, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cr, ok := c.cache[host]; ok {
		return cr, nil
	}
	k := key(host)
	cr := credential{source: c.source(k)}
	ac, err := c.file.GetAuthConfig(k)
	if err != nil {
		return cr, &AuthError{Host: host, Source: cr.source, Rejected: true,
			Err: fmt.Errorf("reading its credentials from %s: %w", cr.source, err)}
	}
	if ac.IdentityToken != "" {
		cr.secret, cr.token = ac.IdentityToken, true
	} else {
		cr.user, cr.secret = ac.Username, ac.Password
	}
	c.cache[host] = cr
	return cr, nil
}

// lookup returns the username and secret for host, as containerd's
// authorizer wants them: an identity token is returned as the secret with
// an empty username, which containerd sends as an OAuth2 refresh token to
// the token realm.
func (c *credentials) lookup(host string) (string, string, error) {
	cr, err := c.get(host)
	if err != nil {
		return "", "", err
	}
	return cr.user, cr.secret, nil
}

// authorizer wraps containerd's authorizer so that
//   - a credential is only ever sent to the host it belongs to: a redirect
//     keeps no Authorization header of the host it came from (net/http
//     keeps it when only the port differs, or for a subdomain);
//   - credentials a registry refused are not sent again and again, and every
//     failure names the host and where the credentials came from.
type authorizer struct {
	inner  docker.Authorizer // Basic auth
	creds  *credentials
	client *http.Client

	mu      sync.Mutex
	bearers map[string]*bearer // host -> its bearer tokens (see bearer)
}

func newAuthorizer(client *http.Client, creds *credentials) *authorizer {
	return &authorizer{
		inner: docker.NewDockerAuthorizer(
			docker.WithAuthClient(client),
			docker.WithAuthCreds(creds.lookup),
		),
		creds:   creds,
		client:  client,
		bearers: map[string]*bearer{},
	}
}

// maxTokenRefusals bounds how many times one request is sent again with a
// new token after the registry refused the last (a token that died early,
// clock skew): then the credentials are taken as refused.
const maxTokenRefusals = 3

// Authorize sets the Authorization header of req for its own host, or
// none. containerd also calls it for each redirect.
func (a *authorizer) Authorize(ctx context.Context, req *http.Request) error {
	req.Header.Del("Authorization")
	a.mu.Lock()
	b := a.bearers[req.URL.Host]
	a.mu.Unlock()
	if b != nil {
		token, err := b.token(ctx)
		if err != nil {
			return a.authError(req.URL.Host, err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		return nil
	}
	if err := a.inner.Authorize(ctx, req); err != nil {
		return a.authError(req.URL.Host, err)
	}
	return nil
}

// bearerChallenge handles a 401 with a Bearer challenge: it learns the
// token server, and forgets the token the registry refused, if any. A
// request refused maxTokenRefusals times running with fresh tokens is an
// *AuthError.
func (a *authorizer) bearerChallenge(c auth.Challenge, responses []*http.Response) error {
	last := responses[len(responses)-1]
	host := last.Request.URL.Host
	a.mu.Lock()
	b := a.bearers[host]
	if b == nil {
		b = newBearer(a.client, host, a.creds.lookup)
		a.bearers[host] = b
	}
	a.mu.Unlock()
	b.challenge(c)
	sent, ok := strings.CutPrefix(last.Request.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return nil
	}
	if mountFromOther(last.Request) {
		// The token may not read the repository to mount from: let
		// containerd upload the blob instead, without asking again.
		return fmt.Errorf("cross-repository mount refused: %w", errdefs.ErrNotImplemented)
	}
	refusals := 0
	for i := len(responses) - 1; i >= 0; i-- {
		r := responses[i]
		if !sameRequest(r.Request, last.Request) || !strings.HasPrefix(r.Request.Header.Get("Authorization"), "Bearer ") || r.StatusCode != http.StatusUnauthorized {
			break
		}
		refusals++
	}
	if refusals > maxTokenRefusals {
		return a.rejected(host, last)
	}
	b.refuse(sent)
	return nil
}

// AddResponses learns from a 401 how to authenticate to its host.
func (a *authorizer) AddResponses(ctx context.Context, responses []*http.Response) error {
	last := responses[len(responses)-1]
	host := last.Request.URL.Host
	for _, c := range auth.ParseAuthHeader(last.Header) {
		if c.Scheme == auth.BearerAuth {
			return a.bearerChallenge(c, responses)
		}
	}
	// A 401 to a cross-repository mount says the source repository may not
	// be read: containerd then uploads the blob instead. Not a failed login.
	mount := mountFromOther(last.Request)
	if sent := last.Request.Header.Get("Authorization"); sent != "" && last.StatusCode == http.StatusUnauthorized && !mount {
		basic := false
		for _, c := range auth.ParseAuthHeader(last.Header) {
			if c.Scheme == auth.BasicAuth {
				basic = true
			}
		}
		// Basic credentials do not change: a second try sends the same.
		// A token that fails twice for the same request (containerd
		// fetches a fresh one after the first) will not do better.
		n := len(responses)
		again := n >= 2 && responses[n-2].Request.Header.Get("Authorization") != "" &&
			sameRequest(responses[n-2].Request, last.Request)
		if (basic && strings.HasPrefix(sent, "Basic ")) || again {
			return a.rejected(host, last)
		}
	}
	if err := a.inner.AddResponses(ctx, responses); err != nil {
		if errors.Is(err, ErrAuthentication) {
			return err
		}
		if errors.Is(err, docker.ErrInvalidAuthorization) {
			cr, _ := a.creds.get(host)
			if cr.secret == "" {
				return &AuthError{Host: host, Source: cr.source, Rejected: true,
					Err: fmt.Errorf("no credentials for %s in %s", host, cr.source)}
			}
			return &AuthError{Host: host, User: cr.user, Source: cr.source, Rejected: true, Err: err}
		}
		return err // includes errdefs.ErrNotImplemented, which containerd expects as is
	}
	return nil
}

// mountFromOther reports whether req asks for a cross-repository mount
// from another repository than its own (a mount from its own repository is
// how PushBlob asks whether a blob is there: its 401 is any request's).
func mountFromOther(req *http.Request) bool {
	q := req.URL.Query()
	if req.Method != http.MethodPost || !q.Has("mount") {
		return false
	}
	repo, ok := strings.CutSuffix(strings.TrimPrefix(req.URL.Path, "/v2/"), "/blobs/uploads/")
	return !ok || q.Get("from") != repo
}

// rejected is the error for credentials the registry refused.
func (a *authorizer) rejected(host string, resp *http.Response) error {
	cr, _ := a.creds.get(host)
	if cr.secret == "" {
		return &AuthError{Host: host, Source: cr.source, Rejected: true,
			Err: fmt.Errorf("no credentials for %s in %s, and anonymous access was refused (%s)", host, cr.source, resp.Status)}
	}
	var what string
	switch {
	case cr.token:
		what = "the identity token"
	case cr.user != "":
		what = fmt.Sprintf("the credentials of user %q", cr.user)
	default:
		what = "the credentials"
	}
	return &AuthError{Host: host, User: cr.user, Source: cr.source, Rejected: true,
		Err: fmt.Errorf("the registry refused %s from %s (%s)", what, cr.source, resp.Status)}
}

// authError wraps a failure to get an Authorization header for host, such
// as a token server refusing the credentials.
func (a *authorizer) authError(host string, err error) error {
	if errors.Is(err, ErrAuthentication) {
		return err
	}
	cr, _ := a.creds.get(host)
	err = TypedError(err)
	e := &AuthError{Host: host, User: cr.user, Source: cr.source, Err: err}
	var se *StatusError
	if errors.As(err, &se) && (se.StatusCode == http.StatusUnauthorized || se.StatusCode == http.StatusForbidden) {
		e.Rejected = true
		if cr.secret == "" {
			e.Err = fmt.Errorf("no credentials for %s in %s, and the token server refused an anonymous token: %w", host, cr.source, err)
		} else {
			e.Err = fmt.Errorf("the token server refused the credentials from %s: %w", cr.source, err)
		}
	}
	return e
}

func sameRequest(r1, r2 *http.Request) bool {
	return r1.Method == r2.Method && r1.URL.String() == r2.URL.String()
}

// stripAuthOnRedirect is a CheckRedirect for clients that set their own
// Authorization header (token requests): it is dropped when the redirect
// leaves the host (host:port) it was meant for.
func stripAuthOnRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
		req.Header.Del("Authorization")
	}
	return nil
}
