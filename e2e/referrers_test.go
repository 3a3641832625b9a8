package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// signed is an image with the artifacts a supply chain puts beside it, in
// the shapes found in the wild on registries without the referrers API:
// a cosign signature tag, an SBOM with a subject listed by the referrers
// tag schema index, and a cosign signature of the SBOM.
type signed struct {
	img      registrytest.Image
	sig      ocispec.Descriptor // cosign signature of the image, tag sha256-<hex>.sig
	sbom     ocispec.Descriptor // SBOM artifact with subject = the image
	index    ocispec.Descriptor // referrers tag schema index, tag sha256-<hex>
	sbomSig  ocispec.Descriptor // cosign signature of the SBOM
	tagNames []string           // every tag the artifacts are under
}

const sbomType = "application/spdx+json"

func pushSigned(t *testing.T, src *registrytest.Registry, repo string) signed {
	t.Helper()
	ctx := context.Background()
	c := src.Client()
	img, err := c.PushImage(ctx, registrytest.ImageSpec{Repo: repo, Tag: "1.0", Layers: []int{4096}, Seed: 11, OCI: true, Platforms: []string{"linux/amd64", "linux/arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	s := signed{img: img}
	push := func(ref string, v any) ocispec.Descriptor {
		body, _ := json.Marshal(v)
		mt := ocispec.MediaTypeImageManifest
		if _, ok := v.(ocispec.Index); ok {
			mt = ocispec.MediaTypeImageIndex
		}
		d, err := c.PushManifest(ctx, repo, ref, mt, body)
		if err != nil {
			t.Fatalf("pushing %s: %v", ref, err)
		}
		return d
	}
	blob := func(data []byte, mt string) ocispec.Descriptor {
		d, err := c.PushBlob(ctx, repo, data)
		if err != nil {
			t.Fatal(err)
		}
		d.MediaType = mt
		return d
	}
	cosign := func(subject digest.Digest, payload string) ocispec.Descriptor {
		tag := "sha256-" + subject.Encoded() + ".sig"
		s.tagNames = append(s.tagNames, tag)
		m := ocispec.Manifest{
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    blob([]byte(`{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]}}`), ocispec.MediaTypeImageConfig),
			Layers:    []ocispec.Descriptor{blob([]byte(payload), "application/vnd.dev.cosign.simplesigning.v1+json")},
		}
		m.SchemaVersion = 2
		return push(tag, m)
	}
	s.sig = cosign(img.Root.Digest, `{"critical":{"image":{"docker-manifest-digest":"`+img.Root.Digest.String()+`"}}}`)
	empty := blob([]byte("{}"), "application/vnd.oci.empty.v1+json")
	sbom := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: sbomType,
		Config:       empty,
		Layers:       []ocispec.Descriptor{blob([]byte(`{"spdxVersion":"SPDX-2.3","name":"app"}`), sbomType)},
		Subject:      &img.Root,
	}
	sbom.SchemaVersion = 2
	body, _ := json.Marshal(sbom)
	s.sbom = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(body), Size: int64(len(body)), ArtifactType: sbomType}
	push(s.sbom.Digest.String(), sbom)
	idxTag := "sha256-" + img.Root.Digest.Encoded()
	s.tagNames = append(s.tagNames, idxTag)
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{s.sbom}}
	idx.SchemaVersion = 2
	s.index = push(idxTag, idx)
	s.sbomSig = cosign(s.sbom.Digest, `{"critical":{"image":{"docker-manifest-digest":"`+s.sbom.Digest.String()+`"}}}`)
	// A tag that is nobody's referrer: it must stay behind.
	if _, err := c.PushImage(ctx, registrytest.ImageSpec{Repo: repo, Tag: "unrelated", Layers: []int{100}, Seed: 12}); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkReferrers asserts what of s is in repo of dst: want says whether
// the signatures and the SBOM are expected there.
func checkReferrers(t *testing.T, dst *registrytest.Registry, repo string, s signed, wantSigs, wantSBOM bool) {
	t.Helper()
	ctx := context.Background()
	dc := dst.Client()
	tags, err := dc.Tags(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(tags, "unrelated") {
		t.Errorf("%s: an unrelated source tag travelled: %v", repo, tags)
	}
	has := func(ref string, d ocispec.Descriptor) bool {
		got, err := dc.HeadManifest(ctx, repo, ref)
		if err != nil {
			return false
		}
		if got.Digest != d.Digest {
			t.Errorf("%s@%s: digest %s, want %s", repo, ref, got.Digest, d.Digest)
		}
		return true
	}
	for _, c := range []struct {
		name string
		ref  string
		d    ocispec.Descriptor
		want bool
	}{
		{"image signature tag", "sha256-" + s.img.Root.Digest.Encoded() + ".sig", s.sig, wantSigs},
		{"SBOM signature tag", "sha256-" + s.sbom.Digest.Encoded() + ".sig", s.sbomSig, wantSigs && wantSBOM},
		{"referrers index tag", "sha256-" + s.img.Root.Digest.Encoded(), s.index, wantSBOM},
		{"SBOM", s.sbom.Digest.String(), s.sbom, wantSBOM},
	} {
		if got := has(c.ref, c.d); got != c.want {
			t.Errorf("%s: %s in target = %v, want %v (tags %v)", repo, c.name, got, c.want, tags)
		}
	}
}

func targetRepo(t *testing.T, mapPath, src string) string {
	t.Helper()
	var m map[string]string
	readJSON(t, mapPath, &m)
	named, err := reference.ParseNormalizedNamed(m[src])
	if err != nil {
		t.Fatalf("mapping of %s: %v (%v)", src, err, m)
	}
	return reference.Path(named)
}

func TestReferrersTravel(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	s := pushSigned(t, src, "vendor/signed")
	ref := src.Host + "/vendor/signed:1.0"
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, map[string]any{"name": "signed", "version": "1.0.0", "schemaVersion": "v1.0.0",
		"invocationImages": []any{map[string]any{"image": ref, "imageType": "oci"}}})

	t.Run("thin", func(t *testing.T) {
		mapPath := filepath.Join(dir, "thin.json")
		r := cli(t, nil, "fixup", bundlePath, "--repository-prefix", dst.Host+"/thin", "--relocation-mapping", mapPath, "--output", "json")
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		checkReferrers(t, dst, targetRepo(t, mapPath, ref), s, true, true)
		var rep struct {
			Images []struct {
				Referrers []struct {
					Digest digest.Digest `json:"digest"`
					Tag    string        `json:"tag"`
				} `json:"referrers"`
			} `json:"images"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Images) != 1 {
			t.Fatalf("report: %v\n%s", err, r.stdout)
		}
		// Each tagged referrer, and the SBOM the tag schema index lists as
		// an entry of its own, without a tag.
		var got []string
		sbomListed := false
		for _, x := range rep.Images[0].Referrers {
			if x.Tag != "" {
				got = append(got, x.Tag)
			} else if x.Digest == s.sbom.Digest {
				sbomListed = true
			}
		}
		slices.Sort(got)
		want := slices.Clone(s.tagNames)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("report lists tagged referrers %v, want %v", got, want)
		}
		if !sbomListed {
			t.Errorf("report does not list the SBOM %s found through the index:\n%s", s.sbom.Digest, r.stdout)
		}
		// The relocation mapping stays as CNAB defines it: images only.
		var m map[string]string
		readJSON(t, mapPath, &m)
		if len(m) != 1 {
			t.Errorf("relocation mapping = %v, want the one image", m)
		}
	})
	t.Run("no-referrers", func(t *testing.T) {
		mapPath := filepath.Join(dir, "none.json")
		if r := cli(t, nil, "fixup", bundlePath, "--repository-prefix", dst.Host+"/none", "--relocation-mapping", mapPath, "--no-referrers"); r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		checkReferrers(t, dst, targetRepo(t, mapPath, ref), s, false, false)
	})
	t.Run("only-sbom", func(t *testing.T) {
		mapPath := filepath.Join(dir, "sbom.json")
		if r := cli(t, nil, "fixup", bundlePath, "--repository-prefix", dst.Host+"/sbom", "--relocation-mapping", mapPath, "--referrers-only-type", sbomType); r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		checkReferrers(t, dst, targetRepo(t, mapPath, ref), s, false, true)
	})
	t.Run("thick", func(t *testing.T) {
		archive := filepath.Join(dir, "signed.tgz")
		if r := cli(t, nil, "export", bundlePath, "--output", archive); r.code != 0 {
			t.Fatalf("export exit %d", r.code)
		}
		src.Close() // the archive alone must carry the referrers
		mapPath := filepath.Join(dir, "thick.json")
		r := cli(t, nil, "fixup", archive, "--repository-prefix", dst.Host+"/thick", "--relocation-mapping", mapPath)
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		checkReferrers(t, dst, targetRepo(t, mapPath, ref), s, true, true)
		if strings.Contains(r.stderr, src.Host) && strings.Contains(r.stderr, "connection refused") {
			t.Errorf("fixup of the archive contacted the source registry: %s", r.stderr)
		}
	})
}
