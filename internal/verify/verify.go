// Package verify checks content against its descriptor while it streams.
package verify

import (
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrDigestMismatch is returned when content does not have the size or
// digest its descriptor gives. layout and fixup export it under their own
// names.
var ErrDigestMismatch = errors.New("digest mismatch")

// verifier passes a stream through and fails it, instead of ending it,
// when its bytes are not exactly desc.Size long with digest desc.Digest.
// The digest is checked as soon as desc.Size bytes have been read, before
// the last of them are handed over, so a reader never sees all of a bad
// blob. Other errors of the underlying reader are returned unchanged.
type verifier struct {
	r    io.Reader
	desc ocispec.Descriptor
	h    hash.Hash
	n    int64
	done bool
	err  error
}

// NewReader returns a reader of r that checks size and digest while it
// streams. At the end it returns io.EOF only if both match; otherwise an
// error wrapping ErrDigestMismatch. It never hands over the bytes that
// complete wrong content: the read that brings the count to desc.Size is
// checked against the digest before its bytes are returned, and bytes past
// desc.Size are not returned at all. A stream that ends early is a
// mismatch; other read errors (a reset connection) pass through unchanged.
// An invalid or unsupported digest fails the first read.
func NewReader(r io.Reader, desc ocispec.Descriptor) io.Reader {
	return newVerifier(r, desc)
}

func newVerifier(r io.Reader, desc ocispec.Descriptor) *verifier {
	v := &verifier{r: r, desc: desc}
	switch err := desc.Digest.Validate(); {
	case err != nil:
		v.err = fmt.Errorf("%w: %q: %v", ErrDigestMismatch, desc.Digest, err)
	case desc.Size < 0:
		v.err = fmt.Errorf("%w: %s: negative size %d", ErrDigestMismatch, desc.Digest, desc.Size)
	default:
		v.h = desc.Digest.Algorithm().Hash()
	}
	return v
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Read at most one byte past the expected end, to see whether the
	// stream is longer than it should be.
	if rest := v.desc.Size - v.n; int64(len(p)) > rest+1 {
		p = p[:rest+1]
	}
	n, err := v.r.Read(p)
	if v.n+int64(n) > v.desc.Size {
		v.err = fmt.Errorf("%w: %s: more than the %d bytes expected", ErrDigestMismatch, v.desc.Digest, v.desc.Size)
		return 0, v.err
	}
	if n > 0 {
		v.h.Write(p[:n])
		v.n += int64(n)
	}
	if v.n == v.desc.Size && !v.done {
		// The last bytes are in p: check before handing them over.
		if got := digest.NewDigest(v.desc.Digest.Algorithm(), v.h); got != v.desc.Digest {
			v.err = fmt.Errorf("%w: content is %s, want %s", ErrDigestMismatch, got, v.desc.Digest)
			return 0, v.err
		}
		v.done = true
	}
	if err == io.EOF && v.n < v.desc.Size {
		v.err = fmt.Errorf("%w: %s: the content ended after %d bytes, want %d", ErrDigestMismatch, v.desc.Digest, v.n, v.desc.Size)
		return n, v.err
	}
	if err != nil {
		v.err = err
	}
	return n, err
}

// ReadCloser is NewReader for a stream that must be closed: Close closes rc.
func ReadCloser(rc io.ReadCloser, desc ocispec.Descriptor) io.ReadCloser {
	return readCloser{newVerifier(rc, desc), rc}
}

// readCloser verifies what it reads and closes the stream.
type readCloser struct {
	*verifier
	c io.Closer
}

func (r readCloser) Close() error { return r.c.Close() }
