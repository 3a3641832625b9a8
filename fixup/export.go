package fixup

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/containerd/containerd/remotes"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/cnabio/cnab-relocate/layout"
)

// ExportOptions configures Export and ExportArchive. Only Resolver is
// required.
type ExportOptions struct {
	// Resolver reaches the registries the images are in. Required.
	Resolver remotes.Resolver
	// Jobs bounds how many blobs (of all images) are fetched at once, and
	// how many images are resolved at once. If <= 0, DefaultJobs is used.
	Jobs int
	// Retries is how many times a failed blob fetch is retried whole
	// (after the transport's own retries). If 0, 4 is used; if negative,
	// none.
	Retries int
	// Referrers selects the artifacts exported with each image, as for
	// Relocate: they go into the layout too, so that fixup of the archive
	// copies them without the source registry.
	Referrers ReferrerOptions
	// OnEvent receives progress events, as for Relocate; their Target is
	// empty. Calls are serialised; the function must not block for long.
	// Nil means no events.
	OnEvent func(Event)
	// Logger receives debug records. Default: discard.
	Logger *slog.Logger
}

// ExportResult is the outcome of Export: an image layout in a temporary
// directory that the caller must Close.
type ExportResult struct {
	// Layout holds every exported image, each named in index.json by its
	// reference exactly as written in the bundle. Nil when Export failed.
	Layout *layout.Store
	// Dir is the temporary directory of Layout ("" when Export failed).
	Dir string
	// Images has one entry per distinct relocatable reference, in bundle
	// order. Target is empty; BytesCopied counts the blob bytes fetched for
	// the image, BytesSkipped those of blobs it shares with an image
	// fetched before.
	Images []ImageResult
	// Skipped lists the images left alone because of their type.
	Skipped []Image
}

// Close removes the layout's temporary directory. It is idempotent.
func (r *ExportResult) Close() error {
	if r == nil || r.Dir == "" {
		return nil
	}
	err := os.RemoveAll(r.Dir)
	r.Dir, r.Layout = "", nil
	return err
}

type exporter struct {
	opts  ExportOptions
	src   RegistrySource
	store *layout.Store
	evMu  sync.Mutex
}

func (x *exporter) emit(ev Event) {
	if x.opts.OnEvent == nil {
		return
	}
	ev.Time = time.Now()
	x.evMu.Lock()
	defer x.evMu.Unlock()
	x.opts.OnEvent(ev)
}

func (x *exporter) sourceErr(j *job, what string, err error) error {
	if errors.Is(err, ErrInvalidInput) {
		return err
	}
	host, _ := x.src.Location(j.img)
	return sideError{ErrSource, fmt.Errorf("%s: %s: %w", x.src.Name(j.img), what, explain(host, err))}
}

func (x *exporter) failJob(j *job, err error) {
	j.fail(err)
	x.emit(Event{Kind: ImageFailed, Image: j.img.Ref, Err: err})
}

// Export fetches every relocatable image of b (all platforms of an index)
// from its registry into an OCI image layout in a new directory under
// os.TempDir, each blob once however many images share it, checking every
// byte against its digest. Each image's index.json entry is named by its
// reference exactly as written in the bundle. A digest the bundle records
// that the registry does not serve is an error naming the image. When any
// image fails, Export removes the layout and returns an error naming each
// failed image, with the result still listing them. The caller must Close
// the result.
func Export(ctx context.Context, b *Bundle, opts ExportOptions) (_ *ExportResult, err error) {
	if opts.Resolver == nil {
		return nil, invalid(errors.New("fixup: ExportOptions.Resolver is required"))
	}
	if opts.Jobs <= 0 {
		opts.Jobs = DefaultJobs
	}
	if opts.Retries == 0 {
		opts.Retries = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	res := &ExportResult{}
	images, skipped, err := distinctImages(b)
	if err != nil {
		return nil, err
	}
	res.Skipped = skipped
	jobs := make([]*job, len(images))
	for i, img := range images {
		jobs[i] = &job{img: img.Image, want: img.Digest, res: ImageResult{Source: img.Image.Ref}}
	}

	dir, err := os.MkdirTemp("", "cnab-relocate-export-*")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrOutput, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	store, err := layout.Create(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrOutput, err)
	}
	x := &exporter{opts: opts, src: NewRegistrySource(opts.Resolver), store: store}

	// 1. Resolve each image and fetch its manifests.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Jobs)
	for _, j := range jobs {
		g.Go(func() error {
			j.start = time.Now()
			if err := x.plan(gctx, j); err != nil {
				x.failJob(j, err)
			}
			return ctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	// 2. Blobs of all images, each once, biggest first.
	if err := x.fetchBlobs(ctx, jobs); err != nil {
		return nil, err
	}

	// 3. Manifests, and the index entry naming each image.
	for _, j := range jobs {
		if j.graph == nil || j.failedErr() != nil {
			continue
		}
		if err := x.storeManifests(ctx, j); err != nil {
			x.failJob(j, err)
			continue
		}
		store.AddRef(j.root, j.img.Ref)
		for _, r := range j.refs {
			// Tagged referrers keep their tag (found again by the tag
			// schema); the others are marked with their subject.
			if r.Tag != "" {
				store.AddRef(r.Desc, reference.TrimNamed(j.img.Named).String()+":"+r.Tag)
			} else {
				d := r.Desc
				d.Annotations = map[string]string{subjectAnnotation: r.subject.String()}
				store.AddRef(d, "")
			}
			j.res.Referrers = append(j.res.Referrers, ReferrerResult{Subject: r.subject, Digest: r.Desc.Digest, MediaType: r.Desc.MediaType, ArtifactType: r.artifactType, Tag: r.Tag})
		}
		x.emit(Event{Kind: ImageDone, Image: j.img.Ref, Digest: j.root.Digest})
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	var errs []error
	for _, j := range jobs {
		r := j.res
		r.Duration = time.Since(j.start)
		r.Digest = j.root.Digest
		r.MediaType = j.root.MediaType
		if err := j.failedErr(); err != nil {
			r.Err = fmt.Errorf("exporting %s: %w", j.img.Ref, err)
			errs = append(errs, r.Err)
		}
		res.Images = append(res.Images, r)
	}
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	if err := store.Save(); err != nil {
		return res, fmt.Errorf("%w: %v", ErrOutput, err)
	}
	res.Layout, res.Dir = store, dir
	return res, nil
}

// plan resolves j's root and fetches its manifests.
func (x *exporter) plan(ctx context.Context, j *job) error {
	x.emit(Event{Kind: ImageStarted, Image: j.img.Ref})
	root, err := x.src.Resolve(ctx, j.img, j.want)
	if err != nil {
		return x.sourceErr(j, "resolving the image", err)
	}
	f, err := x.src.Fetcher(ctx, j.img)
	if err != nil {
		return x.sourceErr(j, "fetching", err)
	}
	gr, err := walkRetries(ctx, f, root, x.opts.Retries, x.opts.Logger)
	if err != nil {
		return x.sourceErr(j, "reading the image", err)
	}
	j.fetch, j.graph = f, gr
	j.root = gr.manifests[len(gr.manifests)-1].desc
	refs, err := discoverReferrers(ctx, x.src, j.img, f, gr, x.opts.Referrers, x.opts.Retries, x.opts.Logger, x.emit)
	if err != nil {
		return x.sourceErr(j, "finding referrers", err)
	}
	j.refs = refs
	mergeBlobs(gr, refs)
	x.emit(Event{Kind: ImagePlanned, Image: j.img.Ref, Digest: j.root.Digest, Size: gr.size()})
	return nil
}

// exportBlob is one unique blob and the images that need it.
type exportBlob struct {
	desc  ocispec.Descriptor
	users []*job
}

func (x *exporter) fetchBlobs(ctx context.Context, jobs []*job) error {
	tasks := map[digest.Digest]*exportBlob{}
	var order []*exportBlob
	for _, j := range jobs {
		if j.graph == nil || j.failedErr() != nil {
			continue
		}
		for _, b := range j.graph.blobs {
			t, ok := tasks[b.Digest]
			if !ok {
				t = &exportBlob{desc: b}
				tasks[b.Digest] = t
				order = append(order, t)
			}
			t.users = append(t.users, j)
		}
	}
	slices.SortStableFunc(order, func(a, b *exportBlob) int { return cmp.Compare(b.desc.Size, a.desc.Size) })
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(x.opts.Jobs)
	for _, t := range order {
		g.Go(func() error {
			x.fetchBlob(gctx, t)
			return ctx.Err()
		})
	}
	return g.Wait()
}

// fetchBlob stores t's blob once, fetched through the first image that
// needs it and has not failed, and credits the others as skipped. A failure
// fails every image that needs the blob.
func (x *exporter) fetchBlob(ctx context.Context, t *exportBlob) {
	var owner *job
	for _, u := range t.users {
		if u.failedErr() == nil {
			owner = u
			break
		}
	}
	if owner == nil {
		return // every image that needs it has failed
	}
	// A local write failure (localError, ErrOutput) is not retried.
	err := withRetries(ctx, x.opts.Retries, x.opts.Logger, "blob "+t.desc.Digest.String(), func(int) error {
		return x.fetchBlobOnce(ctx, owner, t.desc)
	})
	if err != nil {
		for _, u := range t.users {
			x.failJob(u, err)
		}
		return
	}
	for _, u := range t.users {
		kind := BlobSkipped
		u.mu.Lock()
		if u == owner {
			kind = BlobCopied
			u.res.BytesCopied += t.desc.Size
		} else {
			u.res.BytesSkipped += t.desc.Size
		}
		u.mu.Unlock()
		x.emit(Event{Kind: kind, Image: u.img.Ref, Digest: t.desc.Digest, Size: t.desc.Size})
	}
}

// localError marks a failure to write the layout: not worth a retry.
type localError struct{ err error }

func (e localError) Error() string   { return e.err.Error() }
func (e localError) Unwrap() []error { return []error{ErrOutput, e.err} }

func (x *exporter) fetchBlobOnce(ctx context.Context, j *job, desc ocispec.Descriptor) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rc, err := j.fetch.Fetch(ctx, desc)
	if err != nil {
		return x.sourceErr(j, "fetching blob "+desc.Digest.String(), err)
	}
	defer rc.Close()
	src := &readErr{r: NewVerifier(rc, desc)}
	pw := &progressWriter{w: io.Discard, flush: func(n int64) {
		x.emit(Event{Kind: BlobProgress, Image: j.img.Ref, Digest: desc.Digest, Size: desc.Size, Bytes: n})
	}}
	if err := x.store.WriteBlob(ctx, desc, io.TeeReader(src, pw)); err != nil {
		if src.err != nil {
			return x.sourceErr(j, "fetching blob "+desc.Digest.String(), src.err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return localError{err}
	}
	pw.done()
	return nil
}

// storeManifests writes j's manifests to the layout, byte for byte as
// fetched, children first.
func (x *exporter) storeManifests(ctx context.Context, j *job) error {
	nodes := j.graph.manifests
	for _, r := range j.refs {
		nodes = append(nodes, r.graph.manifests...)
	}
	for _, m := range nodes {
		if err := x.store.WriteBlob(ctx, m.desc, bytes.NewReader(m.data)); err != nil {
			return localError{err}
		}
		x.emit(Event{Kind: ManifestPushed, Image: j.img.Ref, Digest: m.desc.Digest, Size: m.desc.Size})
	}
	return nil
}

// ExportArchive exports b's images (see Export) and writes the thick
// bundle archive out: bundleJSON, byte for byte, as bundle.json, and the
// images as the OCI image layout artifacts/layout (see layout.WriteArchive:
// the archive is deterministic). The archive is written to a temporary
// file beside out and renamed into place once complete; on any error
// nothing is left at out, and the temporary layout is removed either way.
// bundleJSON should be the bytes b was parsed from.
func ExportArchive(ctx context.Context, b *Bundle, bundleJSON []byte, out string, opts ExportOptions) error {
	if out == "" {
		return invalid(errors.New("fixup: ExportArchive needs an output path"))
	}
	res, err := Export(ctx, b, opts)
	if err != nil {
		return err
	}
	defer res.Close()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := layout.WriteArchive(out, bundleJSON, res.Dir); err != nil {
		return fmt.Errorf("%w %s: %w", ErrOutput, out, err)
	}
	return nil
}
