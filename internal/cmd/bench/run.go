package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// measure is what one case (one tool, one situation) cost.
type measure struct {
	wall time.Duration
	cpu  time.Duration // user + system time of the client process(es)
	// serverCPU is the user + system time of the registries and the
	// proxies meanwhile: with cpu, the work a case costs the machine, which
	// other load on the machine changes less than it changes wall time.
	serverCPU time.Duration
	// Its parts: the source and target registries, and this process (the
	// proxies).
	srcCPU, tgtCPU, proxyCPU time.Duration
	rss                      int64 // peak RSS of the client process (the largest, for a loop), bytes
	tmpPeak                  int64 // peak bytes in the client's TMPDIR, when watched (-1: not watched)
	uploaded                 int64 // request body bytes sent to blob upload URLs, all proxies
	src, tgt                 map[string]int
	srcReqs                  []string
	tgtReqs                  []string
	report                   *report // cnab-relocate's --output json report; nil for crane
}

// report is the part of cnab-relocate's --output json report the bench reads.
type report struct {
	Images []struct {
		Source       string `json:"source"`
		Target       string `json:"target"`
		Digest       string `json:"digest"`
		BytesCopied  int64  `json:"bytesCopied"`
		BytesMounted int64  `json:"bytesMounted"`
		BytesSkipped int64  `json:"bytesSkipped"`
		Present      bool   `json:"present"`
	} `json:"images"`
	Totals struct {
		Images       int   `json:"images"`
		Failed       int   `json:"failed"`
		BytesCopied  int64 `json:"bytesCopied"`
		BytesMounted int64 `json:"bytesMounted"`
		BytesSkipped int64 `json:"bytesSkipped"`
	} `json:"totals"`
}

func (m *measure) count(kind string) int { return m.src[kind] + m.tgt[kind] }

// pings counts GET /v2/ (and any other method on it).
func (m *measure) pings() int {
	n := 0
	for _, c := range []map[string]int{m.src, m.tgt} {
		for k, v := range c {
			if strings.HasSuffix(k, " ping") {
				n += v
			}
		}
	}
	return n
}

// requests counts every request but the /v2/ pings: manifests, blobs,
// uploads, mounts.
func (m *measure) requests() int {
	n := 0
	for _, c := range []map[string]int{m.src, m.tgt} {
		for k, v := range c {
			if !strings.HasSuffix(k, " ping") {
				n += v
			}
		}
	}
	return n
}

// uploads counts completed blob uploads (the PUT that ends a session).
func (m *measure) uploads() int { return m.count("PUT blob") }

// mounts counts successful cross-repository mounts. A mount that fails
// (202) turns into an upload session that ends with a PUT, as does every
// plain POST: successful mounts = POST mount - (PUT blob - POST upload).
func (m *measure) mounts() int {
	failed := m.count("PUT blob") - m.count("POST upload")
	return max(m.count("POST mount")-max(failed, 0), 0)
}

// endpoint is a registry, its process and the counting proxy in front of
// it, which with -latency also delays every request before counting and
// forwarding it.
type endpoint struct {
	reg   *registrytest.Registry
	proxy *registrytest.Proxy
	pid   int // the registry process, 0 when not found
	// host is what the tools are given: the proxy.
	host string
}

func newEndpoint(reg *registrytest.Registry, latency time.Duration) *endpoint {
	p := registrytest.NewProxy(reg, registrytest.ProxyOptions{Latency: latency})
	return &endpoint{reg: reg, proxy: p, pid: findPID(reg.Dir), host: p.Host}
}

func (e *endpoint) Close() {
	e.proxy.Close()
	e.reg.Close()
}

// observe resets the proxies, runs f and fills in what the proxies saw and
// the CPU time the registries and the proxies (this process) used. tgt is
// nil when source and target are one registry.
func observe(src, tgt *endpoint, f func() (measure, error)) (measure, error) {
	two := tgt != nil && tgt != src
	self0, src0, tgt0 := selfCPU(), processCPU(src.pid), time.Duration(0)
	src.proxy.Reset()
	if two {
		tgt.proxy.Reset()
		tgt0 = processCPU(tgt.pid)
	}
	m, err := f()
	if err != nil {
		return m, err
	}
	m.proxyCPU, m.srcCPU = selfCPU()-self0, processCPU(src.pid)-src0
	m.src, m.srcReqs = src.proxy.Counts(), src.proxy.Requests()
	m.uploaded = src.proxy.BytesUploaded()
	m.tgt = map[string]int{}
	if two {
		m.tgtCPU = processCPU(tgt.pid) - tgt0
		m.tgt, m.tgtReqs = tgt.proxy.Counts(), tgt.proxy.Requests()
		m.uploaded += tgt.proxy.BytesUploaded()
	}
	m.serverCPU = m.proxyCPU + m.srcCPU + m.tgtCPU
	return m, nil
}

// env is the environment of the tools: no credentials (an empty docker
// configuration) and no HTTP proxies, so every request goes to 127.0.0.1.
func env(dockerConfig string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "DOCKER_CONFIG":
			continue
		}
		out = append(out, kv)
	}
	return append(out, "DOCKER_CONFIG="+dockerConfig)
}

// proc runs one process and returns its wall time, CPU time and peak RSS.
func proc(ctx context.Context, environ []string, bin string, args ...string) (m measure, stdout []byte, err error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Env = &out, &errb, environ
	start := time.Now()
	if err = cmd.Start(); err != nil {
		return m, nil, err
	}
	stop := watchRSS(cmd.Process.Pid)
	err = cmd.Wait()
	m.wall = time.Since(start)
	m.rss = stop()
	if cmd.ProcessState != nil {
		m.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if len(msg) > 2000 {
			msg = msg[:2000] + "..."
		}
		return m, nil, fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, msg)
	}
	return m, out.Bytes(), nil
}

// relocate runs cnab-relocate fixup on bundle into prefix. With tmp not
// "", the client's TMPDIR (tmp) is watched and its peak size reported.
func relocate(ctx context.Context, environ []string, bin, bundle, prefix, mappingFile string, jobs int, tmp string, extra ...string) (measure, error) {
	args := append([]string{"fixup", bundle, "--repository-prefix", prefix, "--relocation-mapping", mappingFile, "--output", "json", "--quiet"}, extra...)
	if jobs > 0 {
		args = append(args, "--jobs", strconv.Itoa(jobs))
	}
	stopWatch := func() int64 { return -1 }
	if tmp != "" {
		stopWatch = watchDir(tmp)
	}
	m, out, err := proc(ctx, environ, bin, args...)
	m.tmpPeak = stopWatch()
	if err != nil {
		return m, err
	}
	var r report
	if err := json.Unmarshal(out, &r); err != nil {
		return m, fmt.Errorf("cnab-relocate --output json: %w", err)
	}
	if r.Totals.Failed > 0 {
		return m, fmt.Errorf("cnab-relocate: %d image(s) failed", r.Totals.Failed)
	}
	m.report = &r
	return m, nil
}

// export runs cnab-relocate export of bundle to archive, with extra flags.
func export(ctx context.Context, environ []string, bin, bundle, archive string, jobs int, extra ...string) (measure, error) {
	args := append([]string{"export", bundle, "--output", archive, "--quiet"}, extra...)
	if jobs > 0 {
		args = append(args, "--jobs", strconv.Itoa(jobs))
	}
	m, _, err := proc(ctx, environ, bin, args...)
	m.tmpPeak = -1
	return m, err
}

// withTMPDIR is environ with TMPDIR set to dir.
func withTMPDIR(environ []string, dir string) []string {
	out := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "TMPDIR=") {
			out = append(out, kv)
		}
	}
	return append(out, "TMPDIR="+dir)
}

// watchDir polls the total size of the files under dir every 10 ms until
// stop is called, and stop returns the largest it saw.
func watchDir(dir string) (stop func() int64) {
	return pollPeak(func() (int64, bool) {
		var n int64
		filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if info, err := d.Info(); err == nil {
					n += info.Size()
				}
			}
			return nil
		})
		return n, true
	})
}

// pollPeak calls sample now and every 10 ms until stop is called, and stop
// returns the largest value sample gave (ignoring those it did not vouch
// for with ok).
func pollPeak(sample func() (v int64, ok bool)) (stop func() int64) {
	var peak int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if v, ok := sample(); ok && v > peak {
				peak = v
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		<-finished
		return peak
	}
}

// craneLoop runs `crane copy` once per image, one after the other, as a
// script relocating a bundle with crane would.
func craneLoop(ctx context.Context, environ []string, crane string, srcs, dsts []string, jobs int) (measure, error) {
	var total measure
	start := time.Now()
	for i := range srcs {
		args := []string{"copy", "--insecure", srcs[i], dsts[i]}
		if jobs > 0 {
			args = append(args, "--jobs", strconv.Itoa(jobs))
		}
		m, _, err := proc(ctx, environ, crane, args...)
		if err != nil {
			return total, err
		}
		total.cpu += m.cpu
		total.rss = max(total.rss, m.rss)
	}
	total.wall = time.Since(start)
	return total, nil
}

// checkTargets makes sure every target reference holds the source's root
// digest, asking the registry directly (not through the counting proxy).
func checkTargets(ctx context.Context, reg *registrytest.Registry, tgts []string, imgs []registrytest.Image) error {
	c := reg.Client()
	for i, t := range tgts {
		n, err := reference.ParseNormalizedNamed(t)
		if err != nil {
			return err
		}
		tag := "latest"
		if tg, ok := n.(reference.Tagged); ok {
			tag = tg.Tag()
		}
		d, err := c.HeadManifest(ctx, reference.Path(n), tag)
		if err != nil {
			return fmt.Errorf("checking %s: %w", t, err)
		}
		if d.Digest != imgs[i].Root.Digest {
			return fmt.Errorf("checking %s: digest %s, want %s", t, d.Digest, imgs[i].Root.Digest)
		}
	}
	return nil
}

// checkMapping compares the relocation mapping cnab-relocate wrote with
// the one-to-one names the bench computed for crane.
func checkMapping(path string, refs, tgts []string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var m map[string]string
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for i, r := range refs {
		if m[r] != tgts[i] {
			return fmt.Errorf("%s: %s maps to %q, the bench computed %q", path, r, m[r], tgts[i])
		}
	}
	return nil
}

// kinds formats request counts as "HEAD manifest 12, GET blob 41", biggest
// first, pings last.
func kinds(c map[string]int) string {
	type kv struct {
		k string
		v int
	}
	var l []kv
	for k, v := range c {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool {
		pi, pj := strings.HasSuffix(l[i].k, " ping"), strings.HasSuffix(l[j].k, " ping")
		if pi != pj {
			return pj
		}
		if l[i].v != l[j].v {
			return l[i].v > l[j].v
		}
		return l[i].k < l[j].k
	})
	var parts []string
	for _, e := range l {
		parts = append(parts, fmt.Sprintf("%s %d", e.k, e.v))
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, ", ")
}
