package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/cnabio/cnab-relocate/fixup"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "Commands:"},
		{[]string{"help"}, "Exit codes: 0 done, 1 relocation failed, 2 bad usage or bad input."},
		{[]string{"fixup", "--help"}, "--repository-prefix PREFIX"},
		{[]string{"fixup", "-h"}, "Examples:"},
		{[]string{"verify", "--help"}, "HEAD requests"},
		{[]string{"version"}, "cnab-relocate dev (commit "},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errs := runCLI(tc.args...)
			if code != 0 || !strings.Contains(out, tc.want) || errs != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 0 and stdout containing %q", code, out, errs, tc.want)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.json")
	os.WriteFile(bundle, []byte(`{"invocationImages":[{"image":"a/b:1"}]}`), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "Usage:"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"fixup", "--nope"}, "unknown flag: --nope"},
		{"no bundle", []string{"fixup", "--repository-prefix", "r.io/p"}, "want exactly one BUNDLE argument, got 0"},
		{"no prefix", []string{"fixup", bundle, "--dry-run"}, "--repository-prefix is required"},
		{"bad mapping", []string{"fixup", bundle, "--mapping", "flat", "--repository-prefix", "r.io/p"}, `mapping "flat": must be one of`},
		{"many-to-one without target", []string{"fixup", bundle, "--mapping", "many-to-one"}, "needs --target REPO"},
		{"bad prefix", []string{"fixup", bundle, "--repository-prefix", "Example.com/User", "--dry-run"}, `"Example.com/User": must be lower case`},
		{"no mapping file", []string{"fixup", bundle, "--repository-prefix", "r.io/p"}, "--relocation-mapping FILE is required"},
		{"bad output", []string{"fixup", bundle, "--repository-prefix", "r.io/p", "--dry-run", "-o", "yaml"}, `--output "yaml"`},
		{"missing bundle", []string{"fixup", filepath.Join(dir, "nope.json"), "--repository-prefix", "r.io/p", "--dry-run"}, "nope.json"},
		{"output in missing dir", []string{"fixup", bundle, "--repository-prefix", "r.io/p", "--relocation-mapping", filepath.Join(dir, "no", "m.json")}, "no/m.json"},
		{"output is input", []string{"fixup", bundle, "--repository-prefix", "r.io/p", "--relocation-mapping", bundle}, "is also the input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(tc.args...)
			if code != 2 || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and stderr containing %q (stdout %q)", code, errs, tc.want, out)
			}
		})
	}
}

// A dry run of duffle's own relocate test bundle: names as duffle gives them,
// the mapping file in CNAB 103 shape, and nothing contacted.
func TestDryRunGolden(t *testing.T) {
	t.Parallel()
	src := filepath.Join("..", "..", "testdata", "real-bundles", "duffle--cmd_duffle_testdata_relocate_bundle-with-unsupported-image-type.json")
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("testdata/real-bundles in the repository: %v", err)
	}
	dir := t.TempDir()
	mapping := filepath.Join(dir, "mapping.json")
	code, out, errs := runCLI("fixup", src, "--repository-prefix", "example.com/user", "--dry-run", "--relocation-mapping", mapping)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	out = strings.ReplaceAll(out, src, "BUNDLE")
	out = strings.ReplaceAll(out, mapping, "MAPPING")
	golden(t, "dry-run.txt", []byte(out))
	data, err := os.ReadFile(mapping)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "dry-run-mapping.json", data)
}

// The --output json report is a contract; its shape is fixed by a golden file.
func TestReportGolden(t *testing.T) {
	t.Parallel()
	d1 := digest.FromString("one")
	res := &fixup.Result{
		Images: []fixup.ImageResult{
			{Source: "vendor.example/app:1.0", Target: "registry.corp/team/app-0123:1.0", Digest: d1, MediaType: "application/vnd.oci.image.index.v1+json",
				BytesCopied: 1000, BytesMounted: 200, BytesSkipped: 30, Duration: 1500 * time.Millisecond,
				ReferrersSearched: true, Referrers: []fixup.ReferrerResult{{Subject: d1, Digest: digest.FromString("sig"), MediaType: "application/vnd.oci.image.manifest.v1+json",
					ArtifactType: "application/vnd.oci.image.config.v1+json", Tag: "sha256-" + d1.Encoded() + ".sig"}}},
			{Source: "vendor.example/db@" + d1.String(), Target: "registry.corp/team/db-4567@" + d1.String(), Digest: d1,
				MediaType: "application/vnd.docker.distribution.manifest.v2+json", Present: true, Duration: 250 * time.Millisecond},
		},
		Mapping: map[string]string{},
	}
	var buf bytes.Buffer
	writeReport(&buf, res, fixupFlags{mappingFile: "out/relocation-mapping.json", outputBundle: "out/bundle.json"}, 2*time.Second)
	golden(t, "report.json", buf.Bytes())

	failed := *res
	failed.Images = append([]fixup.ImageResult(nil), res.Images...)
	failed.Images[1].Err = errors.New("relocating vendor.example/db: target registry registry.corp: denied")
	failed.Mapping = nil
	buf.Reset()
	writeReport(&buf, &failed, fixupFlags{mappingFile: "out/relocation-mapping.json"}, 2*time.Second)
	golden(t, "report-failed.json", buf.Bytes())
	var v map[string]any
	if err := json.Unmarshal(buf.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if v["relocationMapping"] != "" {
		t.Errorf("a failed run reports relocationMapping %v; no file was written", v["relocationMapping"])
	}
}
