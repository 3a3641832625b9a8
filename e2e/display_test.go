package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/cnabio/cnab-relocate/internal/registrytest"
)

// screen is the little of a terminal that progress displays use: it
// keeps every line ever written (the scrollback, then the screen of rows
// lines), the cursor, carriage return, line feed, cursor up and down
// (never above the screen's top), and erasing to the end of the line or
// the screen.
type screen struct {
	rows  int
	lines [][]rune
	row   int
	col   int
}

func (s *screen) top() int { return max(0, len(s.lines)-s.rows) }

func (s *screen) write(data []byte) {
	if len(s.lines) == 0 {
		s.lines = [][]rune{nil}
	}
	rs := []rune(string(data))
	for i := 0; i < len(rs); i++ {
		switch c := rs[i]; {
		case c == '\r':
			s.col = 0
		case c == '\n':
			s.row++
			if s.row == len(s.lines) {
				s.lines = append(s.lines, nil)
			}
		case c == 0x1b && i+1 < len(rs) && rs[i+1] == '[':
			j := i + 2
			for j < len(rs) && (rs[j] == '?' || rs[j] == ';' || (rs[j] >= '0' && rs[j] <= '9')) {
				j++
			}
			if j == len(rs) {
				return
			}
			arg := string(rs[i+2 : j])
			n, err := strconv.Atoi(arg)
			if err != nil || n == 0 {
				n = 1
			}
			switch rs[j] {
			case 'A':
				s.row = max(s.top(), s.row-n)
			case 'B':
				s.row = min(len(s.lines)-1, s.row+n)
			case 'K':
				s.lines[s.row] = s.lines[s.row][:min(s.col, len(s.lines[s.row]))]
			case 'J':
				s.lines[s.row] = s.lines[s.row][:min(s.col, len(s.lines[s.row]))]
				for k := s.row + 1; k < len(s.lines); k++ {
					s.lines[k] = nil
				}
				s.lines = s.lines[:max(s.row+1, s.top())]
			}
			i = j
		case c < 0x20:
		default:
			line := s.lines[s.row]
			for len(line) <= s.col {
				line = append(line, ' ')
			}
			line[s.col] = c
			s.lines[s.row] = line
			s.col++
		}
	}
}

// text is every non-empty line left: the scrollback and the screen.
func (s *screen) text() []string {
	var out []string
	for _, l := range s.lines {
		if t := strings.TrimSpace(string(l)); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// frameSplit splits a progress display's output into its frames.
var frameSplit = regexp.MustCompile(`\x1b\[\d+A\x1b\[J`)

// TestDisplayFitsTheTerminal runs fixup of 60 and of 500 images in a
// pseudo-terminal of 25 rows: no frame of the display takes more rows
// than the terminal has, and when the run ends no image's bar is left
// behind, on the screen or in its scrollback; the summary line says how
// many images are done.
func TestDisplayFitsTheTerminal(t *testing.T) {
	for _, n := range []int{60, 500} {
		t.Run(fmt.Sprint(n, " images"), func(t *testing.T) { testDisplay(t, n) })
	}
}

func testDisplay(t *testing.T, n int) {
	ctx := context.Background()
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	images := map[string]any{}
	for i := range n {
		img, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: fmt.Sprintf("vendor/img-%03d", i), Tag: "1", Layers: []int{16 << 10}, Seed: int64(100 + i)})
		if err != nil {
			t.Fatal(err)
		}
		images[fmt.Sprintf("img-%03d", i)] = map[string]any{"image": img.Ref(src.Host)}
	}
	// Slow enough that many frames are drawn.
	slow := registrytest.NewProxy(dst, registrytest.ProxyOptions{Latency: 10 * time.Millisecond})
	defer slow.Close()
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, map[string]any{"name": "many", "version": "1.0.0",
		"invocationImages": []any{map[string]any{"image": src.Host + "/vendor/img-000:1"}}, "images": images})

	cmd := exec.Command(binary, "fixup", bundlePath, "--repository-prefix", slow.Host+"/team", "--relocation-mapping", filepath.Join(dir, "m.json"))
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir(), "TERM=xterm")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 25, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	done := make(chan struct{})
	go func() {
		io.Copy(&raw, tty) // until the process is gone (EIO)
		close(done)
	}()
	err = cmd.Wait()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	tty.Close()
	if err != nil {
		t.Fatalf("fixup: %v\n%s", err, raw.String())
	}
	s := &screen{rows: 25}
	s.write(raw.Bytes())
	// Each frame is drawn after moving the cursor up over the last one
	// (ESC[nA ESC[J): none may take the terminal's every row.
	for i, frame := range frameSplit.Split(raw.String(), -1) {
		if lines := strings.Count(frame, "\n"); lines >= 25 {
			t.Errorf("frame %d takes %d lines of a 25-row terminal", i, lines)
		}
	}
	left := s.text()
	t.Logf("left in the terminal (%d lines):\n%s", len(left), strings.Join(left, "\n"))
	for _, l := range left {
		if strings.Contains(l, "vendor/img-") {
			t.Errorf("an image's line is left behind: %q", l)
		}
	}
	if len(left) > 25 {
		t.Errorf("%d lines left, more than the terminal's 25 rows", len(left))
	}
	if want := fmt.Sprintf("images %d/%d done", n, n); !strings.Contains(strings.Join(left, "\n"), want) {
		t.Errorf("the summary line does not say %q", want)
	}
}
