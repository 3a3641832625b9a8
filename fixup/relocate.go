package fixup

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	remoteserrors "github.com/containerd/containerd/remotes/errors"
	"github.com/containerd/log"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/cnabio/cnab-relocate/resolver"
)

// discardLogger silences containerd's logging.
var discardLogger = func() *log.Entry {
	l := logrus.New()
	l.Out = io.Discard
	return logrus.NewEntry(l)
}()

// mountLabel is containerd's annotation prefix naming the repositories a
// blob can be mounted from: containerd.io/distribution.source.<host>.
const mountLabel = "containerd.io/distribution.source."

// job is the work for one distinct image reference.
type job struct {
	img    Image
	want   digest.Digest
	target reference.Named // relocated reference, with tag and digest as relocated
	host   string          // target registry host
	repo   string          // target repository path
	root   ocispec.Descriptor
	graph  *graph
	refs   []referrerGraph
	fetch  remotes.Fetcher
	start  time.Time

	mu  sync.Mutex
	res ImageResult
	err error
}

func (j *job) fail(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err == nil {
		j.err = err
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

// engine holds one run's state.
type engine struct {
	opts    Options
	source  Source
	tracker docker.StatusTracker
	logger  *slog.Logger

	evMu sync.Mutex
}

func (e *engine) emit(ev Event) {
	if e.opts.OnEvent == nil {
		return
	}
	ev.Time = time.Now()
	e.evMu.Lock()
	defer e.evMu.Unlock()
	e.opts.OnEvent(ev)
}

// Relocate copies every relocatable image of b to the target its mapping
// gives, preserving digests, and returns the relocation mapping. It writes
// no file; see WriteOutputs. When some images fail, the returned error
// names each of them and the Result still reports what was done, so a
// rerun resumes from it. Relocate is safe for concurrent use with distinct
// or identical options; it honours ctx cancellation.
func Relocate(ctx context.Context, b *Bundle, opts Options) (*Result, error) {
	if opts.Mapping == nil {
		return nil, invalid(errors.New("fixup: Options.Mapping is required"))
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
	if opts.Resolver == nil {
		opts.Tracker = docker.NewInMemoryTracker()
		r, err := resolver.New(resolver.Options{Tracker: opts.Tracker, Logger: opts.Logger})
		if err != nil {
			return nil, invalid(err)
		}
		opts.Resolver = r
	}
	// containerd logs through logrus unless the context carries a logger;
	// the library never prints.
	ctx = log.WithLogger(ctx, discardLogger)
	e := &engine{opts: opts, source: opts.Source, tracker: opts.Tracker, logger: opts.Logger}
	if e.source == nil {
		e.source = NewRegistrySource(opts.Resolver)
	}

	plan, err := NewPlan(b, opts.Mapping)
	if err != nil {
		return nil, err
	}
	jobs := make([]*job, len(plan.Entries))
	for i, p := range plan.Entries {
		jobs[i] = &job{img: p.Image, want: p.Digest, res: ImageResult{Source: p.Image.Ref}}
		if p.Target != nil {
			jobs[i].setTarget(p.Target)
		}
	}

	// 1. Plan: for each image find its root, skip it when the target has it,
	// else fetch its manifests.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Jobs)
	for _, j := range jobs {
		g.Go(func() error {
			j.start = time.Now()
			if err := e.plan(gctx, j); err != nil {
				j.fail(err)
				e.emit(Event{Kind: ImageFailed, Image: j.img.Ref, Err: err})
			}
			return ctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	// 2. Blobs of all images, each unique blob once per target registry,
	// biggest first so the tail is short.
	if err := e.copyBlobs(ctx, jobs); err != nil {
		return nil, err
	}

	// 3. Manifests, children before parents, the root (and tag) last.
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(opts.Jobs)
	for _, j := range jobs {
		if j.graph == nil || j.failedErr() != nil {
			continue
		}
		g.Go(func() error {
			if err := e.pushManifests(gctx, j); err != nil {
				j.fail(err)
				e.emit(Event{Kind: ImageFailed, Image: j.img.Ref, Target: j.target.String(), Err: err})
				return ctx.Err()
			}
			e.emit(Event{Kind: ImageDone, Image: j.img.Ref, Target: j.target.String(), Digest: j.root.Digest})
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	res := &Result{Mapping: map[string]string{}, Digests: map[string]digest.Digest{}, Skipped: plan.Skipped}
	var errs []error
	for _, j := range jobs {
		r := j.res
		r.Duration = time.Since(j.start)
		if j.target != nil {
			r.Target = j.target.String()
		}
		r.Digest = j.root.Digest
		r.MediaType = j.root.MediaType
		if err := j.failedErr(); err != nil {
			r.Err = fmt.Errorf("relocating %s: %w", j.img.Ref, err)
			errs = append(errs, r.Err)
		} else {
			res.Mapping[j.img.Ref] = r.Target
			res.Digests[j.img.Ref] = r.Digest
		}
		res.Images = append(res.Images, r)
	}
	return res, errors.Join(errs...)
}

// plan fills in j's target, root and graph, or marks it present.
func (e *engine) plan(ctx context.Context, j *job) error {
	e.emit(Event{Kind: ImageStarted, Image: j.img.Ref})
	if j.want != "" {
		if err := e.mapTarget(j, j.want); err != nil {
			return err
		}
		present, err := e.present(ctx, j, j.want)
		if err != nil {
			return err
		}
		if present {
			return nil
		}
	}
	root, err := e.source.Resolve(ctx, j.img, j.want)
	if err != nil {
		return e.sourceErr(j, "resolving the image", err)
	}
	j.root = root
	if j.want == "" {
		if err := e.mapTarget(j, root.Digest); err != nil {
			return err
		}
		present, err := e.present(ctx, j, root.Digest)
		if err != nil || present {
			return err
		}
	}
	f, err := e.source.Fetcher(ctx, j.img)
	if err != nil {
		return e.sourceErr(j, "fetching", err)
	}
	j.fetch = f
	gr, err := walkRetries(ctx, f, root, e.opts.Retries, e.logger)
	if err != nil {
		return e.sourceErr(j, "reading the image", err)
	}
	j.graph = gr
	j.root.MediaType = gr.manifests[len(gr.manifests)-1].desc.MediaType
	refs, err := e.findReferrers(ctx, j.img, f, gr)
	if err != nil {
		return e.sourceErr(j, "finding referrers", err)
	}
	j.refs = refs
	size := gr.size()
	for _, r := range refs {
		for _, m := range r.graph.manifests {
			size += m.desc.Size
		}
	}
	mergeBlobs(gr, refs)
	e.emit(Event{Kind: ImagePlanned, Image: j.img.Ref, Target: j.target.String(), Digest: root.Digest, Size: size})
	return nil
}

// findReferrers returns the referrers of g that travel with img, or none
// when they are off or the source cannot list them. With BestEffort a
// failure is reported as an event and what was found is kept.
func (e *engine) findReferrers(ctx context.Context, img Image, f remotes.Fetcher, g *graph) ([]referrerGraph, error) {
	return discoverReferrers(ctx, e.source, img, f, g, e.opts.Referrers, e.opts.Retries, e.logger, e.emit)
}

// discoverReferrers is findReferrers for any engine (relocate or export).
func discoverReferrers(ctx context.Context, src Source, img Image, f remotes.Fetcher, g *graph, opts ReferrerOptions, retries int, logger *slog.Logger, emit func(Event)) ([]referrerGraph, error) {
	rs, ok := src.(ReferrerSource)
	if opts.Disabled || !ok {
		return nil, nil
	}
	fetch := func(d ocispec.Descriptor) (*graph, error) {
		return walkRetries(ctx, f, d, retries, logger)
	}
	refs, err := findReferrers(ctx, rs, img, fetch, g, opts)
	if err != nil && opts.BestEffort && ctx.Err() == nil {
		logger.Warn("referrers not copied", "image", img.Ref, "err", err)
		emit(Event{Kind: ReferrerFailed, Image: img.Ref, Err: err})
		return refs, nil
	}
	return refs, err
}

// mapTarget sets j's target for root digest d, unless the plan already
// knew it.
func (e *engine) mapTarget(j *job, d digest.Digest) error {
	if j.target != nil {
		return nil
	}
	t, err := e.opts.Mapping.Map(j.img.Named, d)
	if err != nil {
		return invalid(fmt.Errorf("%s (%s): %w", j.img.Ref, j.img.Field, err))
	}
	j.setTarget(t)
	return nil
}

func (j *job) setTarget(t reference.Named) {
	j.target = t
	j.host = reference.Domain(t)
	j.repo = reference.Path(t)
}

// present reports whether the target already holds the image: its tag (if
// the reference has one) pointing at d, else the manifest d. One HEAD.
func (e *engine) present(ctx context.Context, j *job, d digest.Digest) (bool, error) {
	ref := reference.TrimNamed(j.target).String() + "@" + d.String()
	if t, ok := j.target.(reference.Tagged); ok {
		ref = reference.TrimNamed(j.target).String() + ":" + t.Tag()
	}
	_, desc, err := e.opts.Resolver.Resolve(ctx, ref)
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
	e.emit(Event{Kind: ImagePresent, Image: j.img.Ref, Target: j.target.String(), Digest: d})
	return true, nil
}

func (e *engine) sourceErr(j *job, what string, err error) error {
	if errors.Is(err, ErrInvalidInput) {
		return err
	}
	host, _ := e.source.Location(j.img)
	return sideError{ErrSource, fmt.Errorf("%s: %s: %w", e.source.Name(j.img), what, explain(host, err))}
}

func (e *engine) targetErr(j *job, what string, err error) error {
	return sideError{ErrTarget, fmt.Errorf("target registry %s: %s: %w", j.host, what, explain(j.host, err))}
}

// blobTask is one unique blob for one target registry, with every target
// repository that needs it and the images that need it there.
type blobTask struct {
	desc  ocispec.Descriptor
	host  string
	repos []string          // in first-seen order
	users map[string][]*job // repo -> images needing the blob there
}

func (e *engine) copyBlobs(ctx context.Context, jobs []*job) error {
	tasks := map[string]*blobTask{}
	var order []*blobTask
	for _, j := range jobs {
		if j.graph == nil || j.failedErr() != nil {
			continue
		}
		for _, b := range j.graph.blobs {
			key := j.host + "\x00" + b.Digest.String()
			t, ok := tasks[key]
			if !ok {
				t = &blobTask{desc: b, host: j.host, users: map[string][]*job{}}
				tasks[key] = t
				order = append(order, t)
			}
			if _, ok := t.users[j.repo]; !ok {
				t.repos = append(t.repos, j.repo)
			}
			t.users[j.repo] = append(t.users[j.repo], j)
		}
	}
	slices.SortStableFunc(order, func(a, b *blobTask) int { return cmp.Compare(b.desc.Size, a.desc.Size) })

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.opts.Jobs)
	for _, t := range order {
		g.Go(func() error {
			e.copyBlob(gctx, t)
			return ctx.Err()
		})
	}
	return g.Wait()
}

// copyBlob puts t's blob into each repository that needs it: the first by
// upload (or by mount from the source when source and target share a
// registry), the others by mount from the first.
func (e *engine) copyBlob(ctx context.Context, t *blobTask) {
	var done []string
	for _, repo := range t.repos {
		users := t.users[repo]
		// The job whose fetcher streams the bytes, and who gets the credit.
		owner := users[0]
		if owner.failedErr() != nil {
			// Another blob of this image failed; still place the blob for
			// the others.
			for _, u := range users[1:] {
				if u.failedErr() == nil {
					owner = u
					break
				}
			}
		}
		mountFrom := slices.Clone(done)
		if len(mountFrom) == 0 {
			if h, r := e.source.Location(owner.img); h == t.host && r != "" {
				mountFrom = append(mountFrom, r)
			}
		}
		kind, err := e.pushBlob(ctx, owner, t.host, repo, t.desc, mountFrom)
		if err != nil {
			for _, u := range users {
				u.fail(err)
				e.emit(Event{Kind: ImageFailed, Image: u.img.Ref, Target: u.target.String(), Err: err})
			}
			continue
		}
		done = append(done, repo)
		for i, u := range users {
			k := kind
			if i > 0 {
				k = BlobSkipped
			}
			u.add(k, t.desc.Size)
			e.emit(Event{Kind: k, Image: u.img.Ref, Target: u.target.String(), Digest: t.desc.Digest, Size: t.desc.Size})
		}
	}
}

// pushBlob places one blob in host/repo, retrying whole on transient
// failures, and says how: copied, mounted or already there. A retry starts
// a new upload session and fetches the blob again from its first byte.
func (e *engine) pushBlob(ctx context.Context, j *job, host, repo string, desc ocispec.Descriptor, mountFrom []string) (EventKind, error) {
	var kind EventKind
	err := withRetries(ctx, e.opts.Retries, e.logger, "blob "+desc.Digest.String()+" to "+host+"/"+repo, func(attempt int) error {
		var err error
		kind, err = e.pushBlobOnce(ctx, j, host, repo, desc, mountFrom, attempt)
		return err
	})
	if err != nil {
		return "", err
	}
	return kind, nil
}

func (e *engine) pushBlobOnce(ctx context.Context, j *job, host, repo string, desc ocispec.Descriptor, mountFrom []string, attempt int) (_ EventKind, retErr error) {
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
	pusher, err := e.opts.Resolver.Pusher(ctx, host+"/"+repo+"@"+desc.Digest.String())
	if err != nil {
		return "", e.targetErr(j, "pushing blob "+desc.Digest.String(), err)
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
	key := fmt.Sprintf("%s/%s@%s#%d", host, repo, desc.Digest, attempt)
	w, err = pusher.(content.Ingester).Writer(ctx, content.WithRef(key), content.WithDescriptor(d))
	if err != nil {
		w = nil
		if errdefs.IsAlreadyExists(err) {
			return e.existingKind(key), nil
		}
		return "", e.targetErr(j, "pushing blob "+desc.Digest.String(), err)
	}
	rc, err := j.fetch.Fetch(ctx, desc)
	if err != nil {
		return "", e.sourceErr(j, "fetching blob "+desc.Digest.String(), err)
	}
	defer rc.Close()
	src := &readErr{r: NewVerifier(rc, desc)}
	pw := &progressWriter{w: w, flush: func(n int64) {
		e.emit(Event{Kind: BlobProgress, Image: j.img.Ref, Digest: desc.Digest, Size: desc.Size, Bytes: n})
	}}
	if _, err := io.Copy(pw, src); err != nil {
		if src.err != nil {
			return "", e.sourceErr(j, "fetching blob "+desc.Digest.String(), src.err)
		}
		return "", e.targetErr(j, "uploading blob "+desc.Digest.String(), err)
	}
	pw.done()
	if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil {
		return "", e.targetErr(j, "uploading blob "+desc.Digest.String(), err)
	}
	return BlobCopied, nil
}

// existingKind tells a mount from a blob that was already there.
func (e *engine) existingKind(key string) EventKind {
	if e.tracker == nil {
		return BlobSkipped
	}
	st, err := e.tracker.GetStatus(key)
	if err == nil && st.MountedFrom != "" {
		return BlobMounted
	}
	return BlobSkipped
}

// pushManifests pushes j's manifests byte for byte, children first; the
// root goes last, under its tag when the reference has one.
func (e *engine) pushManifests(ctx context.Context, j *job) error {
	ref := reference.TrimNamed(j.target).String()
	if t, ok := j.target.(reference.Tagged); ok {
		ref += ":" + t.Tag()
	}
	ref += "@" + j.root.Digest.String()
	pusher, err := e.opts.Resolver.Pusher(ctx, ref)
	if err != nil {
		return e.targetErr(j, "pushing", err)
	}
	// The image's manifests but its root, then its referrers (whose subjects
	// may need not exist yet: registries accept that), then the root and
	// its tag, so an image that is present has its referrers too.
	manifests := j.graph.manifests
	if err := e.pushNodes(ctx, j, pusher, manifests[:len(manifests)-1]); err != nil {
		return err
	}
	for _, r := range j.refs {
		if err := e.pushReferrer(ctx, j, r); err != nil {
			if !e.opts.Referrers.BestEffort || ctx.Err() != nil {
				return err
			}
			e.logger.Warn("referrer not copied", "image", j.img.Ref, "referrer", r.Desc.Digest, "err", err)
			e.emit(Event{Kind: ReferrerFailed, Image: j.img.Ref, Target: j.target.String(), Digest: r.Desc.Digest, Err: err})
		}
	}
	if err := e.indexReferrers(ctx, j); err != nil {
		if !e.opts.Referrers.BestEffort || ctx.Err() != nil {
			return err
		}
		e.emit(Event{Kind: ReferrerFailed, Image: j.img.Ref, Target: j.target.String(), Err: err})
	}
	return e.pushNodes(ctx, j, pusher, manifests[len(manifests)-1:])
}

// indexReferrers makes the referrers found through the source's referrers
// API findable in a target that lacks the API: it adds them to the
// subject's referrers tag schema index (tag sha256-<hex>), as OCI 1.1
// clients do. A target with the API indexes them itself.
func (e *engine) indexReferrers(ctx context.Context, j *job) error {
	bySubject := map[digest.Digest][]ocispec.Descriptor{}
	var subjects []digest.Digest
	for _, r := range j.refs {
		if r.Tag != "" {
			continue
		}
		if _, ok := bySubject[r.subject]; !ok {
			subjects = append(subjects, r.subject)
		}
		d := ocispec.Descriptor{MediaType: r.Desc.MediaType, Digest: r.Desc.Digest, Size: r.Desc.Size, ArtifactType: r.artifactType, Annotations: r.Desc.Annotations}
		bySubject[r.subject] = append(bySubject[r.subject], d)
	}
	api, ok := e.opts.Resolver.(registryAPI)
	if len(subjects) == 0 || !ok {
		return nil
	}
	repo := reference.TrimNamed(j.target).String()
	for _, subject := range subjects {
		if _, supported, err := api.Referrers(ctx, repo, subject); err != nil {
			return e.targetErr(j, "listing referrers of "+subject.String(), err)
		} else if supported {
			continue
		}
		tag := referrerTags(subject)[0]
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
		idx.SchemaVersion = 2
		// Keep what the target's index already lists.
		if _, desc, err := e.opts.Resolver.Resolve(ctx, repo+":"+tag); err == nil {
			f, err := e.opts.Resolver.Fetcher(ctx, repo)
			if err != nil {
				return e.targetErr(j, "reading referrers index "+tag, err)
			}
			data, err := fetchManifest(ctx, f, desc)
			if err != nil {
				return e.targetErr(j, "reading referrers index "+tag, err)
			}
			if err := json.Unmarshal(data, &idx); err != nil {
				return e.targetErr(j, "reading referrers index "+tag, err)
			}
		} else if !errdefs.IsNotFound(err) {
			return e.targetErr(j, "reading referrers index "+tag, err)
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
			return err
		}
		n := node{desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(data), Size: int64(len(data))}, data: data}
		pusher, err := e.opts.Resolver.Pusher(ctx, repo+":"+tag+"@"+n.desc.Digest.String())
		if err != nil {
			return e.targetErr(j, "pushing referrers index "+tag, err)
		}
		if err := e.pushNodes(ctx, j, pusher, []node{n}); err != nil {
			return err
		}
	}
	return nil
}

// pushReferrer pushes a referrer's manifests into j's target repository,
// under its tag when it has one.
func (e *engine) pushReferrer(ctx context.Context, j *job, r referrerGraph) error {
	ref := reference.TrimNamed(j.target).String()
	if r.Tag != "" {
		ref += ":" + r.Tag
	}
	ref += "@" + r.Desc.Digest.String()
	pusher, err := e.opts.Resolver.Pusher(ctx, ref)
	if err != nil {
		return e.targetErr(j, "pushing referrer "+r.Desc.Digest.String(), err)
	}
	if err := e.pushNodes(ctx, j, pusher, r.graph.manifests); err != nil {
		return err
	}
	j.mu.Lock()
	j.res.Referrers = append(j.res.Referrers, ReferrerResult{Subject: r.subject, Digest: r.Desc.Digest, MediaType: r.Desc.MediaType, ArtifactType: r.artifactType, Tag: r.Tag})
	j.mu.Unlock()
	e.emit(Event{Kind: ReferrerCopied, Image: j.img.Ref, Target: j.target.String(), Digest: r.Desc.Digest, Size: r.Desc.Size})
	return nil
}

// pushNodes pushes manifests in order, each retried whole.
func (e *engine) pushNodes(ctx context.Context, j *job, pusher remotes.Pusher, nodes []node) error {
	for _, m := range nodes {
		err := withRetries(ctx, e.opts.Retries, e.logger, "manifest "+m.desc.Digest.String()+" to "+j.host+"/"+j.repo, func(attempt int) error {
			return e.pushManifestOnce(ctx, j, pusher, m, attempt)
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return e.targetErr(j, "pushing manifest "+m.desc.Digest.String(), err)
		}
	}
	return nil
}

func (e *engine) pushManifestOnce(ctx context.Context, j *job, pusher remotes.Pusher, m node, attempt int) (retErr error) {
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
	key := fmt.Sprintf("%s/%s@%s#m%d", j.host, j.repo, m.desc.Digest, attempt)
	w, err := pusher.(content.Ingester).Writer(ctx, content.WithRef(key), content.WithDescriptor(m.desc))
	if err != nil {
		w = nil
		if errdefs.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	if _, err := w.Write(m.data); err != nil {
		return err
	}
	if err := w.Commit(ctx, m.desc.Size, m.desc.Digest); err != nil {
		return err
	}
	e.emit(Event{Kind: ManifestPushed, Image: j.img.Ref, Target: j.target.String(), Digest: m.desc.Digest, Size: m.desc.Size})
	return nil
}

// readErr remembers the error of the reader, so a failed copy can say
// which side failed.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// progressWriter reports written bytes in steps of at least 1 MiB.
type progressWriter struct {
	w       io.Writer
	pending int64
	flush   func(int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.pending += int64(n)
	if p.pending >= 1<<20 {
		p.flush(p.pending)
		p.pending = 0
	}
	return n, err
}

func (p *progressWriter) done() {
	if p.pending > 0 {
		p.flush(p.pending)
		p.pending = 0
	}
}

// withRetries calls try until it succeeds, at most retries+1 times (once
// when retries is negative), while the error is retryable. Between attempts
// it waits what the server asked for (Retry-After) or an exponential backoff
// with jitter; it stops at once when ctx ends.
func withRetries(ctx context.Context, retries int, logger *slog.Logger, what string, try func(attempt int) error) error {
	for attempt := 0; ; attempt++ {
		err := try(attempt)
		if err == nil {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if attempt >= max(retries, 0) || !retryable(err) {
			return err
		}
		wait := retryWait(err, attempt)
		if logger != nil {
			logger.Debug("retrying", "what", what, "attempt", attempt+1, "wait", wait, "err", err)
		}
		if serr := sleep(ctx, wait); serr != nil {
			return serr
		}
	}
}

// retryWait is the wait before retry attempt+1 after err: the server's
// Retry-After if it sent one, else an exponential backoff with jitter.
func retryWait(err error, attempt int) time.Duration {
	if d, ok := resolver.RetryAfter(err); ok {
		return d
	}
	return resolver.Backoff(attempt)
}

// fetchStatus finds the status in containerd's fetcher errors, which are
// plain strings: "unexpected status code URL: 403 Forbidden".
var fetchStatus = regexp.MustCompile(`unexpected status code \S+: ([1-5][0-9][0-9])\b`)

// retryable reports whether a whole blob or manifest transfer is worth
// another try. Worth it: a failure the transport could not retry itself
// (a connection reset while a body streams, any transient failure of a
// streaming upload, a reset of containerd's upload pipe, an upload session
// the registry forgot). Not worth it: content that does not match its
// digest, bad input, authentication and authorization failures, missing
// content, any other 4xx, cancellation, and transient failures the
// transport already retried as often as it was allowed to.
func retryable(err error) bool {
	if errors.Is(err, ErrDigestMismatch) || errors.Is(err, ErrInvalidInput) || errors.Is(err, ErrOutput) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, resolver.ErrRetriesExhausted) ||
		errors.Is(err, docker.ErrInvalidAuthorization) || errdefs.IsNotFound(err) {
		return false
	}
	if uploadUnknown(err) {
		// The upload session vanished (a lost response, a restarted
		// registry): start a new one.
		return true
	}
	var se *resolver.StatusError
	if errors.As(err, &se) {
		return true // 408, 429 or 5xx of a request the transport could not replay
	}
	var us remoteserrors.ErrUnexpectedStatus
	if errors.As(err, &us) {
		return transientStatus(us.StatusCode)
	}
	if m := fetchStatus.FindStringSubmatch(err.Error()); m != nil {
		code, _ := strconv.Atoi(m[1])
		return transientStatus(code)
	}
	// Network errors mid-body, content.ErrReset, a closed pipe: transient.
	return true
}

func transientStatus(code int) bool {
	switch {
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests:
		return true
	case code >= 400 && code < 500:
		return false
	}
	return true
}

// uploadUnknown reports whether err is the registry saying an upload
// session does not exist (BLOB_UPLOAD_UNKNOWN).
func uploadUnknown(err error) bool {
	var us remoteserrors.ErrUnexpectedStatus
	if errors.As(err, &us) && bytes.Contains(us.Body, []byte("BLOB_UPLOAD_UNKNOWN")) {
		return true
	}
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "blob upload unknown") || strings.Contains(m, "blob_upload_unknown")
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// explain adds a hint to errors with an obvious fix; host is the registry
// the error came from ("" when not a registry).
func explain(host string, err error) error {
	if host == "" {
		host = "HOST"
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%w (the registry speaks plain HTTP: allow it with --insecure-registry %s)", err, host)
	case strings.Contains(msg, "certificate signed by unknown authority") || strings.Contains(msg, "x509:"):
		return fmt.Errorf("%w (trust its CA with --ca-cert FILE, or allow it with --insecure-registry %s)", err, host)
	case errors.Is(err, resolver.ErrAuthentication):
		// The resolver's message already names the host, the user and where
		// the credentials came from.
		return fmt.Errorf("%w (log in with `docker login %s`, or point DOCKER_CONFIG or --docker-config at the config.json that has the credentials)", err, host)
	case errors.Is(err, docker.ErrInvalidAuthorization) || strings.Contains(msg, "401 Unauthorized") || strings.Contains(msg, "authorization"):
		return fmt.Errorf("authentication failed: %w (check `docker login %s`, or DOCKER_CONFIG)", err, host)
	}
	return err
}
