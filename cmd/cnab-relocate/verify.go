package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/cnabio/cnab-relocate/fixup"
	"github.com/cnabio/cnab-relocate/resolver"
)

const verifyHelp = `Check that every relocated image of a bundle is in its target registry with
the digest the bundle records. Only HEAD requests are sent. Exit 0 when all
are in place, 1 listing each missing or different image.

Usage:
  cnab-relocate verify BUNDLE [--relocation-mapping FILE] [FLAGS]

With --relocation-mapping, BUNDLE is the original bundle and each image is
looked up at its relocated reference. Without it, BUNDLE is a relocated bundle
and its own references are checked.

Examples:
  cnab-relocate verify bundle.json --relocation-mapping relocation-mapping.json
  cnab-relocate verify relocated-bundle.json --output json
`

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var (
		mappingFile string
		output      string
		jobs        int
		reg         registryFlags
	)
	fs := pflag.NewFlagSet("verify", pflag.ContinueOnError)
	fs.StringVar(&mappingFile, "relocation-mapping", "", "the relocation mapping `FILE` written by fixup")
	fs.StringVarP(&output, "output", "o", "text", "`FORMAT` of the report on stdout: text or json")
	fs.IntVar(&jobs, "jobs", fixup.DefaultJobs, "images checked at once")
	reg.add(fs)
	if done, code := parse(fs, args, stdout, stderr, verifyHelp); done {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(stderr, "verify", "want exactly one BUNDLE argument, got %d", fs.NArg())
	}
	if output != "text" && output != "json" {
		return usageError(stderr, "verify", "--output %q: want text or json", output)
	}
	b, err := fixup.LoadFile(fs.Arg(0))
	if err != nil {
		return failure(stderr, "verify", err)
	}
	var mapping map[string]string
	if mappingFile != "" {
		data, err := os.ReadFile(mappingFile)
		if err != nil {
			return failure(stderr, "verify", invalidf("relocation mapping %s: %v", mappingFile, err))
		}
		if err := json.Unmarshal(data, &mapping); err != nil {
			return failure(stderr, "verify", invalidf("relocation mapping %s: not a JSON object of strings: %v", mappingFile, err))
		}
	}
	r, err := resolver.New(reg.resolverOptions())
	if err != nil {
		return failure(stderr, "verify", err)
	}
	checks, err := fixup.Verify(ctx, b, mapping, fixup.VerifyOptions{Resolver: r, Jobs: jobs})
	if output == "json" {
		type item struct {
			fixup.Check
			Error string `json:"error,omitempty"`
		}
		items := []item{}
		for _, c := range checks {
			it := item{Check: c}
			if c.Err != nil {
				it.Error = c.Err.Error()
			}
			items = append(items, it)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		enc.Encode(struct {
			OK     bool   `json:"ok"`
			Images []item `json:"images"`
		}{err == nil, items})
	} else {
		for _, c := range checks {
			if c.OK {
				fmt.Fprintf(stdout, "ok       %s -> %s (%s)\n", c.Source, c.Target, c.Got)
			} else {
				fmt.Fprintf(stdout, "MISSING  %s -> %s\n", c.Source, c.Target)
			}
		}
	}
	if err != nil {
		return failure(stderr, "verify", err)
	}
	return exitOK
}
