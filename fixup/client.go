package fixup

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/retry"
	"github.com/cnabio/cnab-relocate/resolver"
	"github.com/cnabio/cnab-to-oci/relocation"
)

// Client copies images between registries and OCI image layouts, one
// image at a time (Copy, Layout.Add, Layout.Push) or a bundle's at once
// (Relocate, Export): every method is a run of the same engine. A Client
// is safe for concurrent use.
type Client struct {
	opts    ClientOptions
	reg     registry // every request to a registry (see registry)
	jobs    int
	retries int
	logger  *slog.Logger
}

// NewClient returns a client configured by opts (see ClientOptions: the
// zero value works). It reads the docker CLI configuration when it makes
// the resolver, so errors in it surface here, naming the file. It makes
// no request.
func NewClient(opts ClientOptions) (*Client, error) {
	c := &Client{opts: opts, jobs: opts.Jobs, retries: retry.Count(opts.Retries), logger: opts.Logger}
	if c.jobs <= 0 {
		c.jobs = DefaultJobs
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if err := checkPlatforms(opts.Platforms); err != nil {
		return nil, err
	}
	if opts.PlatformIndex != KeepIndex && opts.PlatformIndex != RewriteIndex {
		return nil, invalid(fmt.Errorf("PlatformIndex %q: want KeepIndex or RewriteIndex", opts.PlatformIndex))
	}
	r := opts.Resolver
	if r == nil {
		ro := opts.ResolverOptions
		if ro.Retries == nil {
			ro.Retries = opts.Retries
		}
		if ro.Logger == nil {
			ro.Logger = c.logger
		}
		rr, err := resolver.New(ro)
		if err != nil {
			return nil, invalid(err)
		}
		r = rr
	}
	c.reg = newRegistry(r)
	return c, nil
}

// source is src (nil: the registries, through the client's resolver),
// reading each image of entries where m says it is when m is not nil.
func (c *Client) source(src Source, entries []PlanEntry, m relocation.ImageRelocationMap) (Source, error) {
	if src == nil {
		src = newRegistrySource(c.reg)
	}
	if m == nil {
		return src, nil
	}
	return newMappedSource(src, entries, m)
}

func (c *Client) registryTarget() target {
	return registryTarget{reg: c.reg, probes: &tagCache{}}
}

// parseRef parses a reference given to a Client method; what names the
// argument in the error.
func parseRef(what, ref string) (reference.Named, error) {
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, invalid(fmt.Errorf("%w: %s %q: %v", ErrInvalidImage, what, ref, err))
	}
	return n, nil
}

// refDigest is the digest in a reference, or "".
func refDigest(n reference.Named) digest.Digest {
	if c, ok := n.(reference.Canonical); ok {
		return c.Digest()
	}
	return ""
}

// Digest returns the digest of the manifest or index ref names in its
// registry: its digest if it has one (checked to be there), else its tag's
// ("latest" when it has none).
func (c *Client) Digest(ctx context.Context, ref string) (digest.Digest, error) {
	n, err := parseRef("reference", ref)
	if err != nil {
		return "", err
	}
	img := Image{Ref: ref, Named: n}
	src := newRegistrySource(c.reg)
	desc, err := src.Resolve(withoutLogs(ctx), img, "")
	if err != nil {
		return "", sideError{ErrSource, fmt.Errorf("%s: resolving %s: %w", src.Name(img), ref, registryError(reference.Domain(n), err))}
	}
	return desc.Digest, nil
}

// Copy copies the image src names, with its whole content graph (every
// platform of an index, or those ClientOptions.Platforms selects) and its referrers as ClientOptions.Referrers says,
// to dst, digests preserved, and returns the root's descriptor. Blobs
// already in dst's repository are not sent again; when src and dst share
// a registry, blobs are mounted instead of uploaded. dst gets src's root
// under its tag; a dst without tag or digest gets it by digest only. A
// digest in dst (or src) is the root digest the copy must have: another
// one is an ErrDigestMismatch.
func (c *Client) Copy(ctx context.Context, src, dst string) (ocispec.Descriptor, error) {
	sn, err := parseRef("source", src)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	dn, err := parseRef("destination", dst)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	want := refDigest(sn)
	if d := refDigest(dn); d != "" {
		if want != "" && want != d {
			return ocispec.Descriptor{}, invalid(fmt.Errorf("%w: copying %s to %s: the two digests differ", ErrDigestMismatch, src, dst))
		}
		want = d
	}
	j := newJob(Image{Ref: src, Named: sn}, want)
	j.target = dn
	return c.runOne(ctx, c.engine(nil, c.registryTarget(), nil), j, "copying")
}

// runOne runs e for the one job j and returns its root descriptor.
func (c *Client) runOne(ctx context.Context, e *engine, j *job, wrap string) (ocispec.Descriptor, error) {
	if err := e.run(ctx, []*job{j}); err != nil {
		return ocispec.Descriptor{}, err
	}
	if r := j.result(e.dst, wrap); r.Err != nil {
		return ocispec.Descriptor{}, r.Err
	}
	return j.root, nil
}
