package fixup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/containerd/containerd/remotes"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/layout"
)

// indexed is an image layout seen through its index: a directory
// (layout.Store) or a thick bundle archive read as a stream
// (layout.Archive).
type indexed interface {
	remotes.Fetcher
	Find(ref string, dgst digest.Digest) (ocispec.Descriptor, error)
	Index() ocispec.Index
}

// resolveIn finds img in l: by the digest the bundle records (want), else
// by the digest in img's reference, else by the name the layout gives it
// (see layout.Store.Find: the reference as written, its normalised form,
// or its tag alone). An image found by name whose digest is not the one
// the bundle records is an ErrDigestMismatch; an image not there wraps
// ErrNotFound.
func resolveIn(l indexed, img Image, want digest.Digest) (ocispec.Descriptor, error) {
	d := want
	if d == "" {
		if c, ok := img.Named.(reference.Canonical); ok {
			d = c.Digest()
		}
	}
	desc, err := l.Find(img.Ref, d)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if d != "" && desc.Digest != d {
		return ocispec.Descriptor{}, fmt.Errorf("%w: %s is %s in the layout but the bundle records %s", ErrDigestMismatch, img.Ref, desc.Digest, d)
	}
	return ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}, nil
}

// subjectAnnotation marks, in a thick bundle's layout, a referrer found
// through the referrers API (it has no tag): its value is the subject's
// digest.
const subjectAnnotation = "io.cnab.relocate.referrer.subject"

// referrersIn finds the referrers of subject in a layout's index: entries
// whose ref.name carries a tag schema tag of subject, and entries export
// marked with the subject annotation.
func referrersIn(idx ocispec.Index, subject digest.Digest) []Referrer {
	tags := referrerTags(subject)
	var out []Referrer
	for _, e := range idx.Manifests {
		d := e
		d.Annotations = nil
		if e.Annotations[subjectAnnotation] == subject.String() {
			out = append(out, Referrer{Desc: d})
			continue
		}
		tag := e.Annotations[ocispec.AnnotationRefName]
		if i := strings.LastIndex(tag, ":"); i >= 0 {
			tag = tag[i+1:]
		}
		if slices.Contains(tags, tag) {
			out = append(out, Referrer{Desc: d, Tag: tag})
		}
	}
	return out
}

// noLayout is the error for an archive without images.
func noLayout(img Image) error {
	return fmt.Errorf("image %s: the archive has no %s: %w", img.Ref, layout.LayoutPath, layout.ErrNotFound)
}

// LayoutSource reads images from an OCI image layout in a directory.
type LayoutSource struct {
	// Store is the image layout. A nil Store has no images.
	Store *layout.Store
	// Path names the layout in messages: its directory, or the archive it
	// came from.
	Path string
}

// Resolve finds img in the layout: by the digest the bundle records
// (want), else by the digest in img's reference, else by the name the
// layout gives it (the reference as written, its normalised form, or its
// tag alone: see layout.Store.Find). One found by name with another digest
// than want is an ErrDigestMismatch; one not there wraps ErrNotFound.
func (s LayoutSource) Resolve(ctx context.Context, img Image, want digest.Digest) (ocispec.Descriptor, error) {
	if s.Store == nil {
		return ocispec.Descriptor{}, noLayout(img)
	}
	return resolveIn(s.Store, img, want)
}

// Fetcher returns the layout. Content that does not match its descriptor
// fails with ErrDigestMismatch.
func (s LayoutSource) Fetcher(ctx context.Context, img Image) (Fetcher, error) {
	if s.Store == nil {
		return nil, noLayout(img)
	}
	return s.Store, nil
}

// Location returns "", "": a layout's blobs cannot be mounted.
func (s LayoutSource) Location(Image) (string, string) { return "", "" }

func (LayoutSource) streamed() streamSource { return nil }
func (LayoutSource) delta() *layout.Delta   { return nil }

// Name returns "image layout " and its directory, or "thick bundle " and
// the archive's path when Path is not the layout's directory.
func (s LayoutSource) Name(Image) string {
	if s.Store != nil && s.Path == s.Store.Dir() {
		return "image layout " + s.Path
	}
	return "thick bundle " + s.Path
}

// Referrers finds the referrers of subject in the layout: the entries of
// index.json whose ref.name carries one of subject's tag schema tags, and
// those export marked as referring to it (found through a referrers API:
// they have no tag).
func (s LayoutSource) Referrers(ctx context.Context, img Image, subject digest.Digest) ([]Referrer, error) {
	if s.Store == nil {
		return nil, nil
	}
	return referrersIn(s.Store.Index(), subject), nil
}

// ArchiveSource reads images from a thick bundle archive as a stream (see
// layout.Archive), never extracting it: manifests come from the archive's
// first pass; the engine reads the blobs in later passes, in the archive's
// order, several uploads in flight, each blob checked against its digest
// as it streams. Pass it as it is: a Source of the caller's that wraps it
// is read in any order, as every other Source is, and its Fetcher serves
// only manifests (a blob is an error matching layout.ErrStreamOnly).
type ArchiveSource struct {
	Archive *layout.Archive
}

// Resolve finds img in the archive's layout, as LayoutSource.Resolve does.
func (s ArchiveSource) Resolve(ctx context.Context, img Image, want digest.Digest) (ocispec.Descriptor, error) {
	if !s.Archive.HasLayout() {
		return ocispec.Descriptor{}, noLayout(img)
	}
	return resolveIn(s.Archive, img, want)
}

// Fetcher returns the archive: it serves manifests and indexes.
func (s ArchiveSource) Fetcher(ctx context.Context, img Image) (Fetcher, error) {
	if !s.Archive.HasLayout() {
		return nil, noLayout(img)
	}
	return s.Archive, nil
}

func (s ArchiveSource) streamed() streamSource { return s }

// Location returns "", "": an archive's blobs cannot be mounted.
func (s ArchiveSource) Location(Image) (string, string) { return "", "" }

// Name returns "thick bundle " and the archive's path.
func (s ArchiveSource) Name(Image) string { return "thick bundle " + s.Archive.Path }

// Referrers finds the referrers of subject in the archive's layout, as
// LayoutSource.Referrers does.
func (s ArchiveSource) Referrers(ctx context.Context, img Image, subject digest.Digest) ([]Referrer, error) {
	return referrersIn(s.Archive.Index(), subject), nil
}

func (s ArchiveSource) has(d digest.Digest) bool { return s.Archive.Has(d) }

func (s ArchiveSource) rereads(want func(digest.Digest) bool) string {
	if why := s.Archive.Rereads(want); why != "" {
		return fmt.Sprintf("archive %s: metadata not at the front (%s): reading it twice", s.Archive.Path, why)
	}
	return ""
}

func (s ArchiveSource) stream(ctx context.Context, want func(digest.Digest) bool, fn func(digest.Digest, io.Reader) error) error {
	return s.Archive.Stream(ctx, want, fn)
}

// LoadArchive reads the thick bundle archive at path as far as its
// metadata (see layout.OpenArchive: it is never extracted) and parses its
// bundle.json. Errors about the archive or the bundle match
// ErrInvalidInput and name path. The source for Relocate or Export is
// ArchiveSource{Archive: a}; a.RelocationMapping, when not nil, says where
// the images were when they were put in the layout (as porter writes it).
// The caller must Close a.
func LoadArchive(ctx context.Context, path string) (*Bundle, *layout.Archive, error) {
	a, err := layout.OpenArchive(ctx, path)
	if err != nil {
		if errors.Is(err, layout.ErrInvalidArchive) {
			return nil, nil, invalid(fmt.Errorf("%w: %w", ErrInvalidBundle, err))
		}
		return nil, nil, err
	}
	b, err := Parse(a.BundleJSON)
	if err != nil {
		a.Close()
		return nil, nil, invalid(fmt.Errorf("%s: %s: %w", path, layout.BundleFile, err))
	}
	b.path = path
	return b, a, nil
}
