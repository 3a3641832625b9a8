package fixup

import (
	"container/heap"
	"context"
	"sync"
)

// pipeline runs the jobs of a source that can be read in any order (a
// registry, an OCI layout): each image goes from planning to its blobs to
// its manifests on its own, while the blobs of all images share one queue,
// biggest first. Nothing waits for every image to be planned before the
// first blob moves, or for every blob before the first manifest: on a
// cold run that is the planning and the manifest pushes off the critical
// path, and early images are done early. The exception is a run with
// engine.prepare (an archive written in place): its blobs start once every
// image is planned and prepare has laid the archive out.
//
// A blob is placed once per target repository, one repository after the
// other: the first by upload (or a mount from the source), the others by
// mount from the first. An image planned after its blob was placed in its
// repository by another image counts it as already there; one planned
// while it is being placed waits for that placement.
type pipeline struct {
	e   *engine
	ctx context.Context

	mu       sync.Mutex
	cond     *sync.Cond
	tasks    map[string]*blobTask
	queue    taskQueue // tasks with repositories waiting, biggest first
	seq      int       // order of arrival, for a stable queue
	planning int       // images not planned yet
	waiting  map[*job]int

	manifests sync.WaitGroup
	slots     chan struct{} // images pushing manifests at once
}

// Where a blob stands in one repository of a pipeline.
type placement int

const (
	placeNone    placement = iota // not asked for, or given up (every image that needed it failed)
	placeQueued                   // waiting for a worker
	placeRunning                  // being placed
	placeDone                     // there
	placeFailed                   // failed: t.errs has why
)

func (e *engine) runPipeline(ctx context.Context, jobs []*job) error {
	p := &pipeline{
		e:        e,
		ctx:      ctx,
		tasks:    map[string]*blobTask{},
		planning: len(jobs),
		waiting:  map[*job]int{},
		slots:    make(chan struct{}, e.c.jobs),
	}
	p.cond = sync.NewCond(&p.mu)
	// Wake the workers that wait for blobs when the run is cancelled.
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()

	var workers sync.WaitGroup
	for range e.c.jobs {
		workers.Go(func() {
			for t := p.next(); t != nil; t = p.next() {
				p.place(t)
			}
		})
	}
	if e.prepare == nil {
		e.planAll(ctx, jobs, p.planned)
	} else {
		e.planAll(ctx, jobs, func(*job) {})
		if ctx.Err() == nil {
			e.prepare(ctx, jobs)
		}
		for _, j := range jobs {
			p.planned(j)
		}
	}
	workers.Wait()
	p.manifests.Wait()
	return ctx.Err()
}

// planned takes j's blobs into the queue once it is planned (j.graph set),
// or just counts it when it is not to be copied (present, or failed).
// Events go out after the pipeline's lock is released.
func (p *pipeline) planned(j *job) {
	credit, failed, ready := p.join(j)
	if failed != nil {
		p.e.failJob(j, failed)
		return
	}
	for _, t := range credit {
		p.e.credit(t, []*job{j}, BlobSkipped)
	}
	if ready {
		p.push(j)
	}
}

// join adds j, planned, to the tasks of its blobs and says which of them
// are in place already (credit), why one cannot be (failed), and whether
// j waits for none (ready).
func (p *pipeline) join(j *job) (credit []*blobTask, failed error, ready bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.cond.Broadcast()
	p.planning--
	if j.graph == nil || j.failedErr() != nil {
		return nil, nil, false
	}
	n := 0
	for _, b := range j.graph.blobs {
		t, created := addUser(p.tasks, j, b)
		if created {
			t.state = map[string]placement{}
		}
		switch t.state[j.repo] {
		case placeNone:
			t.state[j.repo] = placeQueued
			t.pending = append(t.pending, j.repo)
			if !t.queued && !t.running {
				t.queued = true
				p.seq++
				t.seq = p.seq
				heap.Push(&p.queue, t)
			}
			n++
		case placeQueued, placeRunning:
			n++
		case placeDone:
			credit = append(credit, t)
		case placeFailed:
			failed = t.errs[j.repo]
		}
	}
	if failed != nil {
		return nil, failed, false
	}
	p.waiting[j] = n
	return credit, nil, n == 0
}

// next returns the biggest blob waiting to be placed, or nil when there
// is none and none can come (every image is planned) or the run is over.
func (p *pipeline) next() *blobTask {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.queue.Len() == 0 && p.planning > 0 && p.ctx.Err() == nil {
		p.cond.Wait()
	}
	if p.queue.Len() == 0 || p.ctx.Err() != nil {
		return nil
	}
	t := heap.Pop(&p.queue).(*blobTask)
	t.queued, t.running = false, true
	return t
}

// place puts t's blob into each repository waiting for it, one after the
// other, including those added while it runs.
func (p *pipeline) place(t *blobTask) {
	e := p.e
	for {
		p.mu.Lock()
		if len(t.pending) == 0 || p.ctx.Err() != nil {
			t.running = false
			p.mu.Unlock()
			return
		}
		repo := t.pending[0]
		t.pending = t.pending[1:]
		users := t.live(repo)
		if len(users) == 0 {
			t.state[repo] = placeNone // an image planned later asks again
			p.mu.Unlock()
			continue
		}
		t.state[repo] = placeRunning
		mountFrom := e.mountFrom(t, users[0])
		p.mu.Unlock()

		kind, err := e.putBlob(p.ctx, users[0], repo, t.desc, mountFrom, nil)

		p.mu.Lock()
		users = t.live(repo) // with the images that came meanwhile
		if err != nil {
			t.state[repo] = placeFailed
			if t.errs == nil {
				t.errs = map[string]error{}
			}
			t.errs[repo] = err
		} else {
			t.state[repo] = placeDone
			t.done = append(t.done, repo)
		}
		var ready []*job
		for _, u := range users {
			if p.waiting[u]--; p.waiting[u] == 0 && err == nil {
				ready = append(ready, u)
			}
		}
		p.mu.Unlock()

		if err != nil {
			for _, u := range users {
				e.failJob(u, err)
			}
			continue
		}
		e.credit(t, users, kind)
		for _, u := range ready {
			p.push(u)
		}
	}
}

// push pushes j's manifests, its blobs all placed, at most e.c.jobs images
// at once.
func (p *pipeline) push(j *job) {
	p.manifests.Go(func() {
		select {
		case p.slots <- struct{}{}:
		case <-p.ctx.Done():
			return
		}
		defer func() { <-p.slots }()
		p.e.pushImage(p.ctx, j)
	})
}

// taskQueue is a heap of blob tasks, the biggest blob first, then the
// first to arrive.
type taskQueue []*blobTask

func (q taskQueue) Len() int { return len(q) }
func (q taskQueue) Less(i, j int) bool {
	if q[i].desc.Size != q[j].desc.Size {
		return q[i].desc.Size > q[j].desc.Size
	}
	return q[i].seq < q[j].seq
}
func (q taskQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *taskQueue) Push(x any)   { *q = append(*q, x.(*blobTask)) }
func (q *taskQueue) Pop() any {
	old := *q
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return t
}
