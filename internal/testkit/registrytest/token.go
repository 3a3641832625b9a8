package registrytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// TokenAuth makes a registry require bearer tokens (distribution's token
// auth) from a token server run by the test, in this process, on
// 127.0.0.1: tokens that live TTL, so that a long relocation outlives its
// first ones.
type TokenAuth struct {
	// TTL is how long a token lets requests through. distribution accepts
	// a token 60 s past its exp claim: the server sets exp TTL-60s after
	// issue so that the registry refuses it TTL after issue.
	TTL time.Duration
	// DeadEarly, when > 0, kills each token up to that much earlier than
	// TTL (at random), while the token's expires_in still says TTL: the
	// clock skew between a token server and a registry. (A JWT's exp is
	// in whole seconds, so a token may die up to 1 s earlier still.)
	DeadEarly time.Duration
	// Users maps user names to passwords; empty: anyone gets a token.
	Users map[string]string
}

// TokenServer is the token server of a registry started with TokenAuth.
// Its methods are safe for concurrent use.
type TokenServer struct {
	// URL is the token endpoint (the realm).
	URL string

	opts TokenAuth
	srv  *httptest.Server
	key  *ecdsa.PrivateKey
	x5c  string // base64 DER of the signing certificate

	mu      sync.Mutex
	issued  map[string][]time.Time // scope -> issue times
	refused int
	dead    int // tokens still to issue already expired
}

const tokenService, tokenIssuer = "registrytest", "registrytest-token-server"

// newTokenServer starts a token server and writes the certificate the
// registry checks its tokens with to dir; it returns the certificate file.
func newTokenServer(opts TokenAuth, dir string) (*TokenServer, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: tokenIssuer},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", err
	}
	certFile := filepath.Join(dir, "token-signer.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, "", err
	}
	s := &TokenServer{opts: opts, key: key, x5c: base64.StdEncoding.EncodeToString(der), issued: map[string][]time.Time{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL + "/token"
	return s, certFile, nil
}

// Close stops the token server.
func (s *TokenServer) Close() { s.srv.Close() }

// Issued returns, per scope (the space-separated scopes of a request, as
// sorted), the times tokens were issued.
func (s *TokenServer) Issued() map[string][]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]time.Time, len(s.issued))
	for k, v := range s.issued {
		out[k] = append([]time.Time(nil), v...)
	}
	return out
}

// Total returns how many tokens were issued.
func (s *TokenServer) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.issued {
		n += len(v)
	}
	return n
}

// DeadOnArrival makes the next n tokens issued dead already: the registry
// refuses them, though their expires_in says TTL (a token server whose
// clock is far ahead of the registry's).
func (s *TokenServer) DeadOnArrival(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dead = n
}

// serve answers GET (Basic auth) and POST (OAuth2 password grant) token
// requests, as distribution's token spec describes.
func (s *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
	var user, pass string
	var scopes []string
	switch r.Method {
	case http.MethodGet:
		user, pass, _ = r.BasicAuth()
		scopes = r.URL.Query()["scope"]
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		user, pass = r.PostForm.Get("username"), r.PostForm.Get("password")
		scopes = strings.Fields(strings.Join(r.PostForm["scope"], " "))
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if len(s.opts.Users) > 0 {
		if want, ok := s.opts.Users[user]; !ok || want != pass {
			s.mu.Lock()
			s.refused++
			s.mu.Unlock()
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
			return
		}
	}
	sort.Strings(scopes)
	now := time.Now()
	life := s.opts.TTL
	if s.opts.DeadEarly > 0 {
		life -= time.Duration(mrand.Int64N(int64(s.opts.DeadEarly)))
	}
	s.mu.Lock()
	if s.dead > 0 {
		s.dead--
		life = -time.Minute
	}
	s.mu.Unlock()
	token, err := s.sign(user, scopes, now, now.Add(life-60*time.Second))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.mu.Lock()
	k := strings.Join(scopes, " ")
	s.issued[k] = append(s.issued[k], now)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"token": token, "access_token": token,
		"expires_in": int(s.opts.TTL / time.Second), "issued_at": now.UTC().Format(time.RFC3339),
	})
}

type accessEntry struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// sign makes an ES256 JWT granting every scope asked for, with the
// signing certificate in x5c.
func (s *TokenServer) sign(sub string, scopes []string, iat, exp time.Time) (string, error) {
	var access []accessEntry
	for _, sc := range scopes {
		parts := strings.Split(sc, ":")
		if len(parts) < 3 {
			continue
		}
		access = append(access, accessEntry{Type: parts[0], Name: strings.Join(parts[1:len(parts)-1], ":"), Actions: strings.Split(parts[len(parts)-1], ",")})
	}
	header, _ := json.Marshal(map[string]any{"alg": "ES256", "typ": "JWT", "x5c": []string{s.x5c}})
	claims, _ := json.Marshal(map[string]any{
		"iss": tokenIssuer, "sub": sub, "aud": tokenService,
		"exp": exp.Unix(), "nbf": iat.Add(-time.Minute).Unix(), "iat": iat.Unix(),
		"jti": fmt.Sprint(mrand.Int64()), "access": access,
	})
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	r, sg, err := ecdsa.Sign(rand.Reader, s.key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	sg.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig), nil
}

// adminTokens authorizes the test's own requests (seeding, checking) to a
// registry with token auth: a token minted here, not fetched, for the
// repository the request is about, that lives an hour and is not counted.
type adminTokens struct {
	base http.RoundTripper
	ts   *TokenServer
}

func (a *adminTokens) RoundTrip(req *http.Request) (*http.Response, error) {
	scope := "registry:catalog:*"
	if m := repoPath.FindStringSubmatch(req.URL.Path); m != nil {
		scope = "repository:" + m[1] + ":pull,push,delete"
	}
	now := time.Now()
	token, err := a.ts.sign("registrytest-admin", []string{scope}, now, now.Add(time.Hour))
	if err != nil {
		return nil, err
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+token)
	return a.base.RoundTrip(req)
}

// repoPath finds the repository in a registry API path.
var repoPath = regexp.MustCompile(`^/v2/(.+?)/(?:manifests|blobs|tags|referrers)/`)
