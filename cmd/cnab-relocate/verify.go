package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/cnabio/cnab-relocate/fixup"
)

const verifyHelp = `Check that every relocated image of a bundle is in its target registry with
the digest the bundle records. Only HEAD requests are sent. Exit 0 when all
are in place, 1 listing each missing or different image.

Usage:
  cnab-relocate verify BUNDLE [--relocation-mapping FILE] [FLAGS]

With --relocation-mapping, BUNDLE is the original bundle and each image is
looked up at its relocated reference. Without it, BUNDLE is a relocated bundle
and its own references are checked. BUNDLE may be a bundle kept in a registry
in cnab-to-oci's format, oci://HOST/REPO:TAG: it is read with GETs, and its
images are checked where its relocation map says (its own repository), or
where --relocation-mapping says.

Examples:
  cnab-relocate verify bundle.json --relocation-mapping relocation-mapping.json
  cnab-relocate verify relocated-bundle.json --output json
  cnab-relocate verify oci://registry.corp/apps/app:1.0
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
	reg.setOutput(stderr)
	if fs.NArg() != 1 {
		return usageError(stderr, "verify", "want exactly one BUNDLE argument, got %d", fs.NArg())
	}
	if output != "text" && output != "json" {
		return usageError(stderr, "verify", "--output %q: want text or json", output)
	}
	// One client reads a registry-held bundle and checks its images.
	client := clientOnce(reg.client(jobs, fixup.ReferrerOptions{}))
	in, err := loadInput(ctx, fs.Arg(0), "", client)
	if err != nil {
		return failure(stderr, "verify", err)
	}
	defer in.close()
	b := in.bundle
	// A bundle in a registry is checked where its relocation map says its
	// images are (its own repository), unless a mapping file says else.
	mapping := in.mapping
	if mappingFile != "" {
		if mapping, err = readMapping(mappingFile); err != nil {
			return failure(stderr, "verify", err)
		}
	}
	c, err := client()
	if err != nil {
		return failure(stderr, "verify", err)
	}
	checks, err := c.Verify(ctx, b, mapping)
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
