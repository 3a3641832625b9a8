package fixup

import (
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/layout"
)

// NewVerifier returns a reader of r that checks size and digest while it
// streams (see layout.NewVerifier): it never hands over the bytes that
// complete wrong content, so an upload fed from it cannot complete with
// them. Mismatches wrap ErrDigestMismatch.
func NewVerifier(r io.Reader, desc ocispec.Descriptor) io.Reader {
	return layout.NewVerifier(r, desc)
}
