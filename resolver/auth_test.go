package resolver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestCredentialLookup(t *testing.T) {
	const host = "127.0.0.1:5443"
	type want struct {
		user, secret string
		token        bool
		helper       string // "" for config.json
	}
	tests := []struct {
		name    string
		config  map[string]any
		helper  map[string]string // docker-credential-rtest answers
		host    string            // default host
		want    want
		wantErr string
	}{
		{name: "auths HOST:PORT", config: map[string]any{"auths": map[string]any{host: authEntry("u", "p")}},
			want: want{user: "u", secret: "p"}},
		{name: "auths https URL", config: map[string]any{"auths": map[string]any{"https://" + host: authEntry("u", "p")}},
			want: want{user: "u", secret: "p"}},
		{name: "auths URL with path", config: map[string]any{"auths": map[string]any{"http://" + host + "/v2/": authEntry("u", "p")}},
			want: want{user: "u", secret: "p"}},
		{name: "auths username and password fields", config: map[string]any{"auths": map[string]any{host: map[string]any{"username": "u", "password": "p"}}},
			want: want{user: "u", secret: "p"}},
		{name: "identity token", config: map[string]any{"auths": map[string]any{host: map[string]any{"identitytoken": "idt"}}},
			want: want{secret: "idt", token: true}},
		{name: "another port is another host", config: map[string]any{"auths": map[string]any{"127.0.0.1:5444": authEntry("u", "p")}},
			want: want{}},
		{name: "another host", config: map[string]any{"auths": map[string]any{"registry.example.com": authEntry("u", "p")}},
			want: want{}},
		{name: "docker.io uses the index server key", host: "docker.io",
			config: map[string]any{"auths": map[string]any{indexServer: authEntry("hub", "p")}},
			want:   want{user: "hub", secret: "p"}},
		{name: "registry-1.docker.io uses the index server key", host: "registry-1.docker.io",
			config: map[string]any{"auths": map[string]any{indexServer: authEntry("hub", "p")}},
			want:   want{user: "hub", secret: "p"}},
		{name: "credHelpers", config: map[string]any{"credHelpers": map[string]any{host: "rtest"}},
			helper: map[string]string{host: "hu:hs"}, want: want{user: "hu", secret: "hs", helper: "rtest"}},
		{name: "credHelpers with a URL key", config: map[string]any{"credHelpers": map[string]any{"https://" + host: "rtest"}},
			helper: map[string]string{host: "hu:hs"}, want: want{user: "hu", secret: "hs", helper: "rtest"}},
		{name: "credHelpers win over credsStore and auths",
			config: map[string]any{"credHelpers": map[string]any{host: "rtest"}, "credsStore": "missing-store",
				"auths": map[string]any{host: authEntry("u", "p")}},
			helper: map[string]string{host: "hu:hs"}, want: want{user: "hu", secret: "hs", helper: "rtest"}},
		{name: "credsStore", config: map[string]any{"credsStore": "rtest"},
			helper: map[string]string{host: "su:ss"}, want: want{user: "su", secret: "ss", helper: "rtest"}},
		{name: "credsStore identity token", config: map[string]any{"credsStore": "rtest"},
			helper: map[string]string{host: "<token>:idt"}, want: want{secret: "idt", token: true, helper: "rtest"}},
		{name: "credsStore without the host", config: map[string]any{"credsStore": "rtest"},
			helper: map[string]string{"other:1": "su:ss"}, want: want{helper: "rtest"}},
		{name: "missing helper", config: map[string]any{"credsStore": "not-installed-here"},
			wantErr: "authentication to " + host + " failed: reading its credentials from credential helper docker-credential-not-installed-here"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.host
			if h == "" {
				h = host
			}
			var calls string
			if tc.helper != nil {
				calls = helperScript(t, "rtest", tc.helper)
			}
			dir := writeConfig(t, tc.config)
			c, err := loadCredentials(dir)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.get(h)
			if tc.wantErr != "" {
				var ae *AuthError
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.As(err, &ae) || ae.Host != h ||
					!errors.Is(err, docker.ErrInvalidAuthorization) {
					t.Fatalf("error = %v, want an *AuthError for %s containing %q", err, h, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.user != tc.want.user || got.secret != tc.want.secret || got.token != tc.want.token {
				t.Errorf("got user %q secret %q token %v, want %q %q %v", got.user, got.secret, got.token, tc.want.user, tc.want.secret, tc.want.token)
			}
			wantSource := filepath.Join(dir, "config.json")
			if tc.want.helper != "" {
				wantSource = "credential helper docker-credential-" + tc.want.helper
			}
			if got.source != wantSource {
				t.Errorf("source = %q, want %q", got.source, wantSource)
			}
			if tc.want.helper != "" {
				// The helper is asked about the host as the docker CLI asks.
				data, _ := os.ReadFile(calls)
				if want := key(h) + "\n"; string(data) != want {
					t.Errorf("helper was asked for %q, want %q", data, want)
				}
				// And once per host: the answer is remembered.
				if _, err := c.get(h); err != nil {
					t.Fatal(err)
				}
				if again, _ := os.ReadFile(calls); string(again) != string(data) {
					t.Errorf("helper ran again for the same host: %q", again)
				}
			}
		})
	}
}

func TestConfigDir(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	if err := os.Mkdir(filepath.Join(home, ".docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".docker", "config.json"), []byte(`{"auths":{"h:1":{"auth":"`+base64.StdEncoding.EncodeToString([]byte("home:p"))+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	envDir := writeConfig(t, map[string]any{"auths": map[string]any{"h:1": authEntry("env", "p")}})
	for _, tc := range []struct{ env, user string }{{"", "home"}, {envDir, "env"}} {
		t.Setenv("DOCKER_CONFIG", tc.env)
		c, err := loadCredentials("")
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := c.get("h:1"); got.user != tc.user {
			t.Errorf("DOCKER_CONFIG=%q: user %q, want %q", tc.env, got.user, tc.user)
		}
	}
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	if err := os.WriteFile(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{}); !errors.Is(err, ErrDockerConfig) || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("New with a broken config.json: %v, want ErrDockerConfig naming the file", err)
	}
}

func basicHeader(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func TestBasicChallenge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStub(t, false)
	s.basic("alice", "right")
	for _, tc := range []struct {
		name    string
		auths   map[string]any
		wantErr []string
	}{
		{name: "right credentials", auths: map[string]any{s.Host: authEntry("alice", "right")}},
		{name: "wrong password", auths: map[string]any{s.Host: authEntry("alice", "wrong")},
			wantErr: []string{"authentication to " + s.Host + " failed", `user "alice"`, "config.json", "401 Unauthorized"}},
		{name: "no credentials", auths: map[string]any{"127.0.0.1:1": authEntry("alice", "right")},
			wantErr: []string{"authentication to " + s.Host + " failed", "no credentials for " + s.Host, "config.json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(s.requests())
			dir := writeConfig(t, map[string]any{"auths": tc.auths})
			r, err := New(Options{ConfigDir: dir, Retries: ptr(0)})
			if err != nil {
				t.Fatal(err)
			}
			err = pull(ctx, r, s.Host)
			reqs := s.requests()[before:]
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !slicesContain(reqs, basicHeader("alice", "right")) {
					t.Errorf("no Basic credentials sent: %q", reqs)
				}
				return
			}
			var ae *AuthError
			if !errors.As(err, &ae) || ae.Host != s.Host || !errors.Is(err, ErrAuthentication) || !errors.Is(err, docker.ErrInvalidAuthorization) {
				t.Fatalf("error = %v, want an *AuthError for %s", err, s.Host)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "pull access denied") {
				t.Errorf("error %q keeps containerd's guess", err)
			}
			// Refused credentials are sent once, not again and again.
			sent := 0
			for _, q := range reqs {
				if strings.Contains(q, "Basic ") {
					sent++
				}
			}
			if sent > 1 {
				t.Errorf("credentials sent %d times: %q", sent, reqs)
			}
		})
	}
}

// tokenServer is a token endpoint on 127.0.0.1 (distribution's token auth
// and OAuth2 as containerd speaks them).
type tokenServer struct {
	*httptest.Server
	user, pass string // accepted password grant / Basic credentials
	refresh    string // accepted refresh token (identity token)
	token      string // the token it issues

	mu   sync.Mutex
	seen []map[string]string // one per request: grant_type, username, password, refresh_token, authorization
}

func newTokenServer(t *testing.T) *tokenServer { return newTokenServerTLS(t, false) }

func newTokenServerTLS(t *testing.T, tlsServer bool) *tokenServer {
	ts := &tokenServer{token: "tok-" + t.Name()}
	ts.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		rec := map[string]string{
			"method": r.Method, "grant_type": r.PostForm.Get("grant_type"), "username": r.PostForm.Get("username"),
			"password": r.PostForm.Get("password"), "refresh_token": r.PostForm.Get("refresh_token"),
			"authorization": r.Header.Get("Authorization"), "scope": r.Form.Get("scope"),
		}
		ts.mu.Lock()
		ts.seen = append(ts.seen, rec)
		ts.mu.Unlock()
		ok := false
		switch {
		case r.Method == http.MethodPost && rec["grant_type"] == "password":
			ok = rec["username"] == ts.user && rec["password"] == ts.pass
		case r.Method == http.MethodPost && rec["grant_type"] == "refresh_token":
			ok = ts.refresh != "" && rec["refresh_token"] == ts.refresh
		case r.Method == http.MethodGet:
			u, p, basic := r.BasicAuth()
			ok = basic && u == ts.user && p == ts.pass
		}
		if !ok {
			http.Error(w, `{"details":"bad credentials"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"access_token": ts.token, "token": ts.token})
	}))
	ts.Config.ErrorLog = stdlog.New(io.Discard, "", 0)
	if tlsServer {
		ts.StartTLS()
	} else {
		ts.Start()
	}
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) requests() []map[string]string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]map[string]string(nil), ts.seen...)
}

func TestBearerChallenge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts := newTokenServer(t)
	ts.user, ts.pass, ts.refresh = "alice", "right", "identity-token-1"
	s := newStub(t, false)
	s.challenge = `Bearer realm="` + ts.URL + `/token",service="stub",scope="repository:app:pull"`
	s.auth = func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+ts.token }

	for _, tc := range []struct {
		name    string
		entry   map[string]any
		check   func(t *testing.T, seen []map[string]string)
		wantErr []string
	}{
		{name: "password", entry: authEntry("alice", "right"), check: func(t *testing.T, seen []map[string]string) {
			if len(seen) == 0 || seen[0]["grant_type"] != "password" || seen[0]["username"] != "alice" || seen[0]["scope"] != "repository:app:pull" {
				t.Errorf("token requests = %v, want a password grant for alice with scope repository:app:pull", seen)
			}
		}},
		{name: "identity token", entry: map[string]any{"identitytoken": "identity-token-1"}, check: func(t *testing.T, seen []map[string]string) {
			// docker login stores an identity token; it is an OAuth2
			// refresh token for the realm.
			if len(seen) == 0 || seen[0]["grant_type"] != "refresh_token" || seen[0]["refresh_token"] != "identity-token-1" {
				t.Errorf("token requests = %v, want a refresh_token grant with the identity token", seen)
			}
		}},
		{name: "wrong password", entry: authEntry("alice", "wrong"),
			wantErr: []string{"authentication to " + s.Host + " failed", "token server refused the credentials", "config.json", "401"}},
		{name: "wrong identity token", entry: map[string]any{"identitytoken": "stale"},
			wantErr: []string{"authentication to " + s.Host + " failed", "token server refused"}},
		{name: "no credentials, no anonymous token", entry: nil,
			wantErr: []string{"authentication to " + s.Host + " failed", "no credentials for " + s.Host, "refused an anonymous token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, beforeTS := len(s.requests()), len(ts.requests())
			auths := map[string]any{}
			if tc.entry != nil {
				auths[s.Host] = tc.entry
			}
			dir := writeConfig(t, map[string]any{"auths": auths})
			r, err := New(Options{ConfigDir: dir, Retries: ptr(0)})
			if err != nil {
				t.Fatal(err)
			}
			err = pull(ctx, r, s.Host)
			reqs := s.requests()[before:]
			for _, q := range reqs {
				// The registry gets tokens, never the password or identity token.
				if strings.Contains(q, "Basic") || strings.Contains(q, "right") || strings.Contains(q, "identity-token-1") {
					t.Errorf("registry received %q", q)
				}
			}
			if tc.wantErr != nil {
				var ae *AuthError
				if !errors.As(err, &ae) || ae.Host != s.Host || !errors.Is(err, docker.ErrInvalidAuthorization) {
					t.Fatalf("error = %v, want an *AuthError for %s", err, s.Host)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slicesContain(reqs, "Bearer "+ts.token) {
				t.Errorf("registry never got the token: %q", reqs)
			}
			tc.check(t, ts.requests()[beforeTS:])
		})
	}
}

// TestRedirectKeepsCredentialsOnTheirHost: registry A redirects blob GETs to
// storage on host B, which is also a registry with its own login. B must
// never see A's secret, nor A B's — though both are 127.0.0.1, where net/http
// would forward A's Authorization header to B (it ignores the port).
func TestRedirectKeepsCredentialsOnTheirHost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := newStub(t, false), newStub(t, false)
	a.basic("alice", "secret-a")
	b.basic("bob", "secret-b")
	a.redirectBlobs = b.URL
	dir := writeConfig(t, map[string]any{"auths": map[string]any{
		a.Host: authEntry("alice", "secret-a"),
		b.Host: authEntry("bob", "secret-b"),
	}})
	r, err := New(Options{ConfigDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// 1. A only: the storage request to B carries nothing.
	if err := pull(ctx, r, a.Host); err != nil {
		t.Fatal(err)
	}
	storage := 0
	for _, q := range b.requests() {
		if strings.HasPrefix(q, "GET /storage/") {
			storage++
			if q != "GET /storage/"+image.configDesc.Digest.Encoded()+" " {
				t.Errorf("storage on B received %q, want no Authorization", q)
			}
		}
	}
	if storage == 0 {
		t.Fatal("A's blob was not fetched through the redirect")
	}
	// 2. B as a registry in the same run, then A again: a redirect to B may
	// carry B's own credentials, never A's.
	if err := pull(ctx, r, b.Host); err != nil {
		t.Fatal(err)
	}
	if err := pull(ctx, r, a.Host); err != nil {
		t.Fatal(err)
	}
	secretA, secretB := basicHeader("alice", "secret-a"), basicHeader("bob", "secret-b")
	for _, q := range b.requests() {
		if strings.Contains(q, secretA) {
			t.Errorf("B received A's credentials: %q", q)
		}
	}
	for _, q := range a.requests() {
		if strings.Contains(q, secretB) {
			t.Errorf("A received B's credentials: %q", q)
		}
	}
	if !slicesContain(a.requests(), secretA) || !slicesContain(b.requests(), secretB) {
		t.Error("each registry should have received its own credentials")
	}
}

// TestTokenRedirectKeepsCredentials: a token realm that redirects to
// another host does not pass on the Basic credentials of the token request.
func TestTokenRedirectKeepsCredentials(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts := newTokenServer(t)
	ts.user, ts.pass = "alice", "right"
	var mu sync.Mutex
	var seen []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		json.NewEncoder(w).Encode(map[string]string{"token": "other-token"})
	}))
	defer other.Close()
	// The realm refuses POST (containerd then GETs with Basic auth) and
	// redirects the GET to another port of 127.0.0.1.
	realm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			http.NotFound(w, r)
			return
		}
		http.Redirect(w, r, other.URL+"/token?"+r.URL.RawQuery, http.StatusTemporaryRedirect)
	}))
	defer realm.Close()
	s := newStub(t, false)
	s.challenge = `Bearer realm="` + realm.URL + `/token",service="stub"`
	s.auth = func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer other-token" }
	dir := writeConfig(t, map[string]any{"auths": map[string]any{s.Host: authEntry("alice", "right")}})
	r, err := New(Options{ConfigDir: dir, Retries: ptr(0)})
	if err != nil {
		t.Fatal(err)
	}
	if err := pull(ctx, r, s.Host); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 {
		t.Fatal("the redirected token request never arrived")
	}
	for _, h := range seen {
		if h != "" {
			t.Errorf("token redirect target received Authorization %q", h)
		}
	}
}

func slicesContain(reqs []string, sub string) bool {
	for _, q := range reqs {
		if strings.Contains(q, sub) {
			return true
		}
	}
	return false
}

// TestRefusedMountIsNotAFailedLogin: a 401 to a cross-repository mount means
// the source repository may not be read; the blob is uploaded instead, with
// the same (good) credentials.
func TestRefusedMountIsNotAFailedLogin(t *testing.T) {
	t.Parallel()
	ctx := log.WithLogger(context.Background(), quiet)
	s := newStub(t, false)
	s.basic("alice", "right")
	r, err := New(Options{ConfigDir: writeConfig(t, map[string]any{"auths": map[string]any{s.Host: authEntry("alice", "right")}})})
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("a blob that needs uploading")
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(data), Size: int64(len(data)),
		Annotations: map[string]string{"containerd.io/distribution.source.127.0.0.1": "private/repo"}}
	p, err := r.Pusher(ctx, s.Host+"/app@"+desc.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	w, err := p.Push(ctx, desc)
	if err != nil {
		t.Fatalf("push after a refused mount: %v", err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil {
		t.Fatal(err)
	}
	w.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.uploaded) != 1 || string(s.uploaded[0]) != string(data) {
		t.Errorf("uploaded %q, want the blob once", s.uploaded)
	}
	if !slicesContain(s.received, "mount=") {
		t.Errorf("no mount was tried: %q", s.received)
	}
}
