package fixup

import (
	"context"
	"errors"
	"io"

	"github.com/cnabio/cnab-to-oci/relocation"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"

	"github.com/cnabio/cnab-relocate/relocator"
)

// discardLogger silences containerd's logging.
var discardLogger = func() *log.Entry {
	l := logrus.New()
	l.Out = io.Discard
	// Nothing is formatted either: containerd logs every 404 of a resolve
	// at info level.
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}()

// withoutLogs keeps containerd, which logs through logrus unless the
// context carries a logger, from printing: the library never prints.
func withoutLogs(ctx context.Context) context.Context {
	return log.WithLogger(ctx, discardLogger)
}

// RelocateCall is one Client.Relocate: where the images go, where they
// come from, and who hears of it. Only Mapping is required.
type RelocateCall struct {
	// Mapping decides each image's target reference. Required.
	Mapping *relocator.Mapping
	// Source is where content comes from. Nil means the registries named
	// by the image references, through the client's resolver; a thick
	// bundle is ArchiveSource, an image layout LayoutSource.
	Source Source
	// SourceMapping, when not nil, is a CNAB relocation mapping saying
	// where the bundle's images are now (they were relocated before): each
	// image is read from Source at its mapped reference. Target names are
	// still computed from the bundle's own references, so they do not
	// depend on how many hops came before, and Result.Mapping is keyed by
	// them. Every relocatable image must be mapped (else ErrNotMapped).
	SourceMapping relocation.ImageRelocationMap
	// OnEvent receives this call's progress events, as
	// ClientOptions.OnEvent does; nil means the client's.
	OnEvent func(Event)
}

// Relocate copies every relocatable image of b to the target its mapping
// gives, preserving digests, and returns the relocation mapping. It writes
// no file. When some images fail, the returned error names each of them and
// the Result still reports what was done, so a rerun resumes from it.
// Relocate is safe for concurrent use; it honours ctx cancellation. It is
// NewClient(opts.ClientOptions), then Client.Relocate.
func Relocate(ctx context.Context, b *Bundle, opts Options) (*Result, error) {
	if opts.Mapping == nil {
		return nil, invalid(errors.New("fixup: Options.Mapping is required"))
	}
	c, err := NewClient(opts.ClientOptions)
	if err != nil {
		return nil, err
	}
	return c.Relocate(ctx, b, RelocateCall{Mapping: opts.Mapping, Source: opts.Source, SourceMapping: opts.SourceMapping})
}

// Relocate copies every relocatable image of b to the target call.Mapping
// gives, as the package-level Relocate does, with this client's options.
func (c *Client) Relocate(ctx context.Context, b *Bundle, call RelocateCall) (*Result, error) {
	if call.Mapping == nil {
		return nil, invalid(errors.New("fixup: RelocateCall.Mapping is required"))
	}
	plan, err := NewPlan(b, call.Mapping)
	if err != nil {
		return nil, err
	}
	src, err := c.source(call.Source, plan.Entries, call.SourceMapping)
	if err != nil {
		return nil, err
	}
	e := c.engine(src, c.registryTarget(), call.Mapping).events(call.OnEvent)
	jobs := make([]*job, len(plan.Entries))
	for i, p := range plan.Entries {
		jobs[i] = newJob(p.Image, p.Digest)
		jobs[i].target = p.Target
		// A bundle's image written without tag or digest is :latest, as
		// docker pulls it; its target too.
		jobs[i].latest = true
	}
	if err := e.run(ctx, jobs); err != nil {
		return nil, err
	}
	res := &Result{Mapping: map[string]string{}, Digests: map[string]digest.Digest{}, Roots: map[string]ocispec.Descriptor{}, Skipped: plan.Skipped}
	var errs []error
	for _, j := range jobs {
		r := j.result(e.dst, "relocating")
		if r.Err != nil {
			errs = append(errs, r.Err)
		} else {
			res.Mapping[j.img.Ref] = r.Target
			res.Digests[j.img.Ref] = r.Digest
			res.Roots[j.img.Ref] = j.root
		}
		res.Images = append(res.Images, r)
	}
	return res, errors.Join(errs...)
}
