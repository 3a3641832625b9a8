package layout

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/verify"
)

const (
	// maxManifestSize bounds a blob that is looked at as a possible
	// manifest or index in the first pass.
	maxManifestSize = 4 << 20
	// maxKept bounds the manifests and indexes held in memory.
	maxKept = 64 << 20
	// blobsPrefix is where the layout's blobs are in an archive.
	blobsPrefix = LayoutPath + "/" + ocispec.ImageBlobsDir + "/"
)

// ErrStreamOnly is returned by Archive.Fetch for a blob that is in the
// archive but is read only by Stream (a layer or a config): an archive is
// read as a stream, never extracted.
var ErrStreamOnly = errors.New("read only by streaming the archive")

// Archive is a thick bundle archive (CNAB Core 104: a gzipped or plain tar
// with bundle.json at its root and an OCI image layout in
// artifacts/layout) read as a stream, never written to disk. Its members
// may come in any order, with or without a "./" prefix. OpenArchive reads
// it for what planning needs — bundle.json, relocation-mapping.json, the
// layout's oci-layout and index.json, and every manifest and index
// index.json names — holding blobs of up to 4 MiB in memory (64 MiB in
// all) and skipping bigger ones. When the metadata is at the front
// (bundle.json before every blob; oci-layout, index.json and the
// manifests before the first blob too big to hold; as WriteArchive writes
// it), OpenArchive pauses at the first blob after them and the first
// Stream goes on from there: the archive is read once. A
// relocation-mapping.json must come before that blob. Otherwise OpenArchive reads to the end
// (headers and small files) and Stream reads the archive a second time
// (see Rereads), unless what it needs is held. Later Streams read it
// again too. Close releases it. Its methods are safe for concurrent use.
type Archive struct {
	// Path is the archive's file.
	Path string
	// BundleJSON is bundle.json, byte for byte.
	BundleJSON []byte
	// RelocationMapping is relocation-mapping.json at the root of the
	// archive, byte for byte, nil when there is none (see MappingFile).
	RelocationMapping []byte
	// Delta is the record of a delta archive (DeltaFile): what it leaves
	// out on purpose, held by its bases. Nil for an archive that holds
	// every image whole.
	Delta *Delta

	leftOut   map[digest.Digest]bool // Delta's, by digest
	hasLayout bool
	index     ocispec.Index
	kept      map[digest.Digest][]byte // manifests and indexes, verified

	mu       sync.Mutex
	blobs    map[digest.Digest]int64  // the layout's blobs seen so far, by size
	held     map[digest.Digest][]byte // small blobs read before the pause, verified
	heldList []digest.Digest          // in the archive's order
	rest     *walker                  // the first read, paused; nil once it went on
	complete bool                     // the whole archive has been read once
	reads    int                      // times the archive was read from its start
	// notFront says why the metadata is not at the front ("" when it is,
	// or when the first read held every blob).
	notFront string
}

// OpenArchive reads the archive at path up to what planning needs (see
// Archive), checking every entry as extraction would (no absolute or ".."
// names, no links, devices, fifos, sparse files or duplicates:
// ErrUnsafeEntry), and every blob it reads against its digest. Errors
// about the archive wrap ErrInvalidArchive and name path; the entries
// after the pause are checked as they are streamed.
func OpenArchive(ctx context.Context, path string) (*Archive, error) {
	w, err := openWalker(path)
	if err != nil {
		return nil, err
	}
	a, err := scan(ctx, w)
	if err != nil {
		w.close()
		return nil, err
	}
	return a, nil
}

// scanArchive is OpenArchive on the bytes of r, never paused: read to
// its end; path names the archive.
func scanArchive(ctx context.Context, path string, r io.Reader) (*Archive, error) {
	w, err := newWalker(path, r)
	if err != nil {
		return nil, err
	}
	a, err := scan(ctx, w)
	if err != nil {
		return nil, err
	}
	return a, a.Close()
}

// scan reads w up to the pause, or to its end (see Archive).
func scan(ctx context.Context, w *walker) (*Archive, error) {
	a := &Archive{Path: w.archive, kept: map[digest.Digest][]byte{}, leftOut: map[digest.Digest]bool{}, blobs: map[digest.Digest]int64{}, held: map[digest.Digest][]byte{}, reads: 1}
	var layoutFile, indexFile []byte
	var keptSize int64
	blobFirst := false // a blob came before bundle.json
	for {
		name, hdr, r, err := w.next(ctx)
		if err == io.EOF {
			a.complete = true
			w.close()
			break
		}
		if err != nil {
			return nil, err
		}
		small := func(max int64) ([]byte, error) {
			if hdr.Size > max {
				return nil, w.bad("%s is %d bytes, more than the %d allowed", name, hdr.Size, max)
			}
			return io.ReadAll(r)
		}
		switch {
		case name == BundleFile:
			a.BundleJSON, err = small(maxBundleSize)
		case name == MappingFile:
			a.RelocationMapping, err = small(maxBundleSize)
		case name == DeltaFile:
			var data []byte
			if data, err = small(maxDeltaSize); err == nil {
				if a.Delta, err = parseDelta(data); err != nil {
					return nil, w.bad("%v", err)
				}
				for _, l := range a.Delta.LeftOut {
					a.leftOut[l.Digest] = true
				}
			}
		case name == LayoutPath+"/"+ocispec.ImageLayoutFile:
			layoutFile, err = small(maxIndexSize)
		case name == LayoutPath+"/"+ocispec.ImageIndexFile:
			indexFile, err = small(maxIndexSize)
		case name == LayoutPath:
			return nil, w.bad("%s is not a directory", LayoutPath)
		case strings.HasPrefix(name, blobsPrefix):
			d, ok := blobDigest(name)
			if !ok {
				return nil, w.bad("entry %q: not a blob name (blobs/ALGORITHM/ENCODED)", hdr.Name)
			}
			if a.BundleJSON == nil {
				blobFirst = true
			}
			if a.notFront == "" && !blobFirst && layoutFile != nil && indexFile != nil && a.hasAllManifests(indexFile) {
				// The metadata came first: pause at this blob, which
				// Stream reads first.
				w.unread(name, hdr, r)
				a.rest = w
				break
			}
			a.blobs[d] = hdr.Size
			if hdr.Size > maxManifestSize || keptSize+hdr.Size > maxKept {
				// Too big to hold: skipped, for Stream to read again.
				if a.notFront == "" {
					a.notFront = notFront(blobFirst, layoutFile, indexFile)
				}
				break
			}
			// Small blobs (manifests, indexes, configs) are checked now:
			// a corrupt one is found before anything is pushed.
			var data []byte
			if data, err = io.ReadAll(r); err != nil {
				break
			}
			if d.Algorithm().Available() {
				if got := d.Algorithm().FromBytes(data); got != d {
					return nil, fmt.Errorf("%w %s: entry %q: %w: content is %s", ErrInvalidArchive, w.archive, hdr.Name, ErrDigestMismatch, got)
				}
			}
			keptSize += int64(len(data))
			if looksLikeManifest(data) {
				a.kept[d] = data
			} else {
				a.held[d] = data
				a.heldList = append(a.heldList, d)
			}
		}
		if err != nil {
			return nil, err
		}
		if a.rest != nil {
			break
		}
	}
	if a.BundleJSON == nil {
		a.Close()
		return nil, fmt.Errorf("%w %s: no %s at the root of the archive", ErrInvalidArchive, w.archive, BundleFile)
	}
	if layoutFile == nil && indexFile == nil && len(a.blobs) == 0 {
		return a, nil // no images
	}
	idx, err := parseLayout(layoutFile, indexFile)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("%w %s: %v", ErrInvalidArchive, w.archive, err)
	}
	a.hasLayout, a.index = true, idx
	return a, nil
}

// notFront says which metadata was not at the front of an archive when
// its first blob too big to hold came, the metadata not being all in.
func notFront(blobFirst bool, layoutFile, indexFile []byte) string {
	switch {
	case blobFirst:
		return BundleFile + " after the blobs"
	case indexFile == nil:
		return ocispec.ImageIndexFile + " after the blobs"
	case layoutFile == nil:
		return ocispec.ImageLayoutFile + " after the blobs"
	}
	return "manifests after the layers"
}

// hasAllManifests reports whether every manifest and index that
// indexFile names, directly or through an index, has been read.
func (a *Archive) hasAllManifests(indexFile []byte) bool {
	var idx ocispec.Index
	if json.Unmarshal(indexFile, &idx) != nil {
		return false
	}
	queue := idx.Manifests
	seen := map[digest.Digest]bool{}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		if a.leftOut[d.Digest] {
			continue // in the target, not here
		}
		data, ok := a.kept[d.Digest]
		if !ok {
			return false
		}
		var children struct {
			Manifests []ocispec.Descriptor `json:"manifests"`
		}
		json.Unmarshal(data, &children)
		queue = append(queue, children.Manifests...)
	}
	return true
}

// Close releases the archive: the file of a first read still paused.
func (a *Archive) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rest != nil {
		a.rest.close()
		a.rest = nil
	}
	return nil
}

// parseLayout checks oci-layout and index.json as Open does, naming the
// files as they are in the archive.
func parseLayout(layoutFile, indexFile []byte) (ocispec.Index, error) {
	lp, ip := LayoutPath+"/"+ocispec.ImageLayoutFile, LayoutPath+"/"+ocispec.ImageIndexFile
	if layoutFile == nil {
		return ocispec.Index{}, fmt.Errorf("%w: no %s", ErrInvalidLayout, lp)
	}
	var l ocispec.ImageLayout
	if err := json.Unmarshal(layoutFile, &l); err != nil {
		return ocispec.Index{}, fmt.Errorf("%w: %s: %v", ErrInvalidLayout, lp, err)
	}
	if l.Version != ocispec.ImageLayoutVersion {
		return ocispec.Index{}, fmt.Errorf("%w: %s: imageLayoutVersion is %q, want %q", ErrInvalidLayout, lp, l.Version, ocispec.ImageLayoutVersion)
	}
	if indexFile == nil {
		return ocispec.Index{}, fmt.Errorf("%w: no %s", ErrInvalidLayout, ip)
	}
	return parseIndex(indexFile, ip)
}

// looksLikeManifest reports whether a small blob may be a manifest or an
// index: a JSON object with manifests, layers or a manifest media type.
func looksLikeManifest(data []byte) bool {
	data = bytes.TrimLeft(data, " \t\r\n")
	if len(data) == 0 || data[0] != '{' {
		return false
	}
	var probe struct {
		MediaType string          `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
		Layers    json.RawMessage `json:"layers"`
	}
	if json.Unmarshal(data, &probe) != nil {
		return false
	}
	return probe.Manifests != nil || probe.Layers != nil || strings.Contains(probe.MediaType, "manifest") || strings.Contains(probe.MediaType, "index")
}

// blobDigest returns the digest a blob's entry name (under blobsPrefix)
// names.
func blobDigest(name string) (digest.Digest, bool) {
	alg, enc, ok := strings.Cut(strings.TrimPrefix(name, blobsPrefix), "/")
	if !ok {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
	return d, d.Validate() == nil
}

// HasLayout reports whether the archive has an image layout.
func (a *Archive) HasLayout() bool { return a.hasLayout }

// Index returns the layout's index.json (empty when there is no layout).
func (a *Archive) Index() ocispec.Index {
	idx := a.index
	idx.Manifests = append([]ocispec.Descriptor(nil), a.index.Manifests...)
	return idx
}

// Find finds an image in the layout's index, as Store.Find does.
func (a *Archive) Find(ref string, dgst digest.Digest) (ocispec.Descriptor, error) {
	return find(a.index.Manifests, ref, dgst)
}

// Has reports whether the archive may hold blob d: it has been seen, or
// the archive has not been read to its end yet.
func (a *Archive) Has(d digest.Digest) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.blobs[d]
	return ok || !a.complete
}

// LeftOut reports whether a delta archive leaves blob or manifest d out
// on purpose (see Delta).
func (a *Archive) LeftOut(d digest.Digest) bool { return a.leftOut[d] }

// Fetch returns a manifest or index of the layout (held since
// OpenArchive, checked against desc). One a delta leaves out is
// ErrLeftOut. A blob the archive holds but did not
// keep is ErrStreamOnly: read it with Stream. One it does not hold is
// ErrNotFound. Fetch makes Archive a containerd remotes.Fetcher.
func (a *Archive) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if data, ok := a.kept[desc.Digest]; ok {
		return io.NopCloser(verify.NewReader(bytes.NewReader(data), desc)), nil
	}
	if a.leftOut[desc.Digest] {
		return nil, fmt.Errorf("thick bundle %s: blob %s: %w", a.Path, desc.Digest, ErrLeftOut)
	}
	if a.Has(desc.Digest) {
		return nil, fmt.Errorf("thick bundle %s: blob %s: %w", a.Path, desc.Digest, ErrStreamOnly)
	}
	return nil, fmt.Errorf("thick bundle %s: blob %s: %w", a.Path, desc.Digest, ErrNotFound)
}

// Stream reads the archive for the blobs of the layout whose digest want
// accepts, calling fn for each in the archive's order with a reader of its
// bytes as they are in the archive (the caller checks them against its
// descriptor). The first Stream goes on from where OpenArchive paused
// (the small blobs read before then come first, from memory); when
// OpenArchive did not pause (see Rereads), or for a later Stream, it reads
// the archive again from its start, unless the blobs held in memory are
// all want needs. fn must be done with r when it returns; what it leaves
// unread is skipped. An error from fn ends the pass and is returned.
//
// Going on after the pause, a relocation-mapping.json is an error
// (ErrInvalidArchive): the archive put bundle.json before every blob, so
// its images were looked up without the mapping, which would change
// where they are found.
func (a *Archive) Stream(ctx context.Context, want func(digest.Digest) bool, fn func(d digest.Digest, r io.Reader) error) error {
	a.mu.Lock()
	w, held, heldList := a.rest, a.held, a.heldList
	a.rest, a.held, a.heldList = nil, nil, nil
	a.mu.Unlock()
	given := map[digest.Digest]bool{}
	serve := func(d digest.Digest, r io.Reader) error {
		if given[d] || !want(d) {
			return nil
		}
		given[d] = true
		return fn(d, r)
	}
	if w != nil || heldList != nil {
		// The manifests the first read kept come first too.
		for d, data := range a.kept {
			heldList = append(heldList, d)
			if held == nil {
				held = map[digest.Digest][]byte{}
			}
			held[d] = data
		}
	}
	for _, d := range heldList {
		if err := serve(d, bytes.NewReader(held[d])); err != nil {
			if w != nil {
				w.close()
			}
			return err
		}
	}
	paused := w != nil
	if w == nil {
		if a.knownAndGiven(want, given) {
			return nil // nothing more wanted that the archive holds
		}
		var err error
		if w, err = openWalker(a.Path); err != nil {
			return err
		}
		a.mu.Lock()
		a.reads++
		a.mu.Unlock()
	}
	defer w.close()
	for {
		name, hdr, r, err := w.next(ctx)
		if err == io.EOF {
			a.mu.Lock()
			a.complete = true
			a.mu.Unlock()
			return nil
		}
		if err != nil {
			return err
		}
		if paused && name == MappingFile {
			return w.bad("%s comes after the blobs, though %s comes before them: the images were looked up without it; put it before the blobs, beside %s", MappingFile, BundleFile, BundleFile)
		}
		if !strings.HasPrefix(name, blobsPrefix) {
			continue
		}
		d, ok := blobDigest(name)
		if !ok {
			return w.bad("entry %q: not a blob name (blobs/ALGORITHM/ENCODED)", hdr.Name)
		}
		a.mu.Lock()
		a.blobs[d] = hdr.Size
		a.mu.Unlock()
		if err := serve(d, r); err != nil {
			return err
		}
	}
}

// Rereads says why Stream(want) would read the archive again from its
// start, as the second read of an archive whose metadata is not at the
// front (see Archive): "bundle.json after the blobs", say. It is "" when
// the archive has been read to its end once already by a Stream, when
// OpenArchive paused (Stream goes on from there) or when what want needs
// is held in memory.
func (a *Archive) Rereads(want func(digest.Digest) bool) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rest != nil || a.reads > 1 || a.notFront == "" || !a.complete {
		return ""
	}
	for d := range a.blobs {
		if _, ok := a.held[d]; ok {
			continue
		}
		if _, ok := a.kept[d]; ok {
			continue
		}
		if want(d) {
			return a.notFront
		}
	}
	return ""
}

// Reads returns how many times the archive has been read from its start:
// 1 after OpenArchive, one more for each Stream that read it again.
func (a *Archive) Reads() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reads
}

// knownAndGiven reports whether the archive, read to its end before, holds
// no blob that want accepts and that was not given already.
func (a *Archive) knownAndGiven(want func(digest.Digest) bool, given map[digest.Digest]bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.complete {
		return false
	}
	for d := range a.blobs {
		if !given[d] && want(d) {
			return false
		}
	}
	return true
}

// entryReader names the archive and the entry in errors reading it.
type entryReader struct {
	r              io.Reader
	archive, entry string
	w              *walker
}

func (e entryReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		if t := e.w.truncated(err); t != nil {
			return n, fmt.Errorf("%w (in entry %q)", t, e.entry)
		}
		err = fmt.Errorf("%w %s: entry %q: %w", ErrInvalidArchive, e.archive, e.entry, readError(err))
	}
	return n, err
}

// walker reads a thick bundle archive, gzipped or plain, an entry at a
// time, checking every entry as extraction would (see OpenArchive).
type walker struct {
	archive string
	c       io.Closer // the file, nil when reading bytes given
	zr      *gzip.Reader
	tr      *tar.Reader
	files   map[string]bool
	dirs    map[string]bool
	n       int
	// peek is an entry given back by unread, which next returns again.
	peek *peeked
	// last is the last part of a split archive ("" for one file), and tail
	// the tar stream as read, to tell its end from a missing part.
	last string
	tail *tailReader
	// raw is the archive's bytes as read, before gzip.
	raw io.Reader
}

// peeked is an entry next returned and unread gave back, not read yet.
type peeked struct {
	name string
	hdr  *tar.Header
	r    io.Reader
}

// unread gives back the entry next just returned, unread: the next call
// of next returns it again.
func (w *walker) unread(name string, hdr *tar.Header, r io.Reader) {
	w.peek = &peeked{name, hdr, r}
}

// newWalker starts reading the bytes of r; archive names them in errors.
func newWalker(archive string, r io.Reader) (*walker, error) {
	return startWalker(archive, r, "")
}

// startWalker is newWalker for the parts of a split archive when last,
// its last part, is not "".
func startWalker(archive string, r io.Reader, last string) (*walker, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	w := &walker{archive: archive, files: map[string]bool{}, dirs: map[string]bool{}, last: last, raw: br}
	var src io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			if t := w.truncated(err); t != nil {
				return nil, t
			}
			return nil, w.bad("corrupt gzip data: %v", readError(err))
		}
		w.zr, src = zr, zr
	}
	if last != "" {
		w.tail = &tailReader{r: src}
		src = w.tail
	}
	w.tr = tar.NewReader(src)
	return w, nil
}

// truncated is the error for a split archive whose stream ends early (err
// is an unexpected end of data): its last part found is not its last
// part. It is nil for one file, or for another error.
func (w *walker) truncated(err error) error {
	if w.last == "" || !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return fmt.Errorf("%w %s: truncated after %s: the archive goes on in a part after it", ErrMissingPart, w.archive, w.last)
}

// openFile opens the archive at path, a regular file.
func openFile(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrInvalidArchive, path, unwrapPath(err))
	}
	if st, err := f.Stat(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w %s: %w", ErrInvalidArchive, path, unwrapPath(err))
	} else if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w %s: not a regular file", ErrInvalidArchive, path)
	}
	return f, nil
}

// openWalker opens the archive at path, or the parts of the split archive
// it names (see WriteSplitArchive), and starts reading it.
func openWalker(path string) (*walker, error) {
	return openWalkerThrough(path, nil)
}

// openWalkerThrough is openWalker reading the archive's bytes through
// wrap(file) when wrap is not nil; w.raw is what it reads from.
func openWalkerThrough(path string, wrap func(io.Reader) io.Reader) (*walker, error) {
	if wrap == nil {
		wrap = func(r io.Reader) io.Reader { return r }
	}
	parts, err := splitParts(path)
	if err != nil {
		return nil, err
	}
	if parts != nil {
		r := &partsReader{parts: parts}
		w, err := startWalker(path, wrap(r), parts[len(parts)-1])
		if err != nil {
			r.Close()
			return nil, err
		}
		w.c = r
		return w, nil
	}
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	w, err := newWalker(path, wrap(f))
	if err != nil {
		f.Close()
		return nil, err
	}
	w.c = f
	return w, nil
}

func (w *walker) bad(format string, args ...any) error {
	return fmt.Errorf("%w %s: %s", ErrInvalidArchive, w.archive, fmt.Sprintf(format, args...))
}

func (w *walker) close() {
	if w.zr != nil {
		w.zr.Close()
	}
	if w.c != nil {
		w.c.Close()
	}
}

// next returns the next regular file: its clean name, header and a reader
// of its content, valid until the next call. At the end of the archive
// (whose gzip trailer is checked) it returns io.EOF.
func (w *walker) next(ctx context.Context) (string, *tar.Header, io.Reader, error) {
	if p := w.peek; p != nil {
		w.peek = nil
		return p.name, p.hdr, p.r, nil
	}
	for ; ; w.n++ {
		if err := ctx.Err(); err != nil {
			return "", nil, nil, err
		}
		hdr, err := w.tr.Next()
		if err == io.EOF {
			if w.n == 0 {
				return "", nil, nil, w.bad("empty archive, or not a tar archive")
			}
			if w.tail != nil && !w.tail.ended() {
				// archive/tar ends quietly where a part ends between two
				// entries, before the end-of-archive blocks.
				return "", nil, nil, w.truncated(io.ErrUnexpectedEOF)
			}
			if w.zr != nil {
				// Read to the end of the gzip stream, so that its
				// checksum and length are checked.
				if _, err := io.Copy(io.Discard, w.zr); err != nil {
					if t := w.truncated(err); t != nil {
						return "", nil, nil, t
					}
					return "", nil, nil, w.bad("%v", readError(err))
				}
			}
			return "", nil, nil, io.EOF
		}
		if err != nil {
			if t := w.truncated(err); t != nil {
				return "", nil, nil, t
			}
			if w.n == 0 && w.zr == nil {
				return "", nil, nil, w.bad("neither gzip nor tar data")
			}
			return "", nil, nil, w.bad("%v", readError(err))
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return "", nil, nil, fmt.Errorf("%w %s: entry %q: %w", ErrInvalidArchive, w.archive, hdr.Name, err)
		}
		unsafe := func(what string) error {
			return fmt.Errorf("%w %s: entry %q: %w: %s", ErrInvalidArchive, w.archive, hdr.Name, ErrUnsafeEntry, what)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name == "" {
				continue
			}
			if w.files[name] {
				return "", nil, nil, w.bad("entry %q: a directory where a file was", hdr.Name)
			}
			w.dirs[name] = true
		case tar.TypeReg:
			if sparse(hdr) {
				// A few bytes could stand for terabytes of holes.
				return "", nil, nil, unsafe("a sparse file")
			}
			if name == "" {
				return "", nil, nil, w.bad("entry %q: a file without a name", hdr.Name)
			}
			if w.files[name] {
				return "", nil, nil, w.bad("entry %q: duplicate file", hdr.Name)
			}
			if w.dirs[name] || underFile(w.files, name) {
				return "", nil, nil, w.bad("entry %q: a file where a directory was, or in a file", hdr.Name)
			}
			w.files[name] = true
			w.n++
			return name, hdr, entryReader{r: w.tr, archive: w.archive, entry: hdr.Name, w: w}, nil
		case tar.TypeSymlink:
			return "", nil, nil, unsafe(fmt.Sprintf("a symbolic link (to %q)", hdr.Linkname))
		case tar.TypeLink:
			return "", nil, nil, unsafe(fmt.Sprintf("a hard link (to %q)", hdr.Linkname))
		case tar.TypeChar, tar.TypeBlock:
			return "", nil, nil, unsafe("a device")
		case tar.TypeFifo:
			return "", nil, nil, unsafe("a fifo")
		case tar.TypeXGlobalHeader:
			// PAX global header (git archive writes one): no file.
		default:
			return "", nil, nil, unsafe(fmt.Sprintf("type %q is not a regular file or directory", hdr.Typeflag))
		}
	}
}

// underFile reports whether name is inside a path that is a file.
func underFile(files map[string]bool, name string) bool {
	for i := strings.IndexByte(name, '/'); i >= 0; i = next(name, i) {
		if files[name[:i]] {
			return true
		}
	}
	return false
}

func next(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}
