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
thin bundle, all platforms, into an OCI image layout, and write a tar with
bundle.json (unchanged, byte for byte) at its root and the images in
artifacts/layout (CNAB Core 104): gzipped when ARCHIVE ends in .tgz or
.tar.gz, plain when it ends in .tar. Exporting twice gives identical archives.
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
		reg        registryFlags
		refs       referrerFlags
	)
	fs := pflag.NewFlagSet("export", pflag.ContinueOnError)
	fs.StringVar(&out, "output", "", "write the thick bundle archive to `FILE`: .tgz or .tar.gz (gzip), .tar (plain tar)")
	fs.StringVar(&sourceMap, "source-relocation-mapping", "", "read the images where this relocation mapping `FILE` says they are now (the archive names them by the bundle's references)")
	fs.StringVar(&saveBundle, "save-bundle", "", "write bundle.json, byte for byte as read, to `FILE`")
	fs.IntVar(&jobs, "jobs", fixup.DefaultJobs, "blobs fetched at once across all images (and images planned at once)")
	fs.BoolVar(&foreign, "include-non-distributable", false, "carry non-distributable (foreign) layers in the archive too, from the source, never from their URLs")
	fs.StringVar(&splitFlag, "split-size", "", "write the archive as parts ARCHIVE.000, ARCHIVE.001, ... of at most `SIZE` each (4GiB, 700MiB, 4.7GB, bytes)")
	fs.StringVar(&format, "format", "text", "`FORMAT` of the report on stdout: text or json (--output names the archive)")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print only errors")
	refs.add(fs)
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
	if err := checkOutputs(inputFiles(path, sourceMap), outputs...); err != nil {
		return failure(stderr, "export", err)
	}
	rep := newReporter(stderr, quiet, "the archive "+out)
	opts := reg.client(jobs, refs.options(), rep.event)
	opts.IncludeNonDistributable = foreign
	in, err := loadInput(ctx, path, sourceMap, func() (*fixup.Client, error) { return fixup.NewClient(opts) })
	if err != nil {
		rep.wait()
		return failure(stderr, "export", err)
	}
	defer in.close()
	b := in.bundle
	start := time.Now()
	var parts []layout.Part
	err = fixup.ExportArchive(ctx, b, b.Raw(), out, fixup.ExportOptions{ClientOptions: opts, Source: in.source, SourceMapping: in.mapping,
		SplitSize: splitSize, OnPart: func(p layout.Part) { parts = append(parts, p) }})
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
	case quiet:
	case parts == nil:
		fmt.Fprintf(stdout, "Exported %s to %s (%s) in %.1fs\n", path, out, human(rpt.Size), rpt.Seconds)
	default:
		fmt.Fprintf(stdout, "Exported %s to %s (%s) in %d parts of at most %s in %.1fs\n", path, out, human(rpt.Size), len(parts), human(splitSize), rpt.Seconds)
		for _, p := range rpt.Parts {
			fmt.Fprintf(stdout, "  %s  %d bytes  %s\n", p.Path, p.Size, p.Digest)
		}
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
