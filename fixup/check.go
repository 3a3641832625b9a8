package fixup

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// ErrNotRelocated is returned by Verify when an image is missing from its
// target or has another digest there.
var ErrNotRelocated = errors.New("not relocated")

// VerifyOptions configures the package-level Verify: the options of the
// client that checks (of them, Verify reads Resolver or ResolverOptions,
// Retries, Logger, and Jobs, the bound on concurrent checks). The zero
// value works.
type VerifyOptions struct {
	ClientOptions
}

// Check is the verdict for one image.
type Check struct {
	Source string        `json:"source"`
	Target string        `json:"target"`
	Want   digest.Digest `json:"want,omitempty"`
	Got    digest.Digest `json:"got,omitempty"`
	// OK is true when the target has the image with the recorded digest
	// (or, when the bundle records none, when the target has it at all).
	OK  bool  `json:"ok"`
	Err error `json:"-"`
}

// Verify checks, with HEAD requests only, that every relocatable image of b
// is at the target mapping gives (or, with a nil mapping, at the reference
// the bundle itself holds, as in a relocated bundle) with the digest the
// bundle records. It returns one Check per distinct reference, and an
// error wrapping ErrNotRelocated naming each image that is not in place.
// It is NewClient(opts.ClientOptions), then Client.Verify.
func Verify(ctx context.Context, b *Bundle, mapping map[string]string, opts VerifyOptions) ([]Check, error) {
	c, err := NewClient(opts.ClientOptions)
	if err != nil {
		return nil, err
	}
	return c.Verify(ctx, b, mapping)
}

// Verify checks that every relocatable image of b is in place, as the
// package-level Verify does, with this client's resolver, at most
// ClientOptions.Jobs checks at once.
func (c *Client) Verify(ctx context.Context, b *Bundle, mapping map[string]string) ([]Check, error) {
	ctx = withoutLogs(ctx)
	images, _, err := distinctImages(b)
	if err != nil {
		return nil, err
	}
	var checks []*Check
	for _, e := range images {
		img, want := e.Image, e.Digest
		ck := &Check{Source: img.Ref, Target: img.Ref, Want: want}
		if mapping != nil {
			t, ok := mapping[img.Ref]
			if !ok {
				ck.Err = fmt.Errorf("%w: %s: not in the relocation mapping", ErrNotRelocated, img.Ref)
				checks = append(checks, ck)
				continue
			}
			ck.Target = t
		}
		checks = append(checks, ck)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.jobs)
	for _, ck := range checks {
		if ck.Err != nil {
			continue
		}
		g.Go(func() error {
			ck.Got, ck.Err = headTarget(gctx, c.reg, ck.Target, ck.Want)
			if ck.Err == nil {
				ck.OK = true
			}
			return nil
		})
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]Check, len(checks))
	var errs []error
	for i, ck := range checks {
		out[i] = *ck
		if ck.Err != nil {
			errs = append(errs, ck.Err)
		}
	}
	return out, errors.Join(errs...)
}

// headTarget resolves target (one HEAD of its manifest) and compares its
// digest with want.
func headTarget(ctx context.Context, r registry, target string, want digest.Digest) (digest.Digest, error) {
	named, err := reference.ParseNormalizedNamed(target)
	if err != nil {
		return "", invalid(fmt.Errorf("relocated reference %q: %v", target, err))
	}
	// By its digest when it has one, else by its tag: "latest" when it has
	// neither, as docker reads it and as fixup pushes it.
	ref := reference.TagNameOnly(named).String()
	if c, ok := named.(reference.Canonical); ok {
		ref = reference.TrimNamed(named).String() + "@" + c.Digest().String()
		if want == "" {
			want = c.Digest()
		}
	}
	desc, err := r.Resolve(ctx, ref)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return "", fmt.Errorf("%w: %s: missing from the target", ErrNotRelocated, target)
		}
		return "", sideError{ErrTarget, fmt.Errorf("target registry %s: checking %s: %w", reference.Domain(named), target, registryError(reference.Domain(named), err))}
	}
	if want != "" && desc.Digest != want {
		return desc.Digest, fmt.Errorf("%w: %s: target has %s, the bundle records %s", ErrNotRelocated, target, desc.Digest, want)
	}
	return desc.Digest, nil
}
