package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cnabio/cnab-relocate/fixup"
	"github.com/cnabio/cnab-relocate/layout"
)

const exportHelp = `Make a thick bundle for the air gap: fetch every docker and oci image of a
thin bundle, all platforms (or those --platform selects, each index kept as
it is), into an OCI image layout, and write a tar with
bundle.json (unchanged, byte for byte) at its root and the images in
artifacts/layout (CNAB Core 104): gzipped when ARCHIVE ends in .tgz or
.tar.gz, plain when it ends in .tar. Exporting twice gives identical archives.
A .tar is written in place, each blob straight from its registry into the
archive; a .tgz is that tar, written in $TMPDIR first, then compressed.
Relocate the archive inside the air gap with 'cnab-relocate fixup ARCHIVE'.

BUNDLE may also be a thick bundle archive written by another tool (cnab-go,
duffle, porter, or a crane or skopeo layout tarred with its bundle.json): it is
re-packed into this tool's reproducible form, digests preserved, with no
registry contacted; or a bundle kept in a registry in cnab-to-oci's format,
oci://HOST/REPO:TAG, whose images are read from its repository.

Media too small for the archive? --split-size SIZE writes it as parts
ARCHIVE.000, ARCHIVE.001, ... of at most SIZE each (4GiB, 700MiB, 4.7GB,
plain bytes; KiB/MiB/GiB are powers of 1024, KB/MB/GB of 1000), whose
concatenation is the archive itself (cat ARCHIVE.* > ARCHIVE works for any
tool); each part's size and sha256 are printed. 'cnab-relocate fixup
ARCHIVE.000' (or ARCHIVE) reads the parts in order, never joining them on disk.

Shipping an update? --base OLD.tgz (again for each older release) makes a
delta: every blob and manifest an archive OLD holds (any archive this tool
reads, split ones too, each read once; or a thin bundle.json whose images
are in a registry, read through --source-relocation-mapping when given) is
left out, and recorded with its size, the images that need it and OLD's
sha256 in artifacts/base.json.
bundle.json is unchanged and the layout names every image. 'cnab-relocate
fixup DELTA' inside checks that what is left out is in the target before
it pushes anything: relocate OLD there first. --dry-run lists what would
be written and what left out, with sizes, fetching manifests only.

Relocated before? --source-relocation-mapping FILE reads each image where the
mapping says it is now; the archive still names them by the bundle's own
references and needs no mapping, and bundle.json stays byte for byte.

Usage:
  cnab-relocate export BUNDLE --output ARCHIVE [FLAGS]

Examples:
  cnab-relocate export bundle.json --output app-1.0.tgz
  cnab-relocate export duffle-export.tgz --output app-1.0.tgz
  cnab-relocate export bundle.json --source-relocation-mapping dmz-mapping.json --output app-1.0.tgz
  cnab-relocate export oci://registry.corp/apps/app:1.0 --output app-1.0.tgz
  cnab-relocate export bundle.json --output app-1.0.tgz --split-size 4000MiB
  cnab-relocate export bundle-1.1.json --base app-1.0.tgz --output app-1.1-delta.tgz
  cnab-relocate fixup app-1.0.tgz --repository-prefix registry.corp/team \
      --relocation-mapping relocation-mapping.json
`

func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var (
		out        string
		sourceMap  string
		saveBundle string
		foreign    bool
		jobs       int
		quiet      bool
		splitFlag  string
		format     string
		baseFiles  []string
		dry        bool
		reg        registryFlags
		refs       referrerFlags
		plat       platformFlags
	)
	fs := pflag.NewFlagSet("export", pflag.ContinueOnError)
	fs.StringVar(&out, "output", "", "write the thick bundle archive to `FILE`: .tgz or .tar.gz (gzip), .tar (plain tar)")
	fs.StringVar(&sourceMap, "source-relocation-mapping", "", "read the images where this relocation mapping `FILE` says they are now (the archive names them by the bundle's references)")
	fs.StringVar(&saveBundle, "save-bundle", "", "write bundle.json, byte for byte as read, to `FILE`")
	fs.IntVar(&jobs, "jobs", fixup.DefaultJobs, "blobs fetched at once across all images (and images planned at once)")
	fs.BoolVar(&foreign, "include-non-distributable", false, "carry non-distributable (foreign) layers in the archive too, from the source, never from their URLs")
	fs.StringVar(&splitFlag, "split-size", "", "write the archive as parts ARCHIVE.000, ARCHIVE.001, ... of at most `SIZE` each (4GiB, 700MiB, 4.7GB, bytes)")
	fs.StringVar(&format, "format", "text", "`FORMAT` of the report on stdout: text or json (--output names the archive)")
	fs.StringArrayVar(&baseFiles, "base", nil, "leave out every blob and manifest the archive (or thin bundle.json) `OLD` holds (a delta); repeat for more bases")
	fs.BoolVar(&dry, "dry-run", false, "fetch the manifests only and list what the archive would hold and leave out, with sizes; write nothing")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print only errors")
	refs.add(fs)
	plat.add(fs)
	reg.add(fs)
	if done, code := parse(fs, args, stdout, stderr, exportHelp); done {
		return code
	}
	reg.setOutput(stderr)
	if fs.NArg() != 1 {
		return usageError(stderr, "export", "want exactly one BUNDLE argument, got %d", fs.NArg())
	}
	if out == "" {
		return usageError(stderr, "export", "--output ARCHIVE is required")
	}
	if !archiveName(out) {
		return usageError(stderr, "export", "--output %s: not an archive name; it must end in .tgz or .tar.gz (gzip) or .tar (plain tar)", out)
	}
	if format != "text" && format != "json" {
		return usageError(stderr, "export", "--format %s: want text or json", format)
	}
	var splitSize int64
	if fs.Changed("split-size") {
		n, err := parseSize(splitFlag)
		if err != nil {
			return usageError(stderr, "export", "--split-size %s: %v", splitFlag, err)
		}
		splitSize = n
	}
	path := fs.Arg(0)
	outputs := []string{out, saveBundle}
	if splitSize > 0 {
		// Its parts must not be the input either (export ARCHIVE.000 --output ARCHIVE).
		outputs = append(outputs, layout.PartName(out, 0))
	}
	for _, b := range baseFiles {
		if b == "" {
			return usageError(stderr, "export", "--base: want an archive, got an empty name")
		}
	}
	if err := checkOutputs(append(inputFiles(path, sourceMap), baseFiles...), outputs...); err != nil {
		return failure(stderr, "export", err)
	}
	ps, err := plat.parse()
	if err != nil {
		return usageError(stderr, "export", "%v", err)
	}
	rep := newReporter(stderr, quiet, "the archive "+out)
	opts := reg.client(jobs, refs.options())
	opts.IncludeNonDistributable = foreign
	opts.Platforms = ps
	client := clientOnce(opts)
	in, err := loadInput(ctx, path, sourceMap, client)
	if err != nil {
		rep.wait()
		return failure(stderr, "export", err)
	}
	defer in.close()
	b := in.bundle
	start := time.Now()
	var parts []layout.Part
	var delta *layout.Delta
	c, err := client()
	if err != nil {
		rep.wait()
		return failure(stderr, "export", err)
	}
	call := fixup.ExportCall{Source: in.source, SourceMapping: in.mapping,
		SplitSize: splitSize, OnPart: func(p layout.Part) { parts = append(parts, p) }, Bases: baseFiles,
		OnDelta: func(d *layout.Delta) { delta = d }, OnEvent: rep.event}
	if dry {
		call.DryRun = true
		res, err := c.Export(ctx, b, call)
		rep.wait()
		if err != nil {
			return failure(stderr, "export", in.explain(err))
		}
		defer res.Close()
		return exportDryRun(res, path, out, format, stdout)
	}
	err = c.ExportArchive(ctx, b, b.Raw(), out, call)
	if err == nil && saveBundle != "" {
		if err = writeFiles(output{Path: saveBundle, Data: b.Raw()}); err != nil {
			os.Remove(out) // all or nothing
			for _, p := range parts {
				os.Remove(p.Path)
			}
		}
	}
	rep.wait()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "cnab-relocate export: interrupted; no archive written")
			return exitFailed
		}
		return failure(stderr, "export", in.explain(err))
	}
	rpt := exportReport{Bundle: path, Archive: out, Seconds: time.Since(start).Seconds(), SaveBundle: saveBundle}
	if parts == nil {
		if st, _ := os.Stat(out); st != nil {
			rpt.Size = st.Size()
		}
	}
	if delta != nil {
		rpt.Bases = delta.Bases
		rpt.LeftOut = &exportLeftOut{Count: len(delta.LeftOut)}
		for _, l := range delta.LeftOut {
			rpt.LeftOut.Size += l.Size
		}
	}
	for _, p := range parts {
		rpt.Size += p.Size
		rpt.Parts = append(rpt.Parts, exportPart{Path: p.Path, Size: p.Size, Digest: p.Digest.String()})
	}
	switch {
	case format == "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		enc.Encode(rpt)
		return exitOK
	case quiet:
		return exitOK
	case parts == nil:
		fmt.Fprintf(stdout, "Exported %s to %s (%s) in %.1fs\n", path, out, human(rpt.Size), rpt.Seconds)
	default:
		fmt.Fprintf(stdout, "Exported %s to %s (%s) in %d parts of at most %s in %.1fs\n", path, out, human(rpt.Size), len(parts), human(splitSize), rpt.Seconds)
		for _, p := range rpt.Parts {
			fmt.Fprintf(stdout, "  %s  %d bytes  %s\n", p.Path, p.Size, p.Digest)
		}
	}
	if rpt.LeftOut != nil {
		var names []string
		for _, b := range rpt.Bases {
			names = append(names, b.Archive)
		}
		fmt.Fprintf(stdout, "Delta against %s: %d blobs and manifests (%s) left out, recorded in %s\n", strings.Join(names, ", "), rpt.LeftOut.Count, human(rpt.LeftOut.Size), layout.DeltaFile)
	}
	return exitOK
}

// exportReport is what export --format json prints (docs/output-formats.md).
type exportReport struct {
	Bundle  string  `json:"bundle"`
	Archive string  `json:"archive"`
	Size    int64   `json:"size"`
	Seconds float64 `json:"seconds"`
	// Parts lists a split archive's files in order; absent for one file.
	Parts      []exportPart `json:"parts,omitempty"`
	SaveBundle string       `json:"savedBundle,omitempty"`
	// Bases and LeftOut are a delta's (--base): its bases, and how many
	// blobs and manifests, of how many bytes, it leaves out.
	Bases   []layout.Base  `json:"bases,omitempty"`
	LeftOut *exportLeftOut `json:"leftOut,omitempty"`
}

type exportLeftOut struct {
	Count int   `json:"count"`
	Size  int64 `json:"size"`
}

type exportPart struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	Digest string `json:"digest"`
}

// archiveName reports whether name ends in an extension export writes:
// .tgz or .tar.gz (gzip) or .tar (a plain tar; see layout.WriteArchive), in
// any case.
func archiveName(name string) bool {
	l := strings.ToLower(name)
	return strings.HasSuffix(l, ".tgz") || strings.HasSuffix(l, ".tar.gz") || strings.HasSuffix(l, ".tar")
}

// exportDryRunReport is what export --dry-run --format json prints
// (docs/output-formats.md).
type exportDryRunReport struct {
	Bundle  string          `json:"bundle"`
	Archive string          `json:"archive"`
	DryRun  bool            `json:"dryRun"`
	Written []dryRunBlob    `json:"written"`
	LeftOut []dryRunBlob    `json:"leftOut"`
	Bases   []layout.Base   `json:"bases,omitempty"`
	Sizes   dryRunBlobSizes `json:"sizes"`
}

type dryRunBlob struct {
	Digest    string   `json:"digest"`
	Size      int64    `json:"size"`
	MediaType string   `json:"mediaType,omitempty"`
	Images    []string `json:"images"`
	// Base is the file of the base that holds it, for what is left out.
	Base string `json:"base,omitempty"`
}

type dryRunBlobSizes struct {
	Written int64 `json:"written"`
	LeftOut int64 `json:"leftOut"`
}

// exportDryRun prints what the export of res would write and leave out.
func exportDryRun(res *fixup.ExportResult, path, out, format string, stdout io.Writer) int {
	rpt := exportDryRunReport{Bundle: path, Archive: out, DryRun: true, Written: []dryRunBlob{}, LeftOut: []dryRunBlob{}}
	left := map[string]layout.LeftOut{}
	if res.Delta != nil {
		rpt.Bases = res.Delta.Bases
		for _, l := range res.Delta.LeftOut {
			left[l.Digest.String()] = l
		}
	}
	for _, b := range res.Blobs {
		e := dryRunBlob{Digest: b.Digest.String(), Size: b.Size, MediaType: b.MediaType, Images: b.Images}
		if l, ok := left[e.Digest]; ok {
			e.Base = res.Delta.Bases[l.Base].Archive
			rpt.LeftOut = append(rpt.LeftOut, e)
			rpt.Sizes.LeftOut += e.Size
			continue
		}
		rpt.Written = append(rpt.Written, e)
		rpt.Sizes.Written += e.Size
	}
	if format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		enc.Encode(rpt)
		return exitOK
	}
	fmt.Fprintf(stdout, "Export of %s to %s (dry run: manifests fetched, nothing written)\n", path, out)
	fmt.Fprintf(stdout, "Would write %d blobs and manifests (%s):\n", len(rpt.Written), human(rpt.Sizes.Written))
	for _, e := range rpt.Written {
		fmt.Fprintf(stdout, "  %s  %s  %s\n", e.Digest, human(e.Size), strings.Join(e.Images, ", "))
	}
	if res.Delta != nil {
		fmt.Fprintf(stdout, "Would leave out %d held by the bases (%s):\n", len(rpt.LeftOut), human(rpt.Sizes.LeftOut))
		for _, e := range rpt.LeftOut {
			fmt.Fprintf(stdout, "  %s  %s  in %s  %s\n", e.Digest, human(e.Size), e.Base, strings.Join(e.Images, ", "))
		}
	}
	return exitOK
}
