package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/fixup"
	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/relocator"
)

// wantNames is the relocation mapping one direct hop from the bundle's own
// references gives under prefix: what every chain of hops must give too.
func wantNames(t *testing.T, f *fixture, prefix string, keys ...string) map[string]string {
	t.Helper()
	m, err := relocator.New(relocator.OneToOne, prefix)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, k := range keys {
		named, err := reference.ParseNormalizedNamed(f.refs[k])
		if err != nil {
			t.Fatal(err)
		}
		to, err := m.Map(named, f.images[k].Root.Digest)
		if err != nil {
			t.Fatal(err)
		}
		want[f.refs[k]] = to.String()
	}
	return want
}

func sameMapping(t *testing.T, what, path string, want map[string]string) {
	t.Helper()
	var got map[string]string
	readJSON(t, path, &got)
	if !maps.Equal(got, want) {
		t.Errorf("%s: relocation mapping %v\nwant (the names of one direct hop) %v", what, got, want)
	}
}

// tarNames lists the entries of a .tgz.
func tarNames(t *testing.T, archive string) []string {
	t.Helper()
	var names []string
	eachTarEntry(t, archive, func(h *tar.Header, _ io.Reader) bool {
		names = append(names, h.Name)
		return true
	})
	return names
}

// layoutNames returns the ref.name annotations of an archive's index.json.
func layoutNames(t *testing.T, archive string) []string {
	t.Helper()
	var idx ocispec.Index
	if err := json.Unmarshal(tarFile(t, archive, "artifacts/layout/index.json"), &idx); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range idx.Manifests {
		if n := m.Annotations[ocispec.AnnotationRefName]; n != "" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// TestMultiHop: vendor registry -> DMZ registry -> thick archive ->
// air-gapped registry, each hop reading the images where the previous
// hop's relocation mapping says, with the vendor's and then the DMZ's
// registry stopped; bundle.json is never rewritten, and the final names
// are those of one direct hop.
func TestMultiHop(t *testing.T) {
	vendor := registrytest.Start(t, registrytest.Options{})
	dmz := registrytest.Start(t, registrytest.Options{})
	air := registrytest.Start(t, registrytest.Options{})
	air2 := registrytest.Start(t, registrytest.Options{})
	f := seed(t, vendor)
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, f.bundle)
	orig := readFile(t, bundlePath)

	// Hop 1: vendor -> DMZ.
	dmzMap := filepath.Join(dir, "dmz-mapping.json")
	if r := cli(t, nil, "fixup", bundlePath, "--repository-prefix", dmz.Host+"/dmz", "--relocation-mapping", dmzMap); r.code != 0 {
		t.Fatalf("hop 1 exited %d", r.code)
	}
	vendor.Close()

	// From the DMZ straight to a registry: a thin second hop.
	air2Map := filepath.Join(dir, "air2-mapping.json")
	if r := cli(t, nil, "fixup", bundlePath, "--source-relocation-mapping", dmzMap, "--repository-prefix", air2.Host+"/team", "--relocation-mapping", air2Map); r.code != 0 {
		t.Fatalf("thin second hop exited %d", r.code)
	}
	checkRelocated(t, f, air2, air2Map, f.refs)
	sameMapping(t, "thin second hop", air2Map, wantNames(t, f, air2.Host+"/team", imageKeys...))

	// Hop 2: DMZ -> thick archive, named by the bundle's own references.
	archive := filepath.Join(dir, "app.tgz")
	if r := cli(t, nil, "export", bundlePath, "--source-relocation-mapping", dmzMap, "--output", archive); r.code != 0 {
		t.Fatalf("hop 2 (export) exited %d", r.code)
	}
	if got := tarFile(t, archive, "bundle.json"); !bytes.Equal(got, orig) {
		t.Error("bundle.json in the archive is not the vendor's, byte for byte")
	}
	if slices.Contains(tarNames(t, archive), "relocation-mapping.json") {
		t.Error("the archive carries a relocation mapping: it should need none")
	}
	var wantLayout []string
	for _, k := range imageKeys {
		wantLayout = append(wantLayout, f.refs[k])
	}
	slices.Sort(wantLayout)
	if got := layoutNames(t, archive); !slices.Equal(got, wantLayout) {
		t.Errorf("layout names %q, want the bundle's references %q", got, wantLayout)
	}
	dmz.Close()

	// Hop 3: archive -> air gap, nothing else reachable.
	airMap := filepath.Join(dir, "air-mapping.json")
	out := filepath.Join(dir, "relocated.json")
	if r := cli(t, nil, "fixup", archive, "--repository-prefix", air.Host+"/team", "--relocation-mapping", airMap, "--output-bundle", out); r.code != 0 {
		t.Fatalf("hop 3 exited %d", r.code)
	}
	checkRelocated(t, f, air, airMap, f.refs)
	sameMapping(t, "three hops", airMap, wantNames(t, f, air.Host+"/team", imageKeys...))
	if r := cli(t, nil, "verify", out); r.code != 0 {
		t.Errorf("verify of the relocated bundle exited %d", r.code)
	}
	if !bytes.Equal(readFile(t, bundlePath), orig) {
		t.Error("bundle.json was modified")
	}
}

// TestSourceMappingErrors: an image the mapping leaves out is bad input
// naming the image and the file; an image mapped to other content is a
// failure naming both references; nothing is written either way.
func TestSourceMappingErrors(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, f.bundle)
	complete := map[string]string{}
	for _, k := range imageKeys {
		complete[f.refs[k]] = f.refs[k] // where they are: the source
	}

	missing := maps.Clone(complete)
	delete(missing, f.refs["oci"])
	missingPath := filepath.Join(dir, "missing.json")
	writeJSON(t, missingPath, missing)
	out := t.TempDir()
	r := cli(t, nil, "fixup", bundlePath, "--source-relocation-mapping", missingPath, "--repository-prefix", dst.Host+"/team", "--relocation-mapping", filepath.Join(out, "m.json"))
	if r.code != 2 || !strings.Contains(r.stderr, f.refs["oci"]) || !strings.Contains(r.stderr, missingPath) {
		t.Errorf("unmapped image: exit %d, stderr %q; want 2 naming %s and %s", r.code, r.stderr, f.refs["oci"], missingPath)
	}

	// "web" (the index, contentDigest recorded) mapped to the CLI image.
	wrong := maps.Clone(complete)
	wrong[f.refs["index"]] = src.Host + "/" + f.images["oci"].Repo + ":" + f.images["oci"].Tag
	wrongPath := filepath.Join(dir, "wrong.json")
	writeJSON(t, wrongPath, wrong)
	r = cli(t, nil, "fixup", bundlePath, "--source-relocation-mapping", wrongPath, "--repository-prefix", dst.Host+"/team", "--relocation-mapping", filepath.Join(out, "m.json"))
	if r.code != 1 || !strings.Contains(r.stderr, f.refs["index"]) || !strings.Contains(r.stderr, wrong[f.refs["index"]]) {
		t.Errorf("mapped to other content: exit %d, stderr %q; want 1 naming %s and %s", r.code, r.stderr, f.refs["index"], wrong[f.refs["index"]])
	}
	if got := dirEntries(t, out); len(got) != 0 {
		t.Errorf("written after a failure: %v", got)
	}
}

// TestPorterArchive: an archive as porter writes it — bundle.json without
// contentDigest, relocation-mapping.json beside it, the layout naming each
// image by its mapped reference — relocates with no flag, under the names
// of the bundle's references; export turns it into an archive that needs
// no mapping.
func TestPorterArchive(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	ctx := context.Background()
	dir := t.TempDir()

	// The layout, as porter makes it: each image added from where the
	// mapping says it is, named by that reference.
	c, err := fixup.NewClient(fixup.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	layoutDir := filepath.Join(dir, "layout")
	l, err := c.NewLayout(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	bundleRefs := map[string]string{} // key -> reference in porter's bundle.json
	mapping := map[string]string{}
	for _, k := range imageKeys {
		if _, err := l.Add(ctx, f.refs[k]); err != nil {
			t.Fatal(err)
		}
		// The bundle names the images where the author built them; the
		// mapping says where they were published.
		named, _ := reference.ParseNormalizedNamed(f.refs[k])
		bundleRefs[k] = "porter.example/" + reference.Path(named) + ":v1"
		mapping[bundleRefs[k]] = f.refs[k]
	}
	bundle := map[string]any{
		"schemaVersion":    "v1.0.0",
		"name":             "porter-app",
		"version":          "0.1.0",
		"invocationImages": []any{map[string]any{"image": bundleRefs["inv"], "imageType": "docker"}},
		"images": map[string]any{
			"web": map[string]any{"image": bundleRefs["index"], "imageType": "oci"},
			"api": map[string]any{"image": bundleRefs["list"], "imageType": "docker"},
			"cli": map[string]any{"image": bundleRefs["oci"], "imageType": "docker"},
		},
	}
	mapData, _ := json.Marshal(mapping)
	archive := filepath.Join(dir, "porter.tgz")
	writeTarGz(t, archive, layoutDir, bundle, rootFile{"relocation-mapping.json", mapData})
	src.Close()

	mapPath := filepath.Join(dir, "m.json")
	if r := cli(t, nil, "fixup", archive, "--repository-prefix", dst.Host+"/team", "--relocation-mapping", mapPath); r.code != 0 {
		t.Fatalf("fixup of the porter archive exited %d", r.code)
	}
	porterF := &fixture{images: f.images, refs: bundleRefs}
	checkRelocated(t, porterF, dst, mapPath, bundleRefs)
	sameMapping(t, "porter archive", mapPath, wantNames(t, porterF, dst.Host+"/team", imageKeys...))

	// export: this tool's archive, named by the bundle's references, no
	// mapping needed.
	ours := filepath.Join(dir, "ours.tgz")
	if r := cli(t, nil, "export", archive, "--output", ours); r.code != 0 {
		t.Fatalf("export of the porter archive exited %d", r.code)
	}
	if slices.Contains(tarNames(t, ours), "relocation-mapping.json") {
		t.Error("the exported archive still carries a relocation mapping")
	}
	want := slices.Sorted(maps.Values(bundleRefs))
	if got := layoutNames(t, ours); !slices.Equal(got, want) {
		t.Errorf("exported layout names %q, want the bundle's references %q", got, want)
	}
	dst2 := registrytest.Start(t, registrytest.Options{})
	mapPath2 := filepath.Join(dir, "m2.json")
	if r := cli(t, nil, "fixup", ours, "--repository-prefix", dst2.Host+"/team", "--relocation-mapping", mapPath2); r.code != 0 {
		t.Fatalf("fixup of the exported archive exited %d", r.code)
	}
	checkRelocated(t, porterF, dst2, mapPath2, bundleRefs)
}
