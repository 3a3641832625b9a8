package main

import (
	"testing"
	"time"
)

// The bounds make bench judges: issue 23's decision (client-side hashing
// stays) sets 1.10× at a dozen large images, 1.05× at many images, and a
// CPU bound per bytes or against the floor client by the same split.
func TestLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		latency time.Duration
		images  int
		want    float64
	}{
		{0, 12, 1.10},
		{0, 96, 1.05},
		{0, 500, 1.05},
		{20 * time.Millisecond, 12, 1.2},
	} {
		if got, _ := floorLimit(tc.latency, tc.images); got != tc.want {
			t.Errorf("floorLimit(%v, %d) = %.2f, want %.2f", tc.latency, tc.images, got, tc.want)
		}
	}
	const b400 = 400 * mib
	for _, tc := range []struct {
		images      int
		cold, floor time.Duration
		want        bool
	}{
		{12, 590 * time.Millisecond, 300 * time.Millisecond, true},
		{12, 610 * time.Millisecond, 600 * time.Millisecond, false},
		{96, 1400 * time.Millisecond, 1000 * time.Millisecond, true},
		{500, 4200 * time.Millisecond, 2860 * time.Millisecond, true},
		{500, 4400 * time.Millisecond, 2860 * time.Millisecond, false},
	} {
		if _, ok := cpuLimit(tc.images, b400, tc.cold, tc.floor); ok != tc.want {
			t.Errorf("cpuLimit(%d images, %v vs floor %v) = %v, want %v", tc.images, tc.cold, tc.floor, ok, tc.want)
		}
	}
}
