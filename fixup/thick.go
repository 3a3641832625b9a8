package fixup

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/containerd/remotes"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/layout"
)

// LayoutSource reads images from an OCI image layout, the artifacts/layout
// of a thick bundle.
type LayoutSource struct {
	// Store is the image layout. A nil Store has no images.
	Store *layout.Store
	// Path is the thick bundle archive, for messages.
	Path string
}

// Resolve finds img in the layout: by the digest the bundle records (want),
// else by the digest in img's reference, else by the name the layout gives
// it (see layout.Store.Find: the reference as written, its normalised form,
// or its tag alone). An image found by name whose digest is not the one
// the bundle records is an ErrDigestMismatch; an image not there wraps
// errdefs.ErrNotFound.
func (s LayoutSource) Resolve(ctx context.Context, img Image, want digest.Digest) (ocispec.Descriptor, error) {
	d := want
	if d == "" {
		if c, ok := img.Named.(reference.Canonical); ok {
			d = c.Digest()
		}
	}
	if s.Store == nil {
		return ocispec.Descriptor{}, fmt.Errorf("image %s: the archive has no %s: %w", img.Ref, layout.LayoutPath, layout.ErrNotFound)
	}
	desc, err := s.Store.Find(img.Ref, d)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if d != "" && desc.Digest != d {
		return ocispec.Descriptor{}, fmt.Errorf("%w: %s is %s in the layout but the bundle records %s", ErrDigestMismatch, img.Ref, desc.Digest, d)
	}
	return ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}, nil
}

// Fetcher returns the layout. Content that does not match its descriptor
// fails with ErrDigestMismatch.
func (s LayoutSource) Fetcher(ctx context.Context, img Image) (remotes.Fetcher, error) {
	if s.Store == nil {
		return nil, fmt.Errorf("image %s: the archive has no %s: %w", img.Ref, layout.LayoutPath, layout.ErrNotFound)
	}
	return s.Store, nil
}

// Location returns "", "": a layout's blobs cannot be mounted.
func (s LayoutSource) Location(Image) (string, string) { return "", "" }

// Name returns "thick bundle " and the archive's path, or "image layout "
// and its directory when Path is the layout's own.
func (s LayoutSource) Name(Image) string {
	if s.Store != nil && s.Path == s.Store.Dir() {
		return "image layout " + s.Path
	}
	return "thick bundle " + s.Path
}

// LoadArchive reads the thick bundle archive at path (see
// layout.ReadArchive) and parses its bundle.json. Errors about the archive
// or the bundle match ErrInvalidInput and name path. The caller must Close
// the returned layout.Thick, whose Layout (nil when the archive has no
// images) is the source for Relocate: LayoutSource{Store: t.Layout, Path:
// path}.
func LoadArchive(ctx context.Context, path string) (*Bundle, *layout.Thick, error) {
	t, err := layout.ReadArchive(ctx, path)
	if err != nil {
		if errors.Is(err, layout.ErrInvalidArchive) {
			return nil, nil, invalid(fmt.Errorf("%w: %w", ErrInvalidBundle, err))
		}
		return nil, nil, err
	}
	b, err := Parse(t.BundleJSON)
	if err != nil {
		t.Close()
		return nil, nil, invalid(fmt.Errorf("%s: %s: %w", path, layout.BundleFile, err))
	}
	b.path = path
	return b, t, nil
}
