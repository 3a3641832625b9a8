package fixup

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
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
	// display is the target of j as events and results show it ("" when
	// it is only the layout).
	display(j *job) string
	// lookup returns the root descriptor j's target name points at, its
	// tag (job.rootTag: latest for a bundle image without one) if it has
	// one, else the digest d; an error matching ErrNotFound when there is
	// none.
	lookup(ctx context.Context, j *job, d digest.Digest) (ocispec.Descriptor, error)
	// putBlob stores desc in host/repo: mounted from one of mountFrom
	// (repositories of the same host) where it can, else read from open.
	// It says how: copied, mounted or already there. report gets the
	// bytes uploaded as they go. Errors from open and its reader are
	// returned as they are.
	putBlob(ctx context.Context, host, repo string, desc ocispec.Descriptor, mountFrom []string, open func(context.Context) (io.ReadCloser, error), report func(int64)) (EventKind, error)
	// putManifest stores a manifest or index of j, byte for byte, under tag
	// (in j's target repository) when tag is not "", or under j's target
	// name (job.rootTag, else by digest) when root is true. It reports false when it found it there already
	// (containerd's pusher asks first; the resolver's own push does not, and
	// reports true).
	putManifest(ctx context.Context, j *job, n node, tag string, root bool) (bool, error)
	// hasManifest reports whether j's target repository holds manifest d
	// under tag, or by its digest when tag is "".
	hasManifest(ctx context.Context, j *job, tag string, d ocispec.Descriptor) (bool, error)
	// referrersAPI reports whether the target finds referrers by their
	// subject itself (the OCI referrers API), so that no referrers tag
	// schema index is to be written or copied there. subject is a manifest
	// of j already in j's target repository.
	referrersAPI(ctx context.Context, j *job, subject digest.Digest) (bool, error)
	// referrerIndexes makes the referrers of j found without a tag (through
	// a referrers API) findable in a target without the referrers API, and
	// returns the tag schema indexes the engine must push for that (tag,
	// node).
	referrerIndexes(ctx context.Context, j *job, refs []referrerGraph) ([]taggedNode, error)
	// finish completes the run (a layout writes its index.json).
	finish(ctx context.Context) error
}

// taggedNode is a manifest to push under a tag.
type taggedNode struct {
	tag string
	n   node
}

// registryTarget puts content into registries through a containerd
// resolver.
type registryTarget struct {
	r       remotes.Resolver
	tracker docker.StatusTracker // nil: a mount counts as already there
	// api, when the resolver offers it (this module's does), pushes with
	// fewer requests than containerd's pusher: no HEAD before a blob's
	// upload or mount, nor before a manifest's PUT.
	api pushAPI
	// probes remembers, per target registry, whether it has the referrers
	// API (see referrersAPI). Nil asks each time.
	probes *tagCache
}

// pushAPI is the push half of *resolver.Resolver.
type pushAPI interface {
	PushBlob(ctx context.Context, repo string, desc ocispec.Descriptor, mountFrom string, open func(context.Context) (io.ReadCloser, error)) (resolver.BlobPush, error)
	PushManifest(ctx context.Context, repo, ref, mediaType string, data []byte) error
}

func (t registryTarget) locate(n reference.Named) (string, string) {
	return reference.Domain(n), reference.Path(n)
}

func (t registryTarget) describe(host string) string { return "target registry " + host }

func (t registryTarget) display(j *job) string { return j.target.String() }

func (t registryTarget) lookup(ctx context.Context, j *job, d digest.Digest) (ocispec.Descriptor, error) {
	ref := reference.TrimNamed(j.target).String() + "@" + d.String()
	if tag := j.rootTag(); tag != "" {
		ref = reference.TrimNamed(j.target).String() + ":" + tag
	}
	_, desc, err := t.r.Resolve(ctx, ref)
	return desc, err
}

func (t registryTarget) hasManifest(ctx context.Context, j *job, tag string, d ocispec.Descriptor) (bool, error) {
	ref := reference.TrimNamed(j.target).String() + "@" + d.Digest.String()
	if tag != "" {
		ref = reference.TrimNamed(j.target).String() + ":" + tag
	}
	_, desc, err := t.r.Resolve(ctx, ref)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil && desc.Digest == d.Digest, err
}

// keySeq numbers the pushes of a process, so each has a tracker key of its
// own.
var keySeq atomic.Uint64

// mountLabel is containerd's annotation prefix naming the repositories a
// blob can be mounted from: containerd.io/distribution.source.<host>.
const mountLabel = "containerd.io/distribution.source."

func (t registryTarget) ingester(ctx context.Context, ref string) (content.Ingester, error) {
	p, err := t.r.Pusher(ctx, ref)
	if err != nil {
		return nil, err
	}
	ing, ok := p.(content.Ingester)
	if !ok {
		return nil, fmt.Errorf("%w: its pusher (%T) is not a content.Ingester", ErrUnsupportedResolver, p)
	}
	return ing, nil
}

func (t registryTarget) putBlob(ctx context.Context, host, repo string, desc ocispec.Descriptor, mountFrom []string, open func(context.Context) (io.ReadCloser, error), report func(int64)) (_ EventKind, retErr error) {
	if t.api != nil {
		return t.pushBlob(ctx, host, repo, desc, mountFrom, open, report)
	}
	ctx, cancel := context.WithCancel(ctx)
	// On failure, cancelling first aborts the upload request whose body
	// was not completed (the verifier withholds the last bytes of content
	// that does not match), so the registry never receives a whole body;
	// and it ends any request containerd left waiting on the writer's pipe.
	var w content.Writer
	defer func() {
		if retErr != nil {
			cancel()
		}
		if w != nil {
			w.Close()
		}
		cancel()
	}()
	ing, err := t.ingester(ctx, host+"/"+repo+"@"+desc.Digest.String())
	if err != nil {
		return "", err
	}
	d := desc
	if len(mountFrom) > 0 {
		// containerd keys the label by host name without port.
		hostname := host
		if h, _, err := net.SplitHostPort(host); err == nil {
			hostname = h
		}
		d.Annotations = map[string]string{mountLabel + hostname: strings.Join(mountFrom, ",")}
	}
	// A key of its own per attempt: containerd's tracker would otherwise
	// take a retry for the push of a failed attempt.
	key := fmt.Sprintf("%s/%s@%s#%d", host, repo, desc.Digest, keySeq.Add(1))
	w, err = ing.Writer(ctx, content.WithRef(key), content.WithDescriptor(d))
	if err != nil {
		w = nil
		if errdefs.IsAlreadyExists(err) {
			return t.existingKind(key), nil
		}
		return "", err
	}
	rc, err := open(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	src := &readerr.Reader{R: rc}
	pw := &progressWriter{w: w, progress: progress{flush: report}}
	if _, err := io.Copy(pw, src); err != nil {
		if src.Err != nil {
			return "", src.Err
		}
		return "", err
	}
	pw.done()
	if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil {
		return "", err
	}
	return BlobCopied, nil
}

// pushBlob is putBlob through the resolver's own push: one POST that
// mounts the blob (from the first of mountFrom, or from repo itself, which
// finds it when it is there already), else one PUT of its bytes.
func (t registryTarget) pushBlob(ctx context.Context, host, repo string, desc ocispec.Descriptor, mountFrom []string, open func(context.Context) (io.ReadCloser, error), report func(int64)) (EventKind, error) {
	from := ""
	if len(mountFrom) > 0 {
		from = mountFrom[0]
	}
	var pr *progressReader
	how, err := t.api.PushBlob(ctx, host+"/"+repo, desc, from, func(ctx context.Context) (io.ReadCloser, error) {
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

// existingKind tells a mount from a blob that was already there.
func (t registryTarget) existingKind(key string) EventKind {
	if t.tracker == nil {
		return BlobSkipped
	}
	st, err := t.tracker.GetStatus(key)
	if err == nil && st.MountedFrom != "" {
		return BlobMounted
	}
	return BlobSkipped
}

func (t registryTarget) putManifest(ctx context.Context, j *job, n node, tag string, root bool) (_ bool, retErr error) {
	ref := reference.TrimNamed(j.target).String()
	if root {
		tag = j.rootTag()
	}
	if tag != "" {
		ref += ":" + tag
	}
	if t.api != nil {
		ref := tag
		if ref == "" {
			ref = n.desc.Digest.String()
		}
		return true, t.api.PushManifest(ctx, reference.TrimNamed(j.target).String(), ref, n.desc.MediaType, n.data)
	}
	ctx, cancel := context.WithCancel(ctx)
	var w content.Writer
	defer func() {
		if retErr != nil {
			cancel() // abort the PUT before its body can end
		}
		if w != nil {
			w.Close()
		}
		cancel()
	}()
	ing, err := t.ingester(ctx, ref+"@"+n.desc.Digest.String())
	if err != nil {
		return false, err
	}
	key := fmt.Sprintf("%s@%s#m%d", ref, n.desc.Digest, keySeq.Add(1))
	w, err = ing.Writer(ctx, content.WithRef(key), content.WithDescriptor(n.desc))
	if err != nil {
		w = nil
		if errdefs.IsAlreadyExists(err) {
			return false, nil
		}
		return false, err
	}
	if _, err := w.Write(n.data); err != nil {
		return false, err
	}
	if err := w.Commit(ctx, n.desc.Size, n.desc.Digest); err != nil {
		return false, err
	}
	return true, nil
}

// referrersAPI asks the target registry's referrers API for subject, once
// per registry and run (the first image to push referrers there asks; the
// others wait for its answer). The answer to that GET decides, not the
// OCI-Subject header of a manifest PUT: go-containerregistry's registry
// has the API and does not send the header. subject is in the repository
// by then, for a registry that answers 404 for a repository it does not
// know (go-containerregistry's) would seem to lack the API. A resolver
// that cannot ask (not this module's) counts as a target without it.
func (t registryTarget) referrersAPI(ctx context.Context, j *job, subject digest.Digest) (bool, error) {
	api, ok := t.r.(registryAPI)
	if !ok {
		return false, nil
	}
	repo := reference.TrimNamed(j.target).String()
	if t.probes == nil {
		_, supported, err := api.Referrers(ctx, repo, subject)
		return supported, err
	}
	return t.probes.hasAPI(ctx, api, reference.Domain(j.target), repo, subject)
}

// referrerIndexes makes the referrers found through the source's referrers
// API findable in a target that lacks the API (see referrersAPI): it adds
// them to the subject's referrers tag schema index (tag sha256-<hex>), as
// OCI 1.1 clients do, keeping what the target's index lists already.
func (t registryTarget) referrerIndexes(ctx context.Context, j *job, refs []referrerGraph) ([]taggedNode, error) {
	bySubject := map[digest.Digest][]ocispec.Descriptor{}
	var subjects []digest.Digest
	for _, r := range refs {
		if r.Tag != "" {
			continue
		}
		if _, ok := bySubject[r.subject]; !ok {
			subjects = append(subjects, r.subject)
		}
		d := ocispec.Descriptor{MediaType: r.Desc.MediaType, Digest: r.Desc.Digest, Size: r.Desc.Size, ArtifactType: r.artifactType, Annotations: r.Desc.Annotations}
		bySubject[r.subject] = append(bySubject[r.subject], d)
	}
	if _, ok := t.r.(registryAPI); len(subjects) == 0 || !ok {
		return nil, nil
	}
	repo := reference.TrimNamed(j.target).String()
	var out []taggedNode
	for _, subject := range subjects {
		tag := referrerTags(subject)[0]
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
		idx.SchemaVersion = 2
		// Keep what the target's index already lists.
		if _, desc, err := t.r.Resolve(ctx, repo+":"+tag); err == nil {
			f, err := t.r.Fetcher(ctx, repo)
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
		for _, d := range bySubject[subject] {
			if !slices.ContainsFunc(idx.Manifests, func(m ocispec.Descriptor) bool { return m.Digest == d.Digest }) {
				idx.Manifests = append(idx.Manifests, d)
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

// blobExister is the HEAD of a blob that *resolver.Resolver offers.
type blobExister interface {
	BlobExists(ctx context.Context, repo string, desc ocispec.Descriptor) (bool, error)
}

// hasBlob reports whether host/repo has blob desc: one HEAD through the
// resolver's own request when it offers one, else containerd's resolve
// of the digest (a HEAD of the manifest, then of the blob).
func (t registryTarget) hasBlob(ctx context.Context, host, repo string, desc ocispec.Descriptor) (bool, error) {
	if be, ok := t.r.(blobExister); ok {
		return be.BlobExists(ctx, host+"/"+repo, desc)
	}
	_, got, err := t.r.Resolve(ctx, host+"/"+repo+"@"+desc.Digest.String())
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil && got.Digest == desc.Digest, err
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

func (t layoutTarget) display(*job) string { return "" }

func (t layoutTarget) lookup(ctx context.Context, j *job, d digest.Digest) (ocispec.Descriptor, error) {
	for _, e := range t.store.Index().Manifests {
		if e.Annotations[ocispec.AnnotationRefName] == j.img.Ref && e.Digest == d && t.store.Exists(e) {
			return ocispec.Descriptor{MediaType: e.MediaType, Digest: e.Digest, Size: e.Size}, nil
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("%s in %s: %w", j.img.Ref, t.store.Dir(), ErrNotFound)
}

func (t layoutTarget) hasManifest(_ context.Context, j *job, tag string, d ocispec.Descriptor) (bool, error) {
	if !t.store.Exists(d) {
		return false, nil
	}
	if tag == "" {
		return true, nil
	}
	name := reference.TrimNamed(j.target).String() + ":" + tag
	return slices.ContainsFunc(t.store.Index().Manifests, func(e ocispec.Descriptor) bool {
		return e.Annotations[ocispec.AnnotationRefName] == name && e.Digest == d.Digest
	}), nil
}

func (t layoutTarget) putBlob(ctx context.Context, _, _ string, desc ocispec.Descriptor, _ []string, open func(context.Context) (io.ReadCloser, error), report func(int64)) (EventKind, error) {
	if t.store.Exists(desc) {
		return BlobSkipped, nil
	}
	rc, err := open(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	src := &readerr.Reader{R: rc}
	pw := &progressWriter{w: io.Discard, progress: progress{flush: report}}
	if err := t.store.WriteBlob(ctx, desc, io.TeeReader(src, pw)); err != nil {
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

func (t layoutTarget) putManifest(ctx context.Context, j *job, n node, tag string, root bool) (bool, error) {
	if err := t.store.WriteBlob(ctx, n.desc, bytes.NewReader(n.data)); err != nil {
		return false, localError{err}
	}
	t.name(j, n, tag, root)
	return true, nil
}

// name names manifest n of j in index.json as putManifest does.
func (t layoutTarget) name(j *job, n node, tag string, root bool) {
	switch {
	case root:
		t.store.AddRef(n.desc, j.img.Ref)
	case tag != "":
		t.store.AddRef(n.desc, reference.TrimNamed(j.target).String()+":"+tag)
	}
}

// referrersAPI is false: a layout keeps referrers under their tags, and
// those found without one by a subject annotation.
func (t layoutTarget) referrersAPI(context.Context, *job, digest.Digest) (bool, error) {
	return false, nil
}

func (t layoutTarget) referrerIndexes(_ context.Context, _ *job, refs []referrerGraph) ([]taggedNode, error) {
	for _, r := range refs {
		if r.Tag == "" {
			d := r.Desc
			d.Annotations = map[string]string{subjectAnnotation: r.subject.String()}
			t.store.AddRef(d, "")
		}
	}
	return nil, nil
}

func (t layoutTarget) finish(context.Context) error {
	if err := t.store.Save(); err != nil {
		return localError{err}
	}
	return nil
}
