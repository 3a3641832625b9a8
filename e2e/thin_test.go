package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/relocator"
)

// fixture is a source registry seeded with the images of a bundle.
type fixture struct {
	src    *registrytest.Registry
	images map[string]registrytest.Image // bundle key -> pushed image
	refs   map[string]string             // bundle key -> reference as written
	bundle map[string]any
}

// seed pushes the images the thin-bundle tests relocate: several layers,
// one layer shared by all, an OCI index and a Docker manifest list with two
// platforms each, Docker and OCI media types, and tag-only, digest-only and
// tag+digest references.
func seed(t *testing.T, src *registrytest.Registry) *fixture {
	t.Helper()
	ctx := context.Background()
	c := src.Client()
	shared := registrytest.RandomBytes(99, 300<<10)
	specs := map[string]registrytest.ImageSpec{
		"inv":   {Repo: "vendor/installer", Tag: "1.0", Layers: []int{200 << 10, 50 << 10}, SharedLayers: [][]byte{shared}, Seed: 1},
		"index": {Repo: "vendor/web", Tag: "2.0", Layers: []int{100 << 10}, SharedLayers: [][]byte{shared}, Seed: 2, OCI: true, Platforms: []string{"linux/amd64", "linux/arm64"}},
		"list":  {Repo: "vendor/api", Layers: []int{80 << 10}, SharedLayers: [][]byte{shared}, Seed: 3, Platforms: []string{"linux/amd64", "linux/arm/v7"}},
		"oci":   {Repo: "vendor/tools/cli", Tag: "3.0", Layers: []int{10 << 10, 20 << 10, 30 << 10}, Seed: 4, OCI: true},
	}
	f := &fixture{src: src, images: map[string]registrytest.Image{}, refs: map[string]string{}}
	for k, s := range specs {
		img, err := c.PushImage(ctx, s)
		if err != nil {
			t.Fatalf("seeding %s: %v", k, err)
		}
		f.images[k] = img
	}
	h := src.Host
	f.refs["inv"] = h + "/vendor/installer:1.0"                                         // tag only, no contentDigest
	f.refs["index"] = h + "/vendor/web:2.0"                                             // tag + contentDigest
	f.refs["list"] = h + "/vendor/api@" + f.images["list"].Root.Digest.String()         // digest only
	f.refs["oci"] = h + "/vendor/tools/cli:3.0@" + f.images["oci"].Root.Digest.String() // tag + digest
	f.bundle = map[string]any{
		"schemaVersion": "v1.0.0",
		"name":          "e2e-app",
		"version":       "1.0.0",
		"invocationImages": []any{
			map[string]any{"image": f.refs["inv"], "imageType": "docker", "labels": map[string]any{"role": "installer"}},
		},
		"images": map[string]any{
			"web":       map[string]any{"image": f.refs["index"], "imageType": "oci", "contentDigest": f.images["index"].Root.Digest.String(), "description": "multi-arch web"},
			"api":       map[string]any{"image": f.refs["list"], "description": "no imageType means oci"},
			"cli":       map[string]any{"image": f.refs["oci"], "imageType": "docker", "x-extra": true},
			"api-again": map[string]any{"image": f.refs["list"], "imageType": "oci"},
			"vm":        map[string]any{"image": "example.com/images/vm-disk:1", "imageType": "vm"},
		},
		"parameters":  map[string]any{"port": map[string]any{"definition": "port", "destination": map[string]any{"env": "PORT"}}},
		"definitions": map[string]any{"port": map[string]any{"type": "integer", "default": 8080}},
		"credentials": map[string]any{"token": map[string]any{"env": "TOKEN"}},
		"custom":      map[string]any{"io.example.ext": map[string]any{"a": "b", "keep": []any{1, "two", nil}}},
	}
	return f
}

func TestThinBundle(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, f.bundle)
	mapPath := filepath.Join(dir, "relocation-mapping.json")
	outPath := filepath.Join(dir, "relocated-bundle.json")
	prefix := dst.Host + "/team"

	r := cli(t, nil, "fixup", bundlePath, "--repository-prefix", prefix, "--relocation-mapping", mapPath, "--output-bundle", outPath)
	if r.code != 0 {
		t.Fatalf("fixup exited %d: %s", r.code, r.stderr)
	}

	// The mapping: one key per distinct relocatable reference, as written.
	m, err := relocator.New(relocator.OneToOne, prefix)
	if err != nil {
		t.Fatal(err)
	}
	var mapping map[string]string
	readJSON(t, mapPath, &mapping)
	want := map[string]string{}
	for _, k := range []string{"inv", "index", "list", "oci"} {
		named, err := reference.ParseNormalizedNamed(f.refs[k])
		if err != nil {
			t.Fatal(err)
		}
		target, err := m.Map(named, f.images[k].Root.Digest)
		if err != nil {
			t.Fatal(err)
		}
		want[f.refs[k]] = target.String()
	}
	if !reflect.DeepEqual(mapping, want) {
		t.Errorf("relocation mapping = %v\nwant %v", mapping, want)
	}
	validate(t, "relocation-mapping.schema.json", mapPath)
	validate(t, "bundle.schema.json", outPath)

	// Every manifest and blob is in the target, same digests, read back
	// with an independent client.
	dc := dst.Client()
	ctx := context.Background()
	for _, k := range []string{"inv", "index", "list", "oci"} {
		img := f.images[k]
		target, _ := reference.ParseNormalizedNamed(want[f.refs[k]])
		repo := reference.Path(target)
		if reference.Domain(target) != dst.Host {
			t.Fatalf("%s relocated to %s, not to the target registry", f.refs[k], target)
		}
		got, err := dc.HeadManifest(ctx, repo, img.Root.Digest.String())
		if err != nil || got.Digest != img.Root.Digest || got.MediaType != img.Root.MediaType {
			t.Errorf("%s: root in target = %+v, %v; want %s %s", k, got, err, img.Root.Digest, img.Root.MediaType)
		}
		if tagged, ok := target.(reference.Tagged); ok {
			got, err := dc.HeadManifest(ctx, repo, tagged.Tag())
			if err != nil || got.Digest != img.Root.Digest {
				t.Errorf("%s: tag %s in target = %v, %v; want %s", k, tagged.Tag(), got.Digest, err, img.Root.Digest)
			}
		}
		for _, man := range img.Manifests {
			if got, err := dc.HeadManifest(ctx, repo, man.Digest.String()); err != nil || got.Digest != man.Digest {
				t.Errorf("%s: manifest %s in target: %v", k, man.Digest, err)
			}
		}
		for _, b := range img.Blobs {
			if ok, err := dc.BlobExists(ctx, repo, b.Digest); err != nil || !ok {
				t.Errorf("%s: blob %s missing in %s: %v", k, b.Digest, repo, err)
			}
		}
	}

	// The rewritten bundle: only image (and contentDigest) changed.
	var out map[string]any
	readJSON(t, outPath, &out)
	var orig map[string]any
	readJSON(t, bundlePath, &orig)
	setImage := func(entry map[string]any, k string) {
		entry["image"] = want[f.refs[k]]
		entry["contentDigest"] = f.images[k].Root.Digest.String()
	}
	setImage(orig["invocationImages"].([]any)[0].(map[string]any), "inv")
	imgs := orig["images"].(map[string]any)
	setImage(imgs["web"].(map[string]any), "index")
	setImage(imgs["api"].(map[string]any), "list")
	setImage(imgs["api-again"].(map[string]any), "list")
	setImage(imgs["cli"].(map[string]any), "oci")
	if !reflect.DeepEqual(out, orig) {
		a, _ := json.MarshalIndent(out, "", " ")
		b, _ := json.MarshalIndent(orig, "", " ")
		t.Errorf("relocated bundle =\n%s\nwant\n%s", a, b)
	}
	raw, _ := os.ReadFile(outPath)
	if canon := canonical(t, raw); string(raw) != canon {
		t.Errorf("relocated bundle is not canonical JSON:\n%s\nwant\n%s", raw, canon)
	}
	if !strings.Contains(r.stdout+r.stderr, "example.com/images/vm-disk:1") {
		t.Errorf("the vm image left alone is not reported")
	}

	// verify agrees, with the original bundle and mapping and with the
	// relocated bundle alone.
	if r := cli(t, nil, "verify", bundlePath, "--relocation-mapping", mapPath); r.code != 0 {
		t.Errorf("verify exited %d", r.code)
	}
	if r := cli(t, nil, "verify", outPath); r.code != 0 {
		t.Errorf("verify of the relocated bundle exited %d", r.code)
	}

	// A rerun finds everything in place and writes the same outputs.
	before, _ := os.ReadFile(outPath)
	r = cli(t, nil, "fixup", bundlePath, "--repository-prefix", prefix, "--relocation-mapping", mapPath, "--output-bundle", outPath, "--output", "json")
	if r.code != 0 {
		t.Fatalf("rerun exited %d", r.code)
	}
	var rep struct {
		Images []struct {
			Source      string `json:"source"`
			Present     bool   `json:"present"`
			BytesCopied int64  `json:"bytesCopied"`
		} `json:"images"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("--output json: %v", err)
	}
	for _, i := range rep.Images {
		if !i.Present || i.BytesCopied != 0 {
			t.Errorf("rerun: %s present=%v copied=%d, want present and nothing copied", i.Source, i.Present, i.BytesCopied)
		}
	}
	after, _ := os.ReadFile(outPath)
	if string(before) != string(after) {
		t.Error("rerun wrote a different bundle")
	}
	if got := dirEntries(t, dir); !slices.Equal(got, []string{"bundle.json", "relocated-bundle.json", "relocation-mapping.json"}) {
		t.Errorf("output directory holds %v", got)
	}
}
