package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-runewidth"
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
		return newBars(w, func() (int, int) { return terminalSize(w) }, refreshRate)
	}
	return newProgress(w, dest)
}

type nopReporter struct{}

func (nopReporter) event(fixup.Event) {}
func (nopReporter) wait()             {}

// refreshRate is how often the display is redrawn.
const refreshRate = 120 * time.Millisecond

// bars draws, on a terminal, a line for each image in flight, as many as
// the terminal has rows for (the others wait their turn, oldest first),
// and a summary line for the whole run: images done, present and failed,
// bytes, rate, ETA. A finished image's line goes away; when the run ends
// only the summary line is left.
//
// Each frame reads the terminal's size, so a resize is followed at the
// next frame. A frame takes at most rows-1 rows: the row the cursor rests
// on, below it, is never written, so drawing never scrolls the screen
// (a frame that scrolled would leave its top line behind). Every line is
// cut to cols-1 cells (display width, not bytes): the terminal never wraps
// a line, so the rows a frame took are the lines it wrote, and the next
// frame moves the cursor up over exactly them.
//
// A frame overwrites the last one line by line and erases below it only
// after it has written its own lines, never from the screen's top-left
// corner: tmux (scroll-on-clear) and other terminals push the whole screen
// into the scrollback when the screen is erased from there, which is what
// left every frame behind when the display drew with mpb (cursor up, then
// erase to the end of the screen).
type bars struct {
	w      io.Writer
	size   func() (cols, rows int)
	start  time.Time
	stop   chan struct{}
	ticker sync.WaitGroup

	mu       sync.Mutex
	images   map[string]*imageBar
	active   []*imageBar // planned and not finished, in the order planned
	finished bool
	seen     int
	done     int
	present  int
	failed   int
	copied   int
	mounted  int
	skipped  int
	total    int64 // bytes planned
	moved    int64 // bytes copied, mounted or found present

	// What the last frame drew: the cell width of each line, and the
	// terminal's width then.
	drawn     []int
	drawnCols int
}

type imageBar struct {
	name   string
	size   int64
	cur    int64
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

// newBars draws on w, a terminal of size(), every rate.
func newBars(w io.Writer, size func() (cols, rows int), rate time.Duration) *bars {
	b := &bars{w: w, size: size, start: time.Now(), stop: make(chan struct{}), images: map[string]*imageBar{}}
	b.ticker.Add(1)
	go func() {
		defer b.ticker.Done()
		t := time.NewTicker(rate)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				b.mu.Lock()
				b.draw()
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// image returns the image's state, made on first sight.
func (b *bars) image(name string) *imageBar {
	if ib, ok := b.images[name]; ok {
		return ib
	}
	ib := &imageBar{name: name}
	b.images[name] = ib
	b.seen++
	return ib
}

// finish ends ib in state ("done", "present", "failed"): its line goes.
func (b *bars) finish(ib *imageBar, state string) {
	if ib.closed {
		return
	}
	ib.closed = true
	switch state {
	case "done":
		b.done++
	case "present":
		b.present++
	case "failed":
		b.failed++
	}
	for i, a := range b.active {
		if a == ib {
			b.active = append(b.active[:i], b.active[i+1:]...)
			break
		}
	}
}

func (ib *imageBar) add(n int64) { ib.cur += n }

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
		if ib.closed {
			return
		}
		ib.size = e.Size
		b.total += e.Size
		b.active = append(b.active, ib)
	case fixup.ImagePresent:
		b.finish(b.image(e.Image), "present")
	case fixup.BlobProgress:
		if ib, ok := b.images[e.Image]; ok {
			ib.add(e.Bytes)
		}
		b.moved += e.Bytes
	case fixup.BlobCopied:
		b.copied++
	case fixup.BlobMounted, fixup.BlobSkipped, fixup.ManifestPushed:
		switch e.Kind {
		case fixup.BlobMounted:
			b.mounted++
		case fixup.BlobSkipped:
			b.skipped++
		}
		if ib, ok := b.images[e.Image]; ok {
			ib.add(e.Size)
		}
		b.moved += e.Size
	case fixup.ImageDone:
		if ib, ok := b.images[e.Image]; ok {
			b.finish(ib, "done")
		}
	case fixup.ImageFailed:
		b.finish(b.image(e.Image), "failed")
	}
}

// wait stops the display and draws its last frame: the summary line,
// left on the screen.
func (b *bars) wait() {
	b.mu.Lock()
	if b.finished {
		b.mu.Unlock()
		return
	}
	b.finished = true
	b.active = nil
	b.mu.Unlock()
	close(b.stop)
	b.ticker.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.draw()
}

// draw replaces the last frame with a new one. Called with b.mu held.
func (b *bars) draw() {
	cols, rows := b.size()
	if cols < 2 || rows < 2 {
		return // no row to spare: wait for a bigger terminal
	}
	lines := b.frame(cols, rows)
	var buf bytes.Buffer
	buf.WriteByte('\r')
	if up := b.drawnRows(cols); up > 0 {
		fmt.Fprintf(&buf, "\x1b[%dA", up)
	}
	widths := make([]int, len(lines))
	for i, l := range lines {
		widths[i] = runewidth.StringWidth(l)
		// Erase the line, then write it: erasing after a line as wide
		// as the terminal would take its last cell.
		buf.WriteString("\x1b[2K")
		buf.WriteString(l)
		buf.WriteString("\r\n")
	}
	// What is left of a longer frame, below this one (never from the
	// top-left corner: this frame has a line).
	buf.WriteString("\x1b[J")
	if _, err := b.w.Write(buf.Bytes()); err != nil {
		return
	}
	b.drawn, b.drawnCols = widths, cols
}

// drawnRows is how many rows the last frame takes on a terminal now cols
// wide. A terminal that got narrower splits the lines that no longer fit
// (tmux, VTE, kitty, iTerm2 and Windows Terminal reflow): a line of w
// cells takes ceil(w/cols) rows.
func (b *bars) drawnRows(cols int) int {
	if cols >= b.drawnCols {
		return len(b.drawn)
	}
	n := 0
	for _, w := range b.drawn {
		n += max(1, (w+cols-1)/cols)
	}
	return n
}

// frame is the display for a terminal of cols x rows: a line for each of
// the first images in flight that fit and the summary line, at most rows-1
// lines, each at most cols-1 cells wide.
func (b *bars) frame(cols, rows int) []string {
	width := cols - 1
	shown := min(len(b.active), rows-2)
	lines := make([]string, 0, shown+1)
	barW := min(32, max(8, width-90))
	nameW := min(42, max(16, width-32-barW))
	for _, ib := range b.active[:shown] {
		pct := ""
		if ib.size > 0 {
			pct = fmt.Sprintf("%3d%%", min(ib.cur*100/ib.size, 100))
		}
		l := padRight(shorten(ib.name, nameW-2), nameW) +
			padLeft(human(ib.cur)+" / "+human(ib.size), 22) + " " +
			bar(ib.cur, ib.size, barW) + " " + padLeft(pct, 8)
		lines = append(lines, cut(l, width))
	}
	return append(lines, cut(b.summaryLine(width), width))
}

// summaryLine is "images 37/60 done, 2 present, 1 failed", bytes moved of
// planned, a bar when there is room for one, the average rate, the ETA
// (or "done"), and on a wide terminal the blob counts.
func (b *bars) summaryLine(width int) string {
	s := fmt.Sprintf("images %d/%d done", b.done+b.present, b.seen)
	if b.present > 0 {
		s += fmt.Sprintf(", %d present", b.present)
	}
	if b.failed > 0 {
		s += fmt.Sprintf(", %d failed", b.failed)
	}
	elapsed := time.Since(b.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(b.moved) / elapsed
	}
	eta := "--:--"
	switch {
	case b.finished:
		eta = "done"
	case rate > 0 && b.total >= b.moved:
		left := time.Duration(float64(b.total-b.moved) / rate * float64(time.Second))
		eta = fmt.Sprintf("%02d:%02d", int(left.Minutes()), int(left.Seconds())%60)
	}
	blobs := ""
	if width >= 149 {
		blobs = fmt.Sprintf(" blobs: %d copied, %d mounted, %d present", b.copied, b.mounted, b.skipped)
	}
	counts := human(b.moved) + " / " + human(b.total)
	tail := padLeft(human(int64(rate))+"/s", 14) + padLeft(eta, 8) + blobs
	tw := runewidth.StringWidth(tail)
	if room := width - runewidth.StringWidth(s) - 22 - tw; room >= 1 {
		// Columns as the image lines have them, a bar if it fits.
		s = padRight(s, max(runewidth.StringWidth(s)+1, min(40, width-22-tw)))
		if barW := min(32, width-runewidth.StringWidth(s)-22-2-tw); barW >= 8 {
			return s + padLeft(counts, 22) + " " + bar(b.moved, b.total, barW) + " " + tail
		}
		return s + padLeft(counts, 22) + tail
	}
	// Narrow: what matters first.
	return s + "  " + counts + "  " + eta
}

// bar is a progress bar of width cells, brackets included: [===>----].
func bar(cur, total int64, width int) string {
	in := width - 2
	fill := in
	if total > 0 {
		fill = int(min(cur, total) * int64(in) / total)
	} else if cur == 0 {
		fill = 0
	}
	switch {
	case fill >= in:
		return "[" + strings.Repeat("=", in) + "]"
	case fill == 0:
		return "[" + strings.Repeat("-", in) + "]"
	}
	return "[" + strings.Repeat("=", fill-1) + ">" + strings.Repeat("-", in-fill) + "]"
}

// cut keeps s within width cells, marking a cut with "…", and drops
// trailing spaces.
func cut(s string, width int) string {
	return strings.TrimRight(runewidth.Truncate(s, width, "…"), " ")
}

// padRight fills s with spaces to width cells.
func padRight(s string, width int) string { return runewidth.FillRight(s, width) }

// padLeft puts spaces before s up to width cells.
func padLeft(s string, width int) string { return runewidth.FillLeft(s, width) }

// shorten keeps the end of s, which names the image, within n cells.
func shorten(s string, n int) string {
	w := runewidth.StringWidth(s)
	if w <= n {
		return s
	}
	return "…" + runewidth.TruncateLeft(s, w-n+1, "")
}
