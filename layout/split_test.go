package layout

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// bigLayout makes a layout like testLayout's with one more image whose
// layer is n bytes of noise (gzip does not shrink it), so that archives
// span many parts and a part boundary falls inside a blob.
func bigLayout(t *testing.T, n int) string {
	t.Helper()
	dir := testLayout(t)
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	layer := make([]byte, n)
	rand.New(rand.NewSource(1)).Read(layer)
	ld := descFor(ocispec.MediaTypeImageLayerGzip, layer)
	if err := s.WriteBlob(context.Background(), ld, bytes.NewReader(layer)); err != nil {
		t.Fatal(err)
	}
	md := writeImage(t, s, "big")
	s.AddRef(md, "registry.example.com/team/big:1.0")
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// joinParts returns the parts' bytes, concatenated, checking each part
// against what WriteSplitArchive said of it and against size.
func joinParts(t *testing.T, parts []Part, size int64) []byte {
	t.Helper()
	var all []byte
	for i, p := range parts {
		data, err := os.ReadFile(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != p.Size || digest.FromBytes(data) != p.Digest {
			t.Errorf("%s: %d bytes, %s; reported %d bytes, %s", p.Path, len(data), digest.FromBytes(data), p.Size, p.Digest)
		}
		if p.Size > size || p.Size == 0 || (i < len(parts)-1 && p.Size != size) {
			t.Errorf("%s is %d bytes; want %d (at most %d for the last, not 0)", p.Path, p.Size, size, size)
		}
		all = append(all, data...)
	}
	return all
}

// A split archive's parts are at most SIZE, all but the last exactly SIZE,
// as many as it takes; together they are the archive WriteArchive writes,
// byte for byte, gzipped or plain as the name says; and it reads back
// from its first part or from its name.
func TestWriteSplitArchive(t *testing.T) {
	t.Parallel()
	l := bigLayout(t, 40<<10)
	for _, name := range []string{"app.tgz", "app.tar"} {
		whole := filepath.Join(t.TempDir(), name)
		if err := WriteArchive(whole, []byte(testBundle), l); err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(whole)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int64{100, 511, 512, 4096, 10000, int64(len(want)), 1 << 30} {
			t.Run(fmt.Sprintf("%s/%d", name, size), func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, name)
				parts, err := WriteSplitArchive(path, size, []byte(testBundle), l)
				if err != nil {
					t.Fatal(err)
				}
				if n := (int64(len(want)) + size - 1) / size; int64(len(parts)) != n {
					t.Errorf("%d parts of %d bytes for %d bytes, want %d", len(parts), size, len(want), n)
				}
				for i, p := range parts {
					if p.Path != PartName(path, i) {
						t.Errorf("part %d is %s, want %s", i, p.Path, PartName(path, i))
					}
				}
				if got := joinParts(t, parts, size); !bytes.Equal(got, want) {
					t.Errorf("the parts joined are %d bytes that differ from the archive (%d bytes)", len(got), len(want))
				}
				ents, _ := os.ReadDir(dir)
				if len(ents) != len(parts) {
					t.Errorf("%d files in the output directory, want the %d parts", len(ents), len(parts))
				}
				for _, open := range []string{path + ".000", path} {
					if ok, err := IsArchive(open); !ok || err != nil {
						t.Errorf("IsArchive(%s) = %v, %v", open, ok, err)
					}
					a, err := OpenArchive(context.Background(), open)
					if err != nil {
						t.Fatalf("OpenArchive(%s): %v", open, err)
					}
					if string(a.BundleJSON) != testBundle || len(a.Index().Manifests) != 3 {
						t.Errorf("%s reads back as bundle %q, %d images", open, a.BundleJSON, len(a.Index().Manifests))
					}
					if n, err := streamAll(t, a); err != nil || n != 10 {
						t.Errorf("streaming %s: %d blobs, %v; want 10", open, n, err)
					}
					// It reads again, from the start.
					if n, err := streamAll(t, a); err != nil || n != 10 {
						t.Errorf("streaming %s again: %d blobs, %v; want 10", open, n, err)
					}
					a.Close()
				}
			})
		}
	}
}

// Writing a split archive again with fewer parts removes the old parts
// after its last, which would otherwise be read as its continuation.
func TestWriteSplitArchiveReplacesLongerOne(t *testing.T) {
	t.Parallel()
	l := bigLayout(t, 40<<10)
	path := filepath.Join(t.TempDir(), "app.tgz")
	long, err := WriteSplitArchive(path, 1000, []byte(testBundle), l)
	if err != nil {
		t.Fatal(err)
	}
	short, err := WriteSplitArchive(path, 10000, []byte(testBundle), l)
	if err != nil {
		t.Fatal(err)
	}
	if len(short) >= len(long) {
		t.Fatalf("%d parts then %d", len(long), len(short))
	}
	if _, err := os.Stat(PartName(path, len(short))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s of the longer archive is still there: %v", PartName(path, len(short)), err)
	}
	a, err := OpenArchive(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := streamAll(t, a); err != nil {
		t.Errorf("the shorter archive: %v", err)
	}
}

// A size that is not positive, a failure while writing, or more parts
// than MaxParts: an error, and no part or temporary file left.
func TestWriteSplitArchiveErrors(t *testing.T) {
	t.Parallel()
	l := bigLayout(t, 4<<10)
	for _, tc := range []struct {
		name   string
		size   int64
		layout string
		want   string
	}{
		{"zero size", 0, l, "split size 0"},
		{"negative size", -1, l, "split size -1"},
		{"missing layout", 1000, "no-such-layout", "no-such-layout"},
		{"too many parts", 1, l, "more than 1000 parts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			parts, err := WriteSplitArchive(filepath.Join(dir, "app.tgz"), tc.size, []byte(testBundle), tc.layout)
			if err == nil || !strings.Contains(err.Error(), tc.want) || parts != nil {
				t.Errorf("got %d parts, error %v; want an error saying %q", len(parts), err, tc.want)
			}
			assertEmpty(t, dir)
		})
	}
}

// The parts are found by name: a gap is ErrMissingPart naming the absent
// part; an archive whose last parts are gone is "truncated after" the last
// one found (ErrMissingPart), wherever the cut falls, in a blob or between
// entries; a corrupt part is a corrupt archive (ErrInvalidArchive).
func TestReadSplitArchiveMissingOrCorrupt(t *testing.T) {
	t.Parallel()
	l := bigLayout(t, 40<<10)
	open := func(path string) error {
		a, err := OpenArchive(context.Background(), path)
		if err != nil {
			return err
		}
		defer a.Close()
		_, err = streamAll(t, a)
		return err
	}
	for _, tc := range []struct {
		name string
		file string
		size int64
		// change breaks the parts; it returns what the error must say.
		change func(t *testing.T, parts []Part) string
		// want is the error; nil: a corrupt archive, as one file would be.
		want error
	}{
		{"gap", "app.tgz", 4096, func(t *testing.T, parts []Part) string {
			os.Remove(parts[1].Path)
			return parts[1].Path + " is missing"
		}, ErrMissingPart},
		{"gap in a plain tar", "app.tar", 4096, func(t *testing.T, parts []Part) string {
			os.Remove(parts[len(parts)-2].Path)
			return parts[len(parts)-2].Path + " is missing"
		}, ErrMissingPart},
		{"last part gone", "app.tgz", 4096, func(t *testing.T, parts []Part) string {
			os.Remove(parts[len(parts)-1].Path)
			return "truncated after " + parts[len(parts)-2].Path
		}, ErrMissingPart},
		{"in a blob", "app.tgz", 4096, func(t *testing.T, parts []Part) string {
			for _, p := range parts[3:] {
				os.Remove(p.Path)
			}
			return "truncated after " + parts[2].Path
		}, ErrMissingPart},
		{"plain tar, in a blob", "app.tar", 4096, func(t *testing.T, parts []Part) string {
			for _, p := range parts[len(parts)-4:] {
				os.Remove(p.Path)
			}
			return "truncated after " + parts[len(parts)-5].Path
		}, ErrMissingPart},
		// Parts of one tar block: the last two are the end-of-archive
		// blocks; without them the tar ends between entries, which
		// archive/tar takes for its end.
		{"plain tar, between entries", "app.tar", 512, func(t *testing.T, parts []Part) string {
			os.Remove(parts[len(parts)-1].Path)
			os.Remove(parts[len(parts)-2].Path)
			return "truncated after " + parts[len(parts)-3].Path
		}, ErrMissingPart},
		{"plain tar, one end block", "app.tar", 512, func(t *testing.T, parts []Part) string {
			os.Remove(parts[len(parts)-1].Path)
			return "truncated after " + parts[len(parts)-2].Path
		}, ErrMissingPart},
		{"corrupt part", "app.tgz", 4096, func(t *testing.T, parts []Part) string {
			p := parts[len(parts)/2].Path
			data, _ := os.ReadFile(p)
			data[len(data)/2] ^= 0xff
			os.WriteFile(p, data, 0o644)
			return ""
		}, nil},
		{"corrupt part of a plain tar", "app.tar", 4096, func(t *testing.T, parts []Part) string {
			p := parts[len(parts)/2].Path
			data, _ := os.ReadFile(p)
			data[len(data)/2] ^= 0xff
			os.WriteFile(p, data, 0o644)
			return ""
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tc.file)
			parts, err := WriteSplitArchive(path, tc.size, []byte(testBundle), l)
			if err != nil {
				t.Fatal(err)
			}
			if len(parts) < 6 {
				t.Fatalf("only %d parts", len(parts))
			}
			want := tc.change(t, parts)
			for _, name := range []string{path + ".000", path} {
				err := open(name)
				if tc.want == nil {
					// Corrupt as one file is: the archive, or the blob
					// its reader checks.
					if !errors.Is(err, ErrInvalidArchive) && !errors.Is(err, ErrDigestMismatch) || errors.Is(err, ErrMissingPart) {
						t.Errorf("reading %s: %v; want a corrupt archive or a digest mismatch, not a missing part", name, err)
					}
					continue
				}
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), want) {
					t.Errorf("reading %s: %v; want %v saying %q", name, err, tc.want, want)
				}
			}
		})
	}
}

// A file that merely ends in .000 with no other parts reads as itself.
func TestSplitPartsOneFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "app.tgz.000")
	if err := WriteArchive(path, []byte(testBundle), testLayout(t)); err != nil {
		t.Fatal(err)
	}
	a, err := OpenArchive(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := streamAll(t, a); err != nil {
		t.Fatal(err)
	}
	// The parts' digests are sha256 of their bytes.
	data, _ := os.ReadFile(path)
	if fmt.Sprintf("sha256:%x", sha256.Sum256(data)) != digest.FromBytes(data).String() {
		t.Fatal("digest.FromBytes is not sha256")
	}
}
