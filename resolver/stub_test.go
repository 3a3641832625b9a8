package resolver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/remotes"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
)

// image is the one image every stub registry serves, as repo "app", tag "1".
var image = func() (m struct {
	manifest, config []byte
	desc, configDesc ocispec.Descriptor
}) {
	m.config = []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	m.configDesc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(m.config), Size: int64(len(m.config))}
	man, _ := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    m.configDesc,
		Layers:    []ocispec.Descriptor{},
	})
	m.manifest = man
	m.desc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(man), Size: int64(len(man))}
	return m
}()

// stub is a registry on 127.0.0.1 serving image. It records the
// Authorization header of every request it receives.
type stub struct {
	*httptest.Server
	Host string

	// auth, if set, decides whether a /v2/ request is allowed; when it is
	// not, the stub answers 401 with challenge as WWW-Authenticate.
	auth      func(r *http.Request) bool
	challenge string
	// redirectBlobs, if set, is a base URL blob GETs are redirected to
	// (307), as registries do to their storage.
	redirectBlobs string

	mu       sync.Mutex
	received []string // "METHOD PATH?QUERY Authorization"
	uploaded [][]byte // bodies of completed blob uploads
}

func newStub(t *testing.T, tlsServer bool) *stub {
	return newStubWith(t, tlsServer, nil)
}

// newStubWith is newStub with a hook that may change the server before it
// starts.
func newStubWith(t *testing.T, tlsServer bool, configure func(*httptest.Server)) *stub {
	s := &stub{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // TLS handshake failures are expected
	if configure != nil {
		configure(s.Server)
	}
	if tlsServer {
		s.StartTLS()
	} else {
		s.Start()
	}
	s.Host = strings.TrimPrefix(strings.TrimPrefix(s.URL, "http://"), "https://")
	t.Cleanup(s.Close)
	return s
}

func (s *stub) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.received = append(s.received, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization"))
	s.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/storage/") {
		// Storage behind a redirect: no credentials needed.
		if r.URL.Path == "/storage/"+image.configDesc.Digest.Encoded() {
			w.Write(image.config)
			return
		}
		http.NotFound(w, r)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/v2/") {
		http.NotFound(w, r)
		return
	}
	if s.auth != nil && !s.auth(r) {
		w.Header().Set("WWW-Authenticate", s.challenge)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
		return
	}
	if r.URL.Path == "/v2/app/blobs/uploads/" && r.Method == http.MethodPost {
		if r.URL.Query().Has("mount") {
			// As for a source repository the user may not read.
			w.Header().Set("WWW-Authenticate", s.challenge)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"may not read from"}]}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Location", "/v2/app/blobs/uploads/session-1")
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if r.URL.Path == "/v2/app/blobs/uploads/session-1" && r.Method == http.MethodPut {
		data, _ := io.ReadAll(r.Body)
		if digest.FromBytes(data).String() != r.URL.Query().Get("digest") {
			http.Error(w, "digest mismatch", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.uploaded = append(s.uploaded, data)
		s.mu.Unlock()
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(data).String())
		w.WriteHeader(http.StatusCreated)
		return
	}
	switch r.URL.Path {
	case "/v2/":
		w.WriteHeader(http.StatusOK)
	case "/v2/app/manifests/1", "/v2/app/manifests/" + image.desc.Digest.String():
		w.Header().Set("Content-Type", image.desc.MediaType)
		w.Header().Set("Docker-Content-Digest", image.desc.Digest.String())
		w.Header().Set("Content-Length", strconv.Itoa(len(image.manifest)))
		if r.Method == http.MethodGet {
			w.Write(image.manifest)
		}
	case "/v2/app/blobs/" + image.configDesc.Digest.String():
		if s.redirectBlobs != "" && r.Method == http.MethodGet {
			http.Redirect(w, r, s.redirectBlobs+"/storage/"+image.configDesc.Digest.Encoded(), http.StatusTemporaryRedirect)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(image.config)))
		w.Header().Set("Docker-Content-Digest", image.configDesc.Digest.String())
		if r.Method == http.MethodGet {
			w.Write(image.config)
		}
	default:
		http.NotFound(w, r)
	}
}

// requests returns what the stub received so far.
func (s *stub) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.received...)
}

// basic makes auth accept HTTP Basic user:pass.
func (s *stub) basic(user, pass string) {
	s.challenge = `Basic realm="stub"`
	s.auth = func(r *http.Request) bool {
		u, p, ok := r.BasicAuth()
		return ok && u == user && p == pass
	}
}

// pull resolves host/app:1 with r and fetches its manifest and config blob,
// checking the bytes.
func pull(ctx context.Context, r remotes.Resolver, host string) error {
	ctx = log.WithLogger(ctx, quiet) // containerd logs through logrus otherwise
	ref := host + "/app:1"
	_, desc, err := r.Resolve(ctx, ref)
	if err != nil {
		return err
	}
	f, err := r.Fetcher(ctx, ref)
	if err != nil {
		return err
	}
	for _, d := range []ocispec.Descriptor{desc, image.configDesc} {
		rc, err := f.Fetch(ctx, d)
		if err != nil {
			return err
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		if digest.FromBytes(data) != d.Digest {
			return errMismatch(d.Digest)
		}
	}
	return nil
}

var quiet = func() *log.Entry {
	l := logrus.New()
	l.Out = io.Discard
	return logrus.NewEntry(l)
}()

type errMismatch digest.Digest

func (e errMismatch) Error() string { return "wrong bytes for " + string(e) }

// writeConfig writes a docker CLI config.json into a new directory and
// returns the directory.
func writeConfig(t *testing.T, cfg map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// authEntry is an "auths" entry as `docker login` writes it.
func authEntry(user, pass string) map[string]any {
	return map[string]any{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}
}

// helperScript writes docker-credential-NAME into a new directory put first
// on PATH. It answers `get` for each server URL in creds (URL -> "user:secret")
// and logs each server URL it is asked for to the returned log file.
func helperScript(t *testing.T, name string, creds map[string]string) (logFile string) {
	t.Helper()
	dir := t.TempDir()
	logFile = filepath.Join(dir, "calls.log")
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	b.WriteString("[ \"$1\" = get ] || { echo \"unsupported: $1\" >&2; exit 1; }\n")
	b.WriteString("read -r url\n")
	b.WriteString("echo \"$url\" >> '" + logFile + "'\n")
	b.WriteString("case \"$url\" in\n")
	for url, c := range creds {
		user, secret, _ := strings.Cut(c, ":")
		fmt.Fprintf(&b, "  '%s') printf '%%s' '{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}' ;;\n", url, url, user, secret)
	}
	b.WriteString("  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n")
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-"+name), []byte(b.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return logFile
}
