package main

import (
	"fmt"
	"io"
	"sync"

	"github.com/cnabio/cnab-relocate/fixup"
)

// progress prints one plain line per notable event.
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	dest   string // where images go when events do not say
	failed map[string]bool
}

func newProgress(w io.Writer, dest string) *progress {
	return &progress{w: w, dest: dest, failed: map[string]bool{}}
}

// target is where e's image goes.
func (p *progress) target(e fixup.Event) string {
	if e.Target == "" {
		return p.dest
	}
	return e.Target
}

func (p *progress) wait() {}

func (p *progress) event(e fixup.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Kind {
	case fixup.ImagePlanned:
		fmt.Fprintf(p.w, "copying  %s -> %s (%s, %s)\n", e.Image, p.target(e), e.Digest, human(e.Size))
	case fixup.ImagePresent:
		fmt.Fprintf(p.w, "present  %s -> %s (%s)\n", e.Image, p.target(e), e.Digest)
	case fixup.ImageDone:
		fmt.Fprintf(p.w, "done     %s -> %s\n", e.Image, p.target(e))
	case fixup.ImageFailed:
		// Once per image; the final error says why.
		if !p.failed[e.Image] {
			p.failed[e.Image] = true
			fmt.Fprintf(p.w, "failed   %s\n", e.Image)
		}
	case fixup.ReferrerFailed:
		fmt.Fprintf(p.w, "warning  %s: referrer not copied: %v\n", e.Image, e.Err)
	}
}
