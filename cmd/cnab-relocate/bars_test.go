package main

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mattn/go-runewidth"

	"github.com/cnabio/cnab-relocate/fixup"
)

// newTestBars is a display that draws only when told (no ticker tick in
// an hour) on a buffer, of the size *cols x *rows.
func newTestBars(out *bytes.Buffer, cols, rows *int) *bars {
	return newBars(out, func() (int, int) { return *cols, *rows }, time.Hour)
}

// TestFrameFits is the fast check of the display's geometry (the proof is
// e2e's TestDisplayInTmux, in a real terminal): at every size, with names
// of wide runes (two cells each) and long names, a frame has at most
// rows-1 lines, the summary last, and no line is wider than cols-1 cells.
func TestFrameFits(t *testing.T) {
	t.Parallel()
	cols, rows := 0, 0
	var out bytes.Buffer
	b := newTestBars(&out, &cols, &rows)
	defer b.wait()
	for i := range 100 {
		name := fmt.Sprintf("registry.example:5000/team/app-%03d:1.0", i)
		switch i % 3 {
		case 1:
			name = fmt.Sprintf("レジストリ.例え.jp/チーム/アプリ-%03d:一", i)
		case 2:
			name = strings.Repeat("very-long-path/", 12) + fmt.Sprint(i)
		}
		b.event(fixup.Event{Kind: fixup.ImageStarted, Image: name})
		b.event(fixup.Event{Kind: fixup.ImagePlanned, Image: name, Size: 3 << 30})
		b.event(fixup.Event{Kind: fixup.BlobProgress, Image: name, Bytes: int64(i) << 25})
	}
	b.event(fixup.Event{Kind: fixup.ImageFailed, Image: "registry.example:5000/team/app-000:1.0"})
	for _, size := range [][2]int{{2, 2}, {10, 3}, {20, 5}, {40, 10}, {60, 15}, {80, 25}, {100, 25}, {149, 40}, {160, 25}, {250, 60}} {
		cols, rows = size[0], size[1]
		b.mu.Lock()
		lines := b.frame(cols, rows)
		b.mu.Unlock()
		if len(lines) > rows-1 {
			t.Errorf("%dx%d: %d lines, more than rows-1", cols, rows, len(lines))
		}
		if want := min(rows-2, 99) + 1; len(lines) != want {
			t.Errorf("%dx%d: %d lines, want %d (every row it may take)", cols, rows, len(lines), want)
		}
		const summary = "images 0/100 done, 1 failed"
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, summary) && (cols > 40 || !strings.HasPrefix(summary, strings.TrimSuffix(last, "…"))) {
			t.Errorf("%dx%d: the last line is not the summary: %q", cols, rows, last)
		}
		for _, l := range lines {
			if w := runewidth.StringWidth(l); w > cols-1 {
				t.Errorf("%dx%d: a line of %d cells: %q", cols, rows, w, l)
			}
		}
	}
}

// TestRedraw checks the bytes of a redraw: the cursor goes up over the
// rows the last frame takes now (more when the terminal got narrower and
// split its lines), each line is erased before it is written, and the
// screen is erased only below the new frame.
func TestRedraw(t *testing.T) {
	t.Parallel()
	cols, rows := 100, 25
	var out bytes.Buffer
	b := newTestBars(&out, &cols, &rows)
	for i := range 30 {
		name := fmt.Sprintf("registry.example:5000/team/app-%03d:1.0", i)
		b.event(fixup.Event{Kind: fixup.ImageStarted, Image: name})
		b.event(fixup.Event{Kind: fixup.ImagePlanned, Image: name, Size: 1 << 20})
	}
	draw := func() string {
		out.Reset()
		b.mu.Lock()
		b.draw()
		b.mu.Unlock()
		return out.String()
	}
	first := draw()
	if strings.Contains(first, "\x1b[") && !strings.HasPrefix(first, "\r\x1b[2K") {
		t.Errorf("the first frame moves the cursor: %q", first[:20])
	}
	if n := strings.Count(first, "\r\n"); n != 24 {
		t.Errorf("first frame: %d lines, want 24 (rows-1)", n)
	}
	if !strings.HasPrefix(draw(), "\r\x1b[24A\x1b[2K") {
		t.Error("the second frame does not move up over the 24 lines of the first")
	}
	// Narrower: each 79-cell line of the last frame is now 2 rows of 60,
	// the summary line 99 cells wide too.
	cols, rows = 60, 15
	if got, want := draw(), "\r\x1b[48A\x1b[2K"; !strings.HasPrefix(got, want) {
		t.Errorf("after narrowing, the frame starts %q, want %q", got[:12], want)
	}
	// Ending, only the summary line is left; the rest is erased below it.
	b.event(fixup.Event{Kind: fixup.ImageDone, Image: "registry.example:5000/team/app-000:1.0"})
	out.Reset()
	b.wait()
	last := out.String()
	if !regexp.MustCompile(`^\r\x1b\[14A\x1b\[2Kimages 1/30 done[^\r\n]*done\r\n\x1b\[J$`).MatchString(last) {
		t.Errorf("last frame: %q", last)
	}
}
