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

// newReporter reports on w; dest names where the images go when events
// do not (export: the archive).
func newReporter(w io.Writer, quiet bool, dest string) reporter {
	switch {
	case quiet:
		return nopReporter{}
	case isTerminal(w):
		return newBars(w)
	}
	return newProgress(w, dest)
}

type nopReporter struct{}

func (nopReporter) event(fixup.Event) {}
func (nopReporter) wait()             {}

// bars draws a progress bar for each image in flight, as many as the
// terminal has rows for (the others wait their turn), and a summary line
// for the whole run: images done, present and failed, bytes, rate, ETA. A
// finished image's bar goes away, so the display never outgrows the
// terminal and leaves nothing behind in its scrollback. Decorators run on
// mpb's goroutine, so the state they read is atomic, never behind b.mu.
type bars struct {
	mu       sync.Mutex // serialises events; never taken by decorators
	p        *mpb.Progress
	total    *mpb.Bar
	sum      int64
	maxShown int // image bars at most: the rows left for them
	shown    int
	nameW    int
	barW     int
	images   map[string]*imageBar
	queue    []*imageBar // planned, waiting for a row
	finished bool

	seen, done, present, failed atomic.Int64
	copied, mounted, skipped    atomic.Int64
	wide                        bool // room for the blob counts
}

type imageBar struct {
	name   string
	size   int64
	cur    int64
	bar    *mpb.Bar     // nil while it waits for a row
	state  atomic.Value // string: "", "present", "done", "failed"
	closed bool
}

// terminalSize is w's size, or 80x24 when it cannot be told.
func terminalSize(w io.Writer) (cols, rows int) {
	if f, ok := w.(*os.File); ok {
		if c, r, err := term.GetSize(int(f.Fd())); err == nil && c > 0 && r > 0 {
			return c, r
		}
	}
	return 80, 24
}

func newBars(w io.Writer) *bars {
	cols, rows := terminalSize(w)
	b := &bars{
		images: map[string]*imageBar{},
		// The summary line, the line the cursor rests on, and one spare:
		// a frame never outgrows the terminal (its top line would scroll
		// away and stay behind).
		maxShown: max(1, rows-3),
		barW:     min(32, max(8, cols-90)),
		wide:     cols >= 150,
	}
	b.nameW = min(42, max(16, cols-32-b.barW))
	b.p = mpb.New(mpb.WithOutput(w), mpb.WithWidth(b.barW), mpb.WithRefreshRate(120*time.Millisecond))
	appended := []decor.Decorator{
		decor.AverageSpeed(decor.SizeB1024(0), " % .1f", decor.WC{W: 14}),
		decor.OnComplete(decor.AverageETA(decor.ET_STYLE_MMSS, decor.WC{W: 8}), "   done "),
	}
	if b.wide {
		appended = append(appended, decor.Any(func(decor.Statistics) string {
			return fmt.Sprintf(" blobs: %d copied, %d mounted, %d present", b.copied.Load(), b.mounted.Load(), b.skipped.Load())
		}))
	}
	b.total = b.p.New(0, mpb.BarStyle(),
		mpb.BarPriority(1<<30), // always last
		mpb.PrependDecorators(
			decor.Any(func(decor.Statistics) string { return b.summary() }, decor.WC{W: 40, C: decor.DindentRight}),
			decor.CountersKibiByte("% .1f / % .1f", decor.WC{W: 22}),
		),
		mpb.AppendDecorators(appended...),
	)
	return b
}

// summary is the first part of the summary line: "images 37/60 done, 2
// present, 1 failed".
func (b *bars) summary() string {
	s := fmt.Sprintf("images %d/%d done", b.done.Load()+b.present.Load(), b.seen.Load())
	if n := b.present.Load(); n > 0 {
		s += fmt.Sprintf(", %d present", n)
	}
	if n := b.failed.Load(); n > 0 {
		s += fmt.Sprintf(", %d failed", n)
	}
	return s
}

// image returns the image's state, made on first sight.
func (b *bars) image(name string) *imageBar {
	if ib, ok := b.images[name]; ok {
		return ib
	}
	ib := &imageBar{name: name}
	ib.state.Store("")
	b.images[name] = ib
	b.seen.Add(1)
	return ib
}

// show gives ib a bar if there is a row for it, else queues it.
func (b *bars) show(ib *imageBar) {
	if ib.bar != nil || ib.closed {
		return
	}
	if b.shown >= b.maxShown {
		b.queue = append(b.queue, ib)
		return
	}
	b.shown++
	b.newBar(ib)
}

// newBar draws ib's bar, on a row of its own, or, after, in the row of the
// bar that is ending (mpb swaps them in one frame: the display does not
// grow).
func (b *bars) newBar(ib *imageBar, after ...mpb.BarOption) {
	counters := decor.CountersKibiByte("% .1f / % .1f", decor.WC{W: 22})
	opts := append([]mpb.BarOption{mpb.BarRemoveOnComplete(),
		mpb.PrependDecorators(
			decor.Name(shorten(ib.name, b.nameW-2), decor.WC{W: b.nameW, C: decor.DindentRight}),
			decor.Any(func(s decor.Statistics) string {
				str, _ := counters.Decor(s)
				return str
			}, decor.WC{W: 22}),
		),
		mpb.AppendDecorators(decor.Any(func(s decor.Statistics) string {
			if s.Total <= 0 {
				return ""
			}
			return fmt.Sprintf(" %3d%%", min(s.Current*100/s.Total, 100))
		}, decor.WC{W: 8}))}, after...)
	ib.bar = b.p.New(ib.size, mpb.BarStyle(), opts...)
	ib.bar.SetCurrent(ib.cur)
}

// next returns the first image waiting for a row that is not done yet.
func (b *bars) next() *imageBar {
	for len(b.queue) > 0 {
		ib := b.queue[0]
		b.queue = b.queue[1:]
		if !ib.closed {
			return ib
		}
	}
	return nil
}

func (b *bars) grow(n int64) {
	b.sum += n
	b.total.SetTotal(b.sum, false)
}

// finish ends ib in state: its bar goes away, its row goes to the next.
func (b *bars) finish(ib *imageBar, state string) {
	if ib.closed {
		return
	}
	ib.closed = true
	ib.state.Store(state)
	switch state {
	case "done":
		b.done.Add(1)
	case "present":
		b.present.Add(1)
	case "failed":
		b.failed.Add(1)
	}
	if ib.bar == nil {
		return
	}
	// The next image takes this one's row as it ends.
	nx := b.next()
	if nx != nil {
		b.newBar(nx, mpb.BarQueueAfter(ib.bar))
	}
	if state == "done" || state == "present" {
		ib.bar.SetTotal(-1, true)
	} else {
		ib.bar.Abort(true)
	}
	if nx == nil {
		// The row is free once mpb has drawn this bar for the last time:
		// a bar added before that would be drawn with it, one row too many.
		go b.release(ib.bar)
	}
}

func (ib *imageBar) add(n int64) {
	ib.cur += n
	if ib.bar != nil {
		ib.bar.IncrInt64(n)
	}
}

func (b *bars) event(e fixup.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	switch e.Kind {
	case fixup.ImageStarted:
		b.image(e.Image)
	case fixup.ImagePlanned:
		ib := b.image(e.Image)
		ib.size = e.Size
		b.grow(e.Size)
		b.show(ib)
	case fixup.ImagePresent:
		b.finish(b.image(e.Image), "present")
	case fixup.BlobProgress:
		if ib, ok := b.images[e.Image]; ok {
			ib.add(e.Bytes)
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
			ib.add(e.Size)
		}
		b.total.IncrInt64(e.Size)
	case fixup.ImageDone:
		if ib, ok := b.images[e.Image]; ok {
			b.finish(ib, "done")
		}
	case fixup.ImageFailed:
		b.finish(b.image(e.Image), "failed")
	}
}

func (b *bars) wait() {
	b.mu.Lock()
	if b.finished {
		b.mu.Unlock()
		return
	}
	b.finished = true
	b.queue = nil
	for _, ib := range b.images {
		if !ib.closed && ib.bar != nil {
			ib.closed = true
			ib.bar.Abort(true)
		}
	}
	b.total.SetTotal(-1, true)
	b.mu.Unlock()
	b.p.Wait()
}

// release frees the row of bar, ended, once it is gone from the display:
// the next image waiting for a row, if one came meanwhile, takes it.
func (b *bars) release(bar *mpb.Bar) {
	bar.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	if nx := b.next(); nx != nil {
		b.newBar(nx)
		return
	}
	b.shown--
}

// shorten keeps the end of s, which names the image, within n runes.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return "…" + string(r[len(r)-n+1:])
}
