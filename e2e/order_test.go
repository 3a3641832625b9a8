package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distribution/reference"

	"github.com/cnabio/cnab-relocate/fixup"
	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// reread is what --debug says when an archive is read twice because
// bundle.json comes after its blobs.
const reread = "metadata not at the front (bundle.json after the blobs): reading it twice"

// orderFixture is seed's images plus one whose layer is too big to hold
// in memory (more than 4 MiB), so that an archive whose metadata is not at
// the front is read twice.
func orderFixture(t *testing.T, src *registrytest.Registry) (*fixture, []string) {
	t.Helper()
	f := seed(t, src)
	img, err := src.Client().PushImage(context.Background(), registrytest.ImageSpec{Repo: "vendor/big", Tag: "1.0", Layers: []int{5 << 20}, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	f.images["big"] = img
	f.refs["big"] = src.Host + "/vendor/big:1.0"
	return f, append(slices.Clone(imageKeys), "big")
}

// imageLayout writes an OCI image layout in dir as cnab-go's and porter's
// image stores fill it (github.com/cnabio/image-relocation's layout): each
// image read from its registry by refs[k], all platforms of an index,
// named in index.json (org.opencontainers.image.ref.name) by that
// reference, added as often as keys names it. The layout is written with
// this module's Layout (image-relocation writes it with
// go-containerregistry's, the same files); what these tests are about is
// the order the archive's members come in.
func imageLayout(t *testing.T, dir string, keys []string, refs map[string]string) {
	t.Helper()
	c, err := fixup.NewClient(fixup.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.NewLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, err := l.Add(context.Background(), refs[k]); err != nil {
			t.Fatalf("%s: %v", refs[k], err)
		}
	}
}

// walkTar tars dir as porter's archive (CustomTar) and cnab-go's exporter
// (docker's archive.TarWithOptions with IncludeFiles ".",
// IncludeSourceDir) do: filepath.Walk's name order, every name relative to
// dir prefixed by "./", the root itself "./", directories ending in "/",
// gzipped. porter zeroes times and owners and writes modes 0755/0644;
// docker keeps each file's mode, owner and time, in PAX form (pax).
func walkTar(t *testing.T, archive, dir string, pax bool) {
	t.Helper()
	out, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	zw := gzip.NewWriter(out)
	tw := tar.NewWriter(zw)
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr := &tar.Header{Name: "./" + filepath.ToSlash(rel), Typeflag: tar.TypeReg, Mode: 0o644, Size: fi.Size(), ModTime: time.Unix(0, 0)}
		if rel == "." {
			hdr.Name = "."
		}
		if pax {
			if hdr, err = tar.FileInfoHeader(fi, ""); err != nil {
				return err
			}
			hdr.Name, hdr.Format = "./"+filepath.ToSlash(rel), tar.FormatPAX
			if rel == "." {
				hdr.Name = "."
			}
		}
		if fi.IsDir() {
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeDir, int64(fi.Mode().Perm()), 0
			if !pax {
				hdr.Mode = 0o755
			}
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.IsDir() {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		_, err = io.Copy(tw, in)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

// relocateOrdered relocates archive into dst under prefix with --debug
// and TMPDIR a fresh directory, and checks: exit 0, the names of one
// direct hop from the bundle's references, every digest in place, TMPDIR
// still empty, verify of the output bundle exits 0, and whether --debug
// says the archive was read twice (twice).
func relocateOrdered(t *testing.T, f *fixture, keys []string, dst *registrytest.Registry, prefix, archive string, twice bool) {
	t.Helper()
	dir := t.TempDir()
	tmp := t.TempDir()
	mapPath, outPath := filepath.Join(dir, "m.json"), filepath.Join(dir, "out.json")
	r := cli(t, []string{"TMPDIR=" + tmp}, "fixup", archive, "--repository-prefix", prefix, "--relocation-mapping", mapPath, "--output-bundle", outPath, "--debug", "--quiet")
	if r.code != 0 {
		t.Fatalf("fixup of %s exited %d", filepath.Base(archive), r.code)
	}
	if got := strings.Contains(r.stderr, reread); got != twice {
		t.Errorf("--debug says %q: %v, want %v", reread, got, twice)
	}
	if got := dirEntries(t, tmp); len(got) != 0 {
		t.Errorf("TMPDIR holds %v after relocating %s", got, filepath.Base(archive))
	}
	checkRelocated(t, f, dst, mapPath, f.refs, keys...)
	sameMapping(t, filepath.Base(archive), mapPath, wantNames(t, f, prefix, keys...))
	if r := cli(t, nil, "verify", outPath); r.code != 0 {
		t.Errorf("verify of the bundle relocated from %s exited %d", filepath.Base(archive), r.code)
	}
}

// exportOrdered re-packs archive with export (TMPDIR left empty) and
// relocates the result, which this tool wrote metadata first: read once.
func exportOrdered(t *testing.T, f *fixture, keys []string, dst *registrytest.Registry, prefix, archive string) {
	t.Helper()
	tmp := t.TempDir()
	ours := filepath.Join(t.TempDir(), "ours.tgz")
	if r := cli(t, []string{"TMPDIR=" + tmp}, "export", archive, "--output", ours, "--debug", "--quiet"); r.code != 0 {
		t.Fatalf("export of %s exited %d", filepath.Base(archive), r.code)
	} else if !strings.Contains(r.stderr, reread) {
		t.Errorf("export --debug does not say %q", reread)
	}
	if got := dirEntries(t, tmp); len(got) != 0 {
		t.Errorf("TMPDIR holds %v after exporting %s", got, filepath.Base(archive))
	}
	var want []string
	for _, k := range keys {
		want = append(want, f.refs[k])
	}
	slices.Sort(want)
	if got := slices.Compact(layoutNames(t, ours)); !slices.Equal(got, want) {
		t.Errorf("the re-packed archive's layout names %q, want the bundle's references %q", got, want)
	}
	relocateOrdered(t, f, keys, dst, prefix, ours, false)
}

// TestArchivePorterOrder: an archive as porter 1.x writes it (its folder
// walked in name order, "./" names: the layout, then bundle.json, then
// relocation-mapping.json; the layout naming each image by its mapped
// reference) relocates, reading it twice and saying so, with the names the
// same bundle gets from a metadata-first archive; export re-packs it.
func TestArchivePorterOrder(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f, keys := orderFixture(t, src)
	dir := t.TempDir()

	// As porter's export: bundle.json and relocation-mapping.json in a
	// folder, the images added to artifacts/layout from where the mapping
	// says they are, named by those references.
	bundleRefs, mapping := map[string]string{}, map[string]string{}
	for _, k := range keys {
		named, _ := reference.ParseNormalizedNamed(f.refs[k])
		bundleRefs[k] = "porter.example/" + reference.Path(named) + ":v1"
		mapping[bundleRefs[k]] = f.refs[k]
	}
	images := map[string]any{}
	for _, k := range keys[1:] {
		images[k] = map[string]any{"image": bundleRefs[k], "imageType": "docker"}
	}
	bundle := map[string]any{
		"schemaVersion": "v1.0.0", "name": "porter-app", "version": "0.1.0",
		"invocationImages": []any{map[string]any{"image": bundleRefs["inv"], "imageType": "docker"}},
		"images":           images,
	}
	folder := filepath.Join(dir, "porter-app-0.1.0")
	os.MkdirAll(folder, 0o755)
	writeJSON(t, filepath.Join(folder, "bundle.json"), bundle)
	mapData, _ := json.Marshal(mapping)
	os.WriteFile(filepath.Join(folder, "relocation-mapping.json"), mapData, 0o644)
	imageLayout(t, filepath.Join(folder, "artifacts", "layout"), keys, f.refs)
	archive := filepath.Join(dir, "porter.tgz")
	walkTar(t, archive, folder, false)
	if names := tarNames(t, archive); !strings.HasPrefix(names[1], "./artifacts/") || names[len(names)-2] != "./bundle.json" || names[len(names)-1] != "./relocation-mapping.json" {
		t.Fatalf("not porter 1.x's order: %q", names)
	}
	// The same bundle and layout, metadata first (bundle.json, the
	// mapping, then the layout): the names to get.
	front := filepath.Join(dir, "front.tgz")
	writeTarGz(t, front, filepath.Join(folder, "artifacts", "layout"), bundle, rootFile{"relocation-mapping.json", mapData})
	src.Close()

	porterF := &fixture{images: f.images, refs: bundleRefs}
	relocateOrdered(t, porterF, keys, dst, dst.Host+"/porter", archive, true)
	relocateOrdered(t, porterF, keys, dst, dst.Host+"/front", front, false)
	exportOrdered(t, porterF, keys, dst, dst.Host+"/ours", archive)
}

// TestArchiveCNABGoOrder: an archive as cnab-go's packager (duffle export)
// writes it relocates. cnab-go's Exporter cannot be called here (its
// image store needs github.com/cnabio/image-relocation v0.9.x and docker's
// pkg/archive, which docker 28 moved out), so its order is reproduced from
// its source: bundle.json copied into a folder, each image added by its
// reference to artifacts/layout through image-relocation's layout
// (go-containerregistry's, below), then docker's TarWithOptions with
// IncludeFiles ".", IncludeSourceDir and gzip: "./", then "./artifacts/...",
// then "./bundle.json", PAX headers; no relocation mapping.
func TestArchiveCNABGoOrder(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f, keys := orderFixture(t, src)
	dir := t.TempDir()
	images := f.bundle["images"].(map[string]any)
	delete(images, "vm") // cnab-go would pull it too; it is no image of a registry here
	images["big"] = map[string]any{"image": f.refs["big"], "imageType": "docker"}
	folder := filepath.Join(dir, "e2e-app-1.0.0")
	os.MkdirAll(folder, 0o755)
	writeJSON(t, filepath.Join(folder, "bundle.json"), f.bundle)
	// prepareArtifacts: each entry of images (in the map's order), then the
	// invocation images, added by reference: "api-again" adds the list a
	// second time, under the same name.
	byRef := map[string]string{}
	for k, ref := range f.refs {
		byRef[ref] = k
	}
	var added []string
	for _, img := range images {
		added = append(added, byRef[img.(map[string]any)["image"].(string)])
	}
	added = append(added, "inv")
	imageLayout(t, filepath.Join(folder, "artifacts", "layout"), added, f.refs)
	archive := filepath.Join(dir, "duffle.tgz")
	walkTar(t, archive, folder, true)
	if names := tarNames(t, archive); names[0] != "./" || names[len(names)-1] != "./bundle.json" {
		t.Fatalf("not cnab-go's order: %q", names)
	}
	src.Close()
	relocateOrdered(t, f, keys, dst, dst.Host+"/duffle", archive, true)
	exportOrdered(t, f, keys, dst, dst.Host+"/ours", archive)
}

// TestArchiveGNUTarOrder: a folder with bundle.json, relocation-mapping.json
// and the layout, tarred by GNU tar --sort=name -C DIR . (gzipped and
// plain), relocates, and export re-packs it.
func TestArchiveGNUTarOrder(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f, keys := orderFixture(t, src)
	dir := t.TempDir()
	folder := filepath.Join(dir, "app")
	os.MkdirAll(folder, 0o755)
	bundleRefs, mapping := map[string]string{}, map[string]string{}
	for _, k := range keys {
		named, _ := reference.ParseNormalizedNamed(f.refs[k])
		bundleRefs[k] = "tar.example/" + reference.Path(named) + ":v1"
		mapping[bundleRefs[k]] = f.refs[k]
	}
	images := map[string]any{}
	for _, k := range keys[1:] {
		images[k] = map[string]any{"image": bundleRefs[k]}
	}
	writeJSON(t, filepath.Join(folder, "bundle.json"), map[string]any{
		"schemaVersion": "v1.0.0", "name": "tarred", "version": "1.0.0",
		"invocationImages": []any{map[string]any{"image": bundleRefs["inv"]}},
		"images":           images,
	})
	writeJSON(t, filepath.Join(folder, "relocation-mapping.json"), mapping)
	imageLayout(t, filepath.Join(folder, "artifacts", "layout"), keys, f.refs)
	src.Close()
	tarF := &fixture{images: f.images, refs: bundleRefs}
	for _, tc := range []struct{ name, flags string }{{"app.tgz", "-czf"}, {"app.tar", "-cf"}} {
		archive := filepath.Join(dir, tc.name)
		if out, err := exec.Command("tar", "--sort=name", tc.flags, archive, "-C", folder, ".").CombinedOutput(); err != nil {
			t.Fatalf("tar: %v\n%s", err, out)
		}
		relocateOrdered(t, tarF, keys, dst, dst.Host+"/"+strings.ReplaceAll(tc.name, ".", "-"), archive, true)
		exportOrdered(t, tarF, keys, dst, dst.Host+"/ours-"+strings.ReplaceAll(tc.name, ".", "-"), archive)
	}
}
