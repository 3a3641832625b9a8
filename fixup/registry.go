package fixup

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/readerr"
	"github.com/cnabio/cnab-relocate/resolver"
)

// registry is the one way the engine talks to registries, in the spirit of
// regclient's scheme.API: every request a run makes of a registry is one of
// these (a repo is a full name, "registry.corp/team/app"; a ref a tag or a
// digest). The client holds one, made once in NewClient: this module's
// resolver (resolverRegistry), or a caller's own remotes.Resolver adapted
// to it (remotesRegistry). Nothing downstream asks which it holds.
type registry interface {
	// Resolve returns the descriptor of the manifest ref
	// ("HOST/PATH:TAG" or "HOST/PATH@DIGEST") names: one HEAD. None is
	// an error matching errdefs.ErrNotFound.
	Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error)
	// Manifest returns the manifest ref names in repo and its bytes.
	Manifest(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error)
	// Fetcher reads repo's blobs and manifests by descriptor.
	Fetcher(ctx context.Context, repo string) (remotes.Fetcher, error)
	// HasBlob reports whether repo holds blob desc.
	HasBlob(ctx context.Context, repo string, desc ocispec.Descriptor) (bool, error)
	// PushBlob places blob desc in repo: mounted from one of mountFrom
	// (repository paths of the same registry) or found there, else
	// uploaded from what open returns (open is not called when nothing is
	// sent).
	PushBlob(ctx context.Context, repo string, desc ocispec.Descriptor, mountFrom []string, open func(context.Context) (io.ReadCloser, error)) (resolver.BlobPush, error)
	// PushManifest stores data, the manifest or index desc, byte for byte
	// in repo under ref. It reports false when it found it there already
	// and sent nothing.
	PushManifest(ctx context.Context, repo, ref string, desc ocispec.Descriptor, data []byte) (bool, error)
	// Tags lists repo's tags; Referrers asks the OCI referrers API for
	// subject's referrers in repo (supported: the registry has the API).
	// A registry that cannot list either returns errNoReferrerListing.
	Tags(ctx context.Context, repo string) ([]string, error)
	Referrers(ctx context.Context, repo string, subject digest.Digest) (refs []ocispec.Descriptor, supported bool, err error)
}

// newRegistry adapts r, the caller's resolver or this module's, to
// registry: the one place that looks at which it is.
func newRegistry(r remotes.Resolver) registry {
	if rr, ok := r.(*resolver.Resolver); ok {
		return resolverRegistry{rr}
	}
	return remotesRegistry{r}
}

// resolverRegistry is this module's resolver: every operation one request
// of its own (no HEAD before an upload, a mount or a manifest PUT), tags
// and referrers listed.
type resolverRegistry struct{ r *resolver.Resolver }

func (g resolverRegistry) Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error) {
	_, desc, err := g.r.Resolve(ctx, ref)
	return desc, err
}

func (g resolverRegistry) Manifest(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error) {
	return g.r.Manifest(ctx, repo, ref)
}

func (g resolverRegistry) Fetcher(ctx context.Context, repo string) (remotes.Fetcher, error) {
	return g.r.Fetcher(ctx, repo)
}

func (g resolverRegistry) HasBlob(ctx context.Context, repo string, desc ocispec.Descriptor) (bool, error) {
	return g.r.BlobExists(ctx, repo, desc)
}

// PushBlob is one POST that mounts the blob (from the first of mountFrom,
// or from repo itself, which finds it when it is there already), else one
// PUT of its bytes.
func (g resolverRegistry) PushBlob(ctx context.Context, repo string, desc ocispec.Descriptor, mountFrom []string, open func(context.Context) (io.ReadCloser, error)) (resolver.BlobPush, error) {
	from := ""
	if len(mountFrom) > 0 {
		from = mountFrom[0]
	}
	return g.r.PushBlob(ctx, repo, desc, from, open)
}

// PushManifest is one PUT, without asking first: it reports true.
func (g resolverRegistry) PushManifest(ctx context.Context, repo, ref string, desc ocispec.Descriptor, data []byte) (bool, error) {
	return true, g.r.PushManifest(ctx, repo, ref, desc.MediaType, data)
}

func (g resolverRegistry) Tags(ctx context.Context, repo string) ([]string, error) {
	return g.r.Tags(ctx, repo)
}

func (g resolverRegistry) Referrers(ctx context.Context, repo string, subject digest.Digest) ([]ocispec.Descriptor, bool, error) {
	return g.r.Referrers(ctx, repo, subject)
}

// remotesRegistry is a caller's containerd resolver (ClientOptions.Resolver):
// reads through its resolve and fetcher, pushes through its pusher, which
// must be a content.Ingester (containerd's is) to stream: another is
// ErrUnsupportedResolver at the first push. It lists no tags or
// referrers, and cannot tell a mount from a blob that was there.
type remotesRegistry struct{ r remotes.Resolver }

func (g remotesRegistry) Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error) {
	_, desc, err := g.r.Resolve(ctx, ref)
	return desc, err
}

// Manifest resolves ref (HEAD), then GETs it.
func (g remotesRegistry) Manifest(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error) {
	at := ":"
	if strings.Contains(ref, ":") {
		at = "@"
	}
	desc, err := g.Resolve(ctx, repo+at+ref)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	f, err := g.r.Fetcher(ctx, repo)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	data, err := fetchManifest(ctx, f, desc)
	return desc, data, err
}

func (g remotesRegistry) Fetcher(ctx context.Context, repo string) (remotes.Fetcher, error) {
	return g.r.Fetcher(ctx, repo)
}

// HasBlob resolves repo@digest: containerd asks for a manifest, then a blob.
func (g remotesRegistry) HasBlob(ctx context.Context, repo string, desc ocispec.Descriptor) (bool, error) {
	got, err := g.Resolve(ctx, repo+"@"+desc.Digest.String())
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil && got.Digest == desc.Digest, err
}

func (g remotesRegistry) Tags(context.Context, string) ([]string, error) {
	return nil, errNoReferrerListing
}

func (g remotesRegistry) Referrers(context.Context, string, digest.Digest) ([]ocispec.Descriptor, bool, error) {
	return nil, false, errNoReferrerListing
}

// keySeq numbers the pushes of a process, so each has a tracker key of its
// own.
var keySeq atomic.Uint64

// mountLabel is containerd's annotation prefix naming the repositories a
// blob can be mounted from: containerd.io/distribution.source.<host>.
const mountLabel = "containerd.io/distribution.source."

func (g remotesRegistry) ingester(ctx context.Context, ref string) (content.Ingester, error) {
	p, err := g.r.Pusher(ctx, ref)
	if err != nil {
		return nil, err
	}
	ing, ok := p.(content.Ingester)
	if !ok {
		return nil, fmt.Errorf("%w: its pusher (%T) cannot stream content (it is not a containerd content.Ingester)", ErrUnsupportedResolver, p)
	}
	return ing, nil
}

// PushBlob writes through containerd's ingester, which asks (HEAD) before
// it mounts or uploads. A blob it finds, or mounts, is BlobExisted.
func (g remotesRegistry) PushBlob(ctx context.Context, repo string, desc ocispec.Descriptor, mountFrom []string, open func(context.Context) (io.ReadCloser, error)) (_ resolver.BlobPush, retErr error) {
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
	ing, err := g.ingester(ctx, repo+"@"+desc.Digest.String())
	if err != nil {
		return 0, err
	}
	d := desc
	if len(mountFrom) > 0 {
		// containerd keys the label by host name without port.
		host, _, _ := strings.Cut(repo, "/")
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		d.Annotations = map[string]string{mountLabel + host: strings.Join(mountFrom, ",")}
	}
	// A key of its own per attempt: containerd's tracker would otherwise
	// take a retry for the push of a failed attempt.
	key := fmt.Sprintf("%s@%s#%d", repo, desc.Digest, keySeq.Add(1))
	w, err = ing.Writer(ctx, content.WithRef(key), content.WithDescriptor(d))
	if err != nil {
		w = nil
		if errdefs.IsAlreadyExists(err) {
			return resolver.BlobExisted, nil
		}
		return 0, err
	}
	rc, err := open(ctx)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	src := &readerr.Reader{R: rc}
	if _, err := io.Copy(w, src); err != nil {
		if src.Err != nil {
			return 0, src.Err
		}
		return 0, err
	}
	if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil {
		return 0, err
	}
	return resolver.BlobUploaded, nil
}

// PushManifest writes through containerd's ingester, which asks (HEAD)
// first: false when the manifest was there.
func (g remotesRegistry) PushManifest(ctx context.Context, repo, ref string, desc ocispec.Descriptor, data []byte) (_ bool, retErr error) {
	name := repo + "@" + desc.Digest.String()
	if !strings.Contains(ref, ":") {
		name = repo + ":" + ref + "@" + desc.Digest.String()
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
	ing, err := g.ingester(ctx, name)
	if err != nil {
		return false, err
	}
	key := fmt.Sprintf("%s#m%d", name, keySeq.Add(1))
	w, err = ing.Writer(ctx, content.WithRef(key), content.WithDescriptor(desc))
	if err != nil {
		w = nil
		if errdefs.IsAlreadyExists(err) {
			return false, nil
		}
		return false, err
	}
	if _, err := w.Write(data); err != nil {
		return false, err
	}
	if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil {
		return false, err
	}
	return true, nil
}
