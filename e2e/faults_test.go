package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/relocator"
)

var imageKeys = []string{"inv", "index", "list", "oci"}

// writeBundleVia writes the fixture's bundle to path with every reference
// to the source registry pointing at host instead (a proxy in front of it),
// and returns the references as written, by fixture key.
func writeBundleVia(t *testing.T, f *fixture, host, path string) map[string]string {
	t.Helper()
	data, err := json.Marshal(f.bundle)
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.ReplaceAll(data, []byte(f.src.Host), []byte(host))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	refs := map[string]string{}
	for k, r := range f.refs {
		refs[k] = strings.Replace(r, f.src.Host, host, 1)
	}
	return refs
}

// checkRelocated proves, with HEAD requests straight to dst (no proxy), that
// every image of f is where the relocation mapping at mapPath says, with
// every digest identical: root by digest and by tag, child manifests, blobs.
// keys are the fixture's images the mapping holds (default: all of them).
func checkRelocated(t *testing.T, f *fixture, dst *registrytest.Registry, mapPath string, refs map[string]string, keys ...string) {
	t.Helper()
	if len(keys) == 0 {
		keys = imageKeys
	}
	var mapping map[string]string
	readJSON(t, mapPath, &mapping)
	if len(mapping) != len(keys) {
		t.Errorf("relocation mapping has %d entries, want %d: %v", len(mapping), len(keys), mapping)
	}
	ctx := context.Background()
	dc := dst.Client()
	for _, k := range keys {
		img := f.images[k]
		to, ok := mapping[refs[k]]
		if !ok {
			t.Errorf("%s is not in the relocation mapping", refs[k])
			continue
		}
		named, err := reference.ParseNormalizedNamed(to)
		if err != nil {
			t.Fatalf("mapping target %q: %v", to, err)
		}
		repo := reference.Path(named)
		if got, err := dc.HeadManifest(ctx, repo, img.Root.Digest.String()); err != nil || got.Digest != img.Root.Digest {
			t.Errorf("%s: root %s in target %s: %v", k, img.Root.Digest, repo, err)
		}
		if tagged, ok := named.(reference.Tagged); ok {
			if got, err := dc.HeadManifest(ctx, repo, tagged.Tag()); err != nil || got.Digest != img.Root.Digest {
				t.Errorf("%s: tag %s in target = %s, %v; want %s", k, tagged.Tag(), got.Digest, err, img.Root.Digest)
			}
		}
		if c, ok := named.(reference.Canonical); ok && c.Digest() != img.Root.Digest {
			t.Errorf("%s: mapped to digest %s, want %s", k, c.Digest(), img.Root.Digest)
		}
		for _, m := range img.Manifests {
			if got, err := dc.HeadManifest(ctx, repo, m.Digest.String()); err != nil || got.Digest != m.Digest {
				t.Errorf("%s: manifest %s in target: %v", k, m.Digest, err)
			}
		}
		for _, b := range img.Blobs {
			if ok, err := dc.BlobExists(ctx, repo, b.Digest); err != nil || !ok {
				t.Errorf("%s: blob %s missing in %s: %v", k, b.Digest, repo, err)
			}
		}
	}
}

// TestFaultsSeededRuns relocates the multi-image bundle 20 times through a
// proxy that faults 10% of requests on a seeded schedule (500, 503, 429 with
// Retry-After 0 or 1, connection resets in the middle of response and
// request bodies, clean closes mid-body, delays), in front of the source for
// odd seeds and of the target for even ones, each run into a fresh prefix.
// A few rules make sure every run meets the rarer faults at least once.
// Every run must succeed with every digest identical.
func TestFaultsSeededRuns(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	totals := map[string]int{}
	start := time.Now()
	for i := 1; i <= 20; i++ {
		side := "source"
		if i%2 == 0 {
			side = "target"
		}
		t.Run(fmt.Sprintf("seed=%d/%s", i, side), func(t *testing.T) {
			dir := t.TempDir()
			opts := registrytest.FaultOptions{Seed: uint64(i), Rate: 0.10}
			var p *registrytest.Proxy
			var refs map[string]string
			bundlePath := filepath.Join(dir, "bundle.json")
			prefix := fmt.Sprintf("%s/run%d", dst.Host, i)
			if side == "source" {
				opts.Rules = []registrytest.FaultRule{
					{Match: registrytest.MatchKind("GET manifest"), Fault: registrytest.Fault{Kind: registrytest.FaultResetResponse, After: -1}, Times: 1},
					{Match: registrytest.MatchKind("GET blob"), Fault: registrytest.Fault{Kind: registrytest.FaultResetResponse, After: -1}, Times: 1},
					{Match: registrytest.MatchKind("GET blob"), Fault: registrytest.Fault{Kind: registrytest.FaultCloseResponse, After: -1}, Times: 1},
					{Match: registrytest.MatchKind("HEAD manifest"), Fault: registrytest.Fault{Kind: registrytest.FaultStatus, Status: 429, RetryAfter: "0"}, Times: 1},
				}
				p = registrytest.NewProxy(src, registrytest.ProxyOptions{Faults: opts})
				refs = writeBundleVia(t, f, p.Host, bundlePath)
			} else {
				opts.Rules = []registrytest.FaultRule{
					{Match: registrytest.MatchKind("PUT blob"), Fault: registrytest.Fault{Kind: registrytest.FaultResetRequest, After: -1}, Times: 1},
					{Match: registrytest.MatchKind("PUT blob"), Fault: registrytest.Fault{Kind: registrytest.FaultStatus, Status: 429, RetryAfter: "0"}, Times: 1},
					{Match: registrytest.MatchKind("PUT manifest"), Fault: registrytest.Fault{Kind: registrytest.FaultStatus, Status: 503}, Times: 1},
					{Match: registrytest.MatchKind("POST upload"), Fault: registrytest.Fault{Kind: registrytest.FaultStatus, Status: 500}, Times: 1},
				}
				p = registrytest.NewProxy(dst, registrytest.ProxyOptions{Faults: opts})
				refs = writeBundleVia(t, f, src.Host, bundlePath)
				prefix = fmt.Sprintf("%s/run%d", p.Host, i)
			}
			defer p.Close()
			mapPath := filepath.Join(dir, "relocation-mapping.json")
			outPath := filepath.Join(dir, "relocated-bundle.json")
			runStart := time.Now()
			r := cli(t, nil, "fixup", bundlePath, "--repository-prefix", prefix, "--relocation-mapping", mapPath, "--output-bundle", outPath, "-q")
			injected := p.Injected()
			t.Logf("%s side, %v, %d requests faulted: %v", side, time.Since(runStart).Round(time.Millisecond), len(p.Log()), injected)
			for k, v := range injected {
				totals[k] += v
			}
			if r.code != 0 {
				t.Fatalf("fixup exited %d with faults %v:\n%s", r.code, p.Log(), r.stderr)
			}
			if len(injected) == 0 {
				t.Error("no fault was injected")
			}
			checkRelocated(t, f, dst, mapPath, refs)
			validate(t, "relocation-mapping.schema.json", mapPath)
		})
	}
	keys := slices.Sorted(maps.Keys(totals))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, totals[k])
	}
	t.Logf("20 runs in %v; faults injected:%s", time.Since(start).Round(time.Millisecond), b.String())
	for _, k := range []string{"status 500", "status 503", "status 429", "reset-response", "close-response", "reset-request"} {
		if totals[k] == 0 {
			t.Errorf("no %s fault in 20 runs", k)
		}
	}
}

// TestFaultImageBlobsAlwaysFail: when every GET of one image's blobs fails
// (500, always), the run exits 1 after bounded retries, names that image,
// and writes no output file and no temporary file.
func TestFaultImageBlobsAlwaysFail(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	var blobs []digest.Digest
	for _, b := range f.images["oci"].Blobs {
		blobs = append(blobs, b.Digest)
	}
	p := registrytest.NewProxy(src, registrytest.ProxyOptions{Faults: registrytest.FaultOptions{Rules: []registrytest.FaultRule{
		{Match: registrytest.MatchBlobGET(false, blobs...), Fault: registrytest.Fault{Kind: registrytest.FaultStatus, Status: 500}},
	}}})
	defer p.Close()
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	refs := writeBundleVia(t, f, p.Host, bundlePath)
	start := time.Now()
	r := cli(t, nil, "fixup", bundlePath, "--repository-prefix", dst.Host+"/team",
		"--relocation-mapping", filepath.Join(dir, "map.json"), "--output-bundle", filepath.Join(dir, "out.json"))
	elapsed := time.Since(start)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1", r.code)
	}
	last := lastStderrLine(r.stderr)
	if !strings.Contains(last, refs["oci"]) || !strings.Contains(last, "500 Internal Server Error") {
		t.Errorf("error %q does not name the image %s and the status", last, refs["oci"])
	}
	for _, k := range []string{"inv", "index", "list"} {
		if strings.Contains(last, "relocating "+refs[k]+":") {
			t.Errorf("error %q blames %s, whose blobs were fine", last, refs[k])
		}
	}
	if got := dirEntries(t, dir); !slices.Equal(got, []string{"bundle.json"}) {
		t.Errorf("output directory holds %v after a failed run; want only the bundle", got)
	}
	// Bounded: each failing GET is sent 1+4 times by the transport, and not
	// again by the engine (which would make it 25).
	faulted := len(p.Log())
	if max := len(blobs) * 5; faulted > max {
		t.Errorf("%d faulted GETs for %d blobs; want at most %d", faulted, len(blobs), max)
	}
	t.Logf("failed after %v and %d faulted requests", elapsed.Round(time.Millisecond), faulted)
	if elapsed > 15*time.Second {
		t.Errorf("took %v to give up", elapsed)
	}
}

// TestCorruptSource: a source that serves wrong bytes (same length, one byte
// flipped) for a blob, or for a manifest, is caught while streaming: the
// image fails with exit 1 and a message naming it and saying digest
// mismatch, the wrong content is fetched once (not retried), nothing is
// tagged in the target for it, and no output is written.
func TestCorruptSource(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	tests := []struct {
		name  string
		key   string // the image that gets the wrong bytes
		match func(*fixture) func(r *http.Request) bool
	}{
		{"blob", "oci", func(f *fixture) func(*http.Request) bool {
			return registrytest.MatchBlobGET(false, f.images["oci"].Blobs[1].Digest)
		}},
		{"manifest", "inv", func(f *fixture) func(*http.Request) bool {
			// The root is read by its tag (resolved and read in one GET).
			return registrytest.MatchManifestGET("vendor/installer", "1.0", f.images["inv"].Root.Digest.String())
		}},
		{"index child manifest", "index", func(f *fixture) func(*http.Request) bool {
			return registrytest.MatchManifestGET("vendor/web", f.images["index"].Manifests[1].Digest.String())
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := registrytest.NewProxy(src, registrytest.ProxyOptions{Faults: registrytest.FaultOptions{Rules: []registrytest.FaultRule{
				{Match: tc.match(f), Fault: registrytest.Fault{Kind: registrytest.FaultCorrupt, After: 40}},
			}}})
			defer p.Close()
			dir := t.TempDir()
			bundlePath := filepath.Join(dir, "bundle.json")
			refs := writeBundleVia(t, f, p.Host, bundlePath)
			prefix := fmt.Sprintf("%s/corrupt%d", dst.Host, i)
			mapPath := filepath.Join(dir, "map.json")
			r := cli(t, nil, "fixup", bundlePath, "--repository-prefix", prefix, "--relocation-mapping", mapPath)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1", r.code)
			}
			last := lastStderrLine(r.stderr)
			if !strings.Contains(last, "relocating "+refs[tc.key]+":") || !strings.Contains(last, "digest mismatch") {
				t.Errorf("error %q does not name %s and say digest mismatch", last, refs[tc.key])
			}
			if n := len(p.Log()); n != 1 {
				t.Errorf("the wrong content was served %d times; want 1 (a mismatch is not retried)", n)
			}
			if got := dirEntries(t, dir); !slices.Equal(got, []string{"bundle.json"}) {
				t.Errorf("output directory holds %v", got)
			}
			// Nothing tagged for the image in the target: its tag (or
			// digest) is a 404 there.
			target := oneToOneTarget(t, prefix, refs[tc.key], f.images[tc.key].Root.Digest)
			ref := f.images[tc.key].Root.Digest.String()
			if tagged, ok := target.(reference.Tagged); ok {
				ref = tagged.Tag()
			}
			_, err := dst.Client().HeadManifest(context.Background(), reference.Path(target), ref)
			if !errors.Is(err, registrytest.ErrNotFound) {
				t.Errorf("HEAD %s:%s in the target = %v; want 404", reference.Path(target), ref, err)
			}
		})
	}
}

// oneToOneTarget is where the one-to-one mapping under prefix puts ref (as
// written), whose root is d.
func oneToOneTarget(t *testing.T, prefix, ref string, d digest.Digest) reference.Named {
	t.Helper()
	m, err := relocator.New(relocator.OneToOne, prefix)
	if err != nil {
		t.Fatal(err)
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		t.Fatal(err)
	}
	target, err := m.Map(named, d)
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// lastStderrLine is the last non-empty line of s (the CLI's final error).
func lastStderrLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// cliProcess is the CLI running in the background.
type cliProcess struct {
	cmd            *exec.Cmd
	args           []string
	stdout, stderr bytes.Buffer
	done           chan struct{}
	startedAt      time.Time
	// Set when done is closed.
	code     int
	exitedAt time.Time
}

// startCLI starts cnab-relocate with args, as cli does, without waiting.
func startCLI(t *testing.T, args ...string) *cliProcess {
	t.Helper()
	p := &cliProcess{cmd: exec.Command(binary, args...), done: make(chan struct{}), args: args}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir())
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.startedAt = time.Now()
	go func() {
		_ = p.cmd.Wait()
		p.exitedAt = time.Now()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the process to end, at most d.
func (p *cliProcess) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("cnab-relocate %s did not end within %v; killed. stderr:\n%s", strings.Join(p.args, " "), d, p.stderr.String())
	}
}

// pollUntil polls cond every 10ms until it holds, for at most d.
func pollUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// slowSource is a proxy in front of src that delays every blob GET, so that
// a relocation takes a while and a signal lands in the middle of copying.
func slowSource(src *registrytest.Registry) *registrytest.Proxy {
	return registrytest.NewProxy(src, registrytest.ProxyOptions{Faults: registrytest.FaultOptions{Rules: []registrytest.FaultRule{
		{Match: registrytest.MatchKind("GET blob"), Fault: registrytest.Fault{Kind: registrytest.FaultDelay, Delay: 300 * time.Millisecond}},
	}}})
}

// TestKillAndRerun: SIGKILL in the middle of copying, then the same command
// again: the rerun resumes from what is in the target and completes, every
// digest right.
func TestKillAndRerun(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	p := slowSource(src)
	defer p.Close()
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	refs := writeBundleVia(t, f, p.Host, bundlePath)
	mapPath := filepath.Join(dir, "relocation-mapping.json")
	outPath := filepath.Join(dir, "relocated-bundle.json")
	prefix := dst.Host + "/team"
	args := []string{"fixup", bundlePath, "--repository-prefix", prefix, "--relocation-mapping", mapPath, "--output-bundle", outPath, "--jobs", "2"}

	unique := map[digest.Digest]bool{}
	for _, k := range imageKeys {
		for _, b := range f.images[k].Blobs {
			unique[b.Digest] = true
		}
	}
	proc := startCLI(t, args...)
	pollUntil(t, 20*time.Second, "5 blob GETs", func() bool { return p.Counts()["GET blob"] >= 5 })
	if err := proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	proc.wait(t, 5*time.Second)
	fetched := p.Counts()["GET blob"]
	t.Logf("killed after %v, %d of %d blob GETs sent", time.Since(proc.startedAt).Round(time.Millisecond), fetched, len(unique))

	// The kill landed mid-copy: some blobs are in the target, not every
	// image is tagged, and nothing was written.
	ctx := context.Background()
	dc := dst.Client()
	present, tagged := 0, 0
	for _, k := range imageKeys {
		target := oneToOneTarget(t, prefix, refs[k], f.images[k].Root.Digest)
		for _, b := range f.images[k].Blobs {
			if ok, _ := dc.BlobExists(ctx, reference.Path(target), b.Digest); ok {
				present++
			}
		}
		if _, err := dc.HeadManifest(ctx, reference.Path(target), f.images[k].Root.Digest.String()); err == nil {
			tagged++
		}
	}
	t.Logf("after the kill: %d blobs in the target, %d of %d images complete", present, tagged, len(imageKeys))
	if present == 0 || tagged == len(imageKeys) {
		t.Fatalf("the kill did not land mid-copy: %d blobs present, %d images complete", present, tagged)
	}
	if got := dirEntries(t, dir); !slices.Equal(got, []string{"bundle.json"}) {
		t.Errorf("output directory holds %v after SIGKILL", got)
	}

	p2 := p.Counts()["GET blob"]
	r := cli(t, nil, args...)
	if r.code != 0 {
		t.Fatalf("rerun exited %d", r.code)
	}
	checkRelocated(t, f, dst, mapPath, refs)
	refetched := p.Counts()["GET blob"] - p2
	t.Logf("the rerun fetched %d blobs of %d", refetched, len(unique))
	if refetched >= len(unique) {
		t.Errorf("the rerun fetched %d blobs, want fewer than %d (resume from the target)", refetched, len(unique))
	}
	if got := dirEntries(t, dir); !slices.Equal(got, []string{"bundle.json", "relocated-bundle.json", "relocation-mapping.json"}) {
		t.Errorf("output directory holds %v", got)
	}
}

// TestSignalStopsPromptly: SIGINT or SIGTERM in the middle of copying stops
// the run within about 2 s, with exit 1, a message, and no output written.
func TestSignalStopsPromptly(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			p := slowSource(src)
			defer p.Close()
			dir := t.TempDir()
			bundlePath := filepath.Join(dir, "bundle.json")
			writeBundleVia(t, f, p.Host, bundlePath)
			proc := startCLI(t, "fixup", bundlePath, "--repository-prefix", fmt.Sprintf("%s/sig%d", dst.Host, int(sig)),
				"--relocation-mapping", filepath.Join(dir, "map.json"), "--output-bundle", filepath.Join(dir, "out.json"), "--jobs", "2")
			pollUntil(t, 20*time.Second, "3 blob GETs", func() bool { return p.Counts()["GET blob"] >= 3 })
			sent := time.Now()
			if err := proc.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			proc.wait(t, 10*time.Second)
			took := proc.exitedAt.Sub(sent)
			t.Logf("%v: exit %d after %v\nstderr:\n%s", sig, proc.code, took.Round(time.Millisecond), proc.stderr.String())
			if took > 2*time.Second {
				t.Errorf("stopped %v after %v; want within 2s", took, sig)
			}
			if proc.code != 1 {
				t.Errorf("exit %d, want 1", proc.code)
			}
			if !strings.Contains(proc.stderr.String(), "interrupted") {
				t.Errorf("stderr does not say the run was interrupted:\n%s", proc.stderr.String())
			}
			if strings.Contains(proc.stderr.String(), "panic") {
				t.Errorf("panic:\n%s", proc.stderr.String())
			}
			if got := dirEntries(t, dir); !slices.Equal(got, []string{"bundle.json"}) {
				t.Errorf("output directory holds %v", got)
			}
		})
	}
}
