package fixup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-to-oci/relocation"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrNotMapped is returned, with ErrInvalidInput, for a relocatable image
// that a source relocation mapping does not say where to find.
var ErrNotMapped = errors.New("not in the source relocation mapping")

// ParseRelocationMapping parses a CNAB relocation mapping (Core 103): a
// JSON object from each image reference as written in a bundle to where
// the image is now, as this tool, duffle, porter and cnab-to-oci write it.
// Errors match ErrInvalidInput.
func ParseRelocationMapping(data []byte) (relocation.ImageRelocationMap, error) {
	var m map[string]string
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, invalid(fmt.Errorf("not a JSON object of strings: %v", err))
	}
	if m == nil {
		return nil, invalid(errors.New("not a JSON object of strings: null"))
	}
	return m, nil
}

// mappedSource reads each image of a bundle where a relocation mapping
// says it is now, from another source: the bundle's references still name
// the images (in events, errors, target names and the new mapping); only
// where the bytes come from changes.
type mappedSource struct {
	base source
	at   map[string]Image // reference as written -> the image where it is now
}

// newMappedSource maps every image of entries through m. An image m does
// not map is an ErrNotMapped; a mapped reference that does not parse an
// ErrInvalidImage.
func newMappedSource(base Source, entries []PlanEntry, m relocation.ImageRelocationMap) (Source, error) {
	s := mappedSource{base: adaptSource(base), at: map[string]Image{}}
	var errs []error
	for _, e := range entries {
		img := e.Image
		loc, ok := m[img.Ref]
		if !ok {
			errs = append(errs, fmt.Errorf("%s (%s): %w", img.Ref, img.Field, ErrNotMapped))
			continue
		}
		n, err := reference.ParseNormalizedNamed(loc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w %s (%s): the source relocation mapping has %q: %v", ErrInvalidImage, img.Ref, img.Field, loc, err))
			continue
		}
		at := img
		at.Ref, at.Named = loc, n
		s.at[img.Ref] = at
	}
	if err := errors.Join(errs...); err != nil {
		return nil, invalid(err)
	}
	return s, nil
}

func (s mappedSource) where(img Image) Image {
	if at, ok := s.at[img.Ref]; ok {
		return at
	}
	return img
}

// Resolve resolves the image where it is now; the digest the bundle
// records (want) must be the one found there (ErrDigestMismatch).
func (s mappedSource) Resolve(ctx context.Context, img Image, want digest.Digest) (ocispec.Descriptor, error) {
	return s.base.Resolve(ctx, s.where(img), want)
}

func (s mappedSource) Fetcher(ctx context.Context, img Image) (Fetcher, error) {
	return s.base.Fetcher(ctx, s.where(img))
}

// Location is where the image is now: blobs mount from there.
func (s mappedSource) Location(img Image) (string, string) { return s.base.Location(s.where(img)) }

// Name names the source and the reference the image is read at.
func (s mappedSource) Name(img Image) string {
	at := s.where(img)
	return s.base.Name(at) + " (at " + at.Ref + ")"
}

// Referrers are looked for where the image is now.
func (s mappedSource) Referrers(ctx context.Context, img Image, subject digest.Digest) ([]Referrer, error) {
	return s.base.Referrers(ctx, s.where(img), subject)
}

// The stream and the delta record are the base's: a mapping says where
// the images are, not how the source is read.
func (s mappedSource) streamed() streamSource { return s.base.streamed() }
func (s mappedSource) delta() *layout.Delta   { return s.base.delta() }
