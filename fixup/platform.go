package fixup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/retry"
	"github.com/cnabio/cnab-relocate/layout"
)

// Annotations buildx puts on the attestation manifests of an index: they
// have the platform unknown/unknown and name the manifest they describe.
const (
	annotationReferenceType   = "vnd.docker.reference.type"
	annotationReferenceDigest = "vnd.docker.reference.digest"
	attestationManifest       = "attestation-manifest"
)

// successorsFunc returns the descriptors a manifest or index references
// (successors is the one that knows the media types).
type successorsFunc func(desc ocispec.Descriptor, data []byte) ([]ocispec.Descriptor, error)

// platformFilter narrows an image's graph to the platforms a client
// selects, as containerd's images.FilterPlatforms narrows a handler's
// children: of every index, the children whose platform matches travel,
// and those without a platform (nested indexes, artifacts); an attestation
// manifest travels with the manifest it describes. A manifest (a
// single-platform image) travels whole whatever its platform. It records
// what went and what stayed, and which indexes lost children (sparse
// indexes: pushed as they are, their other children absent). One filter
// serves one image; it is safe for concurrent use.
type platformFilter struct {
	match platforms.Matcher
	want  []ocispec.Platform
	// absent, when not nil, reports a manifest the source does not have:
	// an index of a sparse archive travels with the manifests it has.
	absent func(ocispec.Descriptor) bool

	mu     sync.Mutex
	kept   []string // platforms copied, formatted, each once, in index order
	left   []string // platforms left at the source
	sparse map[digest.Digest]int
	// children are, by index that lost some, the digests of those it keeps.
	children map[digest.Digest]map[digest.Digest]bool
}

func newPlatformFilter(want []ocispec.Platform) *platformFilter {
	m := platforms.All
	if len(want) > 0 {
		m = platforms.Any(want...)
	}
	return &platformFilter{match: m, want: want, sparse: map[digest.Digest]int{}, children: map[digest.Digest]map[digest.Digest]bool{}}
}

// wrap returns next narrowed by f.
func (f *platformFilter) wrap(next successorsFunc) successorsFunc {
	return func(desc ocispec.Descriptor, data []byte) ([]ocispec.Descriptor, error) {
		children, err := next(desc, data)
		if err != nil || !isIndex(desc.MediaType) {
			return children, err
		}
		return f.filter(desc, children)
	}
}

// filter returns the children of index desc that travel. An index with
// platforms of which none matches is an error naming the ones it has.
func (f *platformFilter) filter(desc ocispec.Descriptor, children []ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	var kept, left []string
	keep := make([]bool, len(children))
	keptDigest := map[digest.Digest]bool{}
	withPlatform := 0
	gone := make([]bool, len(children))
	for i, c := range children {
		if f.absent != nil && isManifest(c.MediaType) && f.absent(c) {
			gone[i] = true
			if c.Platform != nil && !isAttestation(c) {
				left = appendOnce(left, platforms.Format(*c.Platform))
			}
			continue
		}
		if c.Platform == nil || isAttestation(c) {
			continue
		}
		withPlatform++
		p := platforms.Format(*c.Platform)
		if f.match.Match(*c.Platform) {
			keep[i], keptDigest[c.Digest] = true, true
			kept = appendOnce(kept, p)
		} else {
			left = appendOnce(left, p)
		}
	}
	if withPlatform > 0 && len(kept) == 0 {
		return nil, fmt.Errorf("%w: index %s: no manifest for %s; it has %s", ErrNoPlatform, desc.Digest, formatPlatforms(f.want), strings.Join(left, ", "))
	}
	var out []ocispec.Descriptor
	for i, c := range children {
		switch {
		case keep[i] || gone[i]:
		case isAttestation(c):
			keep[i] = keptDigest[digest.Digest(c.Annotations[annotationReferenceDigest])]
		case c.Platform == nil:
			keep[i] = true
		}
		if keep[i] {
			out = append(out, c)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range kept {
		f.kept = appendOnce(f.kept, p)
	}
	for _, p := range left {
		if !slices.Contains(f.kept, p) {
			f.left = appendOnce(f.left, p)
		}
	}
	if n := len(children) - len(out); n > 0 {
		f.sparse[desc.Digest] = n
		set := map[digest.Digest]bool{}
		for _, c := range out {
			set[c.Digest] = true
		}
		f.children[desc.Digest] = set
	}
	return out, nil
}

// missing is how many children of index d are not copied (0: d is whole).
func (f *platformFilter) missing(d digest.Digest) int {
	if f == nil {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sparse[d]
}

// result is the platforms copied and those left at the source (or absent
// from it), for an ImageResult: both empty for a single-platform image,
// and for a whole index copied whole.
func (f *platformFilter) result() (kept, left []string) {
	if f == nil {
		return nil, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.want) == 0 && len(f.sparse) == 0 {
		return nil, nil // every platform, and all of them there
	}
	return slices.Clone(f.kept), slices.Clone(f.left)
}

func isAttestation(d ocispec.Descriptor) bool {
	return d.Annotations[annotationReferenceType] == attestationManifest
}

func appendOnce(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

func formatPlatforms(ps []ocispec.Platform) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = platforms.Format(p)
	}
	return strings.Join(out, ", ")
}

// checkPlatforms refuses a platform without an OS or an architecture,
// naming it.
func checkPlatforms(ps []ocispec.Platform) error {
	for _, p := range ps {
		if p.OS == "" || p.Architecture == "" {
			return invalid(fmt.Errorf("platform %q: want an OS and an architecture (os/arch[/variant])", platforms.Format(p)))
		}
	}
	return nil
}

// sparseErr explains a target registry's refusal of n when n is a sparse
// index of j (its unselected manifests were not copied): the registry
// wants every manifest an index lists (distribution 2.8; distribution v3
// unless validation.manifests.indexes.platforms is list or none;
// go-containerregistry's registry). The refusal is remembered for the
// registry (see refusedSparse). Other errors are returned as they are.
func (e *engine) sparseErr(j *job, n node, err error) error {
	missing := j.platforms.missing(n.desc.Digest)
	if missing == 0 || j.host == "" {
		return err
	}
	re, ok := registryError(j.host, err).(*RegistryError)
	if !ok || !refusesMissingChild(re) {
		return err
	}
	_, left := j.platforms.result()
	serr := &RegistryError{Host: j.host, StatusCode: re.StatusCode, Code: re.Code, Message: re.Message, Err: sparseError{
		fmt.Errorf("the registry %s refuses the sparse index %s (%d of its manifests, for %s, are not copied; it wants every manifest an index lists): %w",
			j.host, n.desc.Digest, missing, strings.Join(left, ", "), re)}}
	e.refused.LoadOrStore(j.host, serr)
	return serr
}

// refusesMissingChild reports whether a registry's refusal of an index
// says a manifest it lists is absent: MANIFEST_BLOB_UNKNOWN (distribution),
// MANIFEST_UNKNOWN (go-containerregistry: "Sub-manifest not found").
func refusesMissingChild(re *RegistryError) bool {
	switch re.Code {
	case "MANIFEST_BLOB_UNKNOWN", "MANIFEST_UNKNOWN":
		return true
	}
	return re.Code == "" && (re.StatusCode == 400 || re.StatusCode == 404)
}

// refusedSparse fails j, planned with graph g, when g has a sparse index
// and j's target registry refused one already, before any of j's content
// moves.
func (e *engine) refusedSparse(j *job, g *graph) error {
	if j.platforms == nil || j.host == "" {
		return nil
	}
	v, ok := e.refused.Load(j.host)
	if !ok {
		return nil
	}
	for _, m := range g.manifests {
		if missing := j.platforms.missing(m.desc.Digest); missing > 0 {
			re := v.(*RegistryError)
			// Its own platforms left, then the refusal it did not try again.
			_, left := j.platforms.result()
			return sideError{ErrTarget, fmt.Errorf("%s: pushing manifest %s: %w", e.dst.describe(j.host), m.desc.Digest, &RegistryError{
				Host: re.Host, StatusCode: re.StatusCode, Code: re.Code, Message: re.Message,
				Err: sparseError{fmt.Errorf("not tried: the index %s is sparse (%d of its manifests, for %s, are not copied), and %w",
					m.desc.Digest, missing, strings.Join(left, ", "), re.Err)}})}
		}
	}
	return nil
}

// sparseError matches ErrSparseIndex and what it wraps.
type sparseError struct{ err error }

func (e sparseError) Error() string   { return e.err.Error() }
func (e sparseError) Unwrap() []error { return []error{ErrSparseIndex, e.err} }

// absentFrom reports the manifests a local source (a layout, an archive)
// does not have: one written with some platforms only holds sparse indexes.
func absentFrom(ctx context.Context, f remotes.Fetcher) func(ocispec.Descriptor) bool {
	return func(d ocispec.Descriptor) bool {
		rc, err := f.Fetch(ctx, d)
		if err != nil {
			// A manifest a delta archive leaves out on purpose is not
			// absent: its base holds it, and checkDelta looks for it.
			return errdefs.IsNotFound(err) && !errors.Is(err, layout.ErrLeftOut)
		}
		rc.Close()
		return false
	}
}

// keptChildren are the digests index d keeps, nil when it lost none.
func (f *platformFilter) keptChildren(d digest.Digest) map[digest.Digest]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.children[d]
}

// PlatformsOf reads the manifests of img's graph from src, never its
// blobs, and returns the platforms of its indexes that
// ClientOptions.Platforms selects and those it leaves (both empty for a
// single-platform image), or ErrNoPlatform. want is the root digest the
// bundle records ("" when none). From a layout or an archive it contacts
// no registry: a dry run of a thick bundle uses it.
func (c *Client) PlatformsOf(ctx context.Context, src Source, img Image, want digest.Digest) (kept, left []string, err error) {
	if src == nil {
		src = newRegistrySource(c.reg)
	}
	root, err := src.Resolve(ctx, img, want)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %s: %w", img.Ref, src.Name(img), err)
	}
	fetch, err := src.Fetcher(ctx, img)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %s: %w", img.Ref, src.Name(img), err)
	}
	f := newPlatformFilter(c.opts.Platforms)
	if host, _ := src.Location(img); host == "" {
		f.absent = absentFrom(ctx, fetch)
	}
	p := retry.Policy{Retries: c.retries, Logger: c.logger}
	if _, err := walkRetries(ctx, fetch, root, p, c.opts.IncludeNonDistributable, f.wrap(successors)); err != nil {
		return nil, nil, fmt.Errorf("%s: %s: %w", img.Ref, src.Name(img), err)
	}
	kept, left = f.result()
	return kept, left, nil
}

// sparseSource explains a manifest of index root that a registry source
// does not have: the index may be sparse there (relocated with some
// platforms only), and only the platforms it has can be copied.
func sparseSource(root ocispec.Descriptor, err error) error {
	if !errdefs.IsNotFound(err) || !isIndex(root.MediaType) {
		return err
	}
	return fmt.Errorf("%w (the index %s lists it: an index relocated with some platforms only is sparse, and only the platforms it has can be copied from it)", err, root.Digest)
}
