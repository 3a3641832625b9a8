package fixup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cnabio/cnab-relocate/layout"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
)

// streamSource is a Source whose blobs can only be read in its own order,
// a whole pass at a time: a thick bundle archive read as a stream.
type streamSource interface {
	// has reports whether the source may hold blob d (true until a pass
	// has read the whole stream, for a blob not seen yet).
	has(d digest.Digest) bool
	// stream reads the source once, calling fn for every blob want
	// accepts, in the source's order; fn must be done with r when it
	// returns.
	stream(ctx context.Context, want func(digest.Digest) bool, fn func(digest.Digest, io.Reader) error) error
	// rereads says why stream(want) reads the source a second time, its
	// metadata not being at the front; "" when it does not.
	rereads(want func(digest.Digest) bool) string
}

// How much of a stream is held in memory so that several uploads are in
// flight while it is read: blobs up to streamBufferBlob bytes are read
// into memory, streamBuffer bytes at most at once, and uploaded by the
// engine's jobs while the stream goes on; a bigger blob is uploaded from
// the stream itself, which waits for it. Nothing is written to disk.
const (
	streamBuffer     = 8 << 20
	streamBufferBlob = 2 << 20
)

// errNextPass is the error of a stream's opener whose blob the stream has
// read past: the blob goes to the stream's next pass.
var errNextPass = errors.New("the stream has passed this blob: it is read again in the next pass")

// onceOpener opens the blob at the stream's position once.
type onceOpener struct {
	mu   sync.Mutex
	r    io.Reader
	used bool
}

func (o *onceOpener) open(context.Context) (io.ReadCloser, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.used {
		return nil, errNextPass
	}
	o.used = true
	return io.NopCloser(o.r), nil
}

// streamBlobs places the blobs of tasks in the archive's order, one pass
// over the stream, several uploads in flight (see streamBuffer). A blob
// whose upload must start again after the stream has passed it (a failed
// upload, a mount that fell back to an upload) is placed in the next
// pass, as many passes as retries allow. A blob the source lacks fails
// the images that need it.
func (e *engine) streamBlobs(ctx context.Context, ss streamSource, tasks []*blobTask) error {
	pending := map[digest.Digest][]*blobTask{}
	for _, t := range tasks {
		if !ss.has(t.desc.Digest) {
			e.failBlob(t, fmt.Errorf("blob %s: %w", t.desc.Digest, ErrNotFound))
			continue
		}
		t.again = t.repos
		pending[t.desc.Digest] = append(pending[t.desc.Digest], t)
	}
	for pass := 0; len(pending) > 0; pass++ {
		if pass > e.policy.Retries {
			for _, ts := range pending {
				for _, t := range ts {
					e.failBlob(t, fmt.Errorf("blob %s: not placed after %d passes over the archive", t.desc.Digest, pass))
				}
			}
			return nil
		}
		want := func(d digest.Digest) bool { return len(pending[d]) > 0 }
		if pass > 0 {
			e.c.logger.Debug("reading the archive again", "pass", pass+1, "blobs", len(pending))
		} else if why := ss.rereads(want); why != "" {
			e.c.logger.Debug(why)
		}
		budget := semaphore.NewWeighted(streamBuffer)
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(e.c.jobs)
		err := ss.stream(ctx, want, func(d digest.Digest, r io.Reader) error {
			ts := pending[d]
			size := ts[0].desc.Size
			if size <= streamBufferBlob && budget.TryAcquire(size) {
				// As many bytes as the descriptor says: a longer or shorter
				// blob fails its check when it is uploaded.
				data := make([]byte, size)
				n, err := io.ReadFull(r, data)
				if err != nil && err != io.ErrUnexpectedEOF {
					budget.Release(size)
					return err
				}
				data = data[:n]
				g.Go(func() error {
					defer budget.Release(size)
					open := func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
					for _, t := range ts {
						e.copyBlob(gctx, t, t.takeAgain(), open)
					}
					return ctx.Err()
				})
				return nil
			}
			// Too big to hold: hand the bytes over as they stream by, and
			// go on with the stream as soon as the upload has them all,
			// while the registry finishes with it.
			pr, pw := io.Pipe()
			once := &onceOpener{r: pr}
			uploaded := make(chan struct{})
			g.Go(func() error {
				defer close(uploaded)
				for _, t := range ts {
					e.copyBlob(gctx, t, t.takeAgain(), once.open)
				}
				// Whatever the uploads did not read (a blob already there,
				// a mount, a failure) is not needed: let the stream go on.
				pr.CloseWithError(errNextPass)
				return ctx.Err()
			})
			_, err := io.Copy(pw, r)
			if errors.Is(err, errNextPass) {
				err = nil // the uploads are done with it
			}
			pw.CloseWithError(err)
			if err != nil {
				<-uploaded
				return err
			}
			return ctx.Err()
		})
		if werr := g.Wait(); err == nil {
			err = werr
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if err != nil {
			// The stream itself failed (a corrupt, truncated or hostile
			// archive): no image it feeds is trusted, done or not, so
			// none is pushed under a tag.
			if errors.Is(err, layout.ErrInvalidArchive) {
				err = invalid(err)
			}
			for _, t := range tasks {
				e.failBlob(t, err)
			}
			return nil
		}
		next := map[digest.Digest][]*blobTask{}
		for d, ts := range pending {
			for _, t := range ts {
				switch {
				case len(t.again) == 0:
				case !ss.has(d):
					t.again = nil
					e.failBlob(t, fmt.Errorf("blob %s: %w", d, ErrNotFound))
				default:
					next[d] = append(next[d], t)
				}
			}
		}
		pending = next
	}
	return nil
}

// takeAgain returns the repositories left for this pass, and forgets them.
func (t *blobTask) takeAgain() []string {
	r := t.again
	t.again = nil
	return r
}

// failBlob fails every image that still needs t's blob, err saying why
// (a source error).
func (e *engine) failBlob(t *blobTask, err error) {
	for _, repo := range t.repos {
		users := t.live(repo)
		if len(users) == 0 {
			continue
		}
		serr := e.sourceErr(users[0], "fetching blob "+t.desc.Digest.String(), err)
		for _, u := range users {
			e.failJob(u, serr)
		}
	}
}
