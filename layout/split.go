package layout

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// A split archive is one archive cut into files of at most a given size,
// PATH.000, PATH.001, ... (three digits, at most MaxParts of them), whose
// concatenation is byte for byte the archive itself: `cat PATH.* > x.tgz`
// gives it back. WriteSplitArchive writes one; OpenArchive and IsArchive
// read PATH.000, or PATH when no file PATH exists but PATH.000 does, as
// the parts in order, one stream, never joined on disk. The parts are
// found by name, consecutively from .000 until the next number is absent;
// a later number present after an absent one is ErrMissingPart naming the
// absent part, and a stream that ends early says "truncated after" the
// last part found (ErrMissingPart too).

// MaxParts is the most parts a split archive has: part names have three
// digits, so that the shell's sorted PATH.* is their order.
const MaxParts = 1000

// Part is one file of a split archive.
type Part struct {
	// Path is the part's file: PartName(archive, i).
	Path string
	// Size is its length in bytes.
	Size int64
	// Digest is the sha256 of its bytes.
	Digest digest.Digest
}

// PartName is the name of part i (from 0) of the split archive path:
// path.000, path.001, ...
func PartName(path string, i int) string { return fmt.Sprintf("%s.%03d", path, i) }

// WriteSplitArchive writes the archive WriteArchive(path, bundleJSON,
// layoutDir, extra...) would write — the same bytes, gzipped or plain by path's name
// as WriteArchive decides — as parts path.000, path.001, ... of at most
// size bytes each, streamed into them as it is written (no whole archive
// on disk, no copy). Each part is written to a temporary file beside it
// and all are renamed into place once the archive is complete; parts of an
// earlier, longer split archive at path beyond the last one are removed,
// so that the parts found by name are this archive's. On error no part and
// no temporary file is left. It returns the parts in order, with their
// sizes and sha256 digests. An archive that needs more than MaxParts parts
// of size is an error.
func WriteSplitArchive(path string, size int64, bundleJSON []byte, layoutDir string, extra ...File) ([]Part, error) {
	if size <= 0 {
		return nil, fmt.Errorf("writing %s: split size %d: must be at least 1 byte", path, size)
	}
	s := &splitWriter{path: path, size: size}
	if err := writeArchive(path, s, bundleJSON, layoutDir, extra); err != nil {
		return nil, err
	}
	return s.parts, nil
}

// sink is where writeArchive writes an archive's bytes: commit puts them
// in place, abort removes every trace.
type sink interface {
	io.Writer
	commit() error
	abort()
}

// fileSink writes one file through a temporary file beside it.
type fileSink struct {
	path string
	f    *os.File
}

func (s *fileSink) Write(p []byte) (int, error) {
	if s.f == nil {
		f, err := os.CreateTemp(filepath.Dir(s.path), "."+filepath.Base(s.path)+".tmp-*")
		if err != nil {
			return 0, err
		}
		s.f = f
	}
	return s.f.Write(p)
}

func (s *fileSink) commit() error {
	if _, err := s.Write(nil); err != nil { // an empty archive is still a file
		return err
	}
	for _, c := range []func() error{s.f.Sync, s.f.Close, func() error { return os.Chmod(s.f.Name(), 0o644) }, func() error { return os.Rename(s.f.Name(), s.path) }} {
		if err := c(); err != nil {
			return err
		}
	}
	s.f = nil
	return nil
}

func (s *fileSink) abort() {
	if s.f != nil {
		s.f.Close()
		os.Remove(s.f.Name())
		s.f = nil
	}
}

// splitWriter cuts what is written into parts of at most size bytes, each
// a temporary file until commit renames them all into place. A part is
// started only when there is a byte for it: no empty last part.
type splitWriter struct {
	path  string
	size  int64
	parts []Part   // Path is the final name
	temps []string // parts[i] is at temps[i] until commit
	f     *os.File // the part being written, nil before the first byte
	h     *hasher
	n     int64 // bytes in the part being written
}

// hasher computes a sha256 on another goroutine, so that hashing a part
// overlaps with writing it (and with gzip) instead of adding to it: the
// whole export is disk- and network-bound, and a second core is idle.
// It holds at most hashQueue chunks of what Write is given.
type hasher struct {
	ch   chan []byte
	free chan []byte // buffers the goroutine is done with
	done chan struct{}
	h    hash.Hash
}

const hashQueue = 8

func newHasher() *hasher {
	h := &hasher{ch: make(chan []byte, hashQueue), free: make(chan []byte, hashQueue+1), done: make(chan struct{}), h: sha256.New()}
	go func() {
		defer close(h.done)
		for b := range h.ch {
			h.h.Write(b)
			select {
			case h.free <- b[:0]:
			default:
			}
		}
	}()
	return h
}

// write hashes a copy of p.
func (h *hasher) write(p []byte) {
	var b []byte
	select {
	case b = <-h.free:
	default:
	}
	h.ch <- append(b, p...)
}

// sum waits for everything written and returns the digest.
func (h *hasher) sum() digest.Digest {
	close(h.ch)
	<-h.done
	return digest.NewDigest(digest.SHA256, h.h)
}

func (s *splitWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if s.f == nil || s.n == s.size {
			if err := s.start(); err != nil {
				return written, err
			}
		}
		k := min(int64(len(p)), s.size-s.n)
		m, err := s.f.Write(p[:k])
		s.h.write(p[:m])
		s.n += int64(m)
		written += m
		if err != nil {
			return written, err
		}
		p = p[k:]
	}
	return written, nil
}

// start ends the part being written, if any, and starts the next.
func (s *splitWriter) start() error {
	if err := s.end(); err != nil {
		return err
	}
	if len(s.parts) == MaxParts {
		return fmt.Errorf("more than %d parts of %d bytes: give a bigger split size", MaxParts, s.size)
	}
	name := PartName(s.path, len(s.parts))
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return err
	}
	s.f, s.h, s.n = f, newHasher(), 0
	s.parts = append(s.parts, Part{Path: name})
	s.temps = append(s.temps, f.Name())
	return nil
}

// end syncs and closes the part being written and records its size and
// digest.
func (s *splitWriter) end() error {
	if s.f == nil {
		return nil
	}
	f := s.f
	s.f = nil
	p := &s.parts[len(s.parts)-1]
	p.Size, p.Digest = s.n, s.h.sum()
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chmod(f.Name(), 0o644)
}

func (s *splitWriter) commit() error {
	if err := s.end(); err != nil {
		return err
	}
	for i, p := range s.parts {
		if err := os.Rename(s.temps[i], p.Path); err != nil {
			for _, done := range s.parts[:i] {
				os.Remove(done.Path)
			}
			return err
		}
		s.temps[i] = ""
	}
	// Parts of an earlier, longer archive would be read as this one's.
	for i := len(s.parts); i < MaxParts; i++ {
		if err := os.Remove(PartName(s.path, i)); err != nil {
			break
		}
	}
	return nil
}

func (s *splitWriter) abort() {
	if s.f != nil {
		s.h.sum() // ends its goroutine
		s.f.Close()
		s.f = nil
	}
	for _, t := range s.temps {
		if t != "" {
			os.Remove(t)
		}
	}
	s.temps = nil
}

// splitParts returns the parts of the split archive that path names —
// path itself when it ends in ".000", or path.000, ... when no file path
// exists but path.000 does — in order; nil when path names no split
// archive. A part missing before one that is there is ErrMissingPart.
func splitParts(path string) ([]string, error) {
	var base string
	switch {
	case strings.HasSuffix(path, ".000"):
		base = strings.TrimSuffix(path, ".000")
	default:
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		base = path
	}
	var parts []string
	for i := 0; i < MaxParts; i++ {
		p := PartName(base, i)
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrInvalidArchive, p, unwrapPath(err))
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return nil, nil
	}
	// A gap: a part after the first absent one is there.
	ents, err := os.ReadDir(filepath.Dir(base))
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrInvalidArchive, path, unwrapPath(err))
	}
	prefix := filepath.Base(base) + "."
	for _, e := range ents {
		num, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || len(num) != 3 {
			continue
		}
		if i, err := strconv.Atoi(num); err == nil && i > len(parts) {
			return nil, fmt.Errorf("%w %s: %s is missing (%s is there)", ErrMissingPart, path, PartName(base, len(parts)), filepath.Join(filepath.Dir(base), e.Name()))
		}
	}
	return parts, nil
}

// partsReader reads files one after the other, each opened when the one
// before it is read to its end.
type partsReader struct {
	parts []string
	i     int
	f     *os.File
}

func (r *partsReader) Read(p []byte) (int, error) {
	for {
		if r.f == nil {
			if r.i >= len(r.parts) {
				return 0, io.EOF
			}
			f, err := openFile(r.parts[r.i])
			if err != nil {
				return 0, err
			}
			r.f = f
		}
		n, err := r.f.Read(p)
		if err == io.EOF {
			r.f.Close()
			r.f = nil
			r.i++
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (r *partsReader) Close() error {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
	r.i = len(r.parts)
	return nil
}

// tailReader remembers the last bytes read through it, so that a walker
// can tell a tar's end-of-archive blocks from a stream that stops between
// two entries (which archive/tar takes for the end).
type tailReader struct {
	r    io.Reader
	tail [1024]byte
	n    int64 // bytes read in all
}

func (t *tailReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n >= len(t.tail) {
		copy(t.tail[:], p[n-len(t.tail):n])
	} else if n > 0 {
		copy(t.tail[:], t.tail[n:])
		copy(t.tail[len(t.tail)-n:], p[:n])
	}
	t.n += int64(n)
	return n, err
}

// ended reports whether the last bytes read are a tar's end: two zero
// blocks.
func (t *tailReader) ended() bool {
	if t.n < int64(len(t.tail)) {
		return false
	}
	for _, b := range t.tail {
		if b != 0 {
			return false
		}
	}
	return true
}
