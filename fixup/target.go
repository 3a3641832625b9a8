package fixup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/containerd/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/readerr"
	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-relocate/resolver"
)

// target is where the engine puts content: registries, or an OCI image
// layout. The engine decides what goes where and in which order, retries
// and verifies; a target only stores.
type target interface {
	// locate returns the namespace the content of an image relocated to t
	// goes to: a registry host and repository path; "", "" for a layout,
	// which has one namespace.
	locate(t reference.Named) (host, repo string)
	// describe names the target at host in messages.
	describe(host string) string
	// display is d as events and results show it ("" when it is only
	// the layout).
	display(d dest) string
	// lookup returns the root descriptor d's name points at, its tag
	// (dest.tag) if it has one, else the digest dg; an error matching
	// ErrNotFound when there is none.
	lookup(ctx context.Context, d dest, dg digest.Digest) (ocispec.Descriptor, error)
	// hasBlob reports whether host/repo holds blob desc.
	hasBlob(ctx context.Context, host, repo string, desc ocispec.Descriptor) (bool, error)
	// putBlob stores desc in host/repo: mounted from one of mountFrom
	// (repositories of the same host) where it can, else read from open.
	// It says how: copied, mounted or already there. report gets the
	// bytes uploaded as they go. Errors from open and its reader are
	// returned as they are.
	putBlob(ctx context.Context, host, repo string, desc ocispec.Descriptor, mountFrom []string, open func(context.Context) (io.ReadCloser, error), report func(int64)) (EventKind, error)
	// putManifest stores manifest n, byte for byte, in d's repository
	// under tag when tag is not "", or under d's name (dest.tag, else by
	// digest) when root is true. It reports false when it found it there
	// already (a caller's containerd resolver asks first; this module's
	// does not, and reports true).
	putManifest(ctx context.Context, d dest, n node, tag string, root bool) (bool, error)
	// hasManifest reports whether d's repository holds manifest m under
	// tag, or by its digest when tag is "".
	hasManifest(ctx context.Context, d dest, tag string, m ocispec.Descriptor) (bool, error)
	// referrersAPI reports whether the target finds referrers by their
	// subject itself (the OCI referrers API), so that no referrers tag
	// schema index is to be written or copied there. subject is a manifest
	// already in d's repository.
	referrersAPI(ctx context.Context, d dest, subject digest.Digest) (bool, error)
	// referrerIndexes makes refs, referrers found without a tag (through
	// a referrers API), findable in a target without the referrers API,
	// and returns the tag schema indexes the engine must push for that.
	referrerIndexes(ctx context.Context, d dest, refs []untaggedReferrer) ([]taggedNode, error)
	// finish completes the run (a layout writes its index.json).
	finish(ctx context.Context) error
}

// dest is where one image goes, in the plain values a target needs.
type dest struct {
	ref  string          // the image's reference as written (a layout names its root by it)
	name reference.Named // the relocated reference, or the image's name in a layout
	tag  string          // the tag its root goes under; "" for by digest only
}

// untaggedReferrer is a referrer found without a tag, with its subject.
type untaggedReferrer struct {
	subject digest.Digest
	desc    ocispec.Descriptor // as the source lists it
	// artifactType is its artifactType, else its config's media type, as
	// the referrers API reports it.
	artifactType string
}

// taggedNode is a manifest to push under a tag.
type taggedNode struct {
	tag string
	n   node
}

// registryTarget puts content into registries, through the client's
// registry.
type registryTarget struct {
	reg registry
	// probes remembers, per target registry, whether it has the referrers
	// API (see referrersAPI). Nil asks each time.
	probes *tagCache
}

func (t registryTarget) locate(n reference.Named) (string, string) {
	return reference.Domain(n), reference.Path(n)
}

func (t registryTarget) describe(host string) string { return "target registry " + host }

func (t registryTarget) display(d dest) string { return d.name.String() }

func (t registryTarget) lookup(ctx context.Context, d dest, dg digest.Digest) (ocispec.Descriptor, error) {
	ref := reference.TrimNamed(d.name).String() + "@" + dg.String()
	if d.tag != "" {
		ref = reference.TrimNamed(d.name).String() + ":" + d.tag
	}
	return t.reg.Resolve(ctx, ref)
}

func (t registryTarget) hasManifest(ctx context.Context, d dest, tag string, m ocispec.Descriptor) (bool, error) {
	ref := reference.TrimNamed(d.name).String() + "@" + m.Digest.String()
	if tag != "" {
		ref = reference.TrimNamed(d.name).String() + ":" + tag
	}
	desc, err := t.reg.Resolve(ctx, ref)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil && desc.Digest == m.Digest, err
}

// putBlob mounts the blob (from one of mountFrom, or finds it in repo),
// else uploads it, as the registry does it (see registry.PushBlob).
func (t registryTarget) putBlob(ctx context.Context, host, repo string, desc ocispec.Descriptor, mountFrom []string, open func(context.Context) (io.ReadCloser, error), report func(int64)) (EventKind, error) {
	var pr *progressReader
	how, err := t.reg.PushBlob(ctx, host+"/"+repo, desc, mountFrom, func(ctx context.Context) (io.ReadCloser, error) {
		rc, err := open(ctx)
		if err != nil {
			return nil, err
		}
		pr = &progressReader{ReadCloser: rc, progress: progress{flush: report}}
		return pr, nil
	})
	if err != nil {
		return "", err
	}
	switch how {
	case resolver.BlobMounted:
		return BlobMounted, nil
	case resolver.BlobExisted:
		return BlobSkipped, nil
	}
	pr.done()
	return BlobCopied, nil
}

func (t registryTarget) putManifest(ctx context.Context, d dest, n node, tag string, root bool) (bool, error) {
	if root {
		tag = d.tag
	}
	ref := tag
	if ref == "" {
		ref = n.desc.Digest.String()
	}
	return t.reg.PushManifest(ctx, reference.TrimNamed(d.name).String(), ref, n.desc, n.data)
}

// referrersAPI asks the target registry's referrers API for subject, once
// per registry and run (the first image to push referrers there asks; the
// others wait for its answer). The answer to that GET decides, not the
// OCI-Subject header of a manifest PUT: go-containerregistry's registry
// has the API and does not send the header. subject is in the repository
// by then, for a registry that answers 404 for a repository it does not
// know (go-containerregistry's) would seem to lack the API. A registry
// that cannot ask (a caller's containerd resolver) counts as a target
// without it.
func (t registryTarget) referrersAPI(ctx context.Context, d dest, subject digest.Digest) (bool, error) {
	repo := reference.TrimNamed(d.name).String()
	var supported bool
	var err error
	if t.probes == nil {
		_, supported, err = t.reg.Referrers(ctx, repo, subject)
	} else {
		supported, err = t.probes.hasAPI(ctx, t.reg, reference.Domain(d.name), repo, subject)
	}
	if errors.Is(err, errNoReferrerListing) {
		return false, nil
	}
	return supported, err
}

// referrerIndexes makes the referrers found through the source's referrers
// API findable in a target that lacks the API (see referrersAPI): it adds
// them to the subject's referrers tag schema index (tag sha256-<hex>), as
// OCI 1.1 clients do, keeping what the target's index lists already.
func (t registryTarget) referrerIndexes(ctx context.Context, d dest, refs []untaggedReferrer) ([]taggedNode, error) {
	bySubject := map[digest.Digest][]ocispec.Descriptor{}
	var subjects []digest.Digest
	for _, r := range refs {
		if _, ok := bySubject[r.subject]; !ok {
			subjects = append(subjects, r.subject)
		}
		bySubject[r.subject] = append(bySubject[r.subject], ocispec.Descriptor{MediaType: r.desc.MediaType, Digest: r.desc.Digest, Size: r.desc.Size, ArtifactType: r.artifactType, Annotations: r.desc.Annotations})
	}
	if len(subjects) == 0 {
		return nil, nil
	}
	repo := reference.TrimNamed(d.name).String()
	var out []taggedNode
	for _, subject := range subjects {
		tag := referrerTags(subject)[0]
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
		idx.SchemaVersion = 2
		// Keep what the target's index already lists.
		if desc, err := t.reg.Resolve(ctx, repo+":"+tag); err == nil {
			f, err := t.reg.Fetcher(ctx, repo)
			if err != nil {
				return nil, fmt.Errorf("reading referrers index %s: %w", tag, err)
			}
			data, err := fetchManifest(ctx, f, desc)
			if err == nil {
				err = json.Unmarshal(data, &idx)
			}
			if err != nil {
				return nil, fmt.Errorf("reading referrers index %s: %w", tag, err)
			}
		} else if !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("reading referrers index %s: %w", tag, err)
		}
		changed := false
		for _, r := range bySubject[subject] {
			if !slices.ContainsFunc(idx.Manifests, func(m ocispec.Descriptor) bool { return m.Digest == r.Digest }) {
				idx.Manifests = append(idx.Manifests, r)
				changed = true
			}
		}
		if !changed {
			continue
		}
		data, err := json.Marshal(idx)
		if err != nil {
			return nil, err
		}
		out = append(out, taggedNode{tag: tag, n: node{desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(data), Size: int64(len(data))}, data: data}})
	}
	return out, nil
}

func (t registryTarget) finish(context.Context) error { return nil }

// hasBlob reports whether host/repo has blob desc.
func (t registryTarget) hasBlob(ctx context.Context, host, repo string, desc ocispec.Descriptor) (bool, error) {
	return t.reg.HasBlob(ctx, host+"/"+repo, desc)
}

// layoutTarget puts content into an OCI image layout. Each image's root is
// named in index.json by its reference exactly as written (Image.Ref); a
// tagged referrer by its repository and tag; a referrer found without a
// tag carries its subject in an annotation (see LayoutSource.Referrers).
type layoutTarget struct {
	store *layout.Store
}

func (t layoutTarget) locate(reference.Named) (string, string) { return "", "" }

func (t layoutTarget) describe(string) string { return "image layout " + t.store.Dir() }

func (t layoutTarget) display(dest) string { return "" }

func (t layoutTarget) lookup(ctx context.Context, d dest, dg digest.Digest) (ocispec.Descriptor, error) {
	for _, e := range t.store.Index().Manifests {
		if e.Annotations[ocispec.AnnotationRefName] == d.ref && e.Digest == dg && t.store.Exists(e) {
			return ocispec.Descriptor{MediaType: e.MediaType, Digest: e.Digest, Size: e.Size}, nil
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("%s in %s: %w", d.ref, t.store.Dir(), ErrNotFound)
}

// hasBlob: a layout has one namespace.
func (t layoutTarget) hasBlob(_ context.Context, _, _ string, desc ocispec.Descriptor) (bool, error) {
	return t.store.Exists(desc), nil
}

func (t layoutTarget) hasManifest(_ context.Context, d dest, tag string, m ocispec.Descriptor) (bool, error) {
	if !t.store.Exists(m) {
		return false, nil
	}
	if tag == "" {
		return true, nil
	}
	name := reference.TrimNamed(d.name).String() + ":" + tag
	return slices.ContainsFunc(t.store.Index().Manifests, func(e ocispec.Descriptor) bool {
		return e.Annotations[ocispec.AnnotationRefName] == name && e.Digest == m.Digest
	}), nil
}

func (t layoutTarget) putBlob(ctx context.Context, _, _ string, desc ocispec.Descriptor, _ []string, open func(context.Context) (io.ReadCloser, error), report func(int64)) (EventKind, error) {
	if t.store.Exists(desc) {
		return BlobSkipped, nil
	}
	return writeLocal(ctx, open, report, func(r io.Reader) error { return t.store.WriteBlob(ctx, desc, r) })
}

// writeLocal opens a blob and writes it with write to a local file (a
// layout's, an archive's), reporting progress. An error reading the source
// is returned as it is; one writing is a localError.
func writeLocal(ctx context.Context, open func(context.Context) (io.ReadCloser, error), report func(int64), write func(io.Reader) error) (EventKind, error) {
	rc, err := open(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	src := &readerr.Reader{R: rc}
	pw := &progressWriter{w: io.Discard, progress: progress{flush: report}}
	if err := write(io.TeeReader(src, pw)); err != nil {
		if src.Err != nil {
			return "", src.Err
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", localError{err}
	}
	pw.done()
	return BlobCopied, nil
}

func (t layoutTarget) putManifest(ctx context.Context, d dest, n node, tag string, root bool) (bool, error) {
	if err := t.store.WriteBlob(ctx, n.desc, bytes.NewReader(n.data)); err != nil {
		return false, localError{err}
	}
	t.name(d, n, tag, root)
	return true, nil
}

// name names manifest n in index.json as putManifest does: a root by the
// image's reference as written, a tagged manifest by repository and tag.
func (t layoutTarget) name(d dest, n node, tag string, root bool) {
	switch {
	case root:
		t.store.AddRef(n.desc, d.ref)
	case tag != "":
		t.store.AddRef(n.desc, reference.TrimNamed(d.name).String()+":"+tag)
	}
}

// referrersAPI is false: a layout keeps referrers under their tags, and
// those found without one by a subject annotation.
func (t layoutTarget) referrersAPI(context.Context, dest, digest.Digest) (bool, error) {
	return false, nil
}

// referrerIndexes names each referrer in index.json with its subject in an
// annotation (see LayoutSource.Referrers): a layout needs no index.
func (t layoutTarget) referrerIndexes(_ context.Context, _ dest, refs []untaggedReferrer) ([]taggedNode, error) {
	for _, r := range refs {
		d := r.desc
		d.Annotations = map[string]string{subjectAnnotation: r.subject.String()}
		t.store.AddRef(d, "")
	}
	return nil, nil
}

func (t layoutTarget) finish(context.Context) error {
	if err := t.store.Save(); err != nil {
		return localError{err}
	}
	return nil
}
