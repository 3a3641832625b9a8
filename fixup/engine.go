package fixup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/retry"
	"github.com/cnabio/cnab-relocate/internal/verify"
	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-relocate/relocator"
	"github.com/cnabio/cnab-relocate/resolver"
)

// job is the work for one image: one distinct reference of a bundle, or
// the one image of Copy, Layout.Add or Layout.Push.
type job struct {
	img    Image
	want   digest.Digest   // the root digest the caller records ("" when none)
	target reference.Named // where it goes: the relocated reference, or its name in a layout
	host   string          // target namespace (see target.locate)
	repo   string
	root   ocispec.Descriptor
	graph  *graph
	refs   []referrerGraph
	fetch  remotes.Fetcher
	start  time.Time
	// latest reads a target with neither tag nor digest as :latest, as
	// docker reads it: its root is looked for and pushed under the tag
	// latest (a bundle's images). Otherwise (Copy, Layout.Push) such a
	// target gets the root by digest only.
	latest bool

	// leftOut are manifests of its referrers that a delta archive leaves
	// out (see checkDelta).
	leftOut []ocispec.Descriptor

	// refresh: the image is present, and only its referrers in refs
	// (and their blobs in graph) are to be copied (Referrers.Refresh).
	refresh bool
	// platforms narrows the graph to ClientOptions.Platforms (nil: all).
	platforms *platformFilter

	mu  sync.Mutex
	res ImageResult
	err error
	end time.Time // when it was done, found present, or first failed
}

// finished notes when j ended, the first time it is called.
func (j *job) finished() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.end.IsZero() {
		j.end = time.Now()
	}
}

// rootTag is the tag j's root goes under in a registry: its target's tag;
// "latest" for a target with neither tag nor digest when j.latest; else ""
// (by digest only).
func (j *job) rootTag() string {
	switch t := j.target.(type) {
	case reference.Tagged:
		return t.Tag()
	case reference.Digested:
		return ""
	}
	if j.latest {
		return "latest"
	}
	return ""
}

func newJob(img Image, want digest.Digest) *job {
	return &job{img: img, want: want, res: ImageResult{Source: img.Ref}}
}

func (j *job) fail(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err == nil {
		j.err = err
	}
	if j.end.IsZero() {
		j.end = time.Now()
	}
}

func (j *job) failedErr() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

func (j *job) add(kind EventKind, n int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch kind {
	case BlobCopied:
		j.res.BytesCopied += n
	case BlobMounted:
		j.res.BytesMounted += n
	case BlobSkipped:
		j.res.BytesSkipped += n
	}
}

// result returns j's outcome; wrap says what was being done, for its error
// ("relocating", "exporting").
func (j *job) result(dst target, wrap string) ImageResult {
	j.mu.Lock()
	r, end := j.res, j.end
	j.mu.Unlock()
	if end.IsZero() {
		end = time.Now()
	}
	r.Duration = end.Sub(j.start)
	if j.target != nil {
		r.Target = dst.display(j)
	}
	r.Digest = j.root.Digest
	r.MediaType = j.root.MediaType
	r.Platforms, r.PlatformsLeft = j.platforms.result()
	if err := j.failedErr(); err != nil {
		r.Err = fmt.Errorf("%s %s: %w", wrap, j.img.Ref, err)
	}
	return r
}

// engine copies the content graphs of images from a source to a target:
// every command and every method of Client is one run of it.
type engine struct {
	c       *Client
	src     Source
	dst     target
	mapping *relocator.Mapping // maps a job without a target once its digest is known
	policy  retry.Policy

	evMu sync.Mutex
	// refused holds, by target host, the error of the first sparse index
	// that registry refused: the other images' are not tried.
	refused sync.Map
}

func (c *Client) engine(src Source, dst target, m *relocator.Mapping) *engine {
	if src == nil {
		src = NewRegistrySource(c.resolver)
	}
	return &engine{c: c, src: src, dst: dst, mapping: m, policy: retry.Policy{
		Retries: c.retries,
		Logger:  c.logger,
	}}
}

func (e *engine) emit(ev Event) {
	if e.c.opts.OnEvent == nil {
		return
	}
	ev.Time = time.Now()
	e.evMu.Lock()
	defer e.evMu.Unlock()
	e.c.opts.OnEvent(ev)
}

func (e *engine) failJob(j *job, err error) {
	j.fail(err)
	ev := Event{Kind: ImageFailed, Image: j.img.Ref, Err: err}
	if j.target != nil {
		ev.Target = e.dst.display(j)
	}
	e.emit(ev)
}

// run copies every job's image: plan each (find its root, skip it when the
// target has it, read its manifests and referrers), then place its blobs,
// each unique blob once per target namespace, biggest first, then push its
// manifests, children before parents, the root last. A source that can be
// read in any order runs as a pipeline (see pipeline); a stream (a thick
// archive) is planned whole, then read once, and no manifest is pushed
// before the whole stream has been read and checked. A job that fails
// keeps its error (see job.result) and the others go on; run returns an
// error only when ctx ends.
func (e *engine) run(ctx context.Context, jobs []*job) error {
	ctx = withoutLogs(ctx)
	var err error
	if ss, ok := streamOf(e.src); ok {
		err = e.runStream(ctx, ss, jobs)
	} else {
		err = e.runPipeline(ctx, jobs)
	}
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := e.dst.finish(ctx); err != nil {
		for _, j := range jobs {
			if j.failedErr() == nil {
				j.fail(err)
			}
		}
	}
	return ctx.Err()
}

// planAll plans every job, e.c.jobs at once, and calls done with each
// once it is planned (or found present, or failed).
func (e *engine) planAll(ctx context.Context, jobs []*job, done func(*job)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, e.c.jobs)
	for _, j := range jobs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			j.start = time.Now()
			if err := e.plan(ctx, j); err != nil {
				e.failJob(j, err)
			}
			done(j)
		})
	}
	wg.Wait()
}

// runStream plans every job, reads the stream once to place the blobs,
// then pushes the manifests of the images whose blobs are all in.
func (e *engine) runStream(ctx context.Context, ss streamSource, jobs []*job) error {
	e.planAll(ctx, jobs, func(*job) {})
	if err := ctx.Err(); err != nil {
		return err
	}
	if ds, ok := deltaOf(e.src); ok {
		if err := e.checkDelta(ctx, ds, jobs); err != nil {
			return err
		}
	}
	tasks := map[string]*blobTask{}
	var order []*blobTask
	for _, j := range jobs {
		if j.graph == nil || j.failedErr() != nil {
			continue
		}
		for _, b := range j.graph.blobs {
			if t, created := addUser(tasks, j, b); created {
				order = append(order, t)
			}
		}
	}
	if err := e.streamBlobs(ctx, ss, order); err != nil {
		return err
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, e.c.jobs)
	for _, j := range jobs {
		if j.graph == nil || j.failedErr() != nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			e.pushImage(ctx, j)
		})
	}
	wg.Wait()
	return ctx.Err()
}

// pushImage pushes the manifests of j, whose blobs are all in place, and
// says it is done, or fails it.
func (e *engine) pushImage(ctx context.Context, j *job) {
	if j.failedErr() != nil || ctx.Err() != nil {
		return
	}
	if err := e.pushManifests(ctx, j); err != nil {
		e.failJob(j, err)
		return
	}
	j.finished()
	e.emit(Event{Kind: ImageDone, Image: j.img.Ref, Target: e.dst.display(j), Digest: j.root.Digest})
}

// plan fills in j's target, root and graph, or marks it present.
func (e *engine) plan(ctx context.Context, j *job) error {
	e.emit(Event{Kind: ImageStarted, Image: j.img.Ref})
	if j.want != "" {
		if err := e.mapTarget(j, j.want); err != nil {
			return err
		}
		if present, err := e.present(ctx, j, j.want); err != nil || present {
			return err
		}
	}
	root, err := e.src.Resolve(ctx, j.img, j.want)
	if err != nil {
		return e.sourceErr(j, "resolving the image", err)
	}
	j.root = root
	if j.want == "" {
		if err := e.mapTarget(j, root.Digest); err != nil {
			return err
		}
		if present, err := e.present(ctx, j, root.Digest); err != nil || present {
			return err
		}
	}
	f, err := e.src.Fetcher(ctx, j.img)
	if err != nil {
		return e.sourceErr(j, "fetching", err)
	}
	j.fetch = f
	var succ successorsFunc
	if host, _ := e.src.Location(j.img); len(e.c.opts.Platforms) > 0 || host == "" {
		j.platforms = newPlatformFilter(e.c.opts.Platforms)
		if host == "" {
			// A layout (an archive) may hold a sparse index.
			j.platforms.absent = absentFrom(ctx, f)
		}
		succ = j.platforms.wrap(successors)
	}
	gr, err := walkRetries(ctx, f, root, e.policy, e.c.opts.IncludeNonDistributable, succ)
	if err != nil {
		return e.sourceErr(j, "reading the image", sparseSource(root, err))
	}
	if len(gr.manifests) == 0 {
		if _, ok := deltaOf(e.src); !ok {
			return e.sourceErr(j, "reading the image", fmt.Errorf("manifest %s: %w", root.Digest, layout.ErrLeftOut))
		}
		j.graph = gr
		return nil // the root is left out of a delta archive: see checkDelta
	}
	j.root.MediaType = gr.manifests[len(gr.manifests)-1].desc.MediaType
	// Referrers are looked for on the graph as the source has it: those of
	// an index that is rewritten are then left out (see dropReferrers).
	refs, searched, err := e.findReferrers(ctx, j, gr)
	if err != nil {
		return e.sourceErr(j, "finding referrers", err)
	}
	if j.platforms != nil && e.c.opts.PlatformIndex == RewriteIndex {
		replaced, err := e.rewriteIndexes(j, gr)
		if err != nil {
			return e.sourceErr(j, "reading the image", err)
		}
		refs = j.dropReferrers(refs, replaced)
		if j.res.RewrittenFrom != "" {
			if present, err := e.present(ctx, j, j.root.Digest); err != nil || present {
				return err
			}
		}
	}
	if err := e.refusedSparse(j, gr); err != nil {
		return err
	}
	j.graph = gr
	j.refs = refs
	j.res.ReferrersSearched = searched
	mergeBlobs(gr, refs)
	// Size is everything that travels: manifests and blobs of the image
	// and of its referrers.
	size := gr.size()
	for _, r := range refs {
		for _, m := range r.graph.manifests {
			size += m.desc.Size
		}
	}
	e.emit(Event{Kind: ImagePlanned, Image: j.img.Ref, Target: e.dst.display(j), Digest: j.root.Digest, Size: size})
	return nil
}

// errNoReferrerListing is returned by a source that cannot list tags or
// referrers.
var errNoReferrerListing = errors.New("the source cannot list tags or referrers")

// findReferrers returns the referrers of g that travel with j's image, and
// whether the source was searched for them: not when they are off or the
// source cannot list them. With BestEffort a failure is reported as an
// event and what was found is kept.
func (e *engine) findReferrers(ctx context.Context, j *job, g *graph) ([]referrerGraph, bool, error) {
	opts := e.c.opts.Referrers
	rs, ok := e.src.(ReferrerSource)
	if opts.Disabled || !ok {
		return nil, false, nil
	}
	fetch := func(d ocispec.Descriptor) (*graph, error) {
		g, err := walkRetries(ctx, j.fetch, d, e.policy, e.c.opts.IncludeNonDistributable, nil)
		if err == nil {
			j.leftOut = append(j.leftOut, g.leftOut...) // see checkDelta
		}
		return g, err
	}
	refs, err := findReferrers(ctx, rs, j.img, fetch, g, opts)
	if errors.Is(err, errNoReferrerListing) {
		return nil, false, nil
	}
	if err != nil && opts.BestEffort && ctx.Err() == nil {
		e.c.logger.Warn("referrers not copied", "image", j.img.Ref, "err", err)
		e.emit(Event{Kind: ReferrerFailed, Image: j.img.Ref, Err: err})
		return refs, true, nil
	}
	return refs, true, err
}

// mapTarget sets j's target for root digest d, unless it is set already.
func (e *engine) mapTarget(j *job, d digest.Digest) error {
	if j.target == nil {
		if e.mapping == nil {
			return invalid(fmt.Errorf("%s: no target", j.img.Ref))
		}
		t, err := e.mapping.Map(j.img.Named, d)
		if err != nil {
			return invalid(fmt.Errorf("%s (%s): %w", j.img.Ref, j.img.Field, err))
		}
		j.target = t
	}
	j.host, j.repo = e.dst.locate(j.target)
	return nil
}

// present reports whether the target already holds the image: its name
// (tag) pointing at d, else the manifest d. One HEAD for a registry.
func (e *engine) present(ctx context.Context, j *job, d digest.Digest) (bool, error) {
	desc, err := e.dst.lookup(ctx, j, d)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return false, nil
		}
		return false, e.targetErr(j, "checking the target", err)
	}
	if desc.Digest != d {
		return false, nil
	}
	j.root = desc
	j.res.Present = true
	if e.c.opts.Referrers.Refresh {
		copying, err := e.refresh(ctx, j)
		if err != nil || copying {
			return true, err
		}
	}
	j.finished()
	e.emit(Event{Kind: ImagePresent, Image: j.img.Ref, Target: e.dst.display(j), Digest: d})
	return true, nil
}

// refresh looks for the referrers of j, an image found present, at the
// source, and plans the copy of those the target lacks (copying): j.graph
// then holds their blobs and no manifest of the image, which is in place
// (see pushManifests). The subjects are the root and, for an index, the
// manifests it lists (one GET of the root); the source's tags are listed
// once per repository, as for every image (tagCache).
func (e *engine) refresh(ctx context.Context, j *job) (copying bool, err error) {
	if _, ok := e.src.(ReferrerSource); !ok || e.c.opts.Referrers.Disabled {
		return false, nil
	}
	f, err := e.src.Fetcher(ctx, j.img)
	if err != nil {
		return false, e.sourceErr(j, "fetching", err)
	}
	j.fetch = f
	g := &graph{manifests: []node{{desc: j.root}}}
	if isIndex(j.root.MediaType) {
		var data []byte
		err := e.policy.Do(ctx, "manifest "+j.root.Digest.String(), func(int) error {
			var err error
			data, err = fetchManifest(ctx, f, j.root)
			return err
		})
		var idx ocispec.Index
		if err == nil {
			err = json.Unmarshal(data, &idx)
		}
		if err != nil {
			return false, e.sourceErr(j, "reading the image", err)
		}
		if len(e.c.opts.Platforms) > 0 {
			// The manifests of other platforms are not in the target.
			if idx.Manifests, err = newPlatformFilter(e.c.opts.Platforms).filter(j.root, idx.Manifests); err != nil {
				return false, e.sourceErr(j, "reading the image", err)
			}
		}
		children := make([]node, 0, len(idx.Manifests)+1)
		for _, m := range idx.Manifests {
			children = append(children, node{desc: m})
		}
		g.manifests = append(children, g.manifests...)
	}
	refs, searched, err := e.findReferrers(ctx, j, g)
	if err != nil {
		return false, e.sourceErr(j, "finding referrers", err)
	}
	j.res.ReferrersSearched = searched
	if len(refs) == 0 {
		return false, nil
	}
	api, err := e.dst.referrersAPI(ctx, j, j.root.Digest)
	if err != nil {
		return false, e.targetErr(j, "asking for the referrers API", err)
	}
	var missing []referrerGraph
	for _, r := range refs {
		have, err := e.hasReferrer(ctx, j, r, api)
		if err != nil {
			return false, e.targetErr(j, "looking for referrer "+r.Desc.Digest.String(), err)
		}
		if !have {
			missing = append(missing, r)
		}
	}
	if len(missing) == 0 {
		return false, nil
	}
	j.refs, j.refresh = missing, true
	j.graph = &graph{}
	mergeBlobs(j.graph, missing)
	var size int64
	for _, b := range j.graph.blobs {
		size += b.Size
	}
	for _, r := range missing {
		for _, m := range r.graph.manifests {
			size += m.desc.Size
		}
	}
	e.emit(Event{Kind: ImagePlanned, Image: j.img.Ref, Target: e.dst.display(j), Digest: j.root.Digest, Size: size})
	return true, nil
}

// hasReferrer reports whether j's target holds r as pushReferrer would
// leave it: under its tag, else by digest; into a target with the
// referrers API (api), a tag schema index by the artifacts it lists.
func (e *engine) hasReferrer(ctx context.Context, j *job, r referrerGraph, api bool) (bool, error) {
	ms := r.graph.manifests
	if api && referrerResults(r)[0].Index {
		for _, m := range ms[:len(ms)-1] {
			if ok, err := e.dst.hasManifest(ctx, j, "", m.desc); err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	}
	return e.dst.hasManifest(ctx, j, r.Tag, ms[len(ms)-1].desc)
}

func (e *engine) sourceErr(j *job, what string, err error) error {
	if errors.Is(err, ErrInvalidInput) || errors.Is(err, ErrSource) {
		return err
	}
	host, _ := e.src.Location(j.img)
	if host != "" {
		err = registryError(host, err)
	}
	return sideError{ErrSource, fmt.Errorf("%s: %s: %w", e.src.Name(j.img), what, err)}
}

func (e *engine) targetErr(j *job, what string, err error) error {
	if errors.Is(err, ErrInvalidInput) || errors.Is(err, ErrSource) || errors.Is(err, ErrTarget) {
		return err
	}
	var ce error = err
	if j.host != "" {
		ce = registryError(j.host, err)
	}
	if errors.Is(err, ErrOutput) {
		// A local write: the layout's path is in the message already.
		return sideError{ErrTarget, fmt.Errorf("%s: %w", what, ce)}
	}
	return sideError{ErrTarget, fmt.Errorf("%s: %s: %w", e.dst.describe(j.host), what, ce)}
}

// blobTask is one unique blob for one target namespace, with every
// repository of it that needs the blob and the images that need it there.
type blobTask struct {
	desc  ocispec.Descriptor
	host  string
	repos []string          // in first-seen order
	users map[string][]*job // repo -> images needing the blob there
	done  []string          // repositories that have it now
	again []string          // repositories to place it in on the next pass of a stream

	// Of a pipeline (see pipeline), under its lock:
	state   map[string]placement // repo -> where the blob stands there
	errs    map[string]error     // repo -> why it failed there
	pending []string             // repositories waiting for a worker
	queued  bool                 // in the pipeline's queue
	running bool                 // a worker places it
	seq     int                  // order of arrival in the queue
}

// addUser adds j to the task of its blob b in tasks (one per blob and
// target namespace), made when it is not there yet (created).
func addUser(tasks map[string]*blobTask, j *job, b ocispec.Descriptor) (t *blobTask, created bool) {
	key := j.host + "\x00" + b.Digest.String()
	t, ok := tasks[key]
	if !ok {
		t = &blobTask{desc: b, host: j.host, users: map[string][]*job{}}
		tasks[key] = t
	}
	if _, ok := t.users[j.repo]; !ok {
		t.repos = append(t.repos, j.repo)
	}
	t.users[j.repo] = append(t.users[j.repo], j)
	return t, !ok
}

// live returns the images that need t's blob in repo and have not failed.
func (t *blobTask) live(repo string) []*job {
	return slices.DeleteFunc(slices.Clone(t.users[repo]), func(u *job) bool { return u.failedErr() != nil })
}

// opener opens a blob's bytes, as they are at the source: putBlob checks
// them against the blob's descriptor.
type opener func(context.Context) (io.ReadCloser, error)

// copyBlob puts t's blob into each of repos: the first by upload (or by
// mount from the source when source and target share a registry), the
// others by mount from the first. A repository whose images have all
// failed meanwhile gets nothing. open reads the bytes (nil: fetch them
// from the source); a stream's opener that has passed the blob leaves
// the repository for the stream's next pass (t.again).
func (e *engine) copyBlob(ctx context.Context, t *blobTask, repos []string, open opener) {
	for _, repo := range repos {
		users := t.live(repo)
		if len(users) == 0 {
			continue
		}
		// The first image streams the bytes and gets the credit.
		owner := users[0]
		kind, err := e.putBlob(ctx, owner, repo, t.desc, e.mountFrom(t, owner), open)
		if errors.Is(err, errNextPass) && ctx.Err() == nil {
			t.again = append(t.again, repo)
			continue
		}
		if err != nil {
			for _, u := range users {
				e.failJob(u, err)
			}
			continue
		}
		t.done = append(t.done, repo)
		e.credit(t, users, kind)
	}
}

// mountFrom returns the repositories t's blob can be mounted from when
// owner's image places it: those of the target that have it, else the
// source repository when it is on the same registry.
func (e *engine) mountFrom(t *blobTask, owner *job) []string {
	from := slices.Clone(t.done)
	if len(from) == 0 {
		if h, r := e.src.Location(owner.img); h == t.host && r != "" {
			from = append(from, r)
		}
	}
	return from
}

// credit counts t's blob, placed as kind, for the images in users: the
// first placed it, the others find it there.
func (e *engine) credit(t *blobTask, users []*job, kind EventKind) {
	for i, u := range users {
		k := kind
		if i > 0 {
			k = BlobSkipped
		}
		u.add(k, t.desc.Size)
		e.emit(Event{Kind: k, Image: u.img.Ref, Target: e.dst.display(u), Digest: t.desc.Digest, Size: t.desc.Size})
	}
}

// putBlob places one blob in j's target namespace, repository repo,
// retrying whole on transient failures, and says how: copied, mounted or
// already there. A retry starts a new upload and fetches the blob again
// from its first byte; every byte is checked against the digest.
func (e *engine) putBlob(ctx context.Context, j *job, repo string, desc ocispec.Descriptor, mountFrom []string, src opener) (EventKind, error) {
	what := "blob " + desc.Digest.String()
	if src == nil {
		src = func(ctx context.Context) (io.ReadCloser, error) { return j.fetch.Fetch(ctx, desc) }
	}
	open := func(ctx context.Context) (io.ReadCloser, error) {
		rc, err := src(ctx)
		if err != nil {
			return nil, e.sourceErr(j, "fetching "+what, err)
		}
		return sourceReader{verify.ReadCloser(rc, desc), func(err error) error { return e.sourceErr(j, "fetching "+what, err) }}, nil
	}
	progress := func(n int64) {
		e.emit(Event{Kind: BlobProgress, Image: j.img.Ref, Target: e.dst.display(j), Digest: desc.Digest, Size: desc.Size, Bytes: n})
	}
	var kind EventKind
	err := e.policy.Do(ctx, what+" to "+e.dst.describe(j.host)+" "+repo, func(int) error {
		var err error
		kind, err = e.dst.putBlob(ctx, j.host, repo, desc, mountFrom, open, progress)
		return resolver.TypedError(err)
	})
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", e.targetErr(j, "pushing "+what, err)
	}
	return kind, nil
}

// pushManifests pushes j's manifests byte for byte, children first, then,
// when it has referrers, the root by digest (each referrer's subject is in
// the target before the referrer names it), its referrers, each after its
// own subject, and last the root under its name, so that an image found
// present by its tag has its referrers too. Into a target with the
// referrers API, no referrers tag schema index is copied or written: the
// target lists each referrer by its subject itself.
func (e *engine) pushManifests(ctx context.Context, j *job) error {
	if j.refresh {
		// The image is in place: its referrers' subjects are there.
		return e.pushReferrers(ctx, j, j.root.Digest)
	}
	manifests := j.graph.manifests
	root := manifests[len(manifests)-1]
	for _, m := range manifests[:len(manifests)-1] {
		if err := e.putManifest(ctx, j, m, "", false); err != nil {
			return err
		}
	}
	if len(j.refs) > 0 {
		if err := e.putManifest(ctx, j, root, "", false); err != nil {
			return err
		}
		if err := e.pushReferrers(ctx, j, root.desc.Digest); err != nil {
			return err
		}
	}
	return e.putManifest(ctx, j, root, "", true)
}

// pushReferrers pushes j's referrers, whose subjects are all in the target
// (subject is one of them, for asking the target whether it has the
// referrers API), and makes those found without a tag findable in a
// target without the API.
func (e *engine) pushReferrers(ctx context.Context, j *job, subject digest.Digest) error {
	bestEffort := e.c.opts.Referrers.BestEffort
	api, err := e.dst.referrersAPI(ctx, j, subject)
	if err != nil {
		err = e.targetErr(j, "asking for the referrers API", err)
		if !bestEffort || ctx.Err() != nil {
			return err
		}
		// Not knowing, index as for a target without the API: a tag too many
		// beats a referrer nobody finds.
		e.emit(Event{Kind: ReferrerFailed, Image: j.img.Ref, Target: e.dst.display(j), Err: err})
	}
	if api {
		e.c.logger.Debug("the target has the referrers API: no referrers tag schema index", "image", j.img.Ref, "target", e.dst.display(j))
	}
	for _, r := range j.refs {
		if err := e.pushReferrer(ctx, j, r, api); err != nil {
			if !bestEffort || ctx.Err() != nil {
				return err
			}
			e.c.logger.Warn("referrer not copied", "image", j.img.Ref, "referrer", r.Desc.Digest, "err", err)
			e.emit(Event{Kind: ReferrerFailed, Image: j.img.Ref, Target: e.dst.display(j), Digest: r.Desc.Digest, Err: err})
		}
	}
	if api {
		return nil
	}
	if err := e.indexReferrers(ctx, j); err != nil {
		if !bestEffort || ctx.Err() != nil {
			return err
		}
		e.emit(Event{Kind: ReferrerFailed, Image: j.img.Ref, Target: e.dst.display(j), Err: err})
	}
	return nil
}

// pushReferrer pushes a referrer's manifests with j's image, under its tag
// when it has one. Into a target with the referrers API (api), a referrers
// tag schema index is not pushed, only the artifacts it lists: the target
// lists them by their subject.
func (e *engine) pushReferrer(ctx context.Context, j *job, r referrerGraph, api bool) error {
	ms := r.graph.manifests
	results := referrerResults(r)
	dropIndex := api && results[0].Index
	if dropIndex {
		ms, results = ms[:len(ms)-1], results[1:]
	}
	for i, m := range ms {
		tag := ""
		if i == len(ms)-1 && !dropIndex {
			tag = r.Tag
		}
		if err := e.putManifest(ctx, j, m, tag, false); err != nil {
			return err
		}
	}
	j.mu.Lock()
	j.res.Referrers = append(j.res.Referrers, results...)
	j.mu.Unlock()
	if !dropIndex {
		e.emit(Event{Kind: ReferrerCopied, Image: j.img.Ref, Target: e.dst.display(j), Digest: r.Desc.Digest, Size: r.Desc.Size})
		return nil
	}
	for _, x := range results {
		e.emit(Event{Kind: ReferrerCopied, Image: j.img.Ref, Target: e.dst.display(j), Digest: x.Digest, Size: sizeOf(r.graph, x.Digest)})
	}
	return nil
}

// sizeOf is the size of manifest d of g, or 0.
func sizeOf(g *graph, d digest.Digest) int64 {
	for _, m := range g.manifests {
		if m.desc.Digest == d {
			return m.desc.Size
		}
	}
	return 0
}

// indexReferrers makes j's referrers found without a tag findable in the
// target (see target.referrerIndexes).
func (e *engine) indexReferrers(ctx context.Context, j *job) error {
	idx, err := e.dst.referrerIndexes(ctx, j, j.refs)
	if err != nil {
		return e.targetErr(j, "indexing referrers", err)
	}
	for _, t := range idx {
		if err := e.putManifest(ctx, j, t.n, t.tag, false); err != nil {
			return err
		}
	}
	return nil
}

// putManifest pushes one manifest, retried whole.
func (e *engine) putManifest(ctx context.Context, j *job, n node, tag string, root bool) error {
	what := "manifest " + n.desc.Digest.String()
	var pushed bool
	err := e.policy.Do(ctx, what+" to "+e.dst.describe(j.host)+" "+j.repo, func(int) error {
		var err error
		pushed, err = e.dst.putManifest(ctx, j, n, tag, root)
		return resolver.TypedError(err)
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return e.targetErr(j, "pushing "+what, e.sparseErr(j, n, e.foreignErr(n, err)))
	}
	if pushed {
		e.emit(Event{Kind: ManifestPushed, Image: j.img.Ref, Target: e.dst.display(j), Digest: n.desc.Digest, Size: n.desc.Size})
	}
	return nil
}

// foreignErr explains a target's refusal of a manifest with
// non-distributable layers (foreign layers, layers with URLs): they were
// not copied, or the target refuses layer URLs. Other errors, and
// manifests without such layers, are returned as they are.
func (e *engine) foreignErr(n node, err error) error {
	layers := n.foreign
	if e.c.opts.IncludeNonDistributable {
		layers = nil
		var m ocispec.Manifest
		if json.Unmarshal(n.data, &m) == nil {
			for _, l := range m.Layers {
				if nonDistributable(l) || len(l.URLs) > 0 {
					layers = append(layers, l)
				}
			}
		}
	}
	if len(layers) == 0 || errors.Is(err, ErrAuthentication) || errors.Is(err, ErrSource) {
		return err
	}
	l := layers[0]
	why := "it was not copied (non-distributable layers are not, unless asked for)"
	if e.c.opts.IncludeNonDistributable {
		why = "it was copied, and the target refuses manifests whose layers carry URLs"
	}
	return &foreignError{err: fmt.Errorf("manifest %s has %d non-distributable layer(s), the first %s (%s, URLs %v): %s: %w", n.desc.Digest, len(layers), l.Digest, l.MediaType, l.URLs, why, err)}
}

// foreignError matches ErrNonDistributable and what it wraps.
type foreignError struct{ err error }

func (e *foreignError) Error() string   { return e.err.Error() }
func (e *foreignError) Unwrap() []error { return []error{ErrNonDistributable, e.err} }

// sourceReader says which side failed: its read errors (but io.EOF) are
// source errors.
type sourceReader struct {
	io.ReadCloser
	wrap func(error) error
}

func (r sourceReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = r.wrap(err)
	}
	return n, err
}

// progress reports bytes in steps of at least 1 MiB.
type progress struct {
	pending int64
	flush   func(int64)
}

func (p *progress) add(n int) {
	p.pending += int64(n)
	if p.pending >= 1<<20 {
		p.flush(p.pending)
		p.pending = 0
	}
}

// done reports what is left.
func (p *progress) done() {
	if p.pending > 0 {
		p.flush(p.pending)
		p.pending = 0
	}
}

// progressWriter reports the bytes written.
type progressWriter struct {
	w io.Writer
	progress
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.add(n)
	return n, err
}

// progressReader reports the bytes read.
type progressReader struct {
	io.ReadCloser
	progress
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.ReadCloser.Read(b)
	p.add(n)
	return n, err
}
