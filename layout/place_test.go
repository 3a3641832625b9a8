package layout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// layoutBlobs returns the blobs of the layout in dir, each with its bytes.
func layoutBlobs(t *testing.T, dir string) ([]ocispec.Descriptor, map[digest.Digest][]byte) {
	t.Helper()
	var descs []ocispec.Descriptor
	data := map[digest.Digest][]byte{}
	root := filepath.Join(dir, ocispec.ImageBlobsDir)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dg := digest.NewDigestFromEncoded(digest.Algorithm(filepath.Base(filepath.Dir(p))), filepath.Base(p))
		descs = append(descs, ocispec.Descriptor{Digest: dg, Size: int64(len(b))})
		data[dg] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return descs, data
}

// placeLayout writes the layout in dir as a placed archive at out, the
// blobs in a shuffled order, several at once.
func placeLayout(t *testing.T, dir, out string, split int64, extra ...File) []Part {
	t.Helper()
	index, err := os.ReadFile(filepath.Join(dir, ocispec.ImageIndexFile))
	if err != nil {
		t.Fatal(err)
	}
	descs, data := layoutBlobs(t, dir)
	a, err := PlaceArchive(out, split, []byte(`{"name":"b"}`), index, descs, extra...)
	if err != nil {
		t.Fatal(err)
	}
	rand.New(rand.NewSource(2)).Shuffle(len(descs), func(i, j int) { descs[i], descs[j] = descs[j], descs[i] })
	var wg sync.WaitGroup
	for _, d := range descs {
		wg.Go(func() {
			if err := a.WriteBlob(context.Background(), d, bytes.NewReader(data[d.Digest])); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	parts, err := a.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return parts
}

func TestPlaceArchiveIsWriteArchive(t *testing.T) {
	t.Parallel()
	dir := bigLayout(t, 300<<10)
	tmp := t.TempDir()
	extra := File{Name: DeltaFile, Data: []byte(`{"schemaVersion":1}`)}
	want := filepath.Join(tmp, "want.tar")
	if err := WriteArchive(want, []byte(`{"name":"b"}`), dir, extra); err != nil {
		t.Fatal(err)
	}
	wantData, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	got := filepath.Join(tmp, "got.tar")
	if parts := placeLayout(t, dir, got, 0, extra); parts != nil {
		t.Errorf("one file: parts %v", parts)
	}
	gotData, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotData, wantData) {
		t.Fatalf("placed archive: %d bytes %s; WriteArchive: %d bytes %s", len(gotData), digest.FromBytes(gotData), len(wantData), digest.FromBytes(wantData))
	}

	// Split: the parts WriteSplitArchive writes, digests and all; a part
	// boundary falls inside the big blob and inside headers.
	const size = 64<<10 + 100
	wantParts, err := WriteSplitArchive(filepath.Join(tmp, "want-split.tar"), size, []byte(`{"name":"b"}`), dir, extra)
	if err != nil {
		t.Fatal(err)
	}
	gotParts := placeLayout(t, dir, filepath.Join(tmp, "got-split.tar"), size, extra)
	if len(gotParts) != len(wantParts) || len(gotParts) < 4 {
		t.Fatalf("%d parts, want %d (at least 4)", len(gotParts), len(wantParts))
	}
	for i := range gotParts {
		if gotParts[i].Size != wantParts[i].Size || gotParts[i].Digest != wantParts[i].Digest {
			t.Errorf("part %d: %d bytes %s, want %d bytes %s", i, gotParts[i].Size, gotParts[i].Digest, wantParts[i].Size, wantParts[i].Digest)
		}
	}
	if !bytes.Equal(joinParts(t, gotParts, size), wantData) {
		t.Error("the parts joined are not the archive")
	}
	// Compressed, the tar is the gzipped archive, whole or split.
	for _, split := range []int64{0, size} {
		want, got := filepath.Join(tmp, fmt.Sprintf("want-%d.tgz", split)), filepath.Join(tmp, fmt.Sprintf("got-%d.tgz", split))
		var wantParts []Part
		if split == 0 {
			err = WriteArchive(want, []byte(`{"name":"b"}`), dir, extra)
		} else {
			wantParts, err = WriteSplitArchive(want, split, []byte(`{"name":"b"}`), dir, extra)
		}
		if err != nil {
			t.Fatal(err)
		}
		gotParts, err := CompressArchive(filepath.Join(tmp, "got.tar"), got, split)
		if err != nil {
			t.Fatal(err)
		}
		if split == 0 {
			w, _ := os.ReadFile(want)
			g, _ := os.ReadFile(got)
			if len(w) == 0 || !bytes.Equal(w, g) || gotParts != nil {
				t.Errorf("compressed: %d bytes (parts %v), WriteArchive's %d bytes", len(g), gotParts, len(w))
			}
			continue
		}
		if len(gotParts) != len(wantParts) || len(gotParts) < 2 {
			t.Fatalf("compressed split: %d parts, want %d (at least 2)", len(gotParts), len(wantParts))
		}
		for i := range gotParts {
			if gotParts[i].Size != wantParts[i].Size || gotParts[i].Digest != wantParts[i].Digest {
				t.Errorf("compressed part %d: %d bytes %s, want %d bytes %s", i, gotParts[i].Size, gotParts[i].Digest, wantParts[i].Size, wantParts[i].Digest)
			}
		}
	}
	if _, err := CompressArchive(filepath.Join(tmp, "missing.tar"), filepath.Join(tmp, "x.tgz"), 0); err == nil {
		t.Error("a missing tar was compressed")
	}
	if _, err := os.Stat(filepath.Join(tmp, "x.tgz")); err == nil {
		t.Error("a failed compression left its output")
	}

	// The archive reads back.
	a, err := OpenArchive(context.Background(), filepath.Join(tmp, "got-split.tar"))
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
}

func TestPlaceArchiveErrorsLeaveNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := testLayout(t)
	index, err := os.ReadFile(filepath.Join(dir, ocispec.ImageIndexFile))
	if err != nil {
		t.Fatal(err)
	}
	descs, data := layoutBlobs(t, dir)
	tmp := t.TempDir()
	empty := func(t *testing.T) {
		t.Helper()
		if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
			t.Errorf("left behind: %v", entries)
		}
	}
	if _, err := PlaceArchive(filepath.Join(tmp, "x.tgz"), 0, nil, index, descs); err == nil {
		t.Error("a gzipped archive was laid out in place")
	}
	if _, err := PlaceArchive(filepath.Join(tmp, "x.tar"), 0, nil, index, append(descs, descs[0])); err == nil {
		t.Error("a blob given twice was laid out")
	}
	if _, err := PlaceArchive(filepath.Join(tmp, "x.tar"), 1, nil, index, descs); err == nil {
		t.Errorf("an archive of more than %d parts was laid out", MaxParts)
	}
	empty(t)

	a, err := PlaceArchive(filepath.Join(tmp, "x.tar"), 0, nil, index, descs)
	if err != nil {
		t.Fatal(err)
	}
	d := descs[0]
	short := data[d.Digest][:d.Size-1]
	if err := a.WriteBlob(ctx, d, bytes.NewReader(short)); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("one byte short: %v, want ErrDigestMismatch", err)
	}
	if a.Has(d.Digest) {
		t.Error("a blob that failed counts as written")
	}
	if err := a.WriteBlob(ctx, d, bytes.NewReader(append(data[d.Digest], 'x'))); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("one byte too long: %v, want ErrDigestMismatch", err)
	}
	if err := a.WriteBlob(ctx, d, iotest.ErrReader(io.ErrUnexpectedEOF)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a failing reader: %v", err)
	}
	if err := a.WriteBlob(ctx, ocispec.Descriptor{Digest: digest.FromString("other"), Size: 5}, bytes.NewReader([]byte("other"))); err == nil {
		t.Error("a blob the archive was not laid out with was written")
	}
	if err := a.WriteBlob(ctx, d, bytes.NewReader(data[d.Digest])); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Commit(); err == nil {
		t.Error("an archive with blobs missing was committed")
	}
	empty(t)
	a.Abort() // idempotent
}
