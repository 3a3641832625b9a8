package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/resolver"
)

// sbomFindable reports whether the SBOM of s can be found in repo of reg,
// through the OCI referrers API or through the referrers tag schema index.
func sbomFindable(t *testing.T, reg *registrytest.Registry, repo string, s signed) bool {
	t.Helper()
	r, err := resolver.New(resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	refs, api, err := r.Referrers(ctx, reg.Host+"/"+repo, s.img.Root.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if api && slices.ContainsFunc(refs, func(d ocispec.Descriptor) bool { return d.Digest == s.sbom.Digest }) {
		return true
	}
	data, _, err := reg.Client().GetManifest(ctx, repo, "sha256-"+s.img.Root.Digest.Encoded())
	if err != nil {
		return false
	}
	var idx ocispec.Index
	if json.Unmarshal(data, &idx) != nil {
		return false
	}
	return slices.ContainsFunc(idx.Manifests, func(d ocispec.Descriptor) bool { return d.Digest == s.sbom.Digest })
}

// TestImplementations relocates between every pair of registry
// implementations — Debian's distribution 2.8, distribution 3, and
// go-containerregistry's registry with the OCI referrers API — thin and
// from a thick archive: digests are preserved, and the signatures and the
// SBOM travel, the SBOM findable in the target through its referrers API
// or through the tag schema.
func TestImplementations(t *testing.T) {
	type source struct {
		reg     *registrytest.Registry
		f       *fixture
		s       signed
		bundle  string
		archive string
	}
	dir := t.TempDir()
	sources := map[registrytest.Impl]*source{}
	targets := map[registrytest.Impl]*registrytest.Registry{}
	for _, impl := range registrytest.Impls {
		reg := registrytest.Start(t, registrytest.Options{Impl: impl})
		targets[impl] = registrytest.Start(t, registrytest.Options{Impl: impl})
		src := &source{reg: reg, f: seed(t, reg), s: pushSigned(t, reg, "vendor/signed")}
		src.f.bundle["images"].(map[string]any)["signed"] = map[string]any{"image": reg.Host + "/vendor/signed:1.0", "imageType": "oci"}
		src.f.images["signed"], src.f.refs["signed"] = src.s.img, reg.Host+"/vendor/signed:1.0"
		src.bundle = filepath.Join(dir, impl.String()+"-bundle.json")
		writeJSON(t, src.bundle, src.f.bundle)
		src.archive = filepath.Join(dir, impl.String()+".tgz")
		if r := cli(t, nil, "export", src.bundle, "--output", src.archive); r.code != 0 {
			t.Fatalf("export from %s exited %d", impl, r.code)
		}
		sources[impl] = src
	}
	for _, si := range registrytest.Impls {
		for _, ti := range registrytest.Impls {
			src, dst := sources[si], targets[ti]
			for _, kind := range []string{"thin", "thick"} {
				t.Run(fmt.Sprintf("%s/%s to %s", kind, si, ti), func(t *testing.T) {
					input := src.bundle
					if kind == "thick" {
						input = src.archive
					}
					mapPath := filepath.Join(t.TempDir(), "m.json")
					prefix := fmt.Sprintf("%s/%s-%s", dst.Host, kind, si)
					if r := cli(t, nil, "fixup", input, "--repository-prefix", prefix, "--relocation-mapping", mapPath); r.code != 0 {
						t.Fatalf("exited %d", r.code)
					}
					checkRelocated(t, src.f, dst, mapPath, src.f.refs, append(slices.Clone(imageKeys), "signed")...)
					var m map[string]string
					readJSON(t, mapPath, &m)
					named, _ := reference.ParseNormalizedNamed(m[src.reg.Host+"/vendor/signed:1.0"])
					repo := reference.Path(named)
					if got, err := dst.Client().HeadManifest(context.Background(), repo, "sha256-"+src.s.img.Root.Digest.Encoded()+".sig"); err != nil || got.Digest != src.s.sig.Digest {
						t.Errorf("the image signature is not in %s: %v", repo, err)
					}
					if !sbomFindable(t, dst, repo, src.s) {
						t.Errorf("the SBOM cannot be found in %s, through the referrers API or the tag schema", repo)
					}
				})
			}
		}
	}
}
