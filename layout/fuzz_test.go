package layout

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
)

// FuzzOpenArchive checks that no input makes OpenArchive or Stream panic
// or write anything to disk. It feeds the bytes to scanArchive, the part
// of OpenArchive after opening the file, to keep each run cheap.
func FuzzOpenArchive(f *testing.F) {
	seed := filepath.Join(f.TempDir(), "seed.tgz")
	if err := WriteArchive(seed, []byte(testBundle), testLayout(f)); err != nil {
		f.Fatal(err)
	}
	valid, err := os.ReadFile(seed)
	if err != nil {
		f.Fatal(err)
	}
	bundle := file("bundle.json", testBundle)
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add(makeTar(f, false, bundle, file("artifacts/layout/oci-layout", `{"imageLayoutVersion":"1.0.0"}`),
		file("artifacts/layout/index.json", `{"schemaVersion":2,"manifests":[{"digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","size":5,"annotations":{"org.opencontainers.image.ref.name":"1.0"}}]}`),
		file("artifacts/layout/blobs/sha256/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "hellO")))
	f.Add(makeTar(f, true, bundle, file("../x", "x")))
	f.Add(makeTar(f, true, bundle, file("a/../../../x", "x")))
	f.Add(makeTar(f, false, bundle, entry{tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: ".."}, ""}, file("l/x", "x")))
	f.Add(makeTar(f, false, bundle, entry{tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../x"}, ""}))
	f.Add(sparseTar())
	f.Add(oldSparseTar())
	f.Add([]byte{0x1f, 0x8b})
	f.Add([]byte{})

	root := fuzzRoot(f)
	tmp := filepath.Join(root, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		f.Fatal(err)
	}
	f.Setenv("TMPDIR", tmp)
	path := filepath.Join(root, "fuzz.tgz")

	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := scanArchive(context.Background(), path, bytes.NewReader(data))
		if err == nil && a.HasLayout() {
			for _, m := range a.Index().Manifests {
				if rc, err := a.Fetch(context.Background(), m); err == nil {
					io.Copy(io.Discard, rc)
					rc.Close()
				}
				a.Find(m.Annotations["org.opencontainers.image.ref.name"], "")
			}
			os.WriteFile(path, data, 0o644)
			a.Stream(context.Background(), func(digest.Digest) bool { return true }, func(_ digest.Digest, r io.Reader) error {
				_, err := io.Copy(io.Discard, r)
				return err
			})
			os.Remove(path)
		}
		if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
			t.Fatalf("left in $TMPDIR: %v (error %v)", ents, err)
		}
		ents, _ := os.ReadDir(root)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if !slices.Equal(names, []string{"tmp"}) {
			t.Fatalf("written to disk: %v", names)
		}
	})
}

// fuzzRoot returns a new directory for the fuzzer to extract under: in
// memory (/dev/shm) when there is one, as extraction is bound by file
// system calls, else under the test's temporary directory.
func fuzzRoot(f *testing.F) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "layout-fuzz-*"); err == nil {
			f.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return f.TempDir()
}
