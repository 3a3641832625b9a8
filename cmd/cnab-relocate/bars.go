package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/cnabio/cnab-relocate/fixup"
)

// isTerminal reports whether w is a terminal, so progress can be drawn.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// reporter turns engine events into what a person sees.
type reporter interface {
	event(fixup.Event)
	// wait flushes the display; call it before printing anything else.
	wait()
}

func newReporter(w io.Writer, quiet bool) reporter {
	switch {
	case quiet:
		return nopReporter{}
	case isTerminal(w):
		return newBars(w)
	}
	return newProgress(w)
}

type nopReporter struct{}

func (nopReporter) event(fixup.Event) {}
func (nopReporter) wait()             {}

// bars draws one progress bar per image and one for the whole run, with
// bytes, rate, ETA and blob counts. Decorators run on mpb's goroutine, so
// the state they read is atomic, never behind b.mu.
type bars struct {
	mu       sync.Mutex // serialises events; never taken by decorators
	p        *mpb.Progress
	total    *mpb.Bar
	sum      int64
	images   map[string]*imageBar
	copied   atomic.Int64
	mounted  atomic.Int64
	skipped  atomic.Int64
	finished bool
}

type imageBar struct {
	bar    *mpb.Bar
	state  atomic.Value // string: "", "present", "done", "failed"
	closed bool
}

func newBars(w io.Writer) *bars {
	b := &bars{
		p:      mpb.New(mpb.WithOutput(w), mpb.WithWidth(32), mpb.WithRefreshRate(120*time.Millisecond)),
		images: map[string]*imageBar{},
	}
	b.total = b.p.New(0, mpb.BarStyle(),
		mpb.BarPriority(1<<30), // always last
		mpb.PrependDecorators(
			decor.Name("total", decor.WC{W: 42, C: decor.DindentRight}),
			decor.CountersKibiByte("% .1f / % .1f", decor.WC{W: 22}),
		),
		mpb.AppendDecorators(
			decor.AverageSpeed(decor.SizeB1024(0), " % .1f", decor.WC{W: 14}),
			decor.OnComplete(decor.AverageETA(decor.ET_STYLE_MMSS, decor.WC{W: 8}), "   done "),
			decor.Any(func(decor.Statistics) string {
				return fmt.Sprintf(" blobs: %d copied, %d mounted, %d present", b.copied.Load(), b.mounted.Load(), b.skipped.Load())
			}),
		),
	)
	return b
}

func (b *bars) image(e fixup.Event, size int64) *imageBar {
	if ib, ok := b.images[e.Image]; ok {
		return ib
	}
	ib := &imageBar{}
	ib.state.Store("")
	counters := decor.CountersKibiByte("% .1f / % .1f", decor.WC{W: 22})
	ib.bar = b.p.New(size, mpb.BarStyle(),
		mpb.PrependDecorators(
			decor.Name(shorten(e.Image, 40), decor.WC{W: 42, C: decor.DindentRight}),
			decor.Any(func(s decor.Statistics) string {
				if ib.state.Load() == "present" {
					return "already in target"
				}
				str, _ := counters.Decor(s)
				return str
			}, decor.WC{W: 22}),
		),
		mpb.AppendDecorators(decor.Any(func(s decor.Statistics) string {
			if st := ib.state.Load().(string); st != "" {
				return " " + st
			}
			if s.Total <= 0 {
				return ""
			}
			return fmt.Sprintf(" %3d%%", s.Current*100/s.Total)
		}, decor.WC{W: 8})),
	)
	b.images[e.Image] = ib
	return ib
}

func (b *bars) grow(n int64) {
	b.sum += n
	b.total.SetTotal(b.sum, false)
}

func (ib *imageBar) finish(state string) {
	if ib.closed {
		return
	}
	ib.closed = true
	ib.state.Store(state)
	if state == "failed" {
		ib.bar.Abort(false)
		return
	}
	ib.bar.SetTotal(-1, true)
}

func (b *bars) event(e fixup.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	switch e.Kind {
	case fixup.ImagePlanned:
		b.image(e, e.Size)
		b.grow(e.Size)
	case fixup.ImagePresent:
		ib := b.image(e, 1)
		ib.bar.SetCurrent(1)
		ib.finish("present")
	case fixup.BlobProgress:
		if ib, ok := b.images[e.Image]; ok {
			ib.bar.IncrInt64(e.Bytes)
		}
		b.total.IncrInt64(e.Bytes)
	case fixup.BlobCopied:
		b.copied.Add(1)
	case fixup.BlobMounted, fixup.BlobSkipped, fixup.ManifestPushed:
		switch e.Kind {
		case fixup.BlobMounted:
			b.mounted.Add(1)
		case fixup.BlobSkipped:
			b.skipped.Add(1)
		}
		if ib, ok := b.images[e.Image]; ok {
			ib.bar.IncrInt64(e.Size)
		}
		b.total.IncrInt64(e.Size)
	case fixup.ImageDone:
		if ib, ok := b.images[e.Image]; ok {
			ib.finish("done")
		}
	case fixup.ImageFailed:
		b.image(e, 0).finish("failed")
	}
}

func (b *bars) wait() {
	b.mu.Lock()
	if b.finished {
		b.mu.Unlock()
		return
	}
	b.finished = true
	for _, ib := range b.images {
		ib.finish("stopped")
	}
	b.total.SetTotal(-1, true)
	b.mu.Unlock()
	b.p.Wait()
}

// shorten keeps the end of s, which names the image, within n runes.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return "…" + string(r[len(r)-n+1:])
}
