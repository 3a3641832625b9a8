package fixup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Referrer is an artifact that refers to a manifest: a signature, an SBOM,
// an attestation.
type Referrer struct {
	// Desc is the referrer's manifest (or, for the referrers tag schema, the
	// index listing referrers). ArtifactType is set when known.
	Desc ocispec.Descriptor
	// Tag is the tag it is stored under in the source repository (the tag
	// schema: "sha256-<hex>", cosign's "sha256-<hex>.sig", ".att",
	// ".sbom"), or "" when found through the OCI referrers API.
	Tag string
}

// ReferrerSource is a Source that can find the artifacts referring to a
// manifest of an image. The registries (a nil Source), LayoutSource and
// ArchiveSource are.
type ReferrerSource interface {
	Referrers(ctx context.Context, img Image, subject digest.Digest) ([]Referrer, error)
}

// ReferrerResult is a referrer copied with an image.
type ReferrerResult struct {
	// Subject is the manifest it refers to.
	Subject      digest.Digest `json:"subject"`
	Digest       digest.Digest `json:"digest"`
	MediaType    string        `json:"mediaType"`
	ArtifactType string        `json:"artifactType,omitempty"`
	// Tag is the tag it was copied under ("" when only by digest).
	Tag string `json:"tag,omitempty"`
	// Index is true for a referrers tag schema index (tag sha256-<hex>):
	// it is no artifact, but lists artifacts; each follows it as an entry
	// of its own.
	Index bool `json:"index,omitempty"`
}

// tagSchemaSuffixes are the tags that hold referrers of a subject
// sha256:<hex>, as "sha256-<hex>" + suffix: the OCI referrers tag schema
// (an index of referrers) and cosign's signature, attestation and SBOM tags.
var tagSchemaSuffixes = []string{"", ".sig", ".att", ".sbom"}

// referrerTags returns the tag schema tags of subject.
func referrerTags(subject digest.Digest) []string {
	base := subject.Algorithm().String() + "-" + subject.Encoded()
	tags := make([]string, len(tagSchemaSuffixes))
	for i, s := range tagSchemaSuffixes {
		tags[i] = base + s
	}
	return tags
}

// registryAPI is what registrySource needs of a resolver beyond
// containerd's: resolver.Resolver has it.
type registryAPI interface {
	Tags(ctx context.Context, repo string) ([]string, error)
	Referrers(ctx context.Context, repo string, subject digest.Digest) ([]ocispec.Descriptor, bool, error)
}

// tagCache lists each repository's tags once per run (a failed list is
// asked again by the next image, not kept), and finds out once per
// registry whether it has the referrers API: the first image to ask a
// registry asks alone, the others wait for its answer (and ask for their
// own subjects only when the registry has the API).
type tagCache struct {
	mu     sync.Mutex
	tags   map[string]*tagList
	probes map[string]*apiProbe // registry host -> its first referrers request
}

// apiProbe is the first referrers request to a registry. When it fails,
// the next image asks again.
type apiProbe struct {
	done      chan struct{}
	answered  bool // the registry answered: supported says how
	supported bool
}

// probe returns host's probe, and whether the caller is its first asker,
// who asks and then calls settle; the others wait for its answer.
func (c *tagCache) probe(ctx context.Context, host string) (p *apiProbe, first bool, err error) {
	c.mu.Lock()
	if c.probes == nil {
		c.probes = map[string]*apiProbe{}
	}
	p, asked := c.probes[host]
	if !asked {
		p = &apiProbe{done: make(chan struct{})}
		c.probes[host] = p
	}
	c.mu.Unlock()
	if !asked {
		return p, true, nil
	}
	select {
	case <-p.done:
		return p, false, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// settle records the first asker's answer to p, or forgets p when the
// ask failed, so that the next image asks again.
func (c *tagCache) settle(host string, p *apiProbe, supported bool, err error) {
	if err != nil {
		c.mu.Lock()
		delete(c.probes, host)
		c.mu.Unlock()
	} else {
		p.answered, p.supported = true, supported
	}
	close(p.done)
}

// referrers asks host's referrers API for subject in repo, unless the
// registry is known to lack it (supported false, no request).
func (c *tagCache) referrers(ctx context.Context, api registryAPI, host, repo string, subject digest.Digest) ([]ocispec.Descriptor, bool, error) {
	p, first, err := c.probe(ctx, host)
	if err != nil {
		return nil, false, err
	}
	if !first {
		if p.answered && !p.supported {
			return nil, false, nil
		}
		return api.Referrers(ctx, repo, subject)
	}
	descs, supported, err := api.Referrers(ctx, repo, subject)
	c.settle(host, p, supported, err)
	return descs, supported, err
}

// hasAPI reports whether host has the referrers API, asking it (for
// subject in repo, which must exist there) only when nobody has yet.
func (c *tagCache) hasAPI(ctx context.Context, api registryAPI, host, repo string, subject digest.Digest) (bool, error) {
	for {
		p, first, err := c.probe(ctx, host)
		if err != nil {
			return false, err
		}
		if !first {
			if p.answered {
				return p.supported, nil
			}
			continue // the first ask failed: ask again
		}
		_, supported, err := api.Referrers(ctx, repo, subject)
		c.settle(host, p, supported, err)
		return supported, err
	}
}

// tagList is one repository's tag list: being asked for (done open), or
// answered. A failed ask is not kept (see get).
type tagList struct {
	done chan struct{}
	tags []string
	err  error
}

// get returns repo's tags, listing them once per run: askers that come
// while the list is being asked for wait for that answer, error included.
// A failure is not kept: the next asker asks again, so that one transient
// failure does not hide the referrers of every other image of repo. A
// waiter whose answer is the first asker's cancellation, while its own
// context is live, asks again itself.
func (c *tagCache) get(ctx context.Context, api registryAPI, repo string) ([]string, error) {
	for {
		c.mu.Lock()
		if c.tags == nil {
			c.tags = map[string]*tagList{}
		}
		l, asked := c.tags[repo]
		if !asked {
			l = &tagList{done: make(chan struct{})}
			c.tags[repo] = l
		}
		c.mu.Unlock()
		if !asked {
			l.tags, l.err = api.Tags(ctx, repo)
			if l.err != nil {
				c.mu.Lock()
				delete(c.tags, repo)
				c.mu.Unlock()
			}
			close(l.done)
			return l.tags, l.err
		}
		select {
		case <-l.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if (errors.Is(l.err, context.Canceled) || errors.Is(l.err, context.DeadlineExceeded)) && ctx.Err() == nil {
			continue
		}
		return l.tags, l.err
	}
}

// Referrers finds what refers to subject in img's repository: through the
// OCI referrers API where the registry has it, else through the referrers
// tag schema index, and always through cosign's tags. Tags are listed once
// per repository. A resolver that cannot list tags and referrers (one
// other than resolver.Resolver) searches nothing: the image's result says
// so (ImageResult.ReferrersSearched).
func (s registrySource) Referrers(ctx context.Context, img Image, subject digest.Digest) ([]Referrer, error) {
	api := s.reg
	repo := reference.TrimNamed(img.Named).String()
	var out []Referrer
	var (
		descs     []ocispec.Descriptor
		supported bool
		err       error
	)
	if s.tags == nil {
		descs, supported, err = api.Referrers(ctx, repo, subject)
	} else {
		descs, supported, err = s.tags.referrers(ctx, api, reference.Domain(img.Named), repo, subject)
	}
	if err != nil {
		return nil, fmt.Errorf("listing referrers of %s: %w", subject, err)
	}
	for _, d := range descs {
		out = append(out, Referrer{Desc: d})
	}
	var tags []string
	if s.tags != nil {
		tags, err = s.tags.get(ctx, api, repo)
	} else {
		tags, err = api.Tags(ctx, repo)
	}
	if err != nil {
		return nil, fmt.Errorf("listing tags: %w", err)
	}
	for i, tag := range referrerTags(subject) {
		if i == 0 && supported {
			continue // the API already answered what this index would list
		}
		if !slices.Contains(tags, tag) {
			continue
		}
		desc, err := s.reg.Resolve(ctx, repo+":"+tag)
		if err != nil {
			return nil, fmt.Errorf("resolving referrer tag %s: %w", tag, err)
		}
		// A referrer the API listed that is also under a tag keeps its tag.
		if k := slices.IndexFunc(out, func(r Referrer) bool { return r.Tag == "" && r.Desc.Digest == desc.Digest }); k >= 0 {
			out[k].Tag = tag
			continue
		}
		out = append(out, Referrer{Desc: desc, Tag: tag})
	}
	return out, nil
}

// referrerGraph is a referrer with its content graph, to be copied with an
// image into its target repository.
type referrerGraph struct {
	Referrer
	subject digest.Digest
	graph   *graph
	// artifactType is the referrer's artifactType, else its config's media
	// type, as the referrers API reports it.
	artifactType string
}

// maxReferrerDepth bounds the recursion: a signature of an SBOM of an image
// is depth 2.
const maxReferrerDepth = 4

// ReferrerOptions selects which referrers travel with their images.
type ReferrerOptions struct {
	// Disabled turns referrer copying off.
	Disabled bool
	// Types, when not empty, keeps only referrers whose artifact type (its
	// artifactType, else its config's media type) is one of them. A referrer
	// left out is not searched for referrers of its own.
	Types []string
	// BestEffort reports a referrer that cannot be found or read instead
	// of failing its image.
	BestEffort bool
	// Refresh looks for the referrers of images already in the target too,
	// and copies those it lacks: referrers added at the source since the
	// image was relocated (a signature, an SBOM). It costs, for each such
	// image, the source's tag list (once per repository), a referrers API
	// call per subject where the source has the API, a GET of the root
	// when it is an index, and the reads of the referrers found. By
	// default an image in place is not looked at again (one request).
	Refresh bool
}

// findReferrers walks, from every manifest of g, the referrers src knows,
// recursively, and returns them with their graphs. A referrer reached
// twice is returned once.
func findReferrers(ctx context.Context, src ReferrerSource, img Image, fetch func(ocispec.Descriptor) (*graph, error), g *graph, opts ReferrerOptions) ([]referrerGraph, error) {
	seen := map[digest.Digest]bool{}
	for _, m := range g.manifests {
		seen[m.desc.Digest] = true
	}
	var out []referrerGraph
	var errs []error
	// fail returns err when it ends the walk; with BestEffort it is kept
	// and the walk goes on without what failed.
	fail := func(err error) error {
		if !opts.BestEffort || ctx.Err() != nil {
			return err
		}
		errs = append(errs, err)
		return nil
	}
	queue := make([]digest.Digest, 0, len(g.manifests))
	for _, m := range g.manifests {
		queue = append(queue, m.desc.Digest)
	}
	for depth := 0; depth < maxReferrerDepth && len(queue) > 0; depth++ {
		var next []digest.Digest
		for _, subject := range queue {
			refs, err := src.Referrers(ctx, img, subject)
			if err != nil {
				if err := fail(err); err != nil {
					return out, err
				}
				continue
			}
			for _, r := range refs {
				if seen[r.Desc.Digest] {
					continue
				}
				seen[r.Desc.Digest] = true
				rg, err := fetch(r.Desc)
				if err != nil {
					if err := fail(fmt.Errorf("referrer %s of %s: %w", r.Desc.Digest, subject, err)); err != nil {
						return out, err
					}
					continue
				}
				if len(rg.manifests) == 0 {
					// Left out of a delta archive: in the target since its
					// base was relocated (the engine checks it).
					continue
				}
				top := rg.manifests[len(rg.manifests)-1]
				r.Desc.MediaType = top.desc.MediaType
				r.Desc.Size = top.desc.Size
				at := artifactType(r.Desc, top.data)
				if len(opts.Types) > 0 && !slices.Contains(opts.Types, at) && r.Tag != referrerTags(subject)[0] {
					continue
				}
				out = append(out, referrerGraph{Referrer: r, subject: subject, graph: rg, artifactType: at})
				for _, m := range rg.manifests {
					seen[m.desc.Digest] = true
					next = append(next, m.desc.Digest)
				}
			}
		}
		queue = next
	}
	return out, errors.Join(errs...)
}

// artifactType is what the referrers API should report as a manifest's
// artifact type: its artifactType, else its config's media type. It reads
// the manifest itself (verified against its digest) rather than trusting
// the listing d came from: some registries report the config's type even
// when the manifest has an artifactType. d's type is the fallback for
// bytes that do not parse.
func artifactType(d ocispec.Descriptor, data []byte) string {
	var m struct {
		ArtifactType string             `json:"artifactType"`
		Config       ocispec.Descriptor `json:"config"`
	}
	if json.Unmarshal(data, &m) != nil {
		return d.ArtifactType
	}
	if m.ArtifactType != "" {
		return m.ArtifactType
	}
	if m.Config.MediaType != "" {
		return m.Config.MediaType
	}
	return d.ArtifactType
}

// referrerResults reports what travelled for r: r itself, and, when r is
// a referrers tag schema index (found under sha256-<hex>), the index as
// such and each artifact it lists, with its own artifact type.
func referrerResults(r referrerGraph) []ReferrerResult {
	top := ReferrerResult{Subject: r.subject, Digest: r.Desc.Digest, MediaType: r.Desc.MediaType, ArtifactType: r.artifactType, Tag: r.Tag}
	ms := r.graph.manifests
	if r.Tag != referrerTags(r.subject)[0] || !isIndex(r.Desc.MediaType) || len(ms) == 0 {
		return []ReferrerResult{top}
	}
	top.Index, top.ArtifactType = true, ""
	out := []ReferrerResult{top}
	var idx ocispec.Index
	if json.Unmarshal(ms[len(ms)-1].data, &idx) != nil {
		return out
	}
	for _, d := range idx.Manifests {
		for _, m := range ms[:len(ms)-1] {
			if m.desc.Digest == d.Digest {
				out = append(out, ReferrerResult{Subject: r.subject, Digest: d.Digest, MediaType: m.desc.MediaType, ArtifactType: artifactType(d, m.data)})
				break
			}
		}
	}
	return out
}

// mergeBlobs adds the blobs of the referrer graphs to g, each once.
func mergeBlobs(g *graph, refs []referrerGraph) {
	have := map[digest.Digest]bool{}
	for _, b := range g.blobs {
		have[b.Digest] = true
	}
	for _, r := range refs {
		for _, b := range r.graph.blobs {
			if !have[b.Digest] {
				have[b.Digest] = true
				g.blobs = append(g.blobs, b)
			}
		}
	}
}
