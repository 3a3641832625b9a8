package fixup

import (
	"context"
	"errors"
	"io"
	"slices"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/verify"
	"github.com/cnabio/cnab-relocate/resolver"
)

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
		e.emit(Event{Kind: k, Image: u.img.Ref, Target: e.dst.display(u.dest()), Digest: t.desc.Digest, Size: t.desc.Size})
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
		e.emit(Event{Kind: BlobProgress, Image: j.img.Ref, Target: e.dst.display(j.dest()), Digest: desc.Digest, Size: desc.Size, Bytes: n})
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
