package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cnabio/cnab-relocate/fixup"
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
		reg        registryFlags
		refs       referrerFlags
	)
	fs := pflag.NewFlagSet("export", pflag.ContinueOnError)
	fs.StringVar(&out, "output", "", "write the thick bundle archive to `FILE`: .tgz or .tar.gz (gzip), .tar (plain tar)")
	fs.StringVar(&sourceMap, "source-relocation-mapping", "", "read the images where this relocation mapping `FILE` says they are now (the archive names them by the bundle's references)")
	fs.StringVar(&saveBundle, "save-bundle", "", "write bundle.json, byte for byte as read, to `FILE`")
	fs.IntVar(&jobs, "jobs", fixup.DefaultJobs, "blobs fetched at once across all images (and images planned at once)")
	fs.BoolVar(&foreign, "include-non-distributable", false, "carry non-distributable (foreign) layers in the archive too, from the source, never from their URLs")
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
	path := fs.Arg(0)
	if err := checkOutputs(inputFiles(path, sourceMap), out, saveBundle); err != nil {
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
	err = fixup.ExportArchive(ctx, b, b.Raw(), out, fixup.ExportOptions{ClientOptions: opts, Source: in.source, SourceMapping: in.mapping})
	if err == nil && saveBundle != "" {
		if err = writeFiles(output{Path: saveBundle, Data: b.Raw()}); err != nil {
			os.Remove(out) // all or nothing
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
	if !quiet {
		st, _ := os.Stat(out)
		var size int64
		if st != nil {
			size = st.Size()
		}
		fmt.Fprintf(stdout, "Exported %s to %s (%s) in %.1fs\n", path, out, human(size), time.Since(start).Seconds())
	}
	return exitOK
}

// archiveName reports whether name ends in an extension export writes:
// .tgz or .tar.gz (gzip) or .tar (a plain tar; see layout.WriteArchive), in
// any case.
func archiveName(name string) bool {
	l := strings.ToLower(name)
	return strings.HasSuffix(l, ".tgz") || strings.HasSuffix(l, ".tar.gz") || strings.HasSuffix(l, ".tar")
}
