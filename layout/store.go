package layout

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/verify"
)

// maxIndexSize bounds what is read into memory for index.json and
// oci-layout.
const maxIndexSize = 16 << 20

// Store is an OCI image layout in a directory: a source (Fetch, Find) and a
// sink (WriteBlob, AddRef, Save) of content. Its methods are safe for
// concurrent use. Index changes made with AddRef reach index.json only on
// Save.
type Store struct {
	dir string

	mu    sync.Mutex
	index ocispec.Index
}

// Open opens the image layout in dir. It checks that oci-layout declares
// version 1.0.0 and that index.json is an image index whose entries have
// valid digests. Errors wrap ErrInvalidLayout and name the file at fault.
func Open(dir string) (*Store, error) {
	layoutPath := filepath.Join(dir, ocispec.ImageLayoutFile)
	data, err := readSmall(layoutPath)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrInvalidLayout, dir, err)
	}
	var l ocispec.ImageLayout
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidLayout, layoutPath, err)
	}
	if l.Version != ocispec.ImageLayoutVersion {
		return nil, fmt.Errorf("%w: %s: imageLayoutVersion is %q, want %q", ErrInvalidLayout, layoutPath, l.Version, ocispec.ImageLayoutVersion)
	}
	indexPath := filepath.Join(dir, ocispec.ImageIndexFile)
	data, err = readSmall(indexPath)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrInvalidLayout, dir, err)
	}
	idx, err := parseIndex(data, indexPath)
	if err != nil {
		return nil, err
	}
	return &Store{dir: dir, index: idx}, nil
}

// parseIndex parses and checks a layout's index.json; name names it in
// errors.
func parseIndex(data []byte, name string) (ocispec.Index, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return idx, fmt.Errorf("%w: %s: %v", ErrInvalidLayout, name, err)
	}
	if idx.SchemaVersion != 2 {
		return idx, fmt.Errorf("%w: %s: schemaVersion is %d, want 2", ErrInvalidLayout, name, idx.SchemaVersion)
	}
	for i, m := range idx.Manifests {
		if err := m.Digest.Validate(); err != nil {
			return idx, fmt.Errorf("%w: %s: manifests[%d]: digest %q: %v", ErrInvalidLayout, name, i, m.Digest, err)
		}
		if m.Size < 0 {
			return idx, fmt.Errorf("%w: %s: manifests[%d]: negative size %d", ErrInvalidLayout, name, i, m.Size)
		}
	}
	return idx, nil
}

// readSmall reads a file of at most maxIndexSize bytes.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxIndexSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxIndexSize {
		return nil, fmt.Errorf("%s: more than %d bytes", path, maxIndexSize)
	}
	return data, nil
}

// Create makes an empty image layout in dir, creating dir if needed, and
// writes its oci-layout and an empty index.json. It fails if dir already
// holds a layout: use Open for that.
func Create(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, ocispec.ImageBlobsDir), 0o755); err != nil {
		return nil, fmt.Errorf("creating image layout: %w", err)
	}
	layoutPath := filepath.Join(dir, ocispec.ImageLayoutFile)
	if _, err := os.Lstat(layoutPath); err == nil {
		return nil, fmt.Errorf("creating image layout %s: %w: it already holds one", dir, fs.ErrExist)
	}
	data, err := layoutFileData()
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(dir, layoutPath, data); err != nil {
		return nil, fmt.Errorf("creating image layout: %w", err)
	}
	s := &Store{dir: dir, index: ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
	}}
	if err := s.Save(); err != nil {
		return nil, err
	}
	return s, nil
}

// Dir returns the layout's directory.
func (s *Store) Dir() string { return s.dir }

// blobPath returns the path of a blob; d must be valid.
func (s *Store) blobPath(d digest.Digest) string {
	return filepath.Join(s.dir, ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded())
}

// Fetch opens the blob desc names. The reader fails, instead of ending,
// when the blob is not exactly desc.Size bytes with digest desc.Digest
// (ErrDigestMismatch). A missing blob is an error wrapping ErrNotFound
// (errdefs.ErrNotFound). Fetch makes Store a containerd remotes.Fetcher.
func (s *Store) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("image layout %s: blob %q: %w", s.dir, desc.Digest, err)
	}
	p := s.blobPath(desc.Digest)
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("image layout %s: blob %s: %w", s.dir, desc.Digest, ErrNotFound)
		}
		return nil, fmt.Errorf("image layout %s: blob %s: %w", s.dir, desc.Digest, err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", p)
	}
	if err == nil && st.Size() != desc.Size {
		err = fmt.Errorf("%w: %s: %s is %d bytes, want %d", ErrDigestMismatch, desc.Digest, p, st.Size(), desc.Size)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("image layout %s: blob %s: %w", s.dir, desc.Digest, err)
	}
	return verify.ReadCloser(f, desc), nil
}

// Exists reports whether the blob desc names is in the layout with the
// size desc gives. It does not read the blob.
func (s *Store) Exists(desc ocispec.Descriptor) bool {
	if desc.Digest.Validate() != nil {
		return false
	}
	st, err := os.Stat(s.blobPath(desc.Digest))
	return err == nil && st.Mode().IsRegular() && st.Size() == desc.Size
}

// Index returns a copy of the layout's index, with the changes made by
// AddRef since it was opened.
func (s *Store) Index() ocispec.Index {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.index
	idx.Manifests = slices.Clone(s.index.Manifests)
	return idx
}

// Find returns the index entry of an image. When dgst is not "", an entry
// with that digest is returned if there is one (the one whose name matches
// ref best, if several). Otherwise entries are matched by their
// org.opencontainers.image.ref.name annotation, best first: ref exactly as
// given; the same normalised reference ("nginx" and
// "docker.io/library/nginx:latest" match); tags alone, both ways: an entry
// named by the tag of ref alone ("1.0" for "example.com/app:1.0", "latest"
// for a reference without tag or digest), or, for a ref that is a tag
// alone ("1.0"), an entry whose reference has that tag.
// The entry returned then may have a digest other than dgst: the caller
// decides whether that is an error. Several entries with different digests
// matching at the best level is an error wrapping ErrAmbiguous; no match is
// an error wrapping ErrNotFound. Both name ref.
func (s *Store) Find(ref string, dgst digest.Digest) (ocispec.Descriptor, error) {
	return find(s.Index().Manifests, ref, dgst)
}

// find is Find over the entries of an index.
func find(entries []ocispec.Descriptor, ref string, dgst digest.Digest) (ocispec.Descriptor, error) {
	m := newMatcher(ref)
	if dgst != "" {
		best, bestRank := -1, -1
		for i, e := range entries {
			if e.Digest != dgst {
				continue
			}
			if r := m.rank(e.Annotations[ocispec.AnnotationRefName]); r > bestRank {
				best, bestRank = i, r
			}
		}
		if best >= 0 {
			return entries[best], nil
		}
	}
	for level := rankExact; level >= rankTag; level-- {
		var hits []ocispec.Descriptor
		for _, e := range entries {
			if m.rank(e.Annotations[ocispec.AnnotationRefName]) != level {
				continue
			}
			if len(hits) == 0 || !slices.ContainsFunc(hits, func(h ocispec.Descriptor) bool { return h.Digest == e.Digest }) {
				hits = append(hits, e)
			}
		}
		switch {
		case len(hits) == 1:
			return hits[0], nil
		case len(hits) > 1:
			var names []string
			for _, h := range hits {
				names = append(names, fmt.Sprintf("%q (%s)", h.Annotations[ocispec.AnnotationRefName], h.Digest))
			}
			return ocispec.Descriptor{}, fmt.Errorf("image %s: %w: %d images of the layout match it: %v; record its digest in the bundle", ref, ErrAmbiguous, len(hits), names)
		}
	}
	if dgst != "" {
		return ocispec.Descriptor{}, fmt.Errorf("image %s (%s) is not in the layout: %w", ref, dgst, ErrNotFound)
	}
	return ocispec.Descriptor{}, fmt.Errorf("image %s is not in the layout: %w", ref, ErrNotFound)
}

// How well a ref.name annotation matches a reference.
const (
	rankNone = iota
	rankTag
	rankNormalised
	rankExact
)

type matcher struct {
	ref     string
	norm    string // normalised reference, with "latest" when it has no tag or digest
	tag     string // its tag, "latest" when it has no tag or digest
	bareTag string // ref itself when it can be a tag alone ("1.0")
}

// tagPattern is the grammar of a tag (distribution/reference).
var tagPattern = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)

func newMatcher(ref string) matcher {
	m := matcher{ref: ref}
	if tagPattern.MatchString(ref) {
		m.bareTag = ref
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return m
	}
	m.norm = reference.TagNameOnly(named).String()
	if t, ok := named.(reference.Tagged); ok {
		m.tag = t.Tag()
	} else if reference.IsNameOnly(named) {
		m.tag = "latest"
	}
	return m
}

func (m matcher) rank(name string) int {
	switch {
	case name == "":
		return rankNone
	case name == m.ref:
		return rankExact
	}
	if m.norm != "" {
		if n, err := reference.ParseNormalizedNamed(name); err == nil && reference.TagNameOnly(n).String() == m.norm {
			return rankNormalised
		}
	}
	if m.tag != "" && name == m.tag {
		return rankTag
	}
	if m.bareTag != "" {
		if n, err := reference.ParseNormalizedNamed(name); err == nil {
			if t, ok := n.(reference.Tagged); ok && t.Tag() == m.bareTag {
				return rankTag
			}
		}
	}
	return rankNone
}

// WriteBlob stores the blob desc names, reading it from r. The bytes go to
// a temporary file in the layout, are checked against desc.Size and
// desc.Digest while they stream (ErrDigestMismatch), and the file is renamed
// into blobs/<alg>/<hex> only when they match. When the blob is already
// there, r is not read. Safe for concurrent use, also for the same blob.
func (s *Store) WriteBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	if err := desc.Digest.Validate(); err != nil {
		return fmt.Errorf("image layout %s: writing blob %q: %w", s.dir, desc.Digest, err)
	}
	if s.Exists(desc) {
		return nil
	}
	p := s.blobPath(desc.Digest)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("image layout %s: writing blob %s: %w", s.dir, desc.Digest, err)
	}
	f, err := os.CreateTemp(s.dir, ".tmp-blob-*")
	if err != nil {
		return fmt.Errorf("image layout %s: writing blob %s: %w", s.dir, desc.Digest, err)
	}
	tmp := f.Name()
	_, err = io.Copy(f, verify.NewReader(ctxReader{ctx, r}, desc))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("image layout %s: writing blob %s: %w", s.dir, desc.Digest, err)
	}
	return nil
}

// ctxReader stops reading when its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// AddRef adds desc to the index with its org.opencontainers.image.ref.name
// annotation set to refName (or removed, when refName is ""). An entry with
// the same non-empty refName is replaced, as a tag moves. Call Save to write
// index.json.
func (s *Store) AddRef(desc ocispec.Descriptor, refName string) {
	d := desc
	d.Annotations = make(map[string]string, len(desc.Annotations)+1)
	for k, v := range desc.Annotations {
		d.Annotations[k] = v
	}
	if refName == "" {
		delete(d.Annotations, ocispec.AnnotationRefName)
	} else {
		d.Annotations[ocispec.AnnotationRefName] = refName
	}
	if len(d.Annotations) == 0 {
		d.Annotations = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if refName != "" {
		s.index.Manifests = slices.DeleteFunc(s.index.Manifests, func(e ocispec.Descriptor) bool {
			return e.Annotations[ocispec.AnnotationRefName] == refName
		})
	}
	s.index.Manifests = append(s.index.Manifests, d)
}

// Save writes index.json, atomically (temporary file and rename), with
// its entries sorted by reference name, then digest, and without
// duplicates (same name and digest).
func (s *Store) Save() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx, data, err := s.encodeIndex()
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.dir, filepath.Join(s.dir, ocispec.ImageIndexFile), data); err != nil {
		return fmt.Errorf("image layout %s: %w", s.dir, err)
	}
	s.index = idx
	return nil
}

// IndexJSON returns the bytes Save would write as index.json now.
func (s *Store) IndexJSON() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, data, err := s.encodeIndex()
	return data, err
}

// encodeIndex is the index Save writes, and its bytes. s.mu is held.
func (s *Store) encodeIndex() (ocispec.Index, []byte, error) {
	entries := slices.Clone(s.index.Manifests)
	slices.SortStableFunc(entries, func(a, b ocispec.Descriptor) int {
		return cmp.Or(
			cmp.Compare(a.Annotations[ocispec.AnnotationRefName], b.Annotations[ocispec.AnnotationRefName]),
			cmp.Compare(a.Digest, b.Digest))
	})
	entries = slices.CompactFunc(entries, func(a, b ocispec.Descriptor) bool {
		return a.Digest == b.Digest && a.Annotations[ocispec.AnnotationRefName] == b.Annotations[ocispec.AnnotationRefName]
	})
	if entries == nil {
		entries = []ocispec.Descriptor{}
	}
	idx := s.index
	idx.Manifests = entries
	if idx.SchemaVersion == 0 {
		idx.SchemaVersion = 2
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(idx); err != nil {
		return idx, nil, fmt.Errorf("image layout %s: encoding index.json: %w", s.dir, err)
	}
	return idx, buf.Bytes(), nil
}

// writeFileAtomic writes data to path through a temporary file in tmpDir
// (on the same file system) and a rename.
func writeFileAtomic(tmpDir, path string, data []byte) error {
	f, err := os.CreateTemp(tmpDir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
