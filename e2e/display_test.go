package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// tmuxServer is a tmux server of a test's own (its socket in the test's
// temporary directory), with one detached session whose one pane runs a
// command: a real terminal, whose screen and scrollback the test reads
// back with capture-pane.
type tmuxServer struct {
	t      testing.TB
	socket string
}

// tmuxConf: the pane's history keeps every line the run pushes off the
// screen (the default 2000 would hide a bigger flood), no status line (the
// pane is the window's whole size), and TERM is xterm-256color in the pane.
const tmuxConf = `set -g history-limit 100000
set -g status off
set -g default-terminal xterm-256color
`

// startTmux starts a tmux server with a cols x rows pane running script
// (a /bin/sh script). It fails the test, loudly, when tmux is missing:
// scripts/install-deps.sh installs it.
func startTmux(t testing.TB, cols, rows int, script string) *tmuxServer {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("tmux is required for the display test (run scripts/install-deps.sh): %v", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "tmux.conf")
	if err := os.WriteFile(conf, []byte(tmuxConf), 0o644); err != nil {
		t.Fatal(err)
	}
	sh := filepath.Join(dir, "run.sh")
	if err := os.WriteFile(sh, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := &tmuxServer{t: t, socket: filepath.Join(dir, "tmux.sock")}
	s.run("-f", conf, "new-session", "-d", "-s", "run", "-x", fmt.Sprint(cols), "-y", fmt.Sprint(rows), "/bin/sh "+sh)
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", s.socket, "kill-server").Run() })
	return s
}

// run runs a tmux command on the server and returns its output.
func (s *tmuxServer) run(args ...string) string {
	s.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", s.socket}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// capture returns the pane's lines: with history, the scrollback and the
// screen, else the screen; with join, a line the terminal wrapped is one.
func (s *tmuxServer) capture(history, join bool) []string {
	s.t.Helper()
	args := []string{"capture-pane", "-p", "-t", "run"}
	if history {
		args = append(args, "-S", "-", "-E", "-")
	}
	if join {
		args = append(args, "-J")
	}
	return strings.Split(strings.TrimRight(s.run(args...), "\n"), "\n")
}

// historySize is how many lines the pane's history holds.
func (s *tmuxServer) historySize() int {
	s.t.Helper()
	out := strings.TrimSpace(s.run("display-message", "-p", "-t", "run", "#{history_size}"))
	n, err := strconv.Atoi(out)
	if err != nil {
		s.t.Fatalf("tmux history_size: %q", out)
	}
	return n
}

// nonEmpty returns the lines that are not blank.
func nonEmpty(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// checkNoWrap fails the test if the terminal wrapped a line of the
// display: joined (capture-pane -J), the line is longer than a row. The
// plain report printed after the display may wrap; it is not checked.
func checkNoWrap(t *testing.T, joined []string, cols int) {
	t.Helper()
	for _, l := range joined {
		l = strings.TrimRight(l, " ")
		if !strings.Contains(l, "vendor/img-") && !strings.HasPrefix(l, "images ") {
			continue
		}
		if n := utf8.RuneCountInString(l); n > cols {
			t.Errorf("the terminal wrapped a line of %d columns (%d columns wide): %q", n, cols, l)
		}
	}
}

// displayRun is one run of fixup in tmux.
type displayRun struct {
	cols, rows int
	images     int
	// resize, if set, is the size the window gets once the display is up.
	resize *[2]int
}

// TestDisplayInTmux runs fixup in a real terminal, tmux, at 80x25 and
// 100x25, with 60 and 500 images, and once resized during the run from
// 100x25 to 60x15: the pane's whole history (scrollback and screen) holds
// at most the terminal's rows + 10 non-empty lines, so no redraw leaves
// its frame behind (after a resize, plus the rows tmux itself pushed into
// the history as it resized: the history must not grow after it); no line
// of the display is ever wrapped; no image's line is left when the run
// ends and the summary line says every image is done. The display starts
// on the pane's top row, where an erase to the end of the screen pushes
// the screen into tmux's history (scroll-on-clear). The five runs take
// about 17 s; the 500 tiny images are pushed once, to an in-process
// registry.
func TestDisplayInTmux(t *testing.T) {
	ctx := context.Background()
	src := registrytest.StartMemory(false)
	defer src.Close()
	const most = 500
	refs := make([]string, most)
	for i := range most {
		img, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: fmt.Sprintf("vendor/img-%03d", i), Tag: "1", Layers: []int{512}, Seed: int64(100 + i)})
		if err != nil {
			t.Fatal(err)
		}
		refs[i] = img.Ref(src.Host)
	}
	for _, r := range []displayRun{
		{cols: 80, rows: 25, images: 60},
		{cols: 100, rows: 25, images: 60},
		{cols: 80, rows: 25, images: 500},
		{cols: 100, rows: 25, images: 500},
		{cols: 100, rows: 25, images: 500, resize: &[2]int{60, 15}},
	} {
		name := fmt.Sprintf("%dx%d %d images", r.cols, r.rows, r.images)
		if r.resize != nil {
			name += fmt.Sprintf(" resized to %dx%d", r.resize[0], r.resize[1])
		}
		t.Run(name, func(t *testing.T) { testDisplayInTmux(t, r, refs[:r.images]) })
	}
}

func testDisplayInTmux(t *testing.T, r displayRun, refs []string) {
	dst := registrytest.StartMemory(false)
	defer dst.Close()
	// A round trip slow enough that many frames are drawn.
	slow := registrytest.NewProxyURL(dst.URL, nil, registrytest.ProxyOptions{Latency: 3 * time.Millisecond})
	defer slow.Close()
	dir := t.TempDir()
	images := map[string]any{}
	for i, ref := range refs {
		images[fmt.Sprintf("img-%03d", i)] = map[string]any{"image": ref}
	}
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, map[string]any{"name": "many", "version": "1.0.0",
		"invocationImages": []any{map[string]any{"image": refs[0]}}, "images": images})
	// The display is on stderr, the report on stdout: both the pane.
	status := filepath.Join(dir, "status")
	script := fmt.Sprintf(`export TERM=xterm-256color LANG=C.UTF-8 DOCKER_CONFIG=%q
%q fixup %q --repository-prefix %q --relocation-mapping %q --jobs 2
echo $? >%q.tmp && mv %q.tmp %q
exec sleep 600
`, t.TempDir(), binary, bundlePath, slow.Host+"/team", filepath.Join(dir, "m.json"), status, status, status)
	start := time.Now()
	tm := startTmux(t, r.cols, r.rows, script)

	cols, rows := r.cols, r.rows
	resized := r.resize == nil
	var resizedAt time.Time // the terminal's own reflow of the last frame is on the screen until the next
	pushed := 0             // lines the resize pushed into the history
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(status); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("fixup did not end in 2 minutes; the pane:\n%s", strings.Join(tm.capture(true, false), "\n"))
		}
		screen := tm.capture(false, false)
		if time.Since(resizedAt) > 500*time.Millisecond {
			checkNoWrap(t, tm.capture(false, true), cols)
		}
		if !resized && strings.Count(strings.Join(screen, "\n"), "vendor/img-") >= r.rows/2 {
			// The display is up, with many image lines: resize under it.
			tm.run("resize-window", "-t", "run", "-x", fmt.Sprint(r.resize[0]), "-y", fmt.Sprint(r.resize[1]))
			cols, rows = r.resize[0], r.resize[1]
			resized, resizedAt = true, time.Now()
			// The rows of the last frame that no longer fit: the terminal
			// pushes them into the history as it resizes, before the
			// display can know (tmux reflows a line wider than the new
			// width into more rows, then keeps the cursor on the screen).
			pushed = tm.historySize()
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(start)
	code, err := os.ReadFile(status)
	if err != nil {
		t.Fatal(err)
	}
	all := tm.capture(true, false)
	left := nonEmpty(all)
	t.Logf("fixup took %v; left in the pane's history and screen (%d non-empty lines):\n%s", took.Round(time.Millisecond), len(left), strings.Join(left, "\n"))
	if c := strings.TrimSpace(string(code)); c != "0" {
		t.Fatalf("fixup exited %s", c)
	}
	if !resized {
		t.Fatal("the display never showed an image's bar, so the window was not resized")
	}
	if len(left) > rows+10+pushed {
		t.Errorf("%d non-empty lines in the pane's history, more than its %d rows + 10 (+ %d the resize pushed into the history): redraws leave frames behind", len(left), rows, pushed)
	}
	if r.resize != nil {
		t.Logf("the resize pushed %d lines of the frame into the history", pushed)
	}
	// A resize leaves in the history what the terminal pushed there
	// (rows that no longer fit); no program can take that back. The
	// screen must be clean all the same.
	behind := left
	if r.resize != nil {
		behind = nonEmpty(tm.capture(false, false))
	}
	for _, l := range behind {
		if strings.Contains(l, "vendor/img-") {
			t.Errorf("an image's line is left behind: %q", l)
		}
	}
	checkNoWrap(t, tm.capture(false, true), cols)
	if want := fmt.Sprintf("images %d/%d done", len(refs), len(refs)); !strings.Contains(strings.Join(left, "\n"), want) {
		t.Errorf("the summary line does not say %q", want)
	}
}
