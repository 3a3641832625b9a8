package e2e

// The faults of internal/testkit/registrytest's Proxy against a real docker-registry; moved
// here from internal/testkit/registrytest so that make unit runs without the binary.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// harnessPlainClient is an HTTP client that never retries and never shares connections between
// subtests, so each fault is seen exactly as the proxy made it.
func harnessPlainClient() *http.Client {
	return &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 10 * time.Second}
}

func TestHarnessProxyFaults(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	data := registrytest.RandomBytes(7, 256<<10)
	blob, err := reg.Client().PushBlob(ctx, "fault/blob", data)
	if err != nil {
		t.Fatal(err)
	}
	blobURL := func(p *registrytest.Proxy) string {
		return p.URL + "/v2/fault/blob/blobs/" + blob.Digest.String()
	}
	get := func(t *testing.T, p *registrytest.Proxy) (*http.Response, []byte, error) {
		t.Helper()
		resp, err := harnessPlainClient().Get(blobURL(p))
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}
	rule := func(f registrytest.Fault) registrytest.ProxyOptions {
		return registrytest.ProxyOptions{Faults: registrytest.FaultOptions{Rules: []registrytest.FaultRule{{Match: registrytest.MatchBlobGET(false, blob.Digest), Fault: f, Times: 1}}}}
	}

	t.Run("status with Retry-After, then passes", func(t *testing.T) {
		p := registrytest.NewProxy(reg, rule(registrytest.Fault{Kind: registrytest.FaultStatus, Status: 429, RetryAfter: "1"}))
		defer p.Close()
		resp, _, err := get(t, p)
		if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("first GET = %v, %v; want 429 with Retry-After: 1", resp, err)
		}
		resp, body, err := get(t, p)
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, data) {
			t.Fatalf("second GET = %v, %d bytes, %v; want the blob (Times: 1)", resp, len(body), err)
		}
		if got := p.Injected(); got["status 429"] != 1 || len(got) != 1 {
			t.Errorf("Injected() = %v", got)
		}
	})

	t.Run("reset in the middle of a response body", func(t *testing.T) {
		p := registrytest.NewProxy(reg, rule(registrytest.Fault{Kind: registrytest.FaultResetResponse, After: 100 << 10}))
		defer p.Close()
		resp, body, err := get(t, p)
		if resp == nil || resp.StatusCode != 200 {
			t.Fatalf("GET = %v, %v; want a 200 whose body breaks", resp, err)
		}
		if err == nil || len(body) >= len(data) || !bytes.Equal(body, data[:len(body)]) {
			t.Fatalf("body: %d of %d bytes, err %v; want a correct prefix and an error", len(body), len(data), err)
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("err = %v, want a connection reset", err)
		}
		t.Logf("got %d bytes, then %v", len(body), err)
	})

	t.Run("clean close in the middle of a response body", func(t *testing.T) {
		p := registrytest.NewProxy(reg, rule(registrytest.Fault{Kind: registrytest.FaultCloseResponse, After: 1000}))
		defer p.Close()
		_, body, err := get(t, p)
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != 1000 {
			t.Fatalf("body: %d bytes, err %v; want 1000 bytes and an unexpected EOF", len(body), err)
		}
	})

	t.Run("corrupt byte", func(t *testing.T) {
		p := registrytest.NewProxy(reg, rule(registrytest.Fault{Kind: registrytest.FaultCorrupt, After: 12345}))
		defer p.Close()
		resp, body, err := get(t, p)
		if err != nil || resp.StatusCode != 200 || len(body) != len(data) {
			t.Fatalf("GET = %v, %d bytes, %v", resp, len(body), err)
		}
		var diff []int
		for i := range body {
			if body[i] != data[i] {
				diff = append(diff, i)
			}
		}
		if !slices.Equal(diff, []int{12345}) {
			t.Errorf("bytes differ at %v, want [12345]", diff)
		}
	})

	t.Run("reset while reading a request body", func(t *testing.T) {
		p := registrytest.NewProxy(reg, registrytest.ProxyOptions{Faults: registrytest.FaultOptions{Rules: []registrytest.FaultRule{{
			Match: registrytest.MatchKind("PUT blob"), Fault: registrytest.Fault{Kind: registrytest.FaultResetRequest, After: 10 << 10}, Times: 1,
		}}}})
		defer p.Close()
		c := registrytest.NewClient(p.URL, harnessPlainClient(), "", "")
		other := registrytest.RandomBytes(8, 200<<10)
		if _, err := c.PushBlob(ctx, "fault/put", other); err == nil {
			t.Fatal("first push through the proxy succeeded; want a reset")
		} else {
			t.Logf("first push: %v", err)
		}
		if ok, err := reg.Client().BlobExists(ctx, "fault/put", digest.FromBytes(other)); err != nil || ok {
			t.Fatalf("after the reset upload, BlobExists = %v, %v; want false", ok, err)
		}
		if _, err := c.PushBlob(ctx, "fault/put", other); err != nil {
			t.Fatalf("second push (Times: 1): %v", err)
		}
		if got := p.Counts()["PUT blob"]; got != 2 {
			t.Errorf("PUT blob count = %d, want 2", got)
		}
	})

	t.Run("delay", func(t *testing.T) {
		p := registrytest.NewProxy(reg, rule(registrytest.Fault{Kind: registrytest.FaultDelay, Delay: 300 * time.Millisecond}))
		defer p.Close()
		start := time.Now()
		resp, body, err := get(t, p)
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, data) {
			t.Fatalf("GET = %v, %v", resp, err)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("GET took %v, want >= 300ms", d)
		}
	})

	t.Run("seeded schedule is reproducible", func(t *testing.T) {
		run := func(seed uint64) []string {
			p := registrytest.NewProxy(reg, registrytest.ProxyOptions{Faults: registrytest.FaultOptions{Seed: seed, Rate: 0.3, Faults: []registrytest.Fault{
				{Kind: registrytest.FaultStatus, Status: 500},
				{Kind: registrytest.FaultStatus, Status: 429, RetryAfter: "0"},
				{Kind: registrytest.FaultCloseResponse, After: -1},
			}}})
			defer p.Close()
			for range 40 {
				get(t, p)
			}
			if got := p.Counts()["GET blob"]; got != 40 {
				t.Errorf("Counts()[GET blob] = %d, want 40", got)
			}
			return p.Log()
		}
		a, b, c := run(1), run(1), run(2)
		if len(a) == 0 || len(a) == 40 {
			t.Fatalf("seed 1 gave %d faults of 40 requests at rate 0.3", len(a))
		}
		if !slices.Equal(a, b) {
			t.Errorf("same seed, different faults:\n%v\n%v", a, b)
		}
		if slices.Equal(a, c) {
			t.Errorf("seeds 1 and 2 gave the same faults: %v", a)
		}
		if !strings.Contains(strings.Join(a, "\n"), "GET /v2/fault/blob/blobs/") {
			t.Errorf("log = %v", a)
		}
	})
}
