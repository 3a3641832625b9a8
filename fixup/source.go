package fixup

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/remotes"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Source is where images' content comes from: registries (thin bundles) or
// an OCI image layout (thick bundles).
type Source interface {
	// Resolve returns the root descriptor (manifest or index) of img. want
	// is the digest the bundle records, or "" when it records none; a
	// source that finds a different digest returns ErrDigestMismatch.
	Resolve(ctx context.Context, img Image, want digest.Digest) (ocispec.Descriptor, error)
	// Fetcher returns a fetcher for img's content.
	Fetcher(ctx context.Context, img Image) (remotes.Fetcher, error)
	// Location returns the registry host and repository path that img's
	// blobs can be mounted from, or "", "" when it is not in a registry.
	Location(img Image) (host, repo string)
	// Name describes the source in errors: a registry host or a file path.
	Name(img Image) string
}

// RegistrySource reads images from the registries their references name.
// The zero value of its unexported fields works; NewRegistrySource adds a
// cache so each repository's tags are listed once.
type RegistrySource struct {
	Resolver remotes.Resolver

	tags *tagCache
}

// NewRegistrySource returns a RegistrySource that lists each repository's
// tags (for referrers) once.
func NewRegistrySource(r remotes.Resolver) RegistrySource {
	return RegistrySource{Resolver: r, tags: &tagCache{}}
}

// Resolve resolves img's digest when its reference has one, else its tag
// (so that a tag that moved away from the bundle's digest is caught), else
// the bundle's digest, else "latest".
func (s RegistrySource) Resolve(ctx context.Context, img Image, want digest.Digest) (ocispec.Descriptor, error) {
	name := reference.TrimNamed(img.Named).String()
	var ref string
	switch r := img.Named.(type) {
	case reference.Canonical:
		ref = name + "@" + r.Digest().String()
	case reference.Tagged:
		ref = name + ":" + r.Tag()
	default:
		if want != "" {
			ref = name + "@" + want.String()
		} else {
			ref = reference.TagNameOnly(img.Named).String()
		}
	}
	_, desc, err := s.Resolver.Resolve(ctx, ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if want != "" && desc.Digest != want {
		return ocispec.Descriptor{}, fmt.Errorf("%w: %s resolves to %s but the bundle records %s", ErrDigestMismatch, ref, desc.Digest, want)
	}
	return desc, nil
}

// Fetcher returns the resolver's fetcher for img's repository.
func (s RegistrySource) Fetcher(ctx context.Context, img Image) (remotes.Fetcher, error) {
	return s.Resolver.Fetcher(ctx, reference.TrimNamed(img.Named).String())
}

// Location returns img's registry host and repository path.
func (s RegistrySource) Location(img Image) (string, string) {
	return reference.Domain(img.Named), reference.Path(img.Named)
}

// Name returns the registry host of img.
func (s RegistrySource) Name(img Image) string {
	return "source registry " + reference.Domain(img.Named)
}
