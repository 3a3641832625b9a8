package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cnabio/cnab-relocate/fixup"
	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-relocate/relocator"
)

const fixupHelp = `Relocate the images of a bundle into another registry.

Usage:
  cnab-relocate fixup BUNDLE --repository-prefix PREFIX --relocation-mapping FILE [FLAGS]

BUNDLE is a bundle.json file (thin: images are read from their registries) or
a thick bundle archive (CNAB Core 104, as written by 'cnab-relocate export':
images are read from its OCI image layout). Every invocation image and every entry of
"images" whose imageType is docker or oci (or absent) is copied with its whole
content graph (all platforms of an index), digests preserved; other images are
left alone. Artifacts that refer to an image — signatures, SBOMs,
attestations, found through the OCI referrers API or the tag schema
(sha256-<hex> index tags, cosign's .sig/.att/.sbom tags) — are copied into its
target repository too, recursively, digests preserved. The relocation mapping
and the rewritten bundle are written only when every image is in place.

Mappings (--mapping):
  one-to-one   (default) each source repository gets its own target repository
               PREFIX/<path joined by dashes>-<md5 of the repository>, as duffle
               relocate names them: docker.io/istio/proxyv2:1.2 ->
               PREFIX/istio-proxyv2-<md5("docker.io/istio/proxyv2")>:1.2
  prefix       PREFIX/<original path>: docker.io/istio/proxyv2:1.2 ->
               PREFIX/istio/proxyv2:1.2 (a collision is an error)
  many-to-one  every image by digest into one repository, --target REPO,
               as cnab-to-oci's fixup does

Examples:
  cnab-relocate fixup bundle.json --repository-prefix registry.corp/team \
      --relocation-mapping relocation-mapping.json --output-bundle relocated.json
  cnab-relocate fixup bundle.json --repository-prefix registry.corp/team --dry-run
  cnab-relocate fixup app-1.0.tgz --repository-prefix registry.corp/team \
      --relocation-mapping map.json
  cnab-relocate fixup bundle.json --mapping many-to-one --target registry.corp/team/app \
      --relocation-mapping map.json --output json
`

type fixupFlags struct {
	prefix       string
	mapping      string
	target       string
	mappingFile  string
	outputBundle string
	dryRun       bool
	jobs         int
	output       string
	quiet        bool
	registry     registryFlags
	referrers    referrerFlags
}

func runFixup(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f fixupFlags
	fs := pflag.NewFlagSet("fixup", pflag.ContinueOnError)
	fs.StringVar(&f.prefix, "repository-prefix", "", "target repository `PREFIX` (host[:port]/path) for one-to-one and prefix mappings")
	fs.StringVar(&f.mapping, "mapping", string(relocator.OneToOne), "`KIND` of mapping: one-to-one, prefix or many-to-one")
	fs.StringVar(&f.target, "target", "", "the one target `REPO` for --mapping many-to-one")
	fs.StringVar(&f.mappingFile, "relocation-mapping", "", "write the relocation mapping (CNAB 103 JSON) to `FILE`")
	fs.StringVar(&f.outputBundle, "output-bundle", "", "write the bundle, rewritten to the relocated images, to `FILE`")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print where each image would go; contact no registry")
	fs.IntVar(&f.jobs, "jobs", fixup.DefaultJobs, "blobs copied at once across all images")
	fs.StringVarP(&f.output, "output", "o", "text", "`FORMAT` of the final report on stdout: text or json")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "print only errors")
	f.referrers.add(fs)
	f.registry.add(fs)
	if done, code := parse(fs, args, stdout, stderr, fixupHelp); done {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(stderr, "fixup", "want exactly one BUNDLE argument, got %d", fs.NArg())
	}
	if f.output != "text" && f.output != "json" {
		return usageError(stderr, "fixup", "--output %q: want text or json", f.output)
	}
	kind, err := relocator.ParseKind(f.mapping)
	if err != nil {
		return usageError(stderr, "fixup", "%v", err)
	}
	repo := f.prefix
	switch {
	case kind == relocator.ManyToOne && f.target == "":
		return usageError(stderr, "fixup", "--mapping many-to-one needs --target REPO")
	case kind == relocator.ManyToOne:
		if f.prefix != "" {
			return usageError(stderr, "fixup", "--repository-prefix is for one-to-one and prefix mappings; many-to-one takes --target")
		}
		repo = f.target
	case f.target != "":
		return usageError(stderr, "fixup", "--target is for --mapping many-to-one; %s takes --repository-prefix", kind)
	case f.prefix == "":
		return usageError(stderr, "fixup", "--repository-prefix is required")
	}
	if !f.dryRun && f.mappingFile == "" {
		return usageError(stderr, "fixup", "--relocation-mapping FILE is required (where to write the relocation mapping)")
	}
	mapping, err := relocator.New(kind, repo)
	if err != nil {
		return usageError(stderr, "fixup", "%v", err)
	}
	path := fs.Arg(0)
	if err := checkOutputs([]string{path}, f.mappingFile, f.outputBundle); err != nil {
		return failure(stderr, "fixup", err)
	}
	b, source, done, err := loadBundle(ctx, path)
	if err != nil {
		return failure(stderr, "fixup", err)
	}
	defer done()
	if f.dryRun {
		return dryRun(b, mapping, f, stdout, stderr)
	}

	rep := newReporter(stderr, f.quiet)
	start := time.Now()
	result, err := fixup.Relocate(ctx, b, fixup.Options{
		ClientOptions: f.registry.client(f.jobs, f.referrers.options(), rep.event),
		Mapping:       mapping,
		Source:        source,
	})
	rep.wait()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "cnab-relocate fixup: interrupted; no output written (a rerun resumes from what is in the target)")
			return exitFailed
		}
		if result != nil && f.output == "json" {
			writeReport(stdout, result, f, time.Since(start))
		}
		return failure(stderr, "fixup", inBundle(path, err))
	}
	outs, err := outputs(b, result, f)
	if err == nil {
		err = writeFiles(outs...)
	}
	if err != nil {
		return failure(stderr, "fixup", err)
	}
	if f.output == "json" {
		writeReport(stdout, result, f, time.Since(start))
	} else if !f.quiet {
		summary(stdout, result, f, time.Since(start))
	}
	return exitOK
}

func outputs(b *fixup.Bundle, r *fixup.Result, f fixupFlags) ([]output, error) {
	var outs []output
	if f.mappingFile != "" {
		data, err := fixup.CanonicalJSON(r.Mapping)
		if err != nil {
			return nil, err
		}
		outs = append(outs, output{Path: f.mappingFile, Data: data})
	}
	if f.outputBundle != "" {
		data, err := b.Rewrite(r.Mapping, r.Digests)
		if err != nil {
			return nil, err
		}
		outs = append(outs, output{Path: f.outputBundle, Data: data})
	}
	return outs, nil
}

func dryRun(b *fixup.Bundle, m *relocator.Mapping, f fixupFlags, stdout, stderr io.Writer) int {
	plan, err := fixup.NewPlan(b, m)
	if err != nil {
		return failure(stderr, "fixup", inBundle(b.Path(), err))
	}
	if f.mappingFile != "" {
		data, err := fixup.CanonicalJSON(plan.Mapping())
		if err == nil {
			err = writeFiles(output{Path: f.mappingFile, Data: data})
		}
		if err != nil {
			return failure(stderr, "fixup", err)
		}
	}
	if f.output == "json" {
		type entry struct {
			Source string `json:"source"`
			Target string `json:"target"`
			Field  string `json:"field"`
		}
		type skipped struct {
			Image     string `json:"image"`
			Field     string `json:"field"`
			ImageType string `json:"imageType"`
		}
		out := struct {
			DryRun            bool      `json:"dryRun"`
			Images            []entry   `json:"images"`
			Skipped           []skipped `json:"skipped"`
			RelocationMapping string    `json:"relocationMapping,omitempty"`
		}{DryRun: true, Images: []entry{}, Skipped: []skipped{}, RelocationMapping: f.mappingFile}
		for _, e := range plan.Entries {
			out.Images = append(out.Images, entry{e.Image.Ref, e.TargetString(m), e.Image.Field})
		}
		for _, s := range plan.Skipped {
			out.Skipped = append(out.Skipped, skipped{s.Ref, s.Field, s.ImageType})
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		enc.Encode(out)
		return exitOK
	}
	fmt.Fprintf(stdout, "Plan for %s (%s mapping, dry run: no registry contacted)\n", b.Path(), m.Kind())
	for _, e := range plan.Entries {
		fmt.Fprintf(stdout, "  %s -> %s\n", e.Image.Ref, e.TargetString(m))
	}
	if len(plan.Skipped) > 0 {
		fmt.Fprintln(stdout, "Left alone (imageType is neither docker nor oci):")
		for _, s := range plan.Skipped {
			fmt.Fprintf(stdout, "  %s (%s, imageType %q)\n", s.Ref, s.Field, s.ImageType)
		}
	}
	if f.mappingFile != "" {
		fmt.Fprintf(stdout, "Relocation mapping written to %s\n", f.mappingFile)
	}
	return exitOK
}

func summary(w io.Writer, r *fixup.Result, f fixupFlags, d time.Duration) {
	t := totals(r)
	present := 0
	for _, i := range r.Images {
		if i.Present {
			present++
		}
	}
	fmt.Fprintf(w, "Relocated %d image(s) in %.1fs (%d already in place): %s copied, %s mounted, %s already present\n",
		len(r.Images), d.Seconds(), present, human(t.BytesCopied), human(t.BytesMounted), human(t.BytesSkipped))
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "Left alone: %s (%s, imageType %q)\n", s.Ref, s.Field, s.ImageType)
	}
	if f.mappingFile != "" {
		fmt.Fprintf(w, "Relocation mapping: %s\n", f.mappingFile)
	}
	if f.outputBundle != "" {
		fmt.Fprintf(w, "Relocated bundle: %s\n", f.outputBundle)
	}
}

type reportImage struct {
	Source       string  `json:"source"`
	Target       string  `json:"target"`
	Digest       string  `json:"digest"`
	MediaType    string  `json:"mediaType"`
	BytesCopied  int64   `json:"bytesCopied"`
	BytesMounted int64   `json:"bytesMounted"`
	BytesSkipped int64   `json:"bytesSkipped"`
	Seconds      float64 `json:"seconds"`
	Present      bool    `json:"present"`
	// ReferrersSearched is false when nobody looked for referrers: they
	// are off, the image was in place, or the registry cannot list them.
	ReferrersSearched bool `json:"referrersSearched"`
	// Referrers are the signatures, SBOMs and attestations copied with it.
	Referrers []fixup.ReferrerResult `json:"referrers"`
	Error     string                 `json:"error,omitempty"`
}

type reportTotals struct {
	Images       int     `json:"images"`
	Failed       int     `json:"failed"`
	BytesCopied  int64   `json:"bytesCopied"`
	BytesMounted int64   `json:"bytesMounted"`
	BytesSkipped int64   `json:"bytesSkipped"`
	Seconds      float64 `json:"seconds"`
}

type report struct {
	Images            []reportImage `json:"images"`
	Totals            reportTotals  `json:"totals"`
	RelocationMapping string        `json:"relocationMapping"`
	OutputBundle      string        `json:"outputBundle"`
}

func totals(r *fixup.Result) reportTotals {
	var t reportTotals
	for _, i := range r.Images {
		t.Images++
		if i.Err != nil {
			t.Failed++
		}
		t.BytesCopied += i.BytesCopied
		t.BytesMounted += i.BytesMounted
		t.BytesSkipped += i.BytesSkipped
	}
	return t
}

func newReport(r *fixup.Result, f fixupFlags, d time.Duration) report {
	rep := report{Images: []reportImage{}, Totals: totals(r)}
	rep.Totals.Seconds = d.Seconds()
	for _, i := range r.Images {
		ri := reportImage{
			Source: i.Source, Target: i.Target, Digest: i.Digest.String(), MediaType: i.MediaType,
			BytesCopied: i.BytesCopied, BytesMounted: i.BytesMounted, BytesSkipped: i.BytesSkipped,
			Seconds: i.Duration.Seconds(), Present: i.Present, ReferrersSearched: i.ReferrersSearched, Referrers: i.Referrers,
		}
		if ri.Referrers == nil {
			ri.Referrers = []fixup.ReferrerResult{}
		}
		if i.Err != nil {
			ri.Error = i.Err.Error()
		}
		rep.Images = append(rep.Images, ri)
	}
	if r.Mapping != nil && totals(r).Failed == 0 {
		rep.RelocationMapping = f.mappingFile
		rep.OutputBundle = f.outputBundle
	}
	return rep
}

func writeReport(w io.Writer, r *fixup.Result, f fixupFlags, d time.Duration) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	enc.Encode(newReport(r, f, d))
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

var _ = os.Stdout

// inBundle names the bundle file in errors about its images (a bad
// contentDigest is found when planning, after loading).
func inBundle(path string, err error) error {
	if errors.Is(err, fixup.ErrInvalidImage) && !strings.Contains(err.Error(), path) {
		return fmt.Errorf("%s: %w", path, err)
	}
	return err
}

// loadBundle loads a bundle.json, or a thick bundle archive with the source
// that reads its layout (nil for a thin bundle: images come from
// registries). done releases the archive's temporary files.
func loadBundle(ctx context.Context, path string) (*fixup.Bundle, fixup.Source, func(), error) {
	thick, err := layout.IsArchive(path)
	if err != nil || !thick {
		b, err := fixup.LoadFile(path)
		return b, nil, func() {}, err
	}
	b, th, err := fixup.LoadArchive(ctx, path)
	if err != nil {
		return nil, nil, func() {}, err
	}
	return b, fixup.LayoutSource{Store: th.Layout, Path: path}, func() { th.Close() }, nil
}
