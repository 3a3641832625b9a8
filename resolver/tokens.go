package resolver

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/remotes/docker/auth"
)

// bearer keeps a registry's bearer tokens: one per set of scopes, fetched
// once however many requests want it at once, used until it expires by
// the local clock (its expires_in, a little early), and fetched again when
// the registry refuses it sooner (clock skew). containerd's authorizer
// keeps a token (or a failure to fetch one, such as a request's
// cancellation) for the life of the process, and drops every token of a
// host at each refusal, so that concurrent requests fetch a storm of them.
type bearer struct {
	client *http.Client
	host   string
	creds  func(host string) (string, string, error)

	mu      sync.Mutex
	realm   string
	service string
	scope   string // the last challenge's scope, for requests without their own
	tokens  map[string]*tokenCall
}

// tokenCall is a token, or the one fetch of it under way.
type tokenCall struct {
	done    chan struct{} // closed when the fetch ends
	token   string
	expires time.Time
	err     error
}

// defaultExpiresIn is a token's life when the token server does not say:
// the distribution token spec's default.
const defaultExpiresIn = 60 * time.Second

func newBearer(client *http.Client, host string, creds func(string) (string, string, error)) *bearer {
	return &bearer{client: client, host: host, creds: creds, tokens: map[string]*tokenCall{}}
}

// challenge learns the realm and service of a Bearer challenge.
func (b *bearer) challenge(c auth.Challenge) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.realm, b.service = c.Parameters["realm"], c.Parameters["service"]
	if s := c.Parameters["scope"]; s != "" {
		b.scope = s
	}
}

// refuse forgets token, which the registry refused: the next request for
// its scopes fetches a new one. A token already replaced is left alone,
// so that the requests that all met the same dead token fetch one new
// token between them.
func (b *bearer) refuse(token string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, c := range b.tokens {
		select {
		case <-c.done:
			if c.token == token {
				delete(b.tokens, k)
			}
		default:
		}
	}
}

// token returns a token for the scopes ctx asks for.
func (b *bearer) token(ctx context.Context) (string, error) {
	b.mu.Lock()
	var common []string
	if b.scope != "" {
		common = strings.Fields(b.scope)
	}
	scopes := docker.GetTokenScopes(ctx, nil)
	if len(scopes) == 0 {
		scopes = common
	}
	slices.Sort(scopes)
	key := strings.Join(scopes, " ")
	for {
		c, ok := b.tokens[key]
		if !ok {
			c = &tokenCall{done: make(chan struct{})}
			b.tokens[key] = c
			go b.fetch(ctx, c, auth.TokenOptions{Realm: b.realm, Service: b.service, Scopes: scopes}, key)
		}
		b.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		if c.err != nil {
			return "", c.err
		}
		b.mu.Lock()
		if time.Now().Before(c.expires) {
			b.mu.Unlock()
			return c.token, nil
		}
		// Expired: fetch a new one, once.
		if b.tokens[key] == c {
			delete(b.tokens, key)
		}
	}
}

// fetch fetches a token into c. It runs apart from the request that asked
// first, so that the request's end (a cancelled upload) does not fail the
// others waiting for the token; it is bounded by a time limit instead. A
// failure is not kept: the next request asks again.
func (b *bearer) fetch(ctx context.Context, c *tokenCall, to auth.TokenOptions, key string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	start := time.Now()
	token, expiresIn, err := b.request(ctx, to)
	b.mu.Lock()
	defer b.mu.Unlock()
	c.token, c.err = token, err
	if expiresIn <= 0 {
		expiresIn = defaultExpiresIn
	}
	// Renew a tenth early (at most 10 s): a request must not leave with a
	// token that dies on its way.
	c.expires = start.Add(expiresIn - min(expiresIn/10, 10*time.Second))
	if err != nil && b.tokens[key] == c {
		delete(b.tokens, key)
	}
	close(c.done)
}

// request asks the token server, as containerd does: with credentials, an
// OAuth2 POST, falling back to GET for servers without it; else an
// anonymous GET.
func (b *bearer) request(ctx context.Context, to auth.TokenOptions) (string, time.Duration, error) {
	user, secret, err := b.creds(b.host)
	if err != nil {
		return "", 0, err
	}
	to.Username, to.Secret = user, secret
	if secret != "" {
		resp, err := auth.FetchTokenWithOAuth(ctx, b.client, nil, "cnab-relocate", to)
		if err == nil {
			return resp.AccessToken, time.Duration(resp.ExpiresIn) * time.Second, nil
		}
		var se *StatusError
		if err = TypedError(err); !errors.As(err, &se) || !slices.Contains([]int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusMethodNotAllowed}, se.StatusCode) {
			return "", 0, err
		}
	}
	resp, err := auth.FetchToken(ctx, b.client, nil, to)
	if err != nil {
		return "", 0, TypedError(err)
	}
	token := resp.Token
	if token == "" {
		token = resp.AccessToken
	}
	return token, time.Duration(resp.ExpiresIn) * time.Second, nil
}
