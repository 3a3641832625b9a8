package fixup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-to-oci/relocation"
)

// A delta export (ExportCall.Bases) leaves out of the archive every
// blob and manifest a base archive holds, and records them in
// layout.DeltaFile; its relocation (Relocate from a delta's ArchiveSource)
// checks, before anything is pushed, that each is in the target where the
// images need it.

// bases reads the bases at paths: each archive once as a stream (see
// layout.ReadHoldings), each thin bundle (a bundle.json, not an archive)
// by the manifests of its images in their registries, read where
// sourceMapping says they are when it is given (see thinBase). A base
// that cannot be read is an input error naming it.
func (c *Client) bases(ctx context.Context, paths []string, sourceMapping relocation.ImageRelocationMap) ([]layout.Base, []*layout.Holdings, error) {
	var out []layout.Base
	var holds []*layout.Holdings
	for _, p := range paths {
		var h *layout.Holdings
		thin := false
		isArchive, err := layout.IsArchive(p)
		switch {
		case err != nil:
			err = fmt.Errorf("%w %s: %w", layout.ErrInvalidArchive, p, err)
		case isArchive:
			h, err = layout.ReadHoldings(ctx, p)
		default:
			thin = true
			if h, err = c.thinBase(ctx, p, sourceMapping); err != nil {
				if errors.Is(err, ErrInvalidInput) {
					return nil, nil, invalid(fmt.Errorf("base %s: %w", p, err))
				}
				return nil, nil, fmt.Errorf("base %s: %w", p, err)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			return nil, nil, invalid(fmt.Errorf("base %s: %w", p, err))
		}
		var doc struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		}
		if err := json.Unmarshal(h.BundleJSON, &doc); err != nil {
			return nil, nil, invalid(fmt.Errorf("base %s: %s: %w: %v", p, layout.BundleFile, ErrInvalidBundle, err))
		}
		out = append(out, layout.Base{Archive: filepath.Base(p), Bundle: doc.Name, Version: doc.Version, Digest: h.Digest, Size: h.Size, Thin: thin})
		holds = append(holds, h)
	}
	return out, holds, nil
}

// thinBase is what the thin bundle at path holds: every blob and manifest
// of its images (their referrers' too), found by fetching their manifests
// from their registries (no blob is fetched), through sourceMapping
// when it is given, which must then map the base's images too. Its digest
// and size are bundle.json's.
func (c *Client) thinBase(ctx context.Context, path string, sourceMapping relocation.ImageRelocationMap) (*layout.Holdings, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, invalid(fmt.Errorf("%w: %v", ErrInvalidBundle, unwrapPathErr(err)))
	}
	b, err := Parse(data)
	if err != nil {
		return nil, invalid(err)
	}
	// The base's images are not the export's: no events.
	res, err := c.Export(ctx, b, ExportCall{SourceMapping: sourceMapping, DryRun: true, OnEvent: noEvents})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	h := &layout.Holdings{Path: path, BundleJSON: data, Digest: digest.FromBytes(data), Size: int64(len(data)), Blobs: map[digest.Digest]int64{}}
	for _, bl := range res.Blobs {
		h.Blobs[bl.Digest] = bl.Size
	}
	return h, nil
}

// unwrapPathErr drops the path an *fs.PathError repeats.
func unwrapPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// heldBy returns the index of the first of holds that holds d, or -1.
func heldBy(holds []*layout.Holdings, d digest.Digest) int {
	for i, h := range holds {
		if _, ok := h.Blobs[d]; ok {
			return i
		}
	}
	return -1
}

// exportTarget is the layout an export writes, leaving out what a base
// holds (held) and, in a dry run, everything: the engine plans and places
// as usual, and index.json names every image all the same.
type exportTarget struct {
	layoutTarget
	held func(digest.Digest) bool
	dry  bool
}

func (t exportTarget) skip(d digest.Digest) bool { return t.dry || t.held(d) }

func (t exportTarget) putBlob(ctx context.Context, host, repo string, desc ocispec.Descriptor, mountFrom []string, open func(context.Context) (io.ReadCloser, error), report func(int64)) (EventKind, error) {
	if t.skip(desc.Digest) {
		return BlobSkipped, nil
	}
	return t.layoutTarget.putBlob(ctx, host, repo, desc, mountFrom, open, report)
}

func (t exportTarget) putManifest(ctx context.Context, d dest, n node, tag string, root bool) (bool, error) {
	if !t.skip(n.desc.Digest) {
		return t.layoutTarget.putManifest(ctx, d, n, tag, root)
	}
	t.layoutTarget.name(d, n, tag, root)
	return true, nil
}

// ExportBlob is a blob or manifest of an export, and the images that
// need it.
type ExportBlob struct {
	ocispec.Descriptor
	// Images are the references, as the bundle writes them, of the images
	// that need it, in bundle order.
	Images []string
}

// exportBlobs lists the blobs and manifests of jobs' graphs (with their
// referrers'), each once, in bundle order, with the images that need it.
func exportBlobs(jobs []*job) []*ExportBlob {
	var out []*ExportBlob
	seen := map[digest.Digest]*ExportBlob{}
	add := func(j *job, d ocispec.Descriptor) {
		b := seen[d.Digest]
		if b == nil {
			b = &ExportBlob{Descriptor: ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}}
			seen[d.Digest] = b
			out = append(out, b)
		}
		if !slices.Contains(b.Images, j.img.Ref) {
			b.Images = append(b.Images, j.img.Ref)
		}
	}
	for _, j := range jobs {
		if j.graph == nil {
			continue
		}
		graphs := []*graph{j.graph}
		for _, r := range j.refs {
			graphs = append(graphs, r.graph)
		}
		for _, g := range graphs {
			for _, m := range g.manifests {
				add(j, m.desc)
			}
			for _, b := range g.blobs {
				add(j, b)
			}
		}
	}
	return out
}

// deltaRecord is the record of what a delta export left out.
func deltaRecord(bs []layout.Base, holds []*layout.Holdings, blobs []*ExportBlob) *layout.Delta {
	d := &layout.Delta{SchemaVersion: 1, Bases: bs, LeftOut: []layout.LeftOut{}}
	for _, b := range blobs {
		if i := heldBy(holds, b.Digest); i >= 0 {
			d.LeftOut = append(d.LeftOut, layout.LeftOut{Digest: b.Digest, Size: b.Size, MediaType: b.MediaType, Base: i, Images: b.Images})
		}
	}
	return d
}

// encodeDelta is layout.DeltaFile's bytes for d.
func encodeDelta(d *layout.Delta) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, errors.New("encoding " + layout.DeltaFile + ": " + err.Error())
	}
	return buf.Bytes(), nil
}

// delta is the archive's record of what it leaves out (nil: nothing).
func (s ArchiveSource) delta() *layout.Delta { return s.Archive.Delta }

// missing is content a delta leaves out that an image's target lacks.
type missing struct {
	desc ocispec.Descriptor
	what string // "blob", "manifest"
	base layout.Base
}

// mount is a left-out blob to mount into j's repository from another.
type mount struct {
	j    *job
	desc ocispec.Descriptor
	from string
}

// checkDelta checks, before anything is pushed, that every blob and
// manifest the delta d leaves out is in the target where the planned jobs
// need it: in the job's target repository, or, for a blob, in the target
// repository of another image of the bundle on the same registry, to be
// mounted from there (these are the repositories the same images went to
// when the base was relocated: target names come from the bundle's
// references). One HEAD per left-out item in the job's repository, and
// one per repository tried for a blob it lacks. When anything is missing,
// every job fails (nothing is pushed), those that need it with
// ErrBaseMissing listing each item and the base that holds it. Else the
// blobs to mount are mounted, and the left-out blobs leave the jobs'
// graphs: the stream does not hold them.
func (e *engine) checkDelta(ctx context.Context, d *layout.Delta, jobs []*job) error {
	left := map[digest.Digest]layout.LeftOut{}
	for _, l := range d.LeftOut {
		left[l.Digest] = l
	}
	baseOf := func(dg digest.Digest) layout.Base { return d.Bases[left[dg].Base] }
	var live []*job
	for _, j := range jobs {
		if j.graph != nil && j.failedErr() == nil {
			live = append(live, j)
		}
	}
	lacks := map[*job][]missing{}
	var mounts []mount
	for _, j := range live {
		if len(j.graph.manifests) == 0 {
			// The root is left out, and not under the image's name there
			// (see present).
			lacks[j] = append(lacks[j], missing{desc: j.root, what: "manifest", base: baseOf(j.root.Digest)})
			continue
		}
		for _, m := range slices.Concat(j.graph.leftOut, j.leftOut) {
			ok, err := e.dst.hasManifest(ctx, j.dest(), "", m)
			if err != nil {
				e.failJob(j, e.targetErr(j, "checking the target for manifest "+m.Digest.String(), err))
				break
			}
			if !ok {
				lacks[j] = append(lacks[j], missing{desc: m, what: "manifest", base: baseOf(m.Digest)})
			}
		}
		kept := j.graph.blobs[:0:0]
		for _, b := range j.graph.blobs {
			if _, ok := left[b.Digest]; !ok {
				kept = append(kept, b)
				continue
			}
			from, err := e.findBlob(ctx, j, b, jobs)
			if err != nil {
				e.failJob(j, e.targetErr(j, "checking the target for blob "+b.Digest.String(), err))
				break
			}
			switch from {
			case "":
				lacks[j] = append(lacks[j], missing{desc: b, what: "blob", base: baseOf(b.Digest)})
			case j.repo:
			default:
				mounts = append(mounts, mount{j: j, desc: b, from: from})
			}
		}
		j.graph.blobs = kept
	}
	if len(lacks) > 0 {
		n := 0
		for _, j := range live {
			if ms := lacks[j]; len(ms) > 0 {
				n++
				e.failJob(j, baseMissing(j, ms))
			}
		}
		for _, j := range live {
			if lacks[j] == nil {
				e.failJob(j, fmt.Errorf("%w: not relocated: %s of the delta archive need content that the target lacks, and nothing is pushed until it is there", ErrBaseMissing, plural(n, "image")))
			}
		}
		return nil
	}
	for _, m := range mounts {
		if m.j.failedErr() != nil {
			continue
		}
		none := func(context.Context) (io.ReadCloser, error) {
			return nil, fmt.Errorf("blob %s: %w: it could not be mounted from %s", m.desc.Digest, ErrBaseMissing, m.from)
		}
		kind, err := e.putBlob(ctx, m.j, m.j.repo, m.desc, []string{m.from}, none)
		if err != nil {
			e.failJob(m.j, err)
			continue
		}
		e.credit(&blobTask{desc: m.desc}, []*job{m.j}, kind)
	}
	return ctx.Err()
}

// findBlob returns the repository of j's target registry that has blob b:
// j's own, else that of another of jobs (found present or not) on the
// same registry; "" when none has it.
func (e *engine) findBlob(ctx context.Context, j *job, b ocispec.Descriptor, jobs []*job) (string, error) {
	repos := []string{j.repo}
	for _, o := range jobs {
		if o.target != nil && o.host == j.host && !slices.Contains(repos, o.repo) {
			repos = append(repos, o.repo)
		}
	}
	for _, r := range repos {
		ok, err := e.dst.hasBlob(ctx, j.host, r, b)
		if err != nil {
			return "", err
		}
		if ok {
			return r, nil
		}
	}
	return "", nil
}

// baseMissing is the error for j, whose target lacks ms.
func baseMissing(j *job, ms []missing) error {
	var lines []string
	for _, m := range ms {
		lines = append(lines, fmt.Sprintf("%s %s (%d bytes): held by base %s (%s %s): relocate %s first", m.what, m.desc.Digest, m.desc.Size, m.base.Archive, m.base.Bundle, m.base.Version, m.base.Archive))
	}
	where := j.host + "/" + j.repo
	return fmt.Errorf("%w: %s of image %s in %s:\n  %s", ErrBaseMissing, plural(len(ms), "item"), j.img.Ref, where, strings.Join(lines, "\n  "))
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
