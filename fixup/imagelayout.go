package fixup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/layout"
)

// Layout is an OCI image layout in a directory that a Client adds images
// to from registries and pushes images from into registries. Each image is
// named in index.json (org.opencontainers.image.ref.name) by the reference
// it was added with, as written; its referrers travel with it.
type Layout struct {
	c     *Client
	store *layout.Store
}

// NewLayout creates an empty OCI image layout in dir, which must be
// missing or empty (then it is created).
func (c *Client) NewLayout(dir string) (*Layout, error) {
	if dir == "" {
		return nil, invalid(errors.New("fixup: NewLayout needs a directory"))
	}
	entries, err := os.ReadDir(dir)
	switch {
	case err == nil && len(entries) > 0:
		return nil, invalid(fmt.Errorf("%w %s: new image layout: the directory is not empty", ErrOutput, dir))
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w %s: new image layout: %v", ErrOutput, dir, err)
	}
	s, err := layout.Create(dir)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrOutput, dir, err)
	}
	return &Layout{c: c, store: s}, nil
}

// ReadLayout opens the OCI image layout in dir, as written by this tool,
// crane, skopeo or cnab-go. Errors about it wrap layout.ErrInvalidLayout
// and ErrInvalidInput.
func (c *Client) ReadLayout(dir string) (*Layout, error) {
	if dir == "" {
		return nil, invalid(errors.New("fixup: ReadLayout needs a directory"))
	}
	s, err := layout.Open(dir)
	if err != nil {
		return nil, invalid(err)
	}
	return &Layout{c: c, store: s}, nil
}

// Dir returns the layout's directory.
func (l *Layout) Dir() string { return l.store.Dir() }

// Add copies the image ref names from its registry into the layout, with
// its whole content graph and its referrers as the client's options say,
// checking every byte, and names it ref. index.json is written, atomically,
// before Add returns. It returns the root's descriptor.
func (l *Layout) Add(ctx context.Context, ref string) (ocispec.Descriptor, error) {
	n, err := parseRef("reference", ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	j := newJob(Image{Ref: ref, Named: n}, refDigest(n))
	j.target = n
	return l.c.runOne(ctx, l.c.engine(nil, layoutTarget{store: l.store}, nil), j, "adding")
}

// Find returns the descriptor of the image named ref in the layout. ref
// may be the name as written, its normalised full form
// ("docker.io/library/nginx:1.0" for "nginx:1.0"), or a tag alone ("1.0")
// when exactly one image carries that tag; two or more are an error
// (layout.ErrAmbiguous) naming them. An image not there is ErrNotFound.
func (l *Layout) Find(ref string) (ocispec.Descriptor, error) {
	return l.store.Find(ref, "")
}

// Push copies the image (manifest or index) d of the layout, with its
// content graph and the referrers the layout holds for it, to dst (as
// Copy does: under dst's tag, or by digest only) and checks every byte.
func (l *Layout) Push(ctx context.Context, d digest.Digest, dst string) error {
	dn, err := parseRef("destination", dst)
	if err != nil {
		return err
	}
	if err := d.Validate(); err != nil {
		return invalid(fmt.Errorf("%w: digest %q: %v", ErrInvalidImage, d, err))
	}
	if dd := refDigest(dn); dd != "" && dd != d {
		return invalid(fmt.Errorf("%w: pushing %s to %s: the two digests differ", ErrDigestMismatch, d, dst))
	}
	// The layout's own name for the image, for messages and events.
	name := d.String()
	if desc, err := l.store.Find("", d); err == nil && desc.Annotations[ocispec.AnnotationRefName] != "" {
		name = desc.Annotations[ocispec.AnnotationRefName]
	}
	j := newJob(Image{Ref: name}, d)
	j.target = dn
	src := LayoutSource{Store: l.store, Path: l.store.Dir()}
	_, err = l.c.runOne(ctx, l.c.engine(src, l.c.registryTarget(), nil), j, "pushing")
	return err
}
