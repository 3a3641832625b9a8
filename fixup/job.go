package fixup

import (
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/remotes"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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

// dest is where j goes, for its target.
func (j *job) dest() dest { return dest{ref: j.img.Ref, name: j.target, tag: j.rootTag()} }

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
		r.Target = dst.display(j.dest())
	}
	r.Digest = j.root.Digest
	r.MediaType = j.root.MediaType
	r.Platforms, r.PlatformsLeft = j.platforms.result()
	if err := j.failedErr(); err != nil {
		r.Err = fmt.Errorf("%s %s: %w", wrap, j.img.Ref, err)
	}
	return r
}
