package e2e

import (
	"context"
	"encoding/json"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/resolver"
)

// orasBinary is the oras CLI that scripts/install-deps.sh installs:
// $ORAS_BIN, else GOPATH's bin.
func orasBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("ORAS_BIN")
	if bin == "" {
		bin = filepath.Join(build.Default.GOPATH, "bin", "oras")
	}
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("no oras CLI at %s (scripts/install-deps.sh installs it; ORAS_BIN names another): %v", bin, err)
	}
	return bin
}

// orasDiscover runs `oras discover` of subject in repo of reg, through the
// distribution spec option spec (v1.1-referrers-api or
// v1.1-referrers-tag), and returns the digests of subject's direct
// referrers as oras finds them.
func orasDiscover(t *testing.T, reg *registrytest.Registry, repo string, subject digest.Digest, spec string) []digest.Digest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, orasBinary(t), "discover", "--plain-http", "--distribution-spec", spec, "--format", "json", "--depth", "1",
		reg.Host+"/"+repo+"@"+subject.String())
	cmd.Env = append(os.Environ(), "HOME="+home, "DOCKER_CONFIG="+home)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("oras discover %s/%s@%s (%s): %v\n%s", reg.Host, repo, subject, spec, err, stderr)
	}
	var tree struct {
		Referrers []struct {
			Digest digest.Digest `json:"digest"`
		} `json:"referrers"`
	}
	if err := json.Unmarshal(out, &tree); err != nil {
		t.Fatalf("oras discover output: %v\n%s", err, out)
	}
	var ds []digest.Digest
	for _, r := range tree.Referrers {
		ds = append(ds, r.Digest)
	}
	t.Logf("oras discover (%s) of %s: %v", spec, subject, ds)
	return ds
}

// tagSchemaIndexTag matches a referrers tag schema index tag: sha256-<hex>
// and nothing after it (cosign's .sig, .att and .sbom are other tags).
var tagSchemaIndexTag = regexp.MustCompile(`^sha256-[0-9a-f]{64}$`)

// TestReferrersTargetKinds relocates an image with a cosign signature and
// an SBOM listed by the referrers tag schema, thin and thick, from
// distribution 2.8 (no referrers API) into go-containerregistry's registry
// (the API): the target's API and `oras discover` list the SBOM, no
// sha256-<hex> index tag is written there, and cosign's tags travel. The
// other way, from the API into 2.8, the target gets the tag schema index
// listing the SBOM, as oras finds it there.
func TestReferrersTargetKinds(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name     string
		src, dst registrytest.Impl
		api      bool // the target has the referrers API
	}{
		{"2.8 to ggcr", registrytest.Distribution28, registrytest.GGCR, true},
		{"ggcr to 2.8", registrytest.GGCR, registrytest.Distribution28, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := registrytest.Start(t, registrytest.Options{Impl: c.src})
			dst := registrytest.Start(t, registrytest.Options{Impl: c.dst})
			s := pushSigned(t, src, "vendor/signed")
			ref := src.Host + "/vendor/signed:1.0"
			dir := t.TempDir()
			bundlePath := filepath.Join(dir, "bundle.json")
			writeJSON(t, bundlePath, map[string]any{"name": "signed", "version": "1.0.0", "schemaVersion": "v1.0.0",
				"invocationImages": []any{map[string]any{"image": ref, "imageType": "oci"}}})
			archive := filepath.Join(dir, "signed.tgz")
			if r := cli(t, nil, "export", bundlePath, "--output", archive); r.code != 0 {
				t.Fatalf("export exited %d", r.code)
			}
			for _, kind := range []string{"thin", "thick"} {
				t.Run(kind, func(t *testing.T) {
					input := bundlePath
					if kind == "thick" {
						input = archive
					}
					mapPath := filepath.Join(t.TempDir(), "m.json")
					if r := cli(t, nil, "fixup", input, "--repository-prefix", dst.Host+"/"+kind, "--relocation-mapping", mapPath); r.code != 0 {
						t.Fatalf("fixup exited %d", r.code)
					}
					repo := targetRepo(t, mapPath, ref)
					tags, err := dst.Client().Tags(ctx, repo)
					if err != nil {
						t.Fatal(err)
					}
					for _, tag := range []string{"1.0", "sha256-" + s.img.Root.Digest.Encoded() + ".sig", "sha256-" + s.sbom.Digest.Encoded() + ".sig"} {
						if !slices.Contains(tags, tag) {
							t.Errorf("target %s lacks tag %s (tags %v)", repo, tag, tags)
						}
					}
					indexTags := slices.DeleteFunc(slices.Clone(tags), func(tag string) bool { return !tagSchemaIndexTag.MatchString(tag) })
					if c.api {
						if len(indexTags) > 0 {
							t.Errorf("target %s has the referrers API and holds tag schema index tags %v", repo, indexTags)
						}
						r, err := resolver.New(resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"})
						if err != nil {
							t.Fatal(err)
						}
						refs, supported, err := r.Referrers(ctx, dst.Host+"/"+repo, s.img.Root.Digest)
						if err != nil || !supported || !slices.ContainsFunc(refs, func(d ocispec.Descriptor) bool { return d.Digest == s.sbom.Digest }) {
							t.Errorf("the target's referrers API lists %v (API %v, %v), want the SBOM %s", refs, supported, err, s.sbom.Digest)
						}
						if got := orasDiscover(t, dst, repo, s.img.Root.Digest, "v1.1-referrers-api"); !slices.Contains(got, s.sbom.Digest) {
							t.Errorf("oras discover through the referrers API finds %v, want the SBOM %s", got, s.sbom.Digest)
						}
						return
					}
					if want := "sha256-" + s.img.Root.Digest.Encoded(); !slices.Equal(indexTags, []string{want}) {
						t.Errorf("target %s without the referrers API: index tags %v, want [%s]", repo, indexTags, want)
					}
					if !sbomFindable(t, dst, repo, s) {
						t.Errorf("the tag schema index of %s does not list the SBOM", repo)
					}
					if got := orasDiscover(t, dst, repo, s.img.Root.Digest, "v1.1-referrers-tag"); !slices.Contains(got, s.sbom.Digest) {
						t.Errorf("oras discover through the tag schema finds %v, want the SBOM %s", got, s.sbom.Digest)
					}
				})
			}
		})
	}
}

// TestRefreshReferrersFlag: the vendor attests an image after it was
// relocated (a cosign attestation tag on distribution 2.8). A rerun finds
// the image in place and leaves the attestation behind; a rerun with
// --refresh-referrers copies it, and the report lists it.
func TestRefreshReferrersFlag(t *testing.T) {
	ctx := context.Background()
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	s := pushSigned(t, src, "vendor/signed")
	ref := src.Host + "/vendor/signed:1.0"
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, map[string]any{"name": "signed", "version": "1.0.0", "schemaVersion": "v1.0.0",
		"invocationImages": []any{map[string]any{"image": ref, "imageType": "oci", "contentDigest": s.img.Root.Digest.String()}}})
	mapPath := filepath.Join(dir, "m.json")
	fixup := func(extra ...string) result {
		t.Helper()
		r := cli(t, nil, append([]string{"fixup", bundlePath, "--repository-prefix", dst.Host + "/team", "--relocation-mapping", mapPath, "--output", "json"}, extra...)...)
		if r.code != 0 {
			t.Fatalf("fixup %v exited %d", extra, r.code)
		}
		return r
	}
	fixup()
	repo := targetRepo(t, mapPath, ref)

	attTag := "sha256-" + s.img.Root.Digest.Encoded() + ".att"
	att, err := src.Client().PushArtifact(ctx, "vendor/signed", registrytest.ArtifactSpec{ConfigType: ocispec.MediaTypeImageConfig, LayerType: "application/vnd.dsse.envelope.v1+json", Tag: attTag, Payload: []byte(`{"payloadType":"application/vnd.in-toto+json"}`)})
	if err != nil {
		t.Fatal(err)
	}
	type report struct {
		Images []struct {
			Present   bool `json:"present"`
			Referrers []struct {
				Digest digest.Digest `json:"digest"`
				Tag    string        `json:"tag"`
			} `json:"referrers"`
		} `json:"images"`
	}
	read := func(r result) report {
		t.Helper()
		var rep report
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Images) != 1 {
			t.Fatalf("report: %v\n%s", err, r.stdout)
		}
		return rep
	}
	if rep := read(fixup()); !rep.Images[0].Present || len(rep.Images[0].Referrers) != 0 {
		t.Errorf("rerun: %+v, want present with nothing copied", rep.Images[0])
	}
	if _, err := dst.Client().HeadManifest(ctx, repo, attTag); err == nil {
		t.Fatalf("rerun without --refresh-referrers copied the new attestation")
	}
	rep := read(fixup("--refresh-referrers"))
	if got := rep.Images[0].Referrers; !rep.Images[0].Present || len(got) != 1 || got[0].Digest != att.Digest || got[0].Tag != attTag {
		t.Errorf("refresh: %+v, want present with the attestation %s (%s) copied", rep.Images[0], att.Digest, attTag)
	}
	if got, err := dst.Client().HeadManifest(ctx, repo, attTag); err != nil || got.Digest != att.Digest {
		t.Errorf("refresh: the target's %s = %v, %v; want %s", attTag, got.Digest, err, att.Digest)
	}
}
