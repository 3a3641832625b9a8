package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/relocator"
)

// untagged is a source registry with the images of a bundle whose
// references have neither tag nor digest: docker pulls them as :latest.
type untagged struct {
	src    *registrytest.Registry
	images map[string]registrytest.Image     // reference as written -> image
	specs  map[string]registrytest.ImageSpec // reference as written -> what was pushed
	bundle map[string]any
}

// seedUntagged pushes three images under latest and a distractor under
// another tag of one repository, and writes a bundle naming them without
// a tag: the invocation image without a contentDigest, web with one, api
// without.
func seedUntagged(t *testing.T, src *registrytest.Registry) *untagged {
	t.Helper()
	ctx := context.Background()
	c := src.Client()
	u := &untagged{src: src, images: map[string]registrytest.Image{}, specs: map[string]registrytest.ImageSpec{}}
	specs := map[string]registrytest.ImageSpec{
		"vendor/installer": {Repo: "vendor/installer", Tag: "latest", Layers: []int{60 << 10}, Seed: 31},
		"library/web":      {Repo: "library/web", Tag: "latest", Layers: []int{40 << 10}, Seed: 32, OCI: true, Platforms: []string{"linux/amd64", "linux/arm64"}},
		"vendor/api":       {Repo: "vendor/api", Tag: "latest", Layers: []int{20 << 10}, Seed: 33},
	}
	for repo, s := range specs {
		img, err := c.PushImage(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		u.images[src.Host+"/"+repo] = img
		u.specs[src.Host+"/"+repo] = s
	}
	if _, err := c.PushImage(ctx, registrytest.ImageSpec{Repo: "library/web", Tag: "2.0", Layers: []int{10 << 10}, Seed: 34}); err != nil {
		t.Fatal(err)
	}
	h := src.Host
	u.bundle = map[string]any{
		"schemaVersion": "v1.0.0", "name": "untagged", "version": "1.0.0",
		"invocationImages": []any{map[string]any{"image": h + "/vendor/installer", "imageType": "docker"}},
		"images": map[string]any{
			"web": map[string]any{"image": h + "/library/web", "imageType": "oci", "contentDigest": u.images[h+"/library/web"].Root.Digest.String()},
			"api": map[string]any{"image": h + "/vendor/api"},
		},
	}
	return u
}

// checkLatest proves, straight to dst, that every mapped reference pulls
// its source digest as docker pulls it: an untagged one as :latest, which
// is the only tag of its repository.
func checkLatest(t *testing.T, u *untagged, dst *registrytest.Registry, m *relocator.Mapping, mapPath string) {
	t.Helper()
	var mapping map[string]string
	readJSON(t, mapPath, &mapping)
	if len(mapping) != len(u.images) {
		t.Errorf("mapping %v: want %d entries", mapping, len(u.images))
	}
	ctx := context.Background()
	for ref, img := range u.images {
		want, err := m.Map(mustParse(t, ref), img.Root.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if mapping[ref] != want.String() {
			t.Errorf("mapping[%s] = %q, want %q", ref, mapping[ref], want)
		}
		target := mustParse(t, mapping[ref])
		repo := reference.Path(target)
		if m.Kind() == relocator.ManyToOne {
			// By digest only (distribution lists no tags of such a repository: 404).
			_, err := dst.Client().HeadManifest(ctx, repo, "latest")
			if c, ok := target.(reference.Canonical); !ok || c.Digest() != img.Root.Digest || !errors.Is(err, registrytest.ErrNotFound) {
				t.Errorf("many-to-one: %s, HEAD :latest %v; want %s by digest only", target, err, img.Root.Digest)
			}
			if got, err := dst.Client().HeadManifest(ctx, repo, img.Root.Digest.String()); err != nil || got.Digest != img.Root.Digest {
				t.Errorf("many-to-one: %s@%s: %v", repo, img.Root.Digest, err)
			}
			continue
		}
		tags, err := dst.Client().Tags(ctx, repo)
		if err != nil {
			t.Errorf("tags of %s: %v; want [latest]", repo, err)
			continue
		}
		if !reference.IsNameOnly(target) {
			t.Errorf("mapping value %s: want duffle's name, without tag or digest", target)
		}
		if !slices.Equal(tags, []string{"latest"}) {
			t.Errorf("tags of %s = %v, want [latest]", repo, tags)
		}
		if got, err := dst.Client().HeadManifest(ctx, repo, "latest"); err != nil || got.Digest != img.Root.Digest {
			t.Errorf("HEAD %s:latest = %s, %v; want %s", repo, got.Digest, err, img.Root.Digest)
		}
	}
}

func mustParse(t *testing.T, ref string) reference.Named {
	t.Helper()
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A bundle whose references have no tag: thin with each mapping, thick
// (export, then fixup of the archive) and two hops through a source
// relocation mapping. Every target pulls as :latest, verify of the output
// bundle and of the bundle with its mapping exits 0, the report names the
// target as the mapping does, and a warm rerun costs one HEAD per image.
func TestUntaggedIsLatest(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.NewProxy(dst, registrytest.ProxyOptions{})
	defer proxy.Close()
	u := seedUntagged(t, src)
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, u.bundle)

	for i, kind := range []relocator.Kind{relocator.OneToOne, relocator.Prefix, relocator.ManyToOne} {
		t.Run("thin "+string(kind), func(t *testing.T) {
			out := filepath.Join(dir, string(kind))
			mapPath, outPath := out+"-mapping.json", out+"-bundle.json"
			repo := proxy.Host + "/thin" + string(rune('a'+i))
			args := []string{"fixup", bundlePath, "--repository-prefix", repo, "--mapping", string(kind)}
			if kind == relocator.ManyToOne {
				args = []string{"fixup", bundlePath, "--target", repo + "/app", "--mapping", string(kind)}
				repo += "/app"
			}
			args = append(args, "--relocation-mapping", mapPath, "--output-bundle", outPath)
			r := cli(t, nil, append(args, "--output", "json")...)
			if r.code != 0 {
				t.Fatalf("fixup exited %d", r.code)
			}
			m, err := relocator.New(kind, repo)
			if err != nil {
				t.Fatal(err)
			}
			checkLatest(t, u, dst, m, mapPath)
			validate(t, "relocation-mapping.schema.json", mapPath)

			// The report's target is the mapping value.
			var mapping map[string]string
			readJSON(t, mapPath, &mapping)
			var rep struct {
				Images []struct{ Source, Target string } `json:"images"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Images) != len(u.images) {
				t.Fatalf("report %s: %v", r.stdout, err)
			}
			for _, i := range rep.Images {
				if i.Target != mapping[i.Source] {
					t.Errorf("report: %s -> %s; the mapping says %s", i.Source, i.Target, mapping[i.Source])
				}
			}

			if r := cli(t, nil, "verify", outPath); r.code != 0 {
				t.Errorf("verify of the relocated bundle exited %d", r.code)
			}
			if r := cli(t, nil, "verify", bundlePath, "--relocation-mapping", mapPath); r.code != 0 {
				t.Errorf("verify with the mapping exited %d", r.code)
			}

			// Warm: one HEAD of each target, and nothing else but the ping.
			proxy.Reset()
			r = cli(t, nil, args...)
			if r.code != 0 {
				t.Fatalf("rerun exited %d", r.code)
			}
			for ref := range u.images {
				if line := "present  " + ref + " -> " + mapping[ref] + " ("; !strings.Contains(r.stderr, line) {
					t.Errorf("rerun output lacks %q", line)
				}
			}
			for k, n := range proxy.Counts() {
				if k == "HEAD manifest" && n == len(u.images) || k == "GET ping" {
					continue
				}
				t.Errorf("rerun sent the target %d %q requests; want %d HEAD manifest and the ping only", n, k, len(u.images))
			}
		})
	}

	t.Run("over an untagged earlier relocation", func(t *testing.T) {
		// What an earlier version left: every image by digest only, no tag.
		prefix := proxy.Host + "/old"
		m, _ := relocator.New(relocator.OneToOne, prefix)
		for ref, img := range u.images {
			target, err := m.Map(mustParse(t, ref), img.Root.Digest)
			if err != nil {
				t.Fatal(err)
			}
			spec := u.specs[ref]
			spec.Repo, spec.Tag = reference.Path(target), ""
			if again, err := dst.Client().PushImage(context.Background(), spec); err != nil || again.Root.Digest != img.Root.Digest {
				t.Fatalf("pushing %s by digest: %s, %v", spec.Repo, again.Root.Digest, err)
			}
		}
		mapPath := filepath.Join(dir, "old-mapping.json")
		proxy.Reset()
		if r := cli(t, nil, "fixup", bundlePath, "--repository-prefix", prefix, "--relocation-mapping", mapPath); r.code != 0 {
			t.Fatalf("fixup exited %d", r.code)
		}
		checkLatest(t, u, dst, m, mapPath)
		t.Logf("target requests: %v", proxy.Counts())
		// The tag is added; no blob travels again (each is there already).
		if c := proxy.Counts(); c["PUT blob"] != 0 || c["PATCH upload"] != 0 {
			t.Errorf("the rerun uploaded blobs: %v", c)
		}
	})

	t.Run("two hops", func(t *testing.T) {
		hop1, hop2 := filepath.Join(dir, "hop1.json"), filepath.Join(dir, "hop2.json")
		if r := cli(t, nil, "fixup", bundlePath, "--repository-prefix", dst.Host+"/dmz", "--relocation-mapping", hop1); r.code != 0 {
			t.Fatalf("first hop exited %d", r.code)
		}
		// The second hop reads each image at its untagged mapped name: :latest.
		if r := cli(t, nil, "fixup", bundlePath, "--source-relocation-mapping", hop1, "--repository-prefix", dst.Host+"/inside", "--relocation-mapping", hop2); r.code != 0 {
			t.Fatalf("second hop exited %d", r.code)
		}
		m, _ := relocator.New(relocator.OneToOne, dst.Host+"/inside")
		checkLatest(t, u, dst, m, hop2)
	})

	t.Run("thick", func(t *testing.T) {
		archive := filepath.Join(dir, "app.tgz")
		if r := cli(t, nil, "export", bundlePath, "--output", archive); r.code != 0 {
			t.Fatalf("export exited %d", r.code)
		}
		// The layout names each image by its reference as written.
		want := make([]string, 0, len(u.images))
		for ref := range u.images {
			want = append(want, ref)
		}
		slices.Sort(want)
		if got := layoutNames(t, archive); !slices.Equal(got, want) {
			t.Errorf("layout ref.names %v, want %v", got, want)
		}
		mapPath, outPath := filepath.Join(dir, "thick-mapping.json"), filepath.Join(dir, "thick-bundle.json")
		if r := cli(t, nil, "fixup", archive, "--repository-prefix", dst.Host+"/thick", "--relocation-mapping", mapPath, "--output-bundle", outPath); r.code != 0 {
			t.Fatalf("fixup of the archive exited %d", r.code)
		}
		m, _ := relocator.New(relocator.OneToOne, dst.Host+"/thick")
		checkLatest(t, u, dst, m, mapPath)
		if r := cli(t, nil, "verify", outPath); r.code != 0 {
			t.Errorf("verify of the relocated bundle exited %d", r.code)
		}
		if r := cli(t, nil, "verify", bundlePath, "--relocation-mapping", mapPath); r.code != 0 {
			t.Errorf("verify with the mapping exited %d", r.code)
		}
	})
}
