package fixup

import (
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// verifier passes a stream through and fails it, instead of ending it,
// when the bytes are not exactly desc.Size long with digest desc.Digest.
type verifier struct {
	r    io.Reader
	desc ocispec.Descriptor
	h    hash.Hash
	n    int64
	err  error
}

// NewVerifier returns a reader of r that checks size and digest while it
// streams. At the end it returns io.EOF only if both match; otherwise an
// error wrapping ErrDigestMismatch. Reading more than desc.Size bytes fails
// at once.
func NewVerifier(r io.Reader, desc ocispec.Descriptor) io.Reader {
	v := &verifier{r: r, desc: desc}
	if desc.Digest.Algorithm().Available() {
		v.h = desc.Digest.Algorithm().Hash()
	} else {
		v.err = fmt.Errorf("%w: %s: unsupported digest algorithm %q", ErrDigestMismatch, desc.Digest, desc.Digest.Algorithm())
	}
	return v
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.n > v.desc.Size {
		v.err = fmt.Errorf("%w: %s: more than the %d bytes expected", ErrDigestMismatch, v.desc.Digest, v.desc.Size)
		return n, v.err
	}
	if err == io.EOF {
		if v.n != v.desc.Size {
			v.err = fmt.Errorf("%w: %s: got %d bytes, want %d", ErrDigestMismatch, v.desc.Digest, v.n, v.desc.Size)
			return n, v.err
		}
		if got := digest.NewDigest(v.desc.Digest.Algorithm(), v.h); got != v.desc.Digest {
			v.err = fmt.Errorf("%w: content is %s, want %s", ErrDigestMismatch, got, v.desc.Digest)
			return n, v.err
		}
	}
	if err != nil {
		v.err = err
	}
	return n, err
}
