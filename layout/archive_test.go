package layout

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/opencontainers/go-digest"
)

const testBundle = "{\n  \"name\": \"app\",  \"invocationImages\": [{\"image\": \"registry.example.com/team/app:1.0\"}]\n}\n"

// testLayout makes a layout with two images and returns its directory.
func testLayout(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	s, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.AddRef(writeImage(t, s, "app"), "registry.example.com/team/app:1.0")
	s.AddRef(writeImage(t, s, "db"), "postgres:16")
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// setTempDir points os.TempDir at a new empty directory and returns it.
func setTempDir(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	return tmp
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

func TestWriteArchiveDeterministic(t *testing.T) {
	t.Parallel()
	out := t.TempDir()
	a, b := filepath.Join(out, "a.tgz"), filepath.Join(out, "b.tgz")
	if err := WriteArchive(a, []byte(testBundle), testLayout(t)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // other file times must not matter
	if err := WriteArchive(b, []byte(testBundle), testLayout(t)); err != nil {
		t.Fatal(err)
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Fatal("two exports of the same content differ")
	}
	if ents, _ := os.ReadDir(out); len(ents) != 2 {
		t.Fatalf("output directory holds %d files, want 2", len(ents))
	}

	zr, err := gzip.NewReader(bytes.NewReader(da))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() || zr.Comment != "" {
		t.Fatalf("gzip header has name %q, time %v", zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	var names []string
	var sizes []int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		sizes = append(sizes, h.Size)
		wantMode := int64(0o644)
		if h.Typeflag == tar.TypeDir {
			wantMode = 0o755
		}
		if h.Mode != wantMode || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || h.ModTime.Unix() != 0 {
			t.Errorf("%s: mode %o uid %d gid %d uname %q gname %q mtime %v", h.Name, h.Mode, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime)
		}
		if h.Name == BundleFile {
			data, _ := io.ReadAll(tr)
			if string(data) != testBundle {
				t.Errorf("bundle.json = %q, want the input bytes", data)
			}
		}
	}
	// bundle.json, directories, oci-layout, index.json, then the blobs,
	// smallest first, then by name.
	rank := func(i int) int {
		n := names[i]
		switch {
		case n == BundleFile:
			return 0
		case strings.HasSuffix(n, "/"):
			return 1
		case n == "artifacts/layout/oci-layout":
			return 2
		case n == "artifacts/layout/index.json":
			return 3
		}
		return 4
	}
	for i := 1; i < len(names); i++ {
		ok := rank(i-1) < rank(i) || rank(i-1) == rank(i) && (rank(i) < 4 && names[i-1] < names[i] ||
			rank(i) == 4 && (sizes[i-1] < sizes[i] || sizes[i-1] == sizes[i] && names[i-1] < names[i]))
		if !ok {
			t.Errorf("entries out of order: %q (%d bytes) before %q (%d bytes)", names[i-1], sizes[i-1], names[i], sizes[i])
		}
	}
	for _, want := range []string{"artifacts/layout/oci-layout", "artifacts/layout/index.json", "artifacts/layout/blobs/sha256/", BundleFile} {
		if !strings.Contains(strings.Join(names, "\n")+"\n", want+"\n") {
			t.Errorf("archive lacks %s: %q", want, names)
		}
	}
}

func TestWriteArchiveErrorsLeaveNothing(t *testing.T) {
	t.Parallel()
	out := t.TempDir()
	dest := filepath.Join(out, "app.tgz")
	if err := WriteArchive(dest, []byte(testBundle), filepath.Join(out, "no-such-layout")); err == nil {
		t.Fatal("missing layout: no error")
	}
	assertEmpty(t, out)

	l := testLayout(t)
	if err := os.Symlink("/etc/passwd", filepath.Join(l, "blobs", "sha256", "link")); err != nil {
		t.Fatal(err)
	}
	if err := WriteArchive(dest, []byte(testBundle), l); err == nil || !strings.Contains(err.Error(), "link") {
		t.Fatalf("symlink in layout: %v", err)
	}
	assertEmpty(t, out)

	if err := WriteArchive(filepath.Join(out, "missing-dir", "app.tgz"), []byte(testBundle), ""); err == nil {
		t.Fatal("missing output directory: no error")
	}
}

// streamAll streams every blob of a's layout, checked against its
// size (its digest is in its name), and returns how many there were.
func streamAll(t *testing.T, a *Archive) (int, error) {
	t.Helper()
	n := 0
	err := a.Stream(context.Background(), func(d digest.Digest) bool { return true }, func(d digest.Digest, r io.Reader) error {
		n++
		data, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if got := digest.FromBytes(data); got != d {
			return fmt.Errorf("%w: %s is %s", ErrDigestMismatch, d, got)
		}
		return nil
	})
	return n, err
}

func TestOpenArchiveRoundTrip(t *testing.T) {
	tmp := setTempDir(t)
	out := t.TempDir()
	path := filepath.Join(out, "app.tgz")
	dir := testLayout(t)
	if err := WriteArchive(path, []byte(testBundle), dir); err != nil {
		t.Fatal(err)
	}
	if ok, err := IsArchive(path); !ok || err != nil {
		t.Fatalf("IsArchive = %v, %v", ok, err)
	}
	a, err := OpenArchive(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if string(a.BundleJSON) != testBundle || a.RelocationMapping != nil {
		t.Fatalf("bundle.json = %q, mapping %q", a.BundleJSON, a.RelocationMapping)
	}
	if !a.HasLayout() {
		t.Fatal("no layout")
	}
	for _, ref := range []string{"registry.example.com/team/app:1.0", "docker.io/library/postgres:16"} {
		d, err := a.Find(ref, "")
		if err != nil {
			t.Fatal(err)
		}
		// The manifest is held; its config and layer only stream.
		rc, err := a.Fetch(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		var m ocispec.Manifest
		json.Unmarshal(data, &m)
		if _, err := a.Fetch(context.Background(), m.Layers[0]); !errors.Is(err, ErrStreamOnly) {
			t.Errorf("fetching a layer: %v, want ErrStreamOnly", err)
		}
	}
	s, _ := Open(dir)
	want := 0
	filepath.WalkDir(filepath.Join(s.Dir(), "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			want++
		}
		return nil
	})
	if n, err := streamAll(t, a); err != nil || n != want {
		t.Fatalf("streamed %d blobs, %v; want %d", n, err, want)
	}
	// Read as a stream: nothing on disk.
	assertEmpty(t, tmp)

	// Without a layout; with porter's relocation mapping.
	tgz := makeTar(t, true, file("bundle.json", testBundle), file("relocation-mapping.json", `{"a":"b"}`))
	os.WriteFile(path, tgz, 0o644)
	a, err = OpenArchive(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if a.HasLayout() || string(a.BundleJSON) != testBundle || string(a.RelocationMapping) != `{"a":"b"}` {
		t.Fatalf("archive without layout: %+v", a)
	}
	assertEmpty(t, tmp)
}

type entry struct {
	hdr  tar.Header
	body string
}

func file(name, body string) entry {
	return entry{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}, body}
}

func makeTar(t testing.TB, gz bool, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		zw.Close()
	}
	return buf.Bytes()
}

func TestOpenArchivePlainTar(t *testing.T) {
	tmp := setTempDir(t)
	path := filepath.Join(t.TempDir(), "app.tar")
	os.WriteFile(path, makeTar(t, false,
		entry{tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}, ""},
		file("./bundle.json", testBundle)), 0o644)
	if ok, _ := IsArchive(path); !ok {
		t.Fatal("IsArchive(plain tar) = false")
	}
	a, err := OpenArchive(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if string(a.BundleJSON) != testBundle || a.HasLayout() {
		t.Fatalf("got %+v", a)
	}
	assertEmpty(t, tmp)
}

func TestIsArchive(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		return p
	}
	for _, tc := range []struct {
		name string
		path string
		want bool
	}{
		{"gzip", write("a.tgz", makeTar(t, true, file("bundle.json", "{}"))), true},
		{"tar", write("a.tar", makeTar(t, false, file("bundle.json", "{}"))), true},
		{"json", write("bundle.json", []byte(testBundle)), false},
		{"long json", write("long.json", []byte(`{"x":"`+strings.Repeat("a", 2000)+`"}`)), false},
		{"empty", write("empty", nil), false},
		{"directory", dir, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := IsArchive(tc.path)
			if err != nil || got != tc.want {
				t.Fatalf("IsArchive = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := IsArchive(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file: no error")
	}
}

func TestOpenArchiveRejects(t *testing.T) {
	valid, err := os.ReadFile(func() string {
		p := filepath.Join(t.TempDir(), "v.tgz")
		if err := WriteArchive(p, []byte(testBundle), testLayout(t)); err != nil {
			t.Fatal(err)
		}
		return p
	}())
	if err != nil {
		t.Fatal(err)
	}
	bundle := file("bundle.json", testBundle)
	for _, tc := range []struct {
		name   string
		data   []byte
		unsafe bool
		want   string // in the message, besides the archive path
	}{
		{"parent", makeTar(t, true, bundle, file("../x", "x")), true, `"../x"`},
		{"parent inside", makeTar(t, true, bundle, file("artifacts/../../x", "x")), true, `"artifacts/../../x"`},
		{"absolute", makeTar(t, true, bundle, file("/abs", "x")), true, `"/abs"`},
		{"symlink", makeTar(t, true, bundle, entry{tar.Header{Name: "artifacts", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, ""}), true, "symbolic link"},
		{"hardlink", makeTar(t, true, bundle, entry{tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "bundle.json"}, ""}), true, "hard link"},
		{"char device", makeTar(t, true, bundle, entry{tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, ""}), true, "device"},
		{"block device", makeTar(t, true, bundle, entry{tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8}, ""}), true, "device"},
		{"fifo", makeTar(t, true, bundle, entry{tar.Header{Name: "p", Typeflag: tar.TypeFifo}, ""}), true, "fifo"},
		{"sparse file", gzipBytes(append(sparseTar(), make([]byte, 1024)...)), true, "sparse"},
		{"old GNU sparse file", gzipBytes(append(oldSparseTar(), make([]byte, 1024)...)), true, "type"},
		{"backslash", makeTar(t, true, bundle, file(`..\x`, "x")), true, "backslash"},
		{"duplicate", makeTar(t, true, bundle, bundle), false, "duplicate"},
		{"no bundle.json", makeTar(t, true, file("other.json", "{}")), false, "no bundle.json"},
		{"bundle.json is a directory", makeTar(t, true, entry{tar.Header{Name: "bundle.json/", Typeflag: tar.TypeDir}, ""}), false, "bundle.json"},
		{"truncated gzip", valid[:len(valid)/2], false, "truncated"},
		{"truncated gzip trailer", valid[:len(valid)-4], false, "truncated"},
		{"corrupt gzip", func() []byte { d := bytes.Clone(valid); d[len(d)-6] ^= 0xff; return d }(), false, "corrupt"},
		{"not gzip or tar", []byte("hello, world"), false, "neither gzip nor tar"},
		{"empty gzip", func() []byte { var b bytes.Buffer; z := gzip.NewWriter(&b); z.Close(); return b.Bytes() }(), false, "empty"},
		{"bad layout", makeTar(t, true, bundle, file("artifacts/layout/oci-layout", `{"imageLayoutVersion":"9"}`)), false, "artifacts/layout/oci-layout"},
		{"layout is a file", makeTar(t, true, bundle, file("artifacts/layout", `x`)), false, "artifacts/layout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := setTempDir(t)
			path := filepath.Join(t.TempDir(), "bad.tgz")
			if err := os.WriteFile(path, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			// Found opening it, or, after the metadata, streaming it.
			a, err := OpenArchive(context.Background(), path)
			if err == nil {
				_, err = streamAll(t, a)
				a.Close()
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalidArchive) {
				t.Errorf("%v: does not wrap ErrInvalidArchive", err)
			}
			if tc.unsafe && !errors.Is(err, ErrUnsafeEntry) {
				t.Errorf("%v: does not wrap ErrUnsafeEntry", err)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s and %s", err, path, tc.want)
			}
			assertEmpty(t, tmp)
			if _, err := os.Stat(filepath.Join(filepath.Dir(tmp), "x")); err == nil {
				t.Error("an entry was written outside the extraction directory")
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		tmp := setTempDir(t)
		path := filepath.Join(t.TempDir(), "missing.tgz")
		_, err := OpenArchive(context.Background(), path)
		if !errors.Is(err, ErrInvalidArchive) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
			t.Fatalf("got %v", err)
		}
		assertEmpty(t, tmp)
	})
	t.Run("cancelled", func(t *testing.T) {
		tmp := setTempDir(t)
		path := filepath.Join(t.TempDir(), "ok.tgz")
		os.WriteFile(path, valid, 0o644)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := OpenArchive(ctx, path); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
		assertEmpty(t, tmp)
	})
}

// TestArchiveCorruptBlob: a small blob (a manifest) that does not match
// its digest fails the first pass, naming the entry; a big one (a layer,
// only streamed) fails the check of the one who streams it.
func TestArchiveCorruptBlob(t *testing.T) {
	tmp := setTempDir(t)
	l := testLayout(t)
	s, err := Open(l)
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.Find("registry.example.com/team/app:1.0", "")
	if err != nil {
		t.Fatal(err)
	}
	// Same size, other bytes: only the digest tells.
	p := filepath.Join(l, "blobs", "sha256", d.Digest.Encoded())
	data, _ := os.ReadFile(p)
	data[len(data)-2] ^= 1
	os.WriteFile(p, data, 0o644)
	path := filepath.Join(t.TempDir(), "app.tgz")
	if err := WriteArchive(path, []byte(testBundle), l); err != nil {
		t.Fatal(err)
	}
	_, err = OpenArchive(context.Background(), path)
	if !errors.Is(err, ErrDigestMismatch) || !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), d.Digest.Encoded()) {
		t.Fatalf("opening an archive with a corrupt manifest: %v, want a digest mismatch naming it", err)
	}

	// A layer bigger than what the first pass reads.
	l2 := filepath.Join(t.TempDir(), "big")
	s2, _ := Create(l2)
	big := bytes.Repeat([]byte("layer"), (maxManifestSize/5)+10)
	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(big), Size: int64(len(big))}
	s2.WriteBlob(context.Background(), layer, bytes.NewReader(big))
	s2.Save()
	big[len(big)-1] ^= 1
	os.WriteFile(filepath.Join(l2, "blobs", "sha256", layer.Digest.Encoded()), big, 0o644)
	WriteArchive(path, []byte(testBundle), l2)
	a, err := OpenArchive(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := streamAll(t, a); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("streaming a corrupt layer: %v, want a digest mismatch", err)
	}
	assertEmpty(t, tmp)
}

// rawHeader returns a ustar header block.
func rawHeader(name string, typeflag byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], "00000000000\x00")
	b[156] = typeflag
	copy(b[257:265], "ustar\x0000")
	copy(b[148:156], "        ")
	var sum int64
	for _, c := range b {
		sum += int64(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// sparseTar is a GNU sparse file in PAX form (format 1.0) of 1 TiB with a
// single data byte: a few blocks that the tar reader expands in full.
func sparseTar() []byte {
	rec := func(k, v string) string {
		n := len(k) + len(v) + 3
		for {
			s := fmt.Sprintf("%d %s=%s\n", n, k, v)
			if len(s) == n {
				return s
			}
			n = len(s)
		}
	}
	pax := rec("GNU.sparse.major", "1") + rec("GNU.sparse.minor", "0") +
		rec("GNU.sparse.name", "big") + rec("GNU.sparse.realsize", "1099511627776")
	sparseMap := pad([]byte("1\n1099511627775\n1\n"))
	data := append(sparseMap, 'x')
	var out []byte
	out = append(out, rawHeader("bundle.json", tar.TypeReg, 2)...)
	out = append(out, pad([]byte("{}"))...)
	out = append(out, rawHeader("PaxHeaders/big", tar.TypeXHeader, int64(len(pax)))...)
	out = append(out, pad([]byte(pax))...)
	out = append(out, rawHeader("big", tar.TypeReg, int64(len(data)))...)
	out = append(out, pad(data)...)
	return out
}

// oldSparseTar is a GNU sparse file (old format, type 'S') of 4 GiB, all
// hole.
func oldSparseTar() []byte {
	h := rawHeader("big", tar.TypeGNUSparse, 0)
	copy(h[257:265], "ustar  \x00")
	copy(h[483:495], fmt.Sprintf("%011o\x00", int64(1)<<32))
	copy(h[148:156], "        ")
	var sum int64
	for _, c := range h {
		sum += int64(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	out := append(rawHeader("bundle.json", tar.TypeReg, 2), pad([]byte("{}"))...)
	return append(out, h...)
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func TestSparseTarIsSparse(t *testing.T) {
	t.Parallel()
	// The fixture really is what the reader expands: check it with the
	// standard reader alone.
	tr := tar.NewReader(bytes.NewReader(sparseTar()))
	tr.Next()
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "big" || h.Size != 1<<40 || !sparse(h) {
		t.Fatalf("header %+v", h)
	}
	tr = tar.NewReader(bytes.NewReader(oldSparseTar()))
	tr.Next()
	h, err = tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "big" || h.Size != 1<<32 || h.Typeflag != tar.TypeGNUSparse {
		t.Fatalf("header %+v", h)
	}
}
