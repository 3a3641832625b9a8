package fixup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/retry"
	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-relocate/relocator"
)

// engine copies the content graphs of images from a source to a target:
// every command and every method of Client is one run of it.
type engine struct {
	c       *Client
	src     source
	dst     target
	mapping *relocator.Mapping // maps a job without a target once its digest is known
	policy  retry.Policy
	onEvent func(Event) // the call's event sink, or nil
	// prepare, when not nil, is called once every job is planned, before
	// any blob moves: a target that lays its output out from the whole
	// plan (an archive written in place) does it there.
	prepare func(ctx context.Context, jobs []*job)

	evMu sync.Mutex
	// refused holds, by target host, the error of the first sparse index
	// that registry refused: the other images' are not tried.
	refused sync.Map
}

func (c *Client) engine(src Source, dst target, m *relocator.Mapping) *engine {
	if src == nil {
		src = newRegistrySource(c.reg)
	}
	return &engine{c: c, src: adaptSource(src), dst: dst, mapping: m, onEvent: c.opts.OnEvent, policy: retry.Policy{
		Retries: c.retries,
		Logger:  c.logger,
	}}
}

// events makes f, when not nil, the run's event sink instead of the
// client's (ClientOptions.OnEvent); noEvents silences a run.
func (e *engine) events(f func(Event)) *engine {
	if f != nil {
		e.onEvent = f
	}
	return e
}

// noEvents is the sink of a run whose copies are not the caller's images
// (a base's manifests, a bundle's own artifact).
func noEvents(Event) {}

func (e *engine) emit(ev Event) {
	if e.onEvent == nil {
		return
	}
	ev.Time = time.Now()
	e.evMu.Lock()
	defer e.evMu.Unlock()
	e.onEvent(ev)
}

func (e *engine) failJob(j *job, err error) {
	j.fail(err)
	ev := Event{Kind: ImageFailed, Image: j.img.Ref, Err: err}
	if j.target != nil {
		ev.Target = e.dst.display(j.dest())
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
	if ss := e.src.streamed(); ss != nil {
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
	if e.prepare != nil {
		e.prepare(ctx, jobs)
	}
	if ds := e.src.delta(); ds != nil {
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
	e.emit(Event{Kind: ImageDone, Image: j.img.Ref, Target: e.dst.display(j.dest()), Digest: j.root.Digest})
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
		if e.src.delta() == nil {
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
	e.emit(Event{Kind: ImagePlanned, Image: j.img.Ref, Target: e.dst.display(j.dest()), Digest: j.root.Digest, Size: size})
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
	if opts.Disabled {
		return nil, false, nil
	}
	fetch := func(d ocispec.Descriptor) (*graph, error) {
		g, err := walkRetries(ctx, j.fetch, d, e.policy, e.c.opts.IncludeNonDistributable, nil)
		if err == nil {
			j.leftOut = append(j.leftOut, g.leftOut...) // see checkDelta
		}
		return g, err
	}
	refs, err := findReferrers(ctx, e.src, j.img, fetch, g, opts)
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
	desc, err := e.dst.lookup(ctx, j.dest(), d)
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
	e.emit(Event{Kind: ImagePresent, Image: j.img.Ref, Target: e.dst.display(j.dest()), Digest: d})
	return true, nil
}

// refresh looks for the referrers of j, an image found present, at the
// source, and plans the copy of those the target lacks (copying): j.graph
// then holds their blobs and no manifest of the image, which is in place
// (see pushManifests). The subjects are the root and, for an index, the
// manifests it lists (one GET of the root); the source's tags are listed
// once per repository, as for every image (tagCache).
func (e *engine) refresh(ctx context.Context, j *job) (copying bool, err error) {
	if e.c.opts.Referrers.Disabled {
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
	api, err := e.dst.referrersAPI(ctx, j.dest(), j.root.Digest)
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
	e.emit(Event{Kind: ImagePlanned, Image: j.img.Ref, Target: e.dst.display(j.dest()), Digest: j.root.Digest, Size: size})
	return true, nil
}

// hasReferrer reports whether j's target holds r as pushReferrer would
// leave it: under its tag, else by digest; into a target with the
// referrers API (api), a tag schema index by the artifacts it lists.
func (e *engine) hasReferrer(ctx context.Context, j *job, r referrerGraph, api bool) (bool, error) {
	ms := r.graph.manifests
	if api && referrerResults(r)[0].Index {
		for _, m := range ms[:len(ms)-1] {
			if ok, err := e.dst.hasManifest(ctx, j.dest(), "", m.desc); err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	}
	return e.dst.hasManifest(ctx, j.dest(), r.Tag, ms[len(ms)-1].desc)
}
