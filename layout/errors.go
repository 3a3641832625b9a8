package layout

import (
	"errors"
	"fmt"

	"github.com/containerd/containerd/errdefs"

	"github.com/cnabio/cnab-relocate/internal/verify"
)

var (
	// ErrNotFound is returned, wrapped, when a blob or an image is not in a
	// layout. It is containerd's errdefs.ErrNotFound, so errdefs.IsNotFound
	// recognises it too.
	ErrNotFound = errdefs.ErrNotFound
	// ErrInvalidLayout is returned when a directory is not a valid OCI image
	// layout: oci-layout or index.json is missing or malformed, or the
	// layout version is not 1.0.0.
	ErrInvalidLayout = errors.New("invalid OCI image layout")
	// ErrInvalidArchive is returned when a thick bundle archive cannot be
	// read: it is missing, truncated or corrupt, holds an entry that is not
	// allowed, or lacks bundle.json.
	ErrInvalidArchive = errors.New("invalid thick bundle archive")
	// ErrMissingPart is returned when a part of a split archive (see
	// WriteSplitArchive) is not there: one absent before a later one that
	// is, or the last ones (the stream ends "truncated after" the last part
	// found). It does not match ErrInvalidArchive: the parts that are there
	// may be sound.
	ErrMissingPart = errors.New("missing part of split archive")
	// ErrUnsafeEntry is returned, together with ErrInvalidArchive, for an
	// archive entry that could write outside the extraction directory or is
	// not a regular file or directory: an absolute name, a ".." element, a
	// symbolic or hard link, a device, a fifo.
	ErrUnsafeEntry = errors.New("unsafe archive entry")
	// ErrAmbiguous is returned by Find when a reference matches several
	// images only by tag.
	ErrAmbiguous = errors.New("ambiguous reference")
	// ErrLeftOut is returned, wrapped, by Archive.Fetch for a manifest
	// that a delta archive leaves out on purpose (see Archive.Delta): it is
	// to be in the target already. It matches ErrNotFound too.
	ErrLeftOut = fmt.Errorf("left out of the delta archive: %w", ErrNotFound)
	// ErrDigestMismatch is returned when content does not have the size or
	// digest its descriptor gives.
	ErrDigestMismatch = verify.ErrDigestMismatch
)
