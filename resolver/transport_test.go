package resolver

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A 429 with Retry-After slows every request to that host, not only the
// one refused; other hosts are not held.
func TestTooManyRequestsHoldsTheHost(t *testing.T) {
	var refused atomic.Bool
	var mu sync.Mutex
	var times []time.Time
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		if r.URL.Path == "/first" && refused.CompareAndSwap(false, true) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer busy.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer other.Close()

	rt := &retryTransport{base: http.DefaultTransport, retries: 2, logger: slog.New(slog.DiscardHandler)}
	client := &http.Client{Transport: rt}
	start := time.Now()
	done := make(chan time.Duration, 1)
	go func() {
		resp, err := client.Get(busy.URL + "/first")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("first: %v %v", resp, err)
		}
		done <- time.Since(start)
	}()
	// Once the 429 has been seen, a second request to the same host waits.
	for !refused.Load() {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	otherStart := time.Now()
	if resp, err := client.Get(other.URL + "/x"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("other host: %v %v", resp, err)
	}
	if d := time.Since(otherStart); d > 500*time.Millisecond {
		t.Errorf("another host was held %v", d)
	}
	if resp, err := client.Get(busy.URL + "/second"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("second: %v %v", resp, err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("the second request to the refusing host went out after %v, before its Retry-After of 1s", d)
	}
	if d := <-done; d < 900*time.Millisecond {
		t.Errorf("the refused request was retried after %v, before its Retry-After of 1s", d)
	}
}
