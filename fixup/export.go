package fixup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-to-oci/relocation"
	"github.com/opencontainers/go-digest"
)

// ExportCall is one Client.Export or Client.ExportArchive: where the
// images come from, how the archive is written, and who hears of it. The
// zero value works.
type ExportCall struct {
	// Source is where content comes from. Nil means the registries named
	// by the image references, through the client's resolver; a thick
	// bundle's layout (to re-pack it) is LayoutSource.
	Source Source
	// SourceMapping says where the bundle's images are now, as for
	// RelocateCall.SourceMapping. The layout names them by the bundle's
	// references all the same: the archive needs no mapping.
	SourceMapping relocation.ImageRelocationMap
	// SplitSize, when more than 0, makes ExportArchive write the archive as
	// parts OUT.000, OUT.001, ... of at most SplitSize bytes each (see
	// layout.WriteSplitArchive). 0 writes one file.
	SplitSize int64
	// OnPart, when not nil, is called by ExportArchive for each part of a
	// split archive, in order, once all are in place.
	OnPart func(layout.Part)
	// Bases, when not empty, makes the export a delta: every blob and
	// manifest one of these holds (thick bundle archives, split ones too,
	// each read once as a stream: layout.ReadHoldings; or thin bundles,
	// whose images are read in their registries, through SourceMapping
	// when it is given, manifests only) is left out of the layout, which
	// still names every image, and ExportArchive records them in
	// layout.DeltaFile (ExportResult.Delta).
	Bases []string
	// DryRun makes Export fetch the manifests only (no blob is fetched or
	// written) and list in ExportResult.Blobs what the archive would hold
	// and, with Bases, in ExportResult.Delta what it would leave out.
	DryRun bool
	// OnDelta, when not nil, is called by ExportArchive with the record of
	// a delta export once the archive is in place.
	OnDelta func(*layout.Delta)
	// OnEvent receives this call's progress events, as
	// ClientOptions.OnEvent does; nil means the client's.
	OnEvent func(Event)
}

// ExportOptions configures the package-level Export and ExportArchive: a
// client's options and one call's (their fields as in ExportCall). The
// zero value works.
type ExportOptions struct {
	ClientOptions
	Source        Source
	SourceMapping relocation.ImageRelocationMap
	SplitSize     int64
	OnPart        func(layout.Part)
	Bases         []string
	DryRun        bool
	OnDelta       func(*layout.Delta)
}

func (o ExportOptions) call() ExportCall {
	return ExportCall{Source: o.Source, SourceMapping: o.SourceMapping, SplitSize: o.SplitSize,
		OnPart: o.OnPart, Bases: o.Bases, DryRun: o.DryRun, OnDelta: o.OnDelta}
}

// ExportResult is the outcome of Export: an image layout in a temporary
// directory that the caller must Close.
type ExportResult struct {
	// Layout holds every exported image, each named in index.json by its
	// reference exactly as written in the bundle. Nil when Export failed.
	Layout *layout.Store
	// Dir is the temporary directory of Layout ("" when Export failed).
	Dir string
	// Images has one entry per distinct relocatable reference, in bundle
	// order. Target is empty; BytesCopied counts the blob bytes fetched for
	// the image, BytesSkipped those of blobs it shares with an image
	// fetched before.
	Images []ImageResult
	// Skipped lists the images left alone because of their type.
	Skipped []Image
	// Blobs lists every blob and manifest of the exported images (their
	// referrers' too), each once, in bundle order: those in Delta's
	// LeftOut are not in the layout, the others are.
	Blobs []*ExportBlob
	// Delta records what a delta export (ExportOptions.Bases) left out;
	// nil without bases.
	Delta *layout.Delta
}

// Close removes the layout's temporary directory. It is idempotent.
func (r *ExportResult) Close() error {
	if r == nil || r.Dir == "" {
		return nil
	}
	err := os.RemoveAll(r.Dir)
	r.Dir, r.Layout = "", nil
	return err
}

// Export fetches every relocatable image of b (all platforms of an index)
// from its registry into an OCI image layout in a new directory under
// os.TempDir, each blob once however many images share it, checking every
// byte against its digest. Each image's index.json entry is named by its
// reference exactly as written in the bundle. A digest the bundle records
// that the registry does not serve is an error naming the image. When any
// image fails, Export removes the layout and returns an error naming each
// failed image, with the result still listing them. The caller must Close
// the result. It is NewClient(opts.ClientOptions), then Client.Export.
func Export(ctx context.Context, b *Bundle, opts ExportOptions) (*ExportResult, error) {
	c, err := NewClient(opts.ClientOptions)
	if err != nil {
		return nil, err
	}
	return c.Export(ctx, b, opts.call())
}

// Export fetches every relocatable image of b into an OCI image layout in a
// new directory, as the package-level Export does, with this client's
// options. A client with RewriteIndex is refused: an export keeps every
// index as it is.
func (c *Client) Export(ctx context.Context, b *Bundle, call ExportCall) (*ExportResult, error) {
	return c.export(ctx, b, call, nil)
}

// export is Export; with p, into p's archive written in place, the layout
// only naming the images (see inPlace).
func (c *Client) export(ctx context.Context, b *Bundle, call ExportCall, p *inPlace) (_ *ExportResult, err error) {
	if c.opts.PlatformIndex == RewriteIndex {
		// The archive's bundle.json is the bundle as it is: its digests
		// must stay, and a layout takes sparse indexes.
		return nil, invalid(fmt.Errorf("export keeps every index as it is: RewriteIndex is for a registry target"))
	}
	images, skipped, err := distinctImages(b)
	if err != nil {
		return nil, err
	}
	baseList, holds, err := c.bases(ctx, call.Bases, call.SourceMapping)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cnab-relocate-export-*")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrOutput, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	store, err := layout.Create(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrOutput, err)
	}
	src, err := c.source(call.Source, images, call.SourceMapping)
	if err != nil {
		return nil, err
	}
	held := func(d digest.Digest) bool { return heldBy(holds, d) >= 0 }
	exp := exportTarget{layoutTarget: layoutTarget{store: store}, held: held, dry: call.DryRun}
	var dst target = exp
	if p != nil {
		dst = archiveTarget{exportTarget: exp, p: p}
	}
	e := c.engine(src, dst, nil).events(call.OnEvent)
	if p != nil {
		e.prepare = func(ctx context.Context, jobs []*job) {
			p.lay(ctx, e, store, exp, func(blobs []*ExportBlob) *layout.Delta {
				if len(holds) == 0 {
					return nil
				}
				return deltaRecord(baseList, holds, blobs)
			}, jobs)
		}
	}
	jobs := make([]*job, len(images))
	for i, p := range images {
		jobs[i] = newJob(p.Image, p.Digest)
		jobs[i].target = p.Image.Named
	}
	if err := e.run(ctx, jobs); err != nil {
		return nil, err
	}
	res := &ExportResult{Skipped: skipped, Blobs: exportBlobs(jobs)}
	if len(holds) > 0 {
		res.Delta = deltaRecord(baseList, holds, res.Blobs)
	}
	var errs []error
	for _, j := range jobs {
		r := j.result(e.dst, "exporting")
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
		res.Images = append(res.Images, r)
	}
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	res.Layout, res.Dir = store, dir
	return res, nil
}

// ExportArchive exports b's images (see Export) and writes the thick
// bundle archive out: bundleJSON, byte for byte, as bundle.json, and the
// images as the OCI image layout artifacts/layout (see layout.WriteArchive:
// the archive is deterministic, gzipped unless out ends in ".tar"). The
// tar is written in place: once every image is planned it is laid out
// whole (layout.PlaceArchive) and each blob goes straight from its
// registry into its place, checked as it streams, nothing written twice;
// a gzipped archive is that tar, written in a temporary directory under
// os.TempDir, then compressed (layout.CompressArchive). The archive is
// written to a temporary file beside out and renamed into place once
// complete; on any error nothing is left at out, and the temporary files
// are removed either way.
// With opts.SplitSize it is written as parts out.000, out.001, ... instead,
// all or none, reported to opts.OnPart. With opts.Bases it is a delta:
// what the bases hold is left out and recorded in layout.DeltaFile.
// bundleJSON should be the bytes b was parsed from. It is
// NewClient(opts.ClientOptions), then Client.ExportArchive.
func ExportArchive(ctx context.Context, b *Bundle, bundleJSON []byte, out string, opts ExportOptions) error {
	c, err := NewClient(opts.ClientOptions)
	if err != nil {
		return err
	}
	return c.ExportArchive(ctx, b, bundleJSON, out, opts.call())
}

// ExportArchive exports b's images and writes the thick bundle archive
// out, as the package-level ExportArchive does, with this client's
// options.
func (c *Client) ExportArchive(ctx context.Context, b *Bundle, bundleJSON []byte, out string, call ExportCall) error {
	if out == "" {
		return invalid(errors.New("fixup: ExportArchive needs an output path"))
	}
	if call.DryRun {
		return invalid(errors.New("fixup: ExportArchive writes an archive: call Export for a dry run"))
	}
	if layout.IsPlainTar(out) {
		parts, delta, err := c.exportInPlace(ctx, b, bundleJSON, out, out, call.SplitSize, call)
		if err != nil {
			return err
		}
		call.written(parts, delta)
		return nil
	}
	// Gzipped: the tar in place in a temporary directory, then compressed
	// into out, whose directory must be there before anything is fetched.
	if st, err := os.Stat(filepath.Dir(out)); err != nil || !st.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return fmt.Errorf("%w %s: %v", ErrOutput, out, err)
	}
	dir, err := os.MkdirTemp("", "cnab-relocate-export-*")
	if err != nil {
		return fmt.Errorf("%w %s: %v", ErrOutput, out, err)
	}
	defer os.RemoveAll(dir)
	tarPath := filepath.Join(dir, "archive.tar")
	_, delta, err := c.exportInPlace(ctx, b, bundleJSON, tarPath, out, 0, call)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	parts, err := layout.CompressArchive(tarPath, out, call.SplitSize)
	if err != nil {
		return fmt.Errorf("%w %s: %w", ErrOutput, out, err)
	}
	call.written(parts, delta)
	return nil
}

// written tells call's OnPart of each part of a split archive, and its
// OnDelta of the delta record, if any, once the archive is in place.
func (call ExportCall) written(parts []layout.Part, delta *layout.Delta) {
	for _, p := range parts {
		if call.OnPart != nil {
			call.OnPart(p)
		}
	}
	if delta != nil && call.OnDelta != nil {
		call.OnDelta(delta)
	}
}

// exportInPlace exports b into the plain-tar archive path, written in
// place (see inPlace), in parts of split bytes when split is more than 0;
// errors about it name out, the archive the caller asked for. It returns
// the parts and the delta record.
func (c *Client) exportInPlace(ctx context.Context, b *Bundle, bundleJSON []byte, path, out string, split int64, call ExportCall) ([]layout.Part, *layout.Delta, error) {
	p := &inPlace{out: path, split: split, bundleJSON: bundleJSON, scratch: path != out}
	defer func() {
		if p.placed != nil {
			p.placed.Abort() // nothing once committed
		}
	}()
	res, err := c.export(ctx, b, call, p)
	if err != nil {
		return nil, nil, err
	}
	defer res.Close()
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if p.err == nil && p.placed == nil {
		p.err = errors.New("the archive was not laid out")
	}
	if p.err != nil {
		return nil, nil, fmt.Errorf("%w %s: %w", ErrOutput, out, p.err)
	}
	parts, err := p.commit(res.Layout)
	if err != nil {
		return nil, nil, fmt.Errorf("%w %s: %w", ErrOutput, out, err)
	}
	return parts, res.Delta, nil
}
