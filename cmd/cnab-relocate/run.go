package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"

	"github.com/cnabio/cnab-relocate/fixup"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // relocation failed
	exitUsage  = 2 // bad usage or bad input
)

// Set at build time: -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

const usage = `cnab-relocate copies the images of a CNAB bundle into another registry,
digests preserved, and rewrites the bundle to point at the copies.

Usage:
  cnab-relocate COMMAND [ARGS] [FLAGS]

Commands:
  fixup    relocate a bundle's images and write the relocation mapping
  export   write a thick bundle archive (images in an OCI layout) for the air gap
  verify   check that relocated images are in place, with HEAD requests only
  version  print the version and commit

Examples:
  # relocate a thin bundle: one target repository per source repository
  cnab-relocate fixup bundle.json --repository-prefix registry.corp/team \
      --relocation-mapping relocation-mapping.json --output-bundle relocated.json

  # air gap: carry the images inside the bundle, then relocate from the archive
  cnab-relocate export bundle.json --output app-1.0.tgz
  cnab-relocate fixup app-1.0.tgz --repository-prefix registry.corp/team \
      --relocation-mapping relocation-mapping.json

  # see where each image would go, contacting no registry
  cnab-relocate fixup bundle.json --repository-prefix registry.corp/team --dry-run

  # in a promotion job: is every relocated image there with its digest?
  cnab-relocate verify bundle.json --relocation-mapping relocation-mapping.json

Run 'cnab-relocate COMMAND --help' for a command's flags.
Exit codes: 0 done, 1 relocation failed, 2 bad usage or bad input.
`

// run is the whole CLI, testable without a subprocess.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case "version", "--version":
		fmt.Fprintf(stdout, "cnab-relocate %s (commit %s)\n", version, buildCommit())
		return exitOK
	case "fixup":
		return runFixup(ctx, args[1:], stdout, stderr)
	case "verify":
		return runVerify(ctx, args[1:], stdout, stderr)
	case "export":
		return runExport(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "cnab-relocate: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// parse parses a subcommand's flags. It returns done=true with the exit
// code when the command should stop: --help (0) or a usage error (2).
func parse(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer, help string) (done bool, code int) {
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, help)
			fmt.Fprint(stdout, "\nFlags:\n"+fs.FlagUsages())
			return true, exitOK
		}
		fmt.Fprintf(stderr, "cnab-relocate %s: %v\nRun 'cnab-relocate %s --help' for usage.\n", fs.Name(), err, fs.Name())
		return true, exitUsage
	}
	return false, 0
}

// usageError prints a usage error and returns exit code 2.
func usageError(stderr io.Writer, cmd, format string, a ...any) int {
	fmt.Fprintf(stderr, "cnab-relocate %s: %s\nRun 'cnab-relocate %s --help' for usage.\n", cmd, fmt.Sprintf(format, a...), cmd)
	return exitUsage
}

// failure prints err and returns its exit code: 2 for bad input, else 1.
func failure(stderr io.Writer, cmd string, err error) int {
	msg := strings.TrimSpace(err.Error())
	lines := strings.Split(msg, "\n")
	for _, l := range lines {
		fmt.Fprintf(stderr, "cnab-relocate %s: %s\n", cmd, l)
	}
	for _, h := range hints(err) {
		fmt.Fprintf(stderr, "cnab-relocate %s: hint: %s\n", cmd, h)
	}
	if errors.Is(err, fixup.ErrInvalidInput) {
		return exitUsage
	}
	return exitFailed
}

// invalidf is an input error (exit 2) made from a message.
func invalidf(format string, a ...any) error {
	return inputErr{fmt.Errorf(format, a...)}
}

type inputErr struct{ error }

func (e inputErr) Unwrap() []error { return []error{fixup.ErrInvalidInput, e.error} }
