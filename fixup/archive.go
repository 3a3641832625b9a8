package fixup

import (
	"bytes"
	"context"
	"fmt"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/layout"
)

// ExportArchive writes the archive's tar in place: once every image is
// planned, the manifests are named (index.json is then known), the tar is
// laid out whole (layout.PlaceArchive), and each blob and manifest is
// written straight into its place as it is fetched, checked as it
// streams, as many at once as the client's jobs. Nothing goes through a
// temporary layout, nothing is written twice. A gzipped archive cannot be
// written at offsets: its tar is written so in a temporary directory,
// then compressed (layout.CompressArchive).

// inPlace is an export's archive written in place.
type inPlace struct {
	out        string
	split      int64
	bundleJSON []byte
	scratch    bool // out is a temporary tar, compressed into the archive
	// placed is the archive, laid out by lay; nil before, and when an
	// image failed to plan (nothing more is fetched: the export fails) or
	// the archive could not be laid out (err).
	placed *layout.PlacedArchive
	err    error
	index  []byte // index.json as laid out
}

// lay is the engine's prepare for an export in place: it names every
// planned image's manifests in the layout's index (e.pushManifests against
// the archive target, which writes nothing before the archive is laid
// out), then lays the archive out for index.json, the blobs and manifests
// the images need, and the delta record.
func (p *inPlace) lay(ctx context.Context, e *engine, store *layout.Store, exp exportTarget, delta func([]*ExportBlob) *layout.Delta, jobs []*job) {
	for _, j := range jobs {
		if j.failedErr() != nil {
			return
		}
	}
	for _, j := range jobs {
		if j.graph != nil && len(j.graph.manifests) > 0 {
			if err := e.pushManifests(ctx, j); err != nil {
				p.err = err
				return
			}
		}
	}
	blobs := exportBlobs(jobs)
	var extra []layout.File
	if d := delta(blobs); d != nil {
		data, err := encodeDelta(d)
		if err != nil {
			p.err = err
			return
		}
		extra = append(extra, layout.File{Name: layout.DeltaFile, Data: data})
	}
	var descs []ocispec.Descriptor
	for _, b := range blobs {
		if !exp.held(b.Digest) {
			descs = append(descs, b.Descriptor)
		}
	}
	index, err := store.IndexJSON()
	if err != nil {
		p.err = err
		return
	}
	placed, err := layout.PlaceArchive(p.out, p.split, p.bundleJSON, index, descs, extra...)
	if err != nil {
		p.err = err
		return
	}
	if p.scratch {
		placed.Scratch()
	}
	p.placed, p.index = placed, index
}

// archiveTarget is exportTarget writing into an inPlace's archive; its
// layout only names the images.
type archiveTarget struct {
	exportTarget
	p *inPlace
}

func (t archiveTarget) putBlob(ctx context.Context, _, _ string, desc ocispec.Descriptor, _ []string, open func(context.Context) (io.ReadCloser, error), report func(int64)) (EventKind, error) {
	if t.skip(desc.Digest) || t.p.placed == nil || t.p.placed.Has(desc.Digest) {
		return BlobSkipped, nil
	}
	return writeLocal(ctx, open, report, func(r io.Reader) error { return t.p.placed.WriteBlob(ctx, desc, r) })
}

// putManifest names n; once the archive is laid out it writes n there too.
func (t archiveTarget) putManifest(ctx context.Context, d dest, n node, tag string, root bool) (bool, error) {
	t.name(d, n, tag, root)
	if t.p.placed == nil {
		return false, nil
	}
	if !t.skip(n.desc.Digest) {
		if err := t.p.placed.WriteBlob(ctx, n.desc, bytes.NewReader(n.data)); err != nil {
			return false, localError{err}
		}
	}
	return true, nil
}

// commit checks that the index is still the one laid out, and puts the
// archive in place.
func (p *inPlace) commit(store *layout.Store) ([]layout.Part, error) {
	index, err := store.IndexJSON()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(index, p.index) {
		return nil, fmt.Errorf("index.json changed after the archive was laid out")
	}
	return p.placed.Commit()
}
