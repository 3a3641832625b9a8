package registrytest_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// The Proxy in front of the in-process registry; e2e/harness_test.go and
// e2e/harness_fault_test.go put it in front of a real docker-registry.

func TestProxyCounts(t *testing.T) {
	t.Parallel()
	m := registrytest.StartMemory(false)
	defer m.Close()
	p := registrytest.NewProxyURL(m.URL, nil, registrytest.ProxyOptions{})
	defer p.Close()
	c := registrytest.NewClient(p.URL, nil, "", "")
	ctx := context.Background()

	spec := registrytest.ImageSpec{Repo: "counted/app", Tag: "v1", Layers: []int{1000, 2000}, Seed: 11}
	img, err := c.PushImage(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	var blobBytes int64
	for _, b := range img.Blobs {
		blobBytes += b.Size
	}
	want := map[string]int{"HEAD blob": 3, "POST upload": 3, "PUT blob": 3, "PUT manifest": 1}
	if diff := cmp.Diff(want, p.Counts()); diff != "" {
		t.Errorf("cold push counts (-want +got):\n%s", diff)
	}
	if got := p.BytesUploaded(); got != blobBytes {
		t.Errorf("BytesUploaded = %d, want %d", got, blobBytes)
	}
	if got := len(p.Requests()); got != 10 {
		t.Errorf("Requests() has %d lines, want 10: %v", got, p.Requests())
	}
	if !slices.ContainsFunc(p.Requests(), func(r string) bool {
		return strings.HasPrefix(r, "PUT /v2/counted/app/blobs/uploads/") && strings.Contains(r, "?digest=sha256%3A")
	}) {
		t.Errorf("no upload PUT with its digest in %v", p.Requests())
	}
	if d, err := m.Client().HeadManifest(ctx, spec.Repo, spec.Tag); err != nil || d.Digest != img.Root.Digest {
		t.Errorf("the registry has %v, %v; want %s", d.Digest, err, img.Root.Digest)
	}
	if got := p.Injected(); len(got) != 0 || len(p.Log()) != 0 {
		t.Errorf("Injected() = %v, Log() = %v without faults", got, p.Log())
	}

	p.Reset()
	if len(p.Counts()) != 0 || len(p.Requests()) != 0 || p.BytesUploaded() != 0 {
		t.Fatalf("after Reset: %v, %v, %d", p.Counts(), p.Requests(), p.BytesUploaded())
	}
	if _, err := c.PushImage(ctx, spec); err != nil {
		t.Fatal(err)
	}
	want = map[string]int{"HEAD blob": 3, "PUT manifest": 1}
	if diff := cmp.Diff(want, p.Counts()); diff != "" {
		t.Errorf("warm push counts (-want +got):\n%s", diff)
	}
	if got := p.BytesUploaded(); got != 0 {
		t.Errorf("warm push: BytesUploaded = %d, want 0", got)
	}
}

func TestProxyFaultRule(t *testing.T) {
	t.Parallel()
	m := registrytest.StartMemory(false)
	defer m.Close()
	ctx := context.Background()
	img, err := m.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "faulted/app", Tag: "v1", Layers: []int{100}, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	p := registrytest.NewProxyURL(m.URL, nil, registrytest.ProxyOptions{Faults: registrytest.FaultOptions{Rules: []registrytest.FaultRule{{
		Match: registrytest.MatchManifestGET("faulted/app", "v1"),
		Fault: registrytest.Fault{Kind: registrytest.FaultStatus, Status: http.StatusServiceUnavailable},
		Times: 1,
	}}}})
	defer p.Close()
	c := registrytest.NewClient(p.URL, nil, "", "")

	var re *registrytest.ResponseError
	if _, _, err := c.GetManifest(ctx, "faulted/app", "v1"); !errors.As(err, &re) || re.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("first GET: %v, want a 503", err)
	}
	if _, d, err := c.GetManifest(ctx, "faulted/app", "v1"); err != nil || d.Digest != img.Root.Digest {
		t.Fatalf("second GET (Times: 1): %v, %v; want %s", d.Digest, err, img.Root.Digest)
	}
	if _, err := c.HeadManifest(ctx, "faulted/app", "v1"); err != nil {
		t.Fatalf("HEAD (the rule matches GET only): %v", err)
	}
	if diff := cmp.Diff(map[string]int{"status 503": 1}, p.Injected()); diff != "" {
		t.Errorf("Injected() (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"status 503 GET /v2/faulted/app/manifests/v1"}, p.Log()); diff != "" {
		t.Errorf("Log() (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"GET manifest": 2, "HEAD manifest": 1}, p.Counts()); diff != "" {
		t.Errorf("Counts() (-want +got):\n%s", diff)
	}
	p.Reset()
	if len(p.Injected()) != 0 || len(p.Log()) != 0 {
		t.Errorf("after Reset: Injected() = %v, Log() = %v", p.Injected(), p.Log())
	}
}

func TestProxyLatency(t *testing.T) {
	t.Parallel()
	const latency = 50 * time.Millisecond
	m := registrytest.StartMemory(false)
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "slow/app", Tag: "v1", Layers: []int{100}, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	p := registrytest.NewProxyURL(m.URL, nil, registrytest.ProxyOptions{Latency: latency})
	defer p.Close()
	c := registrytest.NewClient(p.URL, nil, "", "")
	for range 2 { // a new connection, then a reused one
		start := time.Now()
		if _, err := c.HeadManifest(ctx, "slow/app", "v1"); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < latency {
			t.Errorf("HEAD took %v, want >= %v", d, latency)
		}
	}
	if got := p.Counts()["HEAD manifest"]; got != 2 {
		t.Errorf("HEAD manifest count = %d, want 2", got)
	}
}

// TestProxyLocation chains two proxies in front of a server that answers
// with absolute Location headers: each proxy points them at itself.
func TestProxyLocation(t *testing.T) {
	t.Parallel()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/x/blobs/uploads/":
			w.Header().Set("Location", srv.URL+"/v2/x/blobs/uploads/abc?state=1")
		case "/v2/x/blobs/uploads/other":
			w.Header().Set("Location", "http://example.invalid/elsewhere")
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	inner := registrytest.NewProxyURL(srv.URL, nil, registrytest.ProxyOptions{})
	defer inner.Close()
	outer := registrytest.NewProxyURL(inner.URL, nil, registrytest.ProxyOptions{})
	defer outer.Close()

	hc := &http.Client{Transport: &http.Transport{Proxy: nil}}
	for path, want := range map[string]string{
		"/v2/x/blobs/uploads/":      outer.URL + "/v2/x/blobs/uploads/abc?state=1",
		"/v2/x/blobs/uploads/other": "http://example.invalid/elsewhere",
	} {
		resp, err := hc.Post(outer.URL+path, "application/octet-stream", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Location"); resp.StatusCode != http.StatusAccepted || got != want {
			t.Errorf("POST %s: %d, Location %q; want 202, %q", path, resp.StatusCode, got, want)
		}
	}
	for _, p := range []*registrytest.Proxy{inner, outer} {
		if got := p.Counts()["POST upload"]; got != 2 {
			t.Errorf("POST upload count = %d, want 2", got)
		}
	}
}

// A hook answers the requests it wants to and lets the others through,
// changed as it left them; every request is counted either way.
func TestProxyHook(t *testing.T) {
	t.Parallel()
	m := registrytest.StartMemory(false)
	defer m.Close()
	ctx := context.Background()
	img, err := m.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "hooked/app", Tag: "v1", Layers: []int{100}, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	p := registrytest.NewProxyURL(m.URL, nil, registrytest.ProxyOptions{})
	defer p.Close()
	var seen []string
	p.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		seen = append(seen, r.Method+" "+r.URL.Path)
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusTeapot)
			return true
		}
		r.URL.Path = strings.Replace(r.URL.Path, "/renamed/", "/hooked/", 1)
		return false
	})
	c := registrytest.NewClient(p.URL, nil, "", "")
	var re *registrytest.ResponseError
	if _, err := c.HeadManifest(ctx, "hooked/app", "v1"); !errors.As(err, &re) || re.StatusCode != http.StatusTeapot {
		t.Errorf("HEAD: %v, want the hook's 418", err)
	}
	if _, d, err := c.GetManifest(ctx, "renamed/app", "v1"); err != nil || d.Digest != img.Root.Digest {
		t.Errorf("GET through the hook's rewrite: %v, %v; want %s", d.Digest, err, img.Root.Digest)
	}
	want := []string{"HEAD /v2/hooked/app/manifests/v1", "GET /v2/renamed/app/manifests/v1"}
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("the hook saw (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"GET manifest": 1, "HEAD manifest": 1}, p.Counts()); diff != "" {
		t.Errorf("Counts() (-want +got):\n%s", diff)
	}
	p.SetHook(nil)
	if _, err := c.HeadManifest(ctx, "hooked/app", "v1"); err != nil {
		t.Errorf("HEAD without the hook: %v", err)
	}
}
