package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/pflag"

	"github.com/cnabio/cnab-relocate/fixup"
	"github.com/cnabio/cnab-relocate/internal/canonical"
	"github.com/cnabio/cnab-relocate/relocator"
)

const fixupHelp = `Relocate the images of a bundle into another registry.

Usage:
  cnab-relocate fixup BUNDLE --repository-prefix PREFIX --relocation-mapping FILE [FLAGS]

BUNDLE is a bundle.json file (thin: images are read from their registries) or
a thick bundle archive (CNAB Core 104, as written by 'cnab-relocate export':
images are read from its OCI image layout). Every invocation image and every entry of
"images" whose imageType is docker or oci (or absent) is copied with its whole
content graph (all platforms of an index, or those --platform selects),
digests preserved; other images are left alone. Artifacts that refer to an image — signatures, SBOMs,
attestations, found through the OCI referrers API or the tag schema
(sha256-<hex> index tags, cosign's .sig/.att/.sbom tags) — are copied into its
target repository too, recursively, digests preserved. The relocation mapping
and the rewritten bundle are written only when every image is in place. An
image already in the target costs one request and is not looked at again:
--refresh-referrers copies the referrers added at the source since then.

BUNDLE may also be a bundle kept in a registry in cnab-to-oci's format
(docker-app, cnab-to-oci push, porter publish): oci://HOST/REPO:TAG. Its images
are read from its repository, where its relocation map says they are.

Relocated before (vendor -> DMZ -> air gap)? --source-relocation-mapping FILE
reads each image where that CNAB relocation mapping says it is now. Target
names still come from the bundle's own references, so they are the same after
any number of hops, and the new mapping is keyed by them; bundle.json is never
modified (its signature stays valid). A porter archive's relocation-mapping.json
is used the same way, with no flag. --push-bundle HOST/REPO:TAG then stores the
bundle, byte for byte, with its images in the target registry in cnab-to-oci's
format, for cnab-to-oci, docker-app and porter to pull.

Only some platforms? --platform linux/amd64 copies only the matching manifests
of each index. By default the index is pushed as it is (a sparse index: its
digest, the bundle's contentDigest and signatures on it stay valid), which the
target registry must accept; --platform-index rewrite pushes a new index of the
platforms copied instead, whose new digest the outputs record.

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
  # second hop: from the DMZ, where the first hop's mapping says the images are
  cnab-relocate fixup bundle.json --source-relocation-mapping dmz-mapping.json \
      --repository-prefix airgap.corp/team --relocation-mapping airgap-mapping.json
  # a bundle kept in a registry, relocated and pushed again next to its images
  cnab-relocate fixup oci://vendor.example/apps/app:1.0 --repository-prefix registry.corp/team \
      --relocation-mapping map.json --push-bundle registry.corp/team/app:1.0
`

type fixupFlags struct {
	prefix        string
	mapping       string
	target        string
	mappingFile   string
	outputBundle  string
	sourceMap     string
	saveBundle    string
	pushBundle    string
	pushed        string // the pushed bundle's digest
	foreign       bool
	dryRun        bool
	jobs          int
	output        string
	quiet         bool
	registry      registryFlags
	referrers     referrerFlags
	platforms     platformFlags
	platformIndex string
}

func runFixup(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f fixupFlags
	fs := pflag.NewFlagSet("fixup", pflag.ContinueOnError)
	fs.StringVar(&f.prefix, "repository-prefix", "", "target repository `PREFIX` (host[:port]/path) for one-to-one and prefix mappings")
	fs.StringVar(&f.mapping, "mapping", string(relocator.OneToOne), "`KIND` of mapping: one-to-one, prefix or many-to-one")
	fs.StringVar(&f.target, "target", "", "the one target `REPO` for --mapping many-to-one")
	fs.StringVar(&f.mappingFile, "relocation-mapping", "", "write the relocation mapping (CNAB 103 JSON) to `FILE`")
	fs.StringVar(&f.outputBundle, "output-bundle", "", "write the bundle, rewritten to the relocated images, to `FILE`")
	fs.StringVar(&f.sourceMap, "source-relocation-mapping", "", "read the images where this relocation mapping `FILE` says they are now (relocated before)")
	fs.StringVar(&f.saveBundle, "save-bundle", "", "write bundle.json, byte for byte as read (from a registry, an archive or a file), to `FILE`")
	fs.StringVar(&f.pushBundle, "push-bundle", "", "push the bundle, unchanged, with its relocated images to `HOST/REPO:TAG` in cnab-to-oci's format")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print where each image would go; contact no registry")
	fs.IntVar(&f.jobs, "jobs", fixup.DefaultJobs, "blobs copied at once across all images (and images planned, and images pushing their manifests, at once)")
	fs.BoolVar(&f.foreign, "include-non-distributable", false, "copy non-distributable (foreign) layers too, from the source, never from their URLs; the target must accept layer URLs")
	fs.StringVarP(&f.output, "output", "o", "text", "`FORMAT` of the final report on stdout: text or json")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "print only errors")
	f.referrers.add(fs)
	fs.BoolVar(&f.referrers.refresh, "refresh-referrers", false, "for images already in the target, copy the referrers the source has and the target lacks (signatures, SBOMs added since)")
	f.platforms.add(fs)
	fs.StringVar(&f.platformIndex, "platform-index", "keep", "`MODE` for an index that loses platforms (--platform, or an archive exported with it): keep (push it as it is, digest kept; the registry must take a sparse index) or rewrite (push a new index of the platforms copied: a new digest, recorded in the outputs)")
	f.registry.add(fs)
	if done, code := parse(fs, args, stdout, stderr, fixupHelp); done {
		return code
	}
	f.registry.setOutput(stderr)
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
	ps, err := f.platforms.parse()
	if err != nil {
		return usageError(stderr, "fixup", "%v", err)
	}
	var pindex fixup.PlatformIndex
	switch f.platformIndex {
	case "keep":
	case "rewrite":
		// Without --platform it rewrites the sparse indexes of an archive
		// exported with --platform; from a registry, every index is whole.
		pindex = fixup.RewriteIndex
	default:
		return usageError(stderr, "fixup", "--platform-index %q: want keep or rewrite", f.platformIndex)
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
	if f.dryRun && (isRegistryBundle(path) || f.pushBundle != "") {
		return usageError(stderr, "fixup", "--dry-run contacts no registry: give a bundle file or archive, without --push-bundle")
	}
	if err := checkOutputs(inputFiles(path, f.sourceMap), f.mappingFile, f.outputBundle, f.saveBundle); err != nil {
		return failure(stderr, "fixup", err)
	}
	rep := newReporter(stderr, f.quiet, "")
	opts := f.registry.client(f.jobs, f.referrers.options())
	opts.IncludeNonDistributable = f.foreign
	opts.Platforms = ps
	opts.PlatformIndex = pindex
	client := clientOnce(opts)
	in, err := loadInput(ctx, path, f.sourceMap, client)
	if err != nil {
		rep.wait()
		return failure(stderr, "fixup", err)
	}
	defer in.close()
	b := in.bundle
	if f.dryRun {
		rep.wait()
		// A thick bundle's indexes are at hand: say which platforms go.
		var platformsOf func(fixup.PlanEntry) ([]string, []string, error)
		if len(ps) > 0 && in.source != nil && in.mapping == nil {
			c, err := client()
			if err != nil {
				return failure(stderr, "fixup", err)
			}
			platformsOf = func(e fixup.PlanEntry) ([]string, []string, error) {
				return c.PlatformsOf(ctx, in.source, e.Image, e.Digest)
			}
		}
		return dryRun(b, mapping, f, platformsOf, stdout, stderr)
	}

	start := time.Now()
	c, err := client()
	if err != nil {
		rep.wait()
		return failure(stderr, "fixup", err)
	}
	result, err := c.Relocate(ctx, b, fixup.RelocateCall{
		Mapping:       mapping,
		Source:        in.source,
		SourceMapping: in.mapping,
		OnEvent:       rep.event,
	})
	rep.wait()
	if err == nil && f.pushBundle != "" {
		// The same client: its copies are no images of the bundle's, so
		// they make no events.
		var pushed ocispec.Descriptor
		pushed, err = c.PushBundle(ctx, b, f.pushBundle, result.Mapping)
		f.pushed = pushed.Digest.String()
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "cnab-relocate fixup: interrupted; no output written (a rerun resumes from what is in the target)")
			return exitFailed
		}
		if result != nil && f.output == "json" {
			writeReport(stdout, result, f, time.Since(start))
		}
		return failure(stderr, "fixup", in.explain(err))
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
		data, err := canonical.JSON(r.Mapping)
		if err != nil {
			return nil, err
		}
		outs = append(outs, output{Path: f.mappingFile, Data: data})
	}
	if f.outputBundle != "" {
		data, err := b.RewriteRoots(r.Mapping, r.Roots)
		if err != nil {
			return nil, err
		}
		outs = append(outs, output{Path: f.outputBundle, Data: data})
	}
	if f.saveBundle != "" {
		outs = append(outs, output{Path: f.saveBundle, Data: b.Raw()})
	}
	return outs, nil
}

// dryRun prints the plan; platformsOf, when not nil, reads which
// platforms of each image go and which stay (from a thick bundle: no
// registry is contacted), else the selection is printed.
func dryRun(b *fixup.Bundle, m *relocator.Mapping, f fixupFlags, platformsOf func(fixup.PlanEntry) ([]string, []string, error), stdout, stderr io.Writer) int {
	plan, err := fixup.NewPlan(b, m)
	if err != nil {
		return failure(stderr, "fixup", inBundle(b.Path(), err))
	}
	goes, stays := make([][]string, len(plan.Entries)), make([][]string, len(plan.Entries))
	for i, e := range plan.Entries {
		goes[i] = f.platforms.platforms
		if platformsOf != nil {
			if goes[i], stays[i], err = platformsOf(e); err != nil {
				return failure(stderr, "fixup", err)
			}
		}
	}
	if f.mappingFile != "" {
		data, err := canonical.JSON(plan.Mapping())
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
			// Platforms go, of each index, with --platform; the others stay:
			// PlatformsLeft, when the indexes are at hand (a thick bundle).
			Platforms     []string `json:"platforms,omitempty"`
			PlatformsLeft []string `json:"platformsLeft,omitempty"`
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
		for i, e := range plan.Entries {
			out.Images = append(out.Images, entry{e.Image.Ref, targetString(e, m), e.Image.Field, goes[i], stays[i]})
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
	for i, e := range plan.Entries {
		fmt.Fprintf(stdout, "  %s -> %s\n", e.Image.Ref, targetString(e, m))
		switch {
		case len(f.platforms.platforms) == 0:
		case platformsOf == nil:
			fmt.Fprintf(stdout, "    platforms: %s go, every other stays; a single-platform image goes whole (which platforms an index has is read when copying)\n", strings.Join(f.platforms.platforms, ", "))
		case len(goes[i]) == 0:
			fmt.Fprintln(stdout, "    platforms: a single-platform image: it goes whole")
		case len(stays[i]) == 0:
			fmt.Fprintf(stdout, "    platforms: %s go (all it has)\n", strings.Join(goes[i], ", "))
		default:
			fmt.Fprintf(stdout, "    platforms: %s go; %s stay\n", strings.Join(goes[i], ", "), strings.Join(stays[i], ", "))
		}
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
	for _, i := range r.Images {
		switch {
		case i.RewrittenFrom != "":
			fmt.Fprintf(w, "Platforms of %s: %s copied; %s left at the source; rewritten %s -> %s\n",
				i.Source, strings.Join(i.Platforms, ", "), strings.Join(i.PlatformsLeft, ", "), i.RewrittenFrom, i.Digest)
			if len(i.ReferrersDropped) > 0 {
				fmt.Fprintf(w, "  %d referrer(s) of the original index not copied (they sign what is gone): %v\n", len(i.ReferrersDropped), i.ReferrersDropped)
			}
		case len(i.PlatformsLeft) > 0 && !i.Present:
			fmt.Fprintf(w, "Platforms of %s: %s copied; %s left at the source (index %s kept as it is)\n",
				i.Source, strings.Join(i.Platforms, ", "), strings.Join(i.PlatformsLeft, ", "), i.Digest)
		}
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "Left alone: %s (%s, imageType %q)\n", s.Ref, s.Field, s.ImageType)
	}
	if f.mappingFile != "" {
		fmt.Fprintf(w, "Relocation mapping: %s\n", f.mappingFile)
	}
	if f.outputBundle != "" {
		fmt.Fprintf(w, "Relocated bundle: %s\n", f.outputBundle)
	}
	if f.saveBundle != "" {
		fmt.Fprintf(w, "Bundle saved: %s\n", f.saveBundle)
	}
	if f.pushed != "" {
		fmt.Fprintf(w, "Bundle pushed: %s (%s)\n", f.pushBundle, f.pushed)
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
	// Platforms were copied and PlatformsLeft left at the source, with
	// --platform (empty for a single-platform image).
	Platforms     []string `json:"platforms,omitempty"`
	PlatformsLeft []string `json:"platformsLeft,omitempty"`
	// RewrittenFrom is the source's digest of an index rewritten with
	// --platform-index rewrite (Digest is the new one); ReferrersDropped
	// are the referrers of rewritten indexes, not copied.
	RewrittenFrom    string   `json:"rewrittenFrom,omitempty"`
	ReferrersDropped []string `json:"referrersDropped,omitempty"`
	Error            string   `json:"error,omitempty"`
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
	// PushedBundle is the bundle pushed with --push-bundle, REF@DIGEST.
	PushedBundle string `json:"pushedBundle,omitempty"`
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
			Platforms: i.Platforms, PlatformsLeft: i.PlatformsLeft, RewrittenFrom: i.RewrittenFrom.String(),
		}
		for _, d := range i.ReferrersDropped {
			ri.ReferrersDropped = append(ri.ReferrersDropped, d.String())
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
		if f.pushed != "" {
			rep.PushedBundle = f.pushBundle + "@" + f.pushed
		}
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

// inBundle names the bundle file in errors about its images (a bad
// contentDigest is found when planning, after loading).
func inBundle(path string, err error) error {
	if errors.Is(err, fixup.ErrInvalidImage) && !strings.Contains(err.Error(), path) {
		return fmt.Errorf("%s: %w", path, err)
	}
	return err
}

// inputFiles are the local files a command reads, which no output may
// overwrite: the bundle (unless it is in a registry) and a mapping file.
func inputFiles(path string, more ...string) []string {
	var files []string
	if !isRegistryBundle(path) {
		files = append(files, path)
	}
	for _, m := range more {
		if m != "" {
			files = append(files, m)
		}
	}
	return files
}

// targetString is e's relocated reference, or a placeholder saying the
// digest is resolved when copying (many-to-one, no recorded digest).
func targetString(e fixup.PlanEntry, m *relocator.Mapping) string {
	if e.Target != nil {
		return e.Target.String()
	}
	return m.Repository() + "@<digest resolved when copying>"
}
