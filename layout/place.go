package layout

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PlacedArchive is a thick bundle archive written in place: laid out
// whole from what it will hold, then each blob written straight into its
// place, in any order and several at once, with nothing written twice.
// Its bytes are those WriteArchive (or WriteSplitArchive) writes for the
// same bundle.json, index.json, blobs and extra files. Create one with
// PlaceArchive; Commit puts it in place, Abort removes every trace.
type PlacedArchive struct {
	path  string
	split bool
	size  int64 // bytes per part: the archive's length when not split
	total int64
	files []*os.File // temporary files, one per part
	parts []Part

	mu      sync.Mutex
	blobs   map[digest.Digest]*placedBlob
	pending []int64 // blob bytes not yet written, per part
	hashes  sync.WaitGroup
	slots   chan struct{} // parts hashed at once
	hashErr []error
	done    bool
	scratch bool // see Scratch
}

// placedBlob is where a blob goes in a PlacedArchive.
type placedBlob struct {
	off, size int64
	written   bool
}

// IsPlainTar reports whether path names an uncompressed archive: its name
// ends in ".tar", in any case. WriteArchive gzips any other; PlaceArchive
// writes only these.
func IsPlainTar(path string) bool { return plainTar(path) }

// PlaceArchive lays out at path the plain-tar archive that
// WriteArchive(path, bundleJSON, dir, extra...) writes for a layout dir
// whose index.json is indexJSON, byte for byte, and whose blobs are blobs
// (each once; manifests too): it writes every header and every small file,
// leaving room for each blob, which WriteBlob then fills. With split more
// than 0 the archive is laid out as the parts WriteSplitArchive writes,
// path.000, path.001, ..., each at most split bytes. Everything is in
// temporary files beside path until Commit. path must name a plain tar
// (IsPlainTar): a gzipped archive cannot be written in place.
func PlaceArchive(path string, split int64, bundleJSON, indexJSON []byte, blobs []ocispec.Descriptor, extra ...File) (_ *PlacedArchive, err error) {
	if !plainTar(path) {
		return nil, fmt.Errorf("writing %s: only a plain tar (a name ending in .tar) is written in place", path)
	}
	if split < 0 {
		return nil, fmt.Errorf("writing %s: split size %d: must be at least 1 byte", path, split)
	}
	layoutFile, err := layoutFileData()
	if err != nil {
		return nil, err
	}
	files := []archiveEntry{
		{name: "artifacts/", dir: true},
		{name: LayoutPath + "/", dir: true},
		{name: LayoutPath + "/" + ocispec.ImageBlobsDir + "/", dir: true},
		{name: LayoutPath + "/" + ocispec.ImageLayoutFile, data: layoutFile, size: int64(len(layoutFile))},
		{name: LayoutPath + "/" + ocispec.ImageIndexFile, data: indexJSON, size: int64(len(indexJSON))},
	}
	algs := map[digest.Algorithm]bool{}
	seen := map[digest.Digest]bool{}
	for _, b := range blobs {
		if err := b.Digest.Validate(); err != nil || b.Size < 0 || seen[b.Digest] {
			return nil, fmt.Errorf("writing %s: blob %q (%d bytes): not a valid blob, or given twice", path, b.Digest, b.Size)
		}
		seen[b.Digest] = true
		alg := b.Digest.Algorithm()
		if !algs[alg] {
			algs[alg] = true
			files = append(files, archiveEntry{name: LayoutPath + "/" + ocispec.ImageBlobsDir + "/" + alg.String() + "/", dir: true})
		}
		// src marks the entry as a blob whose bytes come later.
		files = append(files, archiveEntry{name: blobName(b.Digest), size: b.Size, src: b.Digest.String()})
	}
	entries, err := archiveEntries(path, bundleJSON, extra, files)
	if err != nil {
		return nil, err
	}
	a := &PlacedArchive{path: path, split: split > 0, blobs: map[digest.Digest]*placedBlob{}, slots: make(chan struct{}, runtime.GOMAXPROCS(0))}
	defer func() {
		if err != nil {
			a.Abort()
		}
	}()
	// Each entry: its header (encoded alone, as a tar.Writer encodes it
	// among others), its data, padding to 512 bytes; then two zero blocks.
	type chunk struct {
		off  int64
		data []byte
	}
	var chunks []chunk
	var off int64
	for _, e := range entries {
		var hdr bytes.Buffer
		if err := tar.NewWriter(&hdr).WriteHeader(entryHeader(e)); err != nil {
			return nil, fmt.Errorf("writing %s: %s: %w", path, e.name, err)
		}
		chunks = append(chunks, chunk{off, hdr.Bytes()})
		off += int64(hdr.Len())
		switch {
		case e.src != "":
			a.blobs[digest.Digest(e.src)] = &placedBlob{off: off, size: e.size}
		case len(e.data) > 0:
			chunks = append(chunks, chunk{off, e.data})
		}
		off += (e.size + 511) &^ 511
	}
	a.total = off + 1024
	a.size = a.total
	if a.split {
		a.size = split
	}
	n := int((a.total + a.size - 1) / a.size)
	if n > MaxParts {
		return nil, fmt.Errorf("writing %s: more than %d parts of %d bytes: give a bigger split size", path, MaxParts, split)
	}
	for i := range n {
		name := path
		if a.split {
			name = PartName(path, i)
		}
		f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-*")
		if err != nil {
			return nil, fmt.Errorf("writing %s: %w", path, err)
		}
		a.files = append(a.files, f)
		size := min(a.size, a.total-int64(i)*a.size)
		a.parts = append(a.parts, Part{Path: name, Size: size})
		if err := f.Truncate(size); err != nil {
			return nil, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	for _, c := range chunks {
		if err := a.writeAt(c.data, c.off); err != nil {
			return nil, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	a.pending = make([]int64, n)
	a.hashErr = make([]error, n)
	for _, b := range a.blobs {
		a.count(b, 1)
	}
	if a.split {
		for i, p := range a.pending {
			if p == 0 {
				a.hash(i)
			}
		}
	}
	return a, nil
}

// layoutFileData is the oci-layout file's bytes.
func layoutFileData() ([]byte, error) {
	return json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
}

// blobName is the archive name of blob d.
func blobName(d digest.Digest) string {
	return LayoutPath + "/" + ocispec.ImageBlobsDir + "/" + d.Algorithm().String() + "/" + d.Encoded()
}

// count adds sign times b's bytes to the pending bytes of the parts b is
// in, and returns the parts that have none left.
func (a *PlacedArchive) count(b *placedBlob, sign int64) (complete []int) {
	for off, end := b.off, b.off+b.size; off < end; {
		i := off / a.size
		k := min(end, (i+1)*a.size) - off
		a.pending[i] += sign * k
		if a.pending[i] == 0 {
			complete = append(complete, int(i))
		}
		off += k
	}
	return complete
}

// writeAt writes p at offset off of the archive, across parts.
func (a *PlacedArchive) writeAt(p []byte, off int64) error {
	for len(p) > 0 {
		i, in := off/a.size, off%a.size
		k := min(int64(len(p)), a.size-in)
		if _, err := a.files[i].WriteAt(p[:k], in); err != nil {
			return err
		}
		p, off = p[k:], off+k
	}
	return nil
}

// Has reports whether the blob d is written.
func (a *PlacedArchive) Has(d digest.Digest) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.blobs[d]
	return b != nil && b.written
}

// placeWriter writes a blob's bytes into its place, and no further.
type placeWriter struct {
	a        *PlacedArchive
	off, end int64
}

func (w *placeWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.end-w.off {
		return 0, fmt.Errorf("%w: more bytes than the blob's size", ErrDigestMismatch)
	}
	if err := w.a.writeAt(p, w.off); err != nil {
		return 0, err
	}
	w.off += int64(len(p))
	return len(p), nil
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// WriteBlob writes the blob desc names, one of those the archive was laid
// out with, into its place, reading it from r: exactly desc.Size bytes
// (more or fewer is ErrDigestMismatch). It does not hash them: the caller
// checks r against desc.Digest (verify.NewReader, as fixup's engine
// checks every byte it fetches), so that no byte is hashed twice; an
// error from r fails the write. When the blob is written already, r is
// not read. Safe for concurrent use; a blob that fails may be written
// again.
func (a *PlacedArchive) WriteBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	a.mu.Lock()
	b := a.blobs[desc.Digest]
	written := b != nil && b.written
	a.mu.Unlock()
	switch {
	case b == nil || b.size != desc.Size:
		return fmt.Errorf("writing %s: blob %s (%d bytes): not one the archive was laid out with", a.path, desc.Digest, desc.Size)
	case written:
		return nil
	}
	buf := copyBuffers.Get().(*[]byte)
	w := &placeWriter{a: a, off: b.off, end: b.off + b.size}
	_, err := io.CopyBuffer(w, ctxReader{ctx, r}, *buf)
	copyBuffers.Put(buf)
	if err == nil && w.off != w.end {
		err = fmt.Errorf("%w: %d bytes, want %d", ErrDigestMismatch, desc.Size-(w.end-w.off), desc.Size)
	}
	if err != nil {
		return fmt.Errorf("writing %s: blob %s: %w", a.path, desc.Digest, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if b.written {
		return nil
	}
	b.written = true
	if a.split {
		// A part whose every byte is in is hashed now, while the others
		// are still coming.
		for _, i := range a.count(b, -1) {
			a.hash(i)
		}
	}
	return nil
}

// Scratch marks the archive as one that is read once and removed (a tar
// then compressed into the real archive): Commit does not sync it, so its
// bytes need never reach the disk. Call it before Commit.
func (a *PlacedArchive) Scratch() { a.scratch = true }

// hash computes part i's digest in the background.
func (a *PlacedArchive) hash(i int) {
	a.hashes.Go(func() {
		a.slots <- struct{}{}
		defer func() { <-a.slots }()
		h := sha256.New()
		_, err := io.Copy(h, io.NewSectionReader(a.files[i], 0, a.parts[i].Size))
		a.parts[i].Digest, a.hashErr[i] = digest.NewDigest(digest.SHA256, h), err
	})
}

// Commit checks that every blob is written, syncs the archive (unless
// Scratch) and renames it into place: path, or its parts (removing the
// parts of an earlier, longer split archive at path). It returns the parts
// of a split archive, in order, with their sizes and sha256 digests; nil
// otherwise. On error nothing is left.
func (a *PlacedArchive) Commit() (_ []Part, err error) {
	defer func() {
		if err != nil {
			a.Abort()
		}
	}()
	a.mu.Lock()
	var missing []string
	for d, b := range a.blobs {
		if !b.written {
			missing = append(missing, d.String())
		}
	}
	a.mu.Unlock()
	if len(missing) > 0 {
		return nil, fmt.Errorf("writing %s: %d blobs not written: %s", a.path, len(missing), strings.Join(missing, ", "))
	}
	a.hashes.Wait()
	if err := errors.Join(a.hashErr...); err != nil {
		return nil, fmt.Errorf("writing %s: %w", a.path, err)
	}
	for _, f := range a.files {
		sync := f.Sync
		if a.scratch {
			sync = func() error { return nil }
		}
		for _, c := range []func() error{sync, f.Close, func() error { return os.Chmod(f.Name(), 0o644) }} {
			if err := c(); err != nil {
				return nil, fmt.Errorf("writing %s: %w", a.path, err)
			}
		}
	}
	for i, f := range a.files {
		if err := os.Rename(f.Name(), a.parts[i].Path); err != nil {
			for _, done := range a.parts[:i] {
				os.Remove(done.Path)
			}
			return nil, fmt.Errorf("writing %s: %w", a.path, err)
		}
	}
	a.done = true
	if !a.split {
		return nil, nil
	}
	// Parts of an earlier, longer archive would be read as this one's.
	for i := len(a.parts); i < MaxParts; i++ {
		if err := os.Remove(PartName(a.path, i)); err != nil {
			break
		}
	}
	return a.parts, nil
}

// Abort removes the archive's temporary files. It is idempotent, and does
// nothing after a Commit that succeeded.
func (a *PlacedArchive) Abort() {
	a.hashes.Wait()
	if a.done {
		return
	}
	for _, f := range a.files {
		f.Close()
		os.Remove(f.Name())
	}
	a.files = nil
}
