package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/cnabio/cnab-relocate/fixup"
)

const exportHelp = `Make a thick bundle for the air gap: fetch every docker and oci image of a
thin bundle, all platforms, into an OCI image layout, and write a gzipped tar
with bundle.json (unchanged, byte for byte) at its root and the images in
artifacts/layout (CNAB Core 104). Exporting twice gives identical archives.
Relocate the archive inside the air gap with 'cnab-relocate fixup ARCHIVE'.

BUNDLE may also be a thick bundle archive written by another tool (cnab-go,
duffle, or a crane or skopeo layout tarred with its bundle.json): it is
re-packed into this tool's reproducible form, digests preserved, with no
registry contacted.

Usage:
  cnab-relocate export BUNDLE --output ARCHIVE [FLAGS]

Examples:
  cnab-relocate export bundle.json --output app-1.0.tgz
  cnab-relocate export duffle-export.tgz --output app-1.0.tgz
  cnab-relocate fixup app-1.0.tgz --repository-prefix registry.corp/team \
      --relocation-mapping relocation-mapping.json
`

func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var (
		out   string
		jobs  int
		quiet bool
		reg   registryFlags
		refs  referrerFlags
	)
	fs := pflag.NewFlagSet("export", pflag.ContinueOnError)
	fs.StringVar(&out, "output", "", "write the thick bundle archive to `FILE` (.tgz)")
	fs.IntVar(&jobs, "jobs", fixup.DefaultJobs, "blobs fetched at once across all images")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print only errors")
	refs.add(fs)
	reg.add(fs)
	if done, code := parse(fs, args, stdout, stderr, exportHelp); done {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(stderr, "export", "want exactly one BUNDLE argument, got %d", fs.NArg())
	}
	if out == "" {
		return usageError(stderr, "export", "--output ARCHIVE is required")
	}
	path := fs.Arg(0)
	if err := checkOutputs([]string{path}, out); err != nil {
		return failure(stderr, "export", err)
	}
	b, source, done, err := loadBundle(ctx, path)
	if err != nil {
		return failure(stderr, "export", err)
	}
	defer done()
	rep := newReporter(stderr, quiet)
	start := time.Now()
	err = fixup.ExportArchive(ctx, b, b.Raw(), out, fixup.ExportOptions{ClientOptions: reg.client(jobs, refs.options(), rep.event), Source: source})
	rep.wait()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "cnab-relocate export: interrupted; no archive written")
			return exitFailed
		}
		return failure(stderr, "export", inBundle(path, err))
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
