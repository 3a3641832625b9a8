package layout

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// An archive named .tar is the plain tar whose gzip a .tgz or .tar.gz is,
// byte for byte, and both read back.
func TestWriteArchiveCompressionByName(t *testing.T) {
	t.Parallel()
	out := t.TempDir()
	l := testLayout(t)
	read := func(name string) []byte {
		t.Helper()
		p := filepath.Join(out, name)
		if err := WriteArchive(p, []byte(testBundle), l); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		a, err := OpenArchive(context.Background(), p)
		if err != nil {
			t.Fatalf("%s does not read back: %v", name, err)
		}
		if string(a.BundleJSON) != testBundle || !a.HasLayout() {
			t.Fatalf("%s reads back as %+v", name, a)
		}
		a.Close()
		return data
	}
	gunzip := func(name string, data []byte) []byte {
		t.Helper()
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s is not gzip: %v", name, err)
		}
		plain, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return plain
	}
	plain := read("app.tar")
	if bytes.HasPrefix(plain, []byte{0x1f, 0x8b}) {
		t.Fatal("app.tar is gzip, want a plain tar")
	}
	if upper := read("APP.TAR"); !bytes.Equal(upper, plain) {
		t.Error("APP.TAR differs from app.tar")
	}
	for _, name := range []string{"app.tgz", "app.tar.gz"} {
		if got := gunzip(name, read(name)); !bytes.Equal(got, plain) {
			t.Errorf("%s holds a tar of %d bytes that differs from app.tar (%d bytes)", name, len(got), len(plain))
		}
	}
}
