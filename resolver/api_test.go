package resolver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnabio/cnab-relocate/internal/verify"
	"github.com/containerd/errdefs"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// apiServer is a registry on 127.0.0.1 whose every /v2/ request is answered
// by handle. It records each request as "METHOD PATH?QUERY Authorization".
type apiServer struct {
	*httptest.Server
	Host string

	mu       sync.Mutex
	received []string
}

func newAPIServer(t *testing.T, handle http.HandlerFunc) *apiServer {
	t.Helper()
	s := &apiServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.received = append(s.received, strings.TrimSpace(r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization")))
		s.mu.Unlock()
		handle(w, r)
	}))
	t.Cleanup(s.Close)
	s.Host = s.Listener.Addr().String()
	return s
}

func (s *apiServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.received)
}

// apiResolver returns a resolver for s with credentials from configDir
// (none when ""), and one transport retry.
func apiResolver(t *testing.T, configDir string) *Resolver {
	t.Helper()
	if configDir == "" {
		configDir = t.TempDir()
	}
	r, err := New(Options{ConfigDir: configDir, CertsDir: "-", Retries: ptr(1)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func apiCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	subject := image.desc.Digest
	refs := []ocispec.Descriptor{{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: "application/spdx+json",
		Digest:       digest.FromString("sbom"),
		Size:         321,
		Annotations:  map[string]string{"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
	}, {
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.dev.sigstore.bundle.v0.3+json",
		Digest:       digest.FromString("sig"),
		Size:         123,
	}}
	index, _ := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: refs,
	})
	path := "/v2/app/referrers/" + subject.String()
	answer := func(code int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != path {
				http.NotFound(w, r)
				return
			}
			if code == http.StatusOK {
				w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
				w.Write(index)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"errors":[{"code":"UNSUPPORTED","message":"%d"}]}`, code)
		}
	}
	basic := func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
				w.Header().Set("WWW-Authenticate", `Basic realm="stub"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
			next(w, r)
		}
	}
	aliceAuth := "Basic YWxpY2U6czNjcmV0" // alice:s3cret
	tests := []struct {
		name          string
		handle        http.HandlerFunc
		creds         bool // alice:s3cret in config.json for the server
		wrongCreds    bool // alice:wrong instead
		wantSupported bool
		wantRefs      []ocispec.Descriptor
		wantErr       error // nil: no error; errAny: some error
		// wantRequests are the requests to path, as "Authorization" header
		// values ("" for none).
		wantRequests []string
	}{
		{name: "200 index", handle: answer(http.StatusOK), wantSupported: true, wantRefs: refs, wantRequests: []string{""}},
		{name: "404 is no API", handle: answer(http.StatusNotFound), wantRequests: []string{""}},
		{name: "405 is no API", handle: answer(http.StatusMethodNotAllowed), wantRequests: []string{""}},
		{name: "400 is no API", handle: answer(http.StatusBadRequest), wantRequests: []string{""}},
		{name: "401 Basic challenge is answered once with config.json credentials", handle: basic(answer(http.StatusOK)), creds: true,
			wantSupported: true, wantRefs: refs, wantRequests: []string{"", aliceAuth}},
		{name: "401 and 404 with credentials is no API", handle: basic(answer(http.StatusNotFound)), creds: true,
			wantRequests: []string{"", aliceAuth}},
		{name: "500 fails after the transport's retry", handle: answer(http.StatusInternalServerError),
			wantErr: ErrRetriesExhausted, wantRequests: []string{"", ""}},
		{name: "401 without credentials fails", handle: basic(answer(http.StatusOK)),
			wantErr: ErrAuthentication, wantRequests: []string{""}},
		{name: "401 to wrong credentials fails", handle: basic(answer(http.StatusOK)), creds: true, wrongCreds: true,
			wantErr: ErrAuthentication, wantRequests: []string{"", "Basic YWxpY2U6d3Jvbmc="}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newAPIServer(t, tc.handle)
			dir := ""
			if tc.creds {
				pass := "s3cret"
				if tc.wrongCreds {
					pass = "wrong"
				}
				dir = writeConfig(t, map[string]any{"auths": map[string]any{s.Host: authEntry("alice", pass)}})
			}
			r := apiResolver(t, dir)
			got, supported, err := r.Referrers(apiCtx(t), s.Host+"/app", subject)
			t.Logf("err: %v", err)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("Referrers: %v", err)
			case tc.wantErr == errAny && err == nil, tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Fatalf("err = %v; want %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), s.Host) {
				t.Errorf("err %q does not name the registry %s", err, s.Host)
			}
			if supported != tc.wantSupported {
				t.Errorf("supported = %v, want %v", supported, tc.wantSupported)
			}
			if diff := cmp.Diff(tc.wantRefs, got); diff != "" {
				t.Errorf("referrers (-want +got):\n%s", diff)
			}
			var auths []string
			for _, req := range s.requests() {
				if rest, ok := strings.CutPrefix(req, "GET "+path); ok {
					auths = append(auths, strings.TrimSpace(rest))
				} else {
					t.Errorf("unexpected request %q", req)
				}
			}
			if diff := cmp.Diff(tc.wantRequests, auths); diff != "" {
				t.Errorf("Authorization of the requests to %s (-want +got):\n%s", path, diff)
			}
		})
	}
}

// errAny stands for any error in a want field.
var errAny = errors.New("any error")

func TestReferrersAcceptsIndex(t *testing.T) {
	t.Parallel()
	var accept string
	s := newAPIServer(t, func(w http.ResponseWriter, r *http.Request) {
		accept = r.Header.Get("Accept")
		w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
		w.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`))
	})
	got, supported, err := apiResolver(t, "").Referrers(apiCtx(t), s.Host+"/team/app", image.desc.Digest)
	if err != nil || !supported || len(got) != 0 {
		t.Fatalf("Referrers = %v, %v, %v; want none, supported", got, supported, err)
	}
	if accept != ocispec.MediaTypeImageIndex {
		t.Errorf("Accept = %q, want %q", accept, ocispec.MediaTypeImageIndex)
	}
	if want := "GET /v2/team/app/referrers/" + image.desc.Digest.String(); !slices.Equal(s.requests(), []string{want}) {
		t.Errorf("requests = %q, want %q", s.requests(), want)
	}
}

func TestTags(t *testing.T) {
	t.Parallel()
	page := func(w http.ResponseWriter, next string, tags ...string) {
		if next != "" {
			w.Header().Set("Link", `<`+next+`>; rel="next"`)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"name": "team/app", "tags": tags})
	}
	tests := []struct {
		name   string
		handle http.HandlerFunc
		want   []string
		// wantRequests are the request URIs, in order.
		wantRequests []string
		wantErr      bool
	}{{
		name: "two pages through the Link header",
		handle: func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			switch {
			case r.URL.Path != "/v2/team/app/tags/list" || q.Get("n") != "1000":
				http.NotFound(w, r)
			case q.Get("last") == "":
				page(w, "/v2/team/app/tags/list?n=1000&last=b", "a", "b")
			case q.Get("last") == "b":
				page(w, "", "c", "sha256-abc.sig")
			default:
				http.Error(w, "bad last", http.StatusBadRequest)
			}
		},
		want:         []string{"a", "b", "c", "sha256-abc.sig"},
		wantRequests: []string{"/v2/team/app/tags/list?n=1000", "/v2/team/app/tags/list?n=1000&last=b"},
	}, {
		name: "an absolute next link",
		handle: func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("last") == "" {
				page(w, "http://"+r.Host+"/v2/team/app/tags/list?last=x&n=1000", "x")
				return
			}
			page(w, "", "y")
		},
		want:         []string{"x", "y"},
		wantRequests: []string{"/v2/team/app/tags/list?n=1000", "/v2/team/app/tags/list?last=x&n=1000"},
	}, {
		name: "a next link into another repository is not followed",
		handle: func(w http.ResponseWriter, r *http.Request) {
			page(w, "/v2/other/tags/list?n=1000&last=a", "a")
		},
		want:         []string{"a"},
		wantRequests: []string{"/v2/team/app/tags/list?n=1000"},
	}, {
		name:         "404 is no tags",
		handle:       http.NotFound,
		wantRequests: []string{"/v2/team/app/tags/list?n=1000"},
	}, {
		name: "500 fails",
		handle: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "boom", http.StatusInternalServerError)
		},
		wantErr:      true,
		wantRequests: []string{"/v2/team/app/tags/list?n=1000", "/v2/team/app/tags/list?n=1000"},
	}, {
		name: "a body that is not JSON fails",
		handle: func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("<html>"))
		},
		wantErr:      true,
		wantRequests: []string{"/v2/team/app/tags/list?n=1000"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newAPIServer(t, tc.handle)
			got, err := apiResolver(t, "").Tags(apiCtx(t), s.Host+"/team/app")
			if (err != nil) != tc.wantErr {
				t.Fatalf("Tags: err = %v, want error: %v", err, tc.wantErr)
			}
			if tc.wantErr && !strings.Contains(err.Error(), s.Host) {
				t.Errorf("err %q does not name the registry %s", err, s.Host)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("tags (-want +got):\n%s", diff)
			}
			var uris []string
			for _, req := range s.requests() {
				uris = append(uris, strings.TrimPrefix(req, "GET "))
			}
			if diff := cmp.Diff(tc.wantRequests, uris); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTagsNoneIsNil(t *testing.T) {
	t.Parallel()
	s := newAPIServer(t, http.NotFound)
	got, err := apiResolver(t, "").Tags(apiCtx(t), s.Host+"/app")
	if got != nil || err != nil {
		t.Fatalf("Tags = %#v, %v; want nil, nil", got, err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestManifest(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`)
	good := digest.FromBytes(body)
	tests := []struct {
		name     string
		handle   http.HandlerFunc
		want     ocispec.Descriptor
		wantErr  error
		requests int
	}{{
		name: "by tag: the bytes, their digest and the media type the registry gives",
		handle: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest+"; charset=utf-8")
			w.Header().Set("Docker-Content-Digest", good.String())
			w.Write(body)
		},
		want:     ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: good, Size: int64(len(body))},
		requests: 1,
	}, {
		name: "no Docker-Content-Digest: the digest is computed",
		handle: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Write(body)
		},
		want:     ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: good, Size: int64(len(body))},
		requests: 1,
	}, {
		name: "bytes that are not the ones the registry names",
		handle: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Header().Set("Docker-Content-Digest", digest.FromString("other").String())
			w.Write(body)
		},
		wantErr:  verify.ErrDigestMismatch,
		requests: 1,
	}, {
		name: "not there",
		handle: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, http.StatusNotFound)
		},
		wantErr:  errdefs.ErrNotFound,
		requests: 1,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var accept string
			s := newAPIServer(t, func(w http.ResponseWriter, r *http.Request) {
				accept = r.Header.Get("Accept")
				tc.handle(w, r)
			})
			desc, data, err := apiResolver(t, "").Manifest(apiCtx(t), s.Host+"/team/app", "1.0")
			if n := len(s.requests()); n != tc.requests {
				t.Errorf("%d requests (%q), want %d", n, s.requests(), tc.requests)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want one matching %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, desc); diff != "" {
				t.Errorf("descriptor (-want +got):\n%s", diff)
			}
			if string(data) != string(body) {
				t.Errorf("bytes = %q, want %q", data, body)
			}
			for _, mt := range []string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"} {
				if !strings.Contains(accept, mt) {
					t.Errorf("Accept %q lacks %s", accept, mt)
				}
			}
		})
	}
}

// The resolver's own requests follow a registry's redirect to another host
// (here another port of 127.0.0.1, which net/http treats as the same host)
// without the registry's credentials.
func TestRedirectDropsCredentials(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`)
	storage := newAPIServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
		w.Write(body)
	})
	reg := newAPIServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="reg"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, "http://"+storage.Host+"/storage/manifest", http.StatusTemporaryRedirect)
	})
	dir := writeConfig(t, map[string]any{"auths": map[string]any{reg.Host: authEntry("alice", "s3cret")}})
	desc, data, err := apiResolver(t, dir).Manifest(apiCtx(t), reg.Host+"/team/app", "1.0")
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != string(body) || desc.Digest != digest.FromBytes(body) {
		t.Fatalf("read %q (%s); want %q", data, desc.Digest, body)
	}
	for _, req := range storage.requests() {
		if strings.Contains(req, "Basic") || strings.Contains(req, "Bearer") {
			t.Errorf("storage received a credential: %q", req)
		}
	}
	if !slices.ContainsFunc(reg.requests(), func(r string) bool {
		return strings.HasSuffix(r, "Basic "+base64.StdEncoding.EncodeToString([]byte("alice:s3cret")))
	}) {
		t.Errorf("the registry never got the credentials: %q", reg.requests())
	}
}
