package fixup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/layout"
)

// A delta export (ExportOptions.Bases) leaves out of the archive every
// blob and manifest a base archive holds, and records them in
// layout.DeltaFile; its relocation (Relocate from a delta's ArchiveSource)
// checks, before anything is pushed, that each is in the target where the
// images need it.

// bases reads the base archives at paths, each once as a stream (see
// layout.ReadHoldings). A base that cannot be read is an input error
// naming it.
func bases(ctx context.Context, paths []string) ([]layout.Base, []*layout.Holdings, error) {
	var out []layout.Base
	var holds []*layout.Holdings
	for _, p := range paths {
		h, err := layout.ReadHoldings(ctx, p)
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
		out = append(out, layout.Base{Archive: filepath.Base(p), Bundle: doc.Name, Version: doc.Version, Digest: h.Digest, Size: h.Size})
		holds = append(holds, h)
	}
	return out, holds, nil
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

func (t exportTarget) putManifest(ctx context.Context, j *job, n node, tag string, root bool) (bool, error) {
	if !t.skip(n.desc.Digest) {
		return t.layoutTarget.putManifest(ctx, j, n, tag, root)
	}
	t.layoutTarget.name(j, n, tag, root)
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
