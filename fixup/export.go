package fixup

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-to-oci/relocation"
)

// ExportOptions configures Export and ExportArchive: a client's options
// and the source. The zero value works.
type ExportOptions struct {
	ClientOptions
	// Source is where content comes from. Nil means the registries named
	// by the image references, through the client's resolver; a thick
	// bundle's layout (to re-pack it) is LayoutSource.
	Source Source
	// SourceMapping says where the bundle's images are now, as for
	// Options.SourceMapping. The layout names them by the bundle's
	// references all the same: the archive needs no mapping.
	SourceMapping relocation.ImageRelocationMap
	// SplitSize, when more than 0, makes ExportArchive write the archive as
	// parts OUT.000, OUT.001, ... of at most SplitSize bytes each (see
	// layout.WriteSplitArchive). 0 writes one file.
	SplitSize int64
	// OnPart, when not nil, is called by ExportArchive for each part of a
	// split archive, in order, once all are in place.
	OnPart func(layout.Part)
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
// the result.
func Export(ctx context.Context, b *Bundle, opts ExportOptions) (_ *ExportResult, err error) {
	c, err := NewClient(opts.ClientOptions)
	if err != nil {
		return nil, err
	}
	images, skipped, err := distinctImages(b)
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
	src, err := c.source(opts.Source, images, opts.SourceMapping)
	if err != nil {
		return nil, err
	}
	e := c.engine(src, layoutTarget{store: store}, nil)
	jobs := make([]*job, len(images))
	for i, p := range images {
		jobs[i] = newJob(p.Image, p.Digest)
		jobs[i].target = p.Image.Named
	}
	if err := e.run(ctx, jobs); err != nil {
		return nil, err
	}
	res := &ExportResult{Skipped: skipped}
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
// the archive is deterministic, gzipped unless out ends in ".tar"). The archive is written to a temporary
// file beside out and renamed into place once complete; on any error
// nothing is left at out, and the temporary layout is removed either way.
// With opts.SplitSize it is written as parts out.000, out.001, ... instead,
// all or none, reported to opts.OnPart.
// bundleJSON should be the bytes b was parsed from.
func ExportArchive(ctx context.Context, b *Bundle, bundleJSON []byte, out string, opts ExportOptions) error {
	if out == "" {
		return invalid(errors.New("fixup: ExportArchive needs an output path"))
	}
	res, err := Export(ctx, b, opts)
	if err != nil {
		return err
	}
	defer res.Close()
	if err := ctx.Err(); err != nil {
		return err
	}
	if opts.SplitSize > 0 {
		parts, err := layout.WriteSplitArchive(out, opts.SplitSize, bundleJSON, res.Dir)
		if err != nil {
			return fmt.Errorf("%w %s: %w", ErrOutput, out, err)
		}
		for _, p := range parts {
			if opts.OnPart != nil {
				opts.OnPart(p)
			}
		}
		return nil
	}
	if err := layout.WriteArchive(out, bundleJSON, res.Dir); err != nil {
		return fmt.Errorf("%w %s: %w", ErrOutput, out, err)
	}
	return nil
}
