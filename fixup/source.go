package fixup

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/containerd/containerd/remotes"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-relocate/resolver"
)

// Fetcher reads content by its descriptor. Its method is containerd's
// remotes.Fetcher's: a containerd fetcher is one.
type Fetcher interface {
	// Fetch returns a reader of the content desc describes; the engine
	// checks it against desc's size and digest as it reads.
	Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
}

// Source is where images' content comes from: registries (thin bundles,
// a nil Source), an OCI image layout (LayoutSource) or a thick bundle
// archive (ArchiveSource). A caller's own Source is read in any order, and
// its referrers are copied when it is also a ReferrerSource.
type Source interface {
	// Resolve returns the root descriptor (manifest or index) of img. want
	// is the digest the bundle records, or "" when it records none; a
	// source that finds a different digest returns ErrDigestMismatch.
	Resolve(ctx context.Context, img Image, want digest.Digest) (ocispec.Descriptor, error)
	// Fetcher returns a fetcher for img's content: its manifests and
	// blobs, by descriptor.
	Fetcher(ctx context.Context, img Image) (Fetcher, error)
	// Location returns the registry host and repository path that img's
	// blobs can be mounted from, or "", "" when it is not in a registry.
	Location(img Image) (host, repo string)
	// Name describes the source in errors: a registry host or a file path.
	Name(img Image) string
}

// source is what the engine reads from: a Source adapted once, at the
// door (adaptSource), with every capability the engine may use spelled
// out, so that nothing downstream asks what it holds. The sources of this
// package implement it; a caller's own Source is wrapped (foreignSource).
type source interface {
	Source
	// Referrers finds the artifacts referring to subject, or returns
	// errNoReferrerListing when the source cannot list them.
	ReferrerSource
	// streamed is the source as a stream when its blobs can only be read
	// in its own order, a pass at a time (a thick archive); else nil.
	streamed() streamSource
	// delta is the record of what a delta archive leaves out; nil when
	// nothing is.
	delta() *layout.Delta
}

// adaptSource is src as the engine reads it: the one place that looks at
// what a Source is. A caller's own Source is read in any order, and lists
// referrers when it is a ReferrerSource.
func adaptSource(src Source) source {
	if s, ok := src.(source); ok {
		return s
	}
	f := foreignSource{Source: src}
	f.refs, _ = src.(ReferrerSource)
	return f
}

// foreignSource is a caller's own Source.
type foreignSource struct {
	Source
	refs ReferrerSource // nil: it lists none
}

func (s foreignSource) Referrers(ctx context.Context, img Image, subject digest.Digest) ([]Referrer, error) {
	if s.refs == nil {
		return nil, errNoReferrerListing
	}
	return s.refs.Referrers(ctx, img, subject)
}

func (foreignSource) streamed() streamSource { return nil }
func (foreignSource) delta() *layout.Delta   { return nil }

// registrySource reads images from the registries their references name,
// through the client's registry (a nil Source): made by newRegistrySource,
// it lists each repository's tags once and, when the bundle records an
// image's digest, resolves its root and reads it in one request.
type registrySource struct {
	reg registry

	tags *tagCache
	// roots holds the roots Resolve read, "repo@digest" -> bytes, until
	// the fetcher of their image hands them over once.
	roots *sync.Map
}

// newRegistrySource returns a registrySource that lists each repository's
// tags (for referrers) once.
func newRegistrySource(r registry) registrySource {
	return registrySource{reg: r, tags: &tagCache{}, roots: &sync.Map{}}
}

// Resolve resolves img's digest when its reference has one, else its tag,
// "latest" when it has neither, as docker reads it (so that a tag that
// moved away from the bundle's digest is caught). When the bundle records the digest
// (want), the engine asks the source only once the target lacks the image,
// and reads the root next: Resolve reads it in the same GET. Without it,
// Resolve asks with a HEAD, so that a rerun that finds the image in place
// costs no manifest GET (registries such as Docker Hub count those as
// pulls, not HEADs).
func (s registrySource) Resolve(ctx context.Context, img Image, want digest.Digest) (ocispec.Descriptor, error) {
	name := reference.TrimNamed(img.Named).String()
	var ref string
	switch r := img.Named.(type) {
	case reference.Canonical:
		ref = r.Digest().String()
	case reference.Tagged:
		ref = r.Tag()
	default:
		ref = "latest" // as reference.TagNameOnly has it
	}
	at := ":"
	if strings.Contains(ref, ":") {
		at = "@"
	}
	var (
		desc ocispec.Descriptor
		err  error
	)
	if s.roots != nil && want != "" {
		var data []byte
		desc, data, err = s.reg.Manifest(ctx, name, ref)
		if err == nil && want != "" && want.Algorithm() != desc.Digest.Algorithm() && want.Algorithm().Available() {
			desc.Digest = want.Algorithm().FromBytes(data)
		}
		if err == nil && (want == "" || desc.Digest == want) {
			s.roots.Store(name+"@"+desc.Digest.String(), data)
		}
	} else {
		desc, err = s.reg.Resolve(ctx, name+at+ref)
	}
	if err != nil {
		return ocispec.Descriptor{}, resolver.TypedError(err)
	}
	if want != "" && desc.Digest != want {
		return ocispec.Descriptor{}, fmt.Errorf("%w: %s resolves to %s but the bundle records %s", ErrDigestMismatch, name+at+ref, desc.Digest, want)
	}
	return desc, nil
}

// Fetcher returns the resolver's fetcher for img's repository; the root
// Resolve read comes from memory, once.
func (s registrySource) Fetcher(ctx context.Context, img Image) (Fetcher, error) {
	name := reference.TrimNamed(img.Named).String()
	f, err := s.reg.Fetcher(ctx, name)
	if err != nil {
		return f, err
	}
	return primedFetcher{Fetcher: f, roots: s.roots, repo: name}, nil
}

// primedFetcher hands over the roots Resolve read, once each, and fetches
// everything else; a registry's answer in its errors is typed (see
// resolver.TypedError): containerd's fetcher reports it as text.
type primedFetcher struct {
	remotes.Fetcher
	roots *sync.Map
	repo  string
}

func (f primedFetcher) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if f.roots != nil {
		if data, ok := f.roots.LoadAndDelete(f.repo + "@" + desc.Digest.String()); ok {
			return io.NopCloser(bytes.NewReader(data.([]byte))), nil
		}
	}
	rc, err := f.Fetcher.Fetch(ctx, desc)
	return rc, resolver.TypedError(err)
}

func (registrySource) streamed() streamSource { return nil }
func (registrySource) delta() *layout.Delta   { return nil }

// Location returns img's registry host and repository path.
func (s registrySource) Location(img Image) (string, string) {
	return reference.Domain(img.Named), reference.Path(img.Named)
}

// Name returns the registry host of img.
func (s registrySource) Name(img Image) string {
	return "source registry " + reference.Domain(img.Named)
}
