package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/opencontainers/go-digest"
)

// Export a thin bundle to a thick archive, then relocate the archive with
// the source registry gone: same digests, deterministic archive.
func TestThickRoundTrip(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, f.bundle)
	archive := filepath.Join(dir, "app.tgz")
	if r := cli(t, nil, "export", bundlePath, "--output", archive); r.code != 0 {
		t.Fatalf("export exited %d", r.code)
	}
	again := filepath.Join(dir, "again.tgz")
	if r := cli(t, nil, "export", bundlePath, "--output", again); r.code != 0 {
		t.Fatalf("second export exited %d", r.code)
	}
	a, _ := os.ReadFile(archive)
	b, _ := os.ReadFile(again)
	if !bytes.Equal(a, b) {
		t.Error("exporting twice gave different archives")
	}
	// bundle.json travels byte for byte.
	orig, _ := os.ReadFile(bundlePath)
	if got := tarFile(t, archive, "bundle.json"); !bytes.Equal(got, orig) {
		t.Error("bundle.json in the archive differs from the input")
	}

	src.Close() // the air gap: nothing may come from the source now
	mapPath := filepath.Join(dir, "mapping.json")
	outPath := filepath.Join(dir, "relocated.json")
	prefix := dst.Host + "/inside"
	r := cli(t, nil, "fixup", archive, "--repository-prefix", prefix, "--relocation-mapping", mapPath, "--output-bundle", outPath)
	if r.code != 0 {
		t.Fatalf("fixup of the archive exited %d", r.code)
	}
	checkRelocated(t, f, dst, mapPath, f.refs)
	validate(t, "relocation-mapping.schema.json", mapPath)
	validate(t, "bundle.schema.json", outPath)
	if r := cli(t, nil, "verify", outPath); r.code != 0 {
		t.Errorf("verify of the relocated bundle exited %d", r.code)
	}
}

// A layout written by another tool (skopeo), tarred with a bundle.json,
// relocates: images are found by digest or by a tag-only ref.name.
func TestThickFromSkopeoLayout(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	dir := t.TempDir()
	layoutDir := filepath.Join(dir, "layout")
	for _, k := range []string{"index", "oci"} {
		img := f.images[k]
		tag := img.Tag
		cmd := exec.Command("skopeo", "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
			"docker://"+src.Host+"/"+img.Repo+"@"+img.Root.Digest.String(), "oci:"+layoutDir+":"+tag)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("skopeo copy (install it with scripts/install-deps.sh): %v\n%s", err, out)
		}
	}
	bundle := map[string]any{
		"name": "skopeo", "version": "1.0.0", "schemaVersion": "v1.0.0",
		// by tag only: found by the ref.name skopeo wrote ("2.0")
		"invocationImages": []any{map[string]any{"image": f.refs["index"], "imageType": "oci"}},
		// by digest
		"images": map[string]any{"cli": map[string]any{"image": f.refs["oci"]}},
	}
	archive := filepath.Join(dir, "skopeo.tgz")
	writeTarGz(t, archive, layoutDir, bundle)
	src.Close()
	prefix := dst.Host + "/from-skopeo"
	mapPath := filepath.Join(dir, "m.json")
	r := cli(t, nil, "fixup", archive, "--repository-prefix", prefix, "--relocation-mapping", mapPath)
	if r.code != 0 {
		t.Fatalf("fixup exited %d", r.code)
	}
	checkRelocated(t, f, dst, mapPath, f.refs, "index", "oci")

	// export re-packs the foreign archive into this tool's form (layout to
	// layout, no registry: the source is gone), deterministically, with
	// bundle.json byte for byte; the re-packed archive relocates with the
	// same digests.
	repacked := filepath.Join(dir, "repacked.tgz")
	if r := cli(t, nil, "export", archive, "--output", repacked); r.code != 0 {
		t.Fatalf("export of the skopeo archive exited %d", r.code)
	}
	again := filepath.Join(dir, "again.tgz")
	if r := cli(t, nil, "export", repacked, "--output", again); r.code != 0 {
		t.Fatalf("export of the re-packed archive exited %d", r.code)
	}
	if a, b := readFile(t, repacked), readFile(t, again); !bytes.Equal(a, b) {
		t.Error("re-packing this tool's archive changed it")
	}
	if got, want := tarFile(t, repacked, "bundle.json"), tarFile(t, archive, "bundle.json"); !bytes.Equal(got, want) {
		t.Error("bundle.json changed when re-packed")
	}
	dst2 := registrytest.Start(t, registrytest.Options{})
	mapPath2 := filepath.Join(dir, "m2.json")
	if r := cli(t, nil, "fixup", repacked, "--repository-prefix", dst2.Host+"/from-skopeo", "--relocation-mapping", mapPath2); r.code != 0 {
		t.Fatalf("fixup of the re-packed archive exited %d", r.code)
	}
	checkRelocated(t, f, dst2, mapPath2, f.refs, "index", "oci")
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestThickBadArchives(t *testing.T) {
	dir := t.TempDir()
	bundle := map[string]any{"invocationImages": []any{map[string]any{"image": "127.0.0.1:1/missing/image:1.0"}}}
	// An archive whose layout lacks the image: exit 1 naming it.
	empty := filepath.Join(dir, "empty-layout")
	os.MkdirAll(filepath.Join(empty, "blobs", "sha256"), 0o755)
	os.WriteFile(filepath.Join(empty, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	os.WriteFile(filepath.Join(empty, "index.json"), []byte(`{"schemaVersion":2,"manifests":[]}`), 0o644)
	missing := filepath.Join(dir, "missing.tgz")
	writeTarGz(t, missing, empty, bundle)
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	r := cli(t, nil, "fixup", missing, "--repository-prefix", "127.0.0.1:1/x", "--relocation-mapping", filepath.Join(out, "m.json"))
	if r.code != 1 || !strings.Contains(r.stderr, "127.0.0.1:1/missing/image:1.0") {
		t.Errorf("missing image: exit %d, stderr %q; want exit 1 naming the image", r.code, r.stderr)
	}

	// Path traversal: exit 2 naming the entry.
	evil := filepath.Join(dir, "evil.tgz")
	fh, _ := os.Create(evil)
	gz := gzip.NewWriter(fh)
	tw := tar.NewWriter(gz)
	for _, e := range []struct{ name, body string }{{"bundle.json", `{"invocationImages":[{"image":"a/b:1"}]}`}, {"../escape", "x"}} {
		tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(e.body))
	}
	tw.Close()
	gz.Close()
	fh.Close()
	r = cli(t, nil, "fixup", evil, "--repository-prefix", "127.0.0.1:1/x", "--relocation-mapping", filepath.Join(out, "m.json"))
	if r.code != 2 || !strings.Contains(r.stderr, "../escape") {
		t.Errorf("path traversal: exit %d, stderr %q; want exit 2 naming the entry", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "escape")); err == nil {
		t.Error("an entry was written outside the extraction directory")
	}
	if got := dirEntries(t, out); len(got) != 0 {
		t.Errorf("output directory holds %v after failures", got)
	}
}

// writeTarGz writes a thick bundle: bundle.json and layoutDir as
// artifacts/layout.
func writeTarGz(t *testing.T, path, layoutDir string, bundle map[string]any, extra ...rootFile) {
	t.Helper()
	bpath := filepath.Join(t.TempDir(), "bundle.json")
	writeJSON(t, bpath, bundle)
	data, _ := os.ReadFile(bpath)
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	gz := gzip.NewWriter(fh)
	tw := tar.NewWriter(gz)
	for _, f := range append([]rootFile{{"bundle.json", data}}, extra...) {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg})
		tw.Write(f.data)
	}
	err = filepath.Walk(layoutDir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(layoutDir, p)
		name := filepath.ToSlash(filepath.Join("artifacts", "layout", rel))
		if info.IsDir() {
			return tw.WriteHeader(&tar.Header{Name: name + "/", Mode: 0o755, Typeflag: tar.TypeDir})
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: info.Size(), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		_, err = io.Copy(tw, in)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	tw.Close()
	gz.Close()
}

// rootFile is a file at the root of an archive writeTarGz writes.
type rootFile struct {
	name string
	data []byte
}

// tarFile returns the content of one entry of a .tgz.
func tarFile(t *testing.T, archive, name string) []byte {
	t.Helper()
	var data []byte
	found := false
	eachTarEntry(t, archive, func(h *tar.Header, r io.Reader) bool {
		if h.Name != name {
			return true
		}
		data, _ = io.ReadAll(r)
		found = true
		return false
	})
	if !found {
		t.Fatalf("%s not in %s", name, archive)
	}
	return data
}

// eachTarEntry calls fn for each entry of a .tgz until it returns false.
func eachTarEntry(t *testing.T, archive string, fn func(h *tar.Header, r io.Reader) bool) {
	t.Helper()
	fh, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	gz, err := gzip.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", archive, err)
		}
		if !fn(h, tr) {
			return
		}
	}
}

// TestThickInterruptAndRerun: fixup of an archive streams it, writing
// nothing to TMPDIR; SIGINT in the middle stops it promptly with nothing
// written; the rerun skips what the target has and completes.
func TestThickInterruptAndRerun(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, f.bundle)
	archive := filepath.Join(dir, "app.tgz")
	if r := cli(t, nil, "export", bundlePath, "--output", archive); r.code != 0 {
		t.Fatalf("export exited %d", r.code)
	}
	src.Close()
	// A slow target, so that the signal lands in the middle.
	slow := registrytest.NewProxy(dst, registrytest.ProxyOptions{Faults: registrytest.FaultOptions{Rules: []registrytest.FaultRule{
		{Match: registrytest.MatchKind("PUT blob"), Fault: registrytest.Fault{Kind: registrytest.FaultDelay, Delay: 300 * time.Millisecond}},
	}}})
	defer slow.Close()
	out := t.TempDir()
	tmp := t.TempDir()
	args := []string{"fixup", archive, "--repository-prefix", slow.Host + "/team", "--relocation-mapping", filepath.Join(out, "map.json"), "--jobs", "2"}
	var total int64
	seen := map[digest.Digest]bool{}
	for _, k := range imageKeys {
		for _, b := range f.images[k].Blobs {
			if !seen[b.Digest] {
				seen[b.Digest] = true
				total += b.Size
			}
		}
	}
	p := exec.Command(binary, args...)
	var stderr bytes.Buffer
	p.Stderr = &stderr
	p.Env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir(), "TMPDIR="+tmp)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Wait() }()
	pollUntil(t, 20*time.Second, "a third of the bytes uploaded", func() bool { return slow.BytesUploaded() >= total/3 })
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("TMPDIR holds %v while the archive is relocated: it should be read as a stream", ents)
	}
	sent := time.Now()
	if err := p.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.Process.Kill()
		t.Fatal("did not stop within 10s of SIGINT")
	}
	took := time.Since(sent)
	t.Logf("exit %d after %v\n%s", p.ProcessState.ExitCode(), took, stderr.String())
	if took > 2*time.Second || p.ProcessState.ExitCode() != 1 || !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("SIGINT: exit %d after %v; want 1 within 2s, saying it was interrupted", p.ProcessState.ExitCode(), took)
	}
	if got := dirEntries(t, out); len(got) != 0 {
		t.Errorf("written after the interruption: %v", got)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("TMPDIR holds %v after the interruption", ents)
	}

	before := slow.BytesUploaded()
	if r := cli(t, []string{"TMPDIR=" + tmp}, args...); r.code != 0 {
		t.Fatalf("rerun exited %d", r.code)
	}
	rerun := slow.BytesUploaded() - before
	t.Logf("the rerun uploaded %d bytes of %d", rerun, total)
	if rerun > total*9/10 {
		t.Errorf("the rerun uploaded %d bytes, want at most 90%% of %d (what the target has is skipped)", rerun, total)
	}
	checkRelocated(t, f, dst, filepath.Join(out, "map.json"), f.refs)
}

// gunzip returns the bytes gzip data holds.
func gunzip(t testing.TB, data []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
