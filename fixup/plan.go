package fixup

import (
	"errors"
	"fmt"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/cnabio/cnab-relocate/relocator"
)

// Plan is what a relocation would do, worked out without any network
// access.
type Plan struct {
	// Entries has one entry per distinct relocatable reference, in bundle
	// order.
	Entries []PlanEntry
	// Skipped lists the images left alone because of their imageType.
	Skipped []Image
}

// PlanEntry is one image to relocate.
type PlanEntry struct {
	Image Image
	// Digest is the root digest the bundle records ("" when it records none).
	Digest digest.Digest
	// Target is the relocated reference; nil when it depends on a digest
	// that only the registry knows (many-to-one without a recorded digest).
	Target reference.Named
}

// NewPlan maps every relocatable image of b. It fails, with ErrInvalidInput,
// when an image's digest is invalid or when two source repositories would
// share a target repository.
func NewPlan(b *Bundle, m *relocator.Mapping) (*Plan, error) {
	if m == nil {
		return nil, invalid(errors.New("fixup: NewPlan needs a mapping"))
	}
	images, skipped, err := distinctImages(b)
	if err != nil {
		return nil, err
	}
	p := &Plan{Skipped: skipped}
	srcs := make([]reference.Named, 0, len(images))
	for _, e := range images {
		if e.Digest != "" || m.Kind() != relocator.ManyToOne {
			t, err := m.Map(e.Image.Named, e.Digest)
			if err != nil {
				return nil, invalid(fmt.Errorf("%s (%s): %w", e.Image.Ref, e.Image.Field, err))
			}
			e.Target = t
		}
		p.Entries = append(p.Entries, e)
		srcs = append(srcs, e.Image.Named)
	}
	if err := m.Check(srcs); err != nil {
		return nil, invalid(err)
	}
	return p, nil
}

// distinctImages returns the relocatable images of b, one per reference as
// written, in bundle order, each with the digest the bundle records, and
// the images left alone because of their type. An invalid contentDigest is
// an error naming the image.
func distinctImages(b *Bundle) (images []PlanEntry, skipped []Image, err error) {
	if b == nil {
		return nil, nil, invalid(fmt.Errorf("%w: no bundle (nil)", ErrInvalidBundle))
	}
	seen := map[string]bool{}
	for _, img := range b.Images {
		if !img.Relocatable() {
			skipped = append(skipped, img)
			continue
		}
		if seen[img.Ref] {
			continue
		}
		seen[img.Ref] = true
		d, err := img.Digest()
		if err != nil {
			return nil, nil, err
		}
		images = append(images, PlanEntry{Image: img, Digest: d})
	}
	return images, skipped, nil
}

// Mapping returns the relocation mapping the plan knows without network
// access: every entry whose target does not wait on a digest.
func (p *Plan) Mapping() map[string]string {
	out := map[string]string{}
	for _, e := range p.Entries {
		if e.Target != nil {
			out[e.Image.Ref] = e.Target.String()
		}
	}
	return out
}
