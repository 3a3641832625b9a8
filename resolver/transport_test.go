package resolver

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cnabio/cnab-relocate/internal/retry"
)

// A 429 with Retry-After slows every request to that host, not only the
// one refused; other hosts are not held. The waits are on a manual clock:
// nothing passes until the test moves it past the Retry-After.
func TestTooManyRequestsHoldsTheHost(t *testing.T) {
	t.Parallel()
	var refused atomic.Bool
	var mu sync.Mutex
	var served []string
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first" && refused.CompareAndSwap(false, true) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		mu.Lock()
		served = append(served, r.URL.Path)
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer busy.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer other.Close()

	clock := retry.NewFakeClock(false)
	ctx := retry.WithClock(context.Background(), clock)
	rt := &retryTransport{base: http.DefaultTransport, retries: 2, logger: slog.New(slog.DiscardHandler)}
	client := &http.Client{Transport: rt}
	get := func(url string) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %s", url, resp.Status)
			}
		}
		return err
	}
	waitPending := func(n int) {
		for deadline := time.Now().Add(10 * time.Second); clock.Pending() < n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d waits pending, want %d", clock.Pending(), n)
			}
		}
	}
	first, second := make(chan error, 1), make(chan error, 1)
	go func() { first <- get(busy.URL + "/first") }()
	waitPending(1) // the refused request waits its Retry-After
	// Another host is not held.
	if err := get(other.URL + "/x"); err != nil {
		t.Fatalf("other host: %v", err)
	}
	// A second request to the refusing host waits too.
	go func() { second <- get(busy.URL + "/second") }()
	waitPending(2)
	clock.Advance(999 * time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	mu.Lock()
	early := slices.Clone(served)
	mu.Unlock()
	if len(early) != 0 {
		t.Errorf("served %v before the Retry-After of 1s", early)
	}
	clock.Advance(time.Millisecond)
	for name, c := range map[string]chan error{"first": first, "second": second} {
		if err := <-c; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if got := clock.Waits(); !slices.Equal(got, []time.Duration{time.Second, time.Second}) {
		t.Errorf("waits %v, want the Retry-After of 1s twice (the retry, the held request)", got)
	}
}
