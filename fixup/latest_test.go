package fixup

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/relocator"
)

// A bundle image written with neither tag nor digest is :latest, as docker
// pulls it: the source is resolved as :latest and the target gets the tag
// latest, so the mapping value (duffle's name, without a tag) and the
// rewritten bundle pull the source digest, and verify finds them.
// Many-to-one keeps its by-digest form.
func TestRelocateUntaggedIsLatest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := registrytest.StartMemory(false)
	defer src.Close()
	inv, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/installer", Tag: "latest", Layers: []int{300}, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	web, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "library/web", Tag: "latest", Layers: []int{200, 100}, Seed: 2, OCI: true})
	if err != nil {
		t.Fatal(err)
	}
	// Another tag of the same repository: the untagged reference must not
	// end up there.
	if _, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "library/web", Tag: "2.0", Layers: []int{50}, Seed: 3, OCI: true}); err != nil {
		t.Fatal(err)
	}
	invRef, webRef := src.Host+"/vendor/installer", src.Host+"/library/web"
	roots := map[string]registrytest.Image{invRef: inv, webRef: web}

	for _, kind := range []relocator.Kind{relocator.OneToOne, relocator.Prefix, relocator.ManyToOne} {
		for _, recorded := range []bool{false, true} {
			name := string(kind) + "/no contentDigest"
			if recorded {
				name = string(kind) + "/contentDigest"
			}
			t.Run(name, func(t *testing.T) {
				dst := registrytest.StartMemory(false)
				defer dst.Close()
				webEntry := map[string]any{"image": webRef, "imageType": "oci"}
				invEntry := map[string]any{"image": invRef, "imageType": "docker"}
				if recorded {
					webEntry["contentDigest"] = web.Root.Digest.String()
					invEntry["contentDigest"] = inv.Root.Digest.String()
				}
				doc, _ := json.Marshal(map[string]any{"name": "app", "version": "1.0.0",
					"invocationImages": []any{invEntry}, "images": map[string]any{"web": webEntry}})
				b, err := Parse(doc)
				if err != nil {
					t.Fatal(err)
				}
				repo := dst.Host + "/team"
				if kind == relocator.ManyToOne {
					repo += "/app"
				}
				m, err := relocator.New(kind, repo)
				if err != nil {
					t.Fatal(err)
				}
				var events []Event
				c := newTestClient(t, ClientOptions{OnEvent: func(e Event) { events = append(events, e) }})
				res, err := c.Relocate(ctx, b, RelocateCall{Mapping: m})
				if err != nil {
					t.Fatal(err)
				}

				for ref, img := range roots {
					want, err := m.Map(mustNamed(ref), img.Root.Digest)
					if err != nil {
						t.Fatal(err)
					}
					if got := res.Mapping[ref]; got != want.String() {
						t.Errorf("mapping[%s] = %q, want %q", ref, got, want)
					}
					// The report names the target as the mapping does.
					i := slices.IndexFunc(res.Images, func(r ImageResult) bool { return r.Source == ref })
					if i < 0 || res.Images[i].Target != res.Mapping[ref] {
						t.Errorf("result of %s: %+v, want target %q", ref, res.Images, res.Mapping[ref])
					}
					target := mustNamed(res.Mapping[ref])
					path := reference.Path(target)
					tags, err := dst.Client().Tags(ctx, path)
					if err != nil {
						t.Fatal(err)
					}
					if kind == relocator.ManyToOne {
						if _, ok := target.(reference.Canonical); !ok || len(tags) != 0 {
							t.Errorf("many-to-one: %s with tags %v; want it by digest only", target, tags)
						}
						continue
					}
					if !reference.IsNameOnly(target) {
						t.Errorf("mapping value %s has a tag or digest; want duffle's name alone", target)
					}
					if !slices.Equal(tags, []string{"latest"}) {
						t.Errorf("tags of %s = %v, want [latest]", path, tags)
					}
					// As docker pulls the mapping value: :latest.
					got, err := c.Digest(ctx, res.Mapping[ref])
					if err != nil || got != img.Root.Digest {
						t.Errorf("%s pulls %s, %v; want the source's %s", res.Mapping[ref], got, err, img.Root.Digest)
					}
				}

				// verify: the original bundle with its mapping, and the
				// rewritten bundle on its own.
				if _, err := c.Verify(ctx, b, res.Mapping); err != nil {
					t.Errorf("verify with the mapping: %v", err)
				}
				out, err := b.Rewrite(res.Mapping, res.Digests)
				if err != nil {
					t.Fatal(err)
				}
				rb, err := Parse(out)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.Verify(ctx, rb, nil); err != nil {
					t.Errorf("verify of the rewritten bundle: %v", err)
				}

				// A rerun finds every image in place.
				events = nil
				if _, err := c.Relocate(ctx, b, RelocateCall{Mapping: m}); err != nil {
					t.Fatal(err)
				}
				present := 0
				for _, e := range events {
					switch e.Kind {
					case ImagePresent:
						present++
					case BlobCopied, ManifestPushed:
						t.Errorf("rerun: %s %s; want nothing copied", e.Kind, e.Image)
					}
				}
				if present != len(roots) {
					t.Errorf("rerun: %d images present, want %d", present, len(roots))
				}
			})
		}
	}
}

// An untagged reference whose :latest has moved away from the digest the
// bundle records fails, as a moved tag does, before anything is uploaded.
func TestRelocateUntaggedLatestMoved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, dst := registrytest.StartMemory(false), registrytest.StartMemory(false)
	defer src.Close()
	defer dst.Close()
	old, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "library/web", Tag: "1.0", Layers: []int{100}, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	now, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "library/web", Tag: "latest", Layers: []int{100}, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := json.Marshal(map[string]any{"name": "app", "version": "1.0.0", "invocationImages": []any{
		map[string]any{"image": src.Host + "/library/web", "contentDigest": old.Root.Digest.String()}}})
	b, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	m, err := relocator.New(relocator.OneToOne, dst.Host+"/team")
	if err != nil {
		t.Fatal(err)
	}
	_, err = newTestClient(t, ClientOptions{}).Relocate(ctx, b, RelocateCall{Mapping: m})
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), now.Root.Digest.String()) {
		t.Fatalf("err = %v, want a digest mismatch naming what :latest holds (%s)", err, now.Root.Digest)
	}
}

// A target relocated before untagged meant :latest holds the image by
// digest only: a rerun adds the tag latest. (go-containerregistry's
// registry declines a blob mount from the repository itself, so blobs may
// be sent again here; e2e's TestUntaggedIsLatest checks, against
// distribution, that none is.)
func TestRelocateUntaggedTagsAnOldRelocation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, dst := registrytest.StartMemory(false), registrytest.StartMemory(false)
	defer src.Close()
	defer dst.Close()
	img, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "library/web", Tag: "latest", Layers: []int{300, 200}, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	ref := src.Host + "/library/web"
	m, err := relocator.New(relocator.OneToOne, dst.Host+"/team")
	if err != nil {
		t.Fatal(err)
	}
	target, err := m.Map(mustNamed(ref), img.Root.Digest)
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, ClientOptions{})
	// What an earlier version left: the image by digest, no tag.
	if _, err := c.Copy(ctx, ref, target.String()); err != nil {
		t.Fatal(err)
	}
	if tags, _ := dst.Client().Tags(ctx, reference.Path(target)); len(tags) != 0 {
		t.Fatalf("tags %v after Copy, want none", tags)
	}
	doc, _ := json.Marshal(map[string]any{"name": "app", "version": "1.0.0", "invocationImages": []any{map[string]any{"image": ref}}})
	b, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Relocate(ctx, b, RelocateCall{Mapping: m}); err != nil {
		t.Fatal(err)
	}
	if tags, err := dst.Client().Tags(ctx, reference.Path(target)); err != nil || !slices.Equal(tags, []string{"latest"}) {
		t.Errorf("tags %v, %v; want [latest]", tags, err)
	}
}
