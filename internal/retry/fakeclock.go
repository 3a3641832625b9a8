package retry

import (
	"slices"
	"sync"
	"time"
)

// FakeClock is a Clock for tests: no wait takes real time. It records
// every wait asked of it. An automatic one (NewFakeClock(true)) lets each
// wait pass at once, moving its time on by it; a manual one holds each
// wait until Advance moves its time past the wait's end.
type FakeClock struct {
	auto bool

	mu      sync.Mutex
	now     time.Time
	waits   []time.Duration
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	c  chan time.Time
}

// NewFakeClock returns a clock at a fixed moment; auto says whether its
// waits pass at once.
func NewFakeClock(auto bool) *FakeClock {
	return &FakeClock{auto: auto, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After records d and returns a channel that receives when the clock's
// time reaches now+d: at once for an automatic clock (whose time moves
// on by d), at an Advance for a manual one.
func (c *FakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	ch := make(chan time.Time, 1)
	if c.auto {
		if d > 0 {
			c.now = c.now.Add(d)
		}
		ch <- c.now
		return ch
	}
	w := fakeWaiter{at: c.now.Add(d), c: ch}
	if !w.at.After(c.now) {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, w)
	return ch
}

// Advance moves the clock's time on by d and releases the waits that end
// by then.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.waiters = slices.DeleteFunc(c.waiters, func(w fakeWaiter) bool {
		if w.at.After(c.now) {
			return false
		}
		w.c <- c.now
		return true
	})
}

// Waits returns every wait asked of the clock, in order.
func (c *FakeClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.waits)
}

// Pending returns how many waits a manual clock holds.
func (c *FakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}
