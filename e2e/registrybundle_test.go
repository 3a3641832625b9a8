package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnabio/cnab-go/bundle"
	"github.com/cnabio/cnab-to-oci/converter"
	cnabremotes "github.com/cnabio/cnab-to-oci/remotes"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/resolver"
)

// storedBundle reads the bundle.json bytes kept in repo:tag of reg in
// cnab-to-oci's format, with the plain test client (not the tool's code).
func storedBundle(t *testing.T, c *registrytest.Client, repo, tag string) []byte {
	t.Helper()
	ctx := context.Background()
	data, _, err := c.GetManifest(ctx, repo, tag)
	if err != nil {
		t.Fatalf("bundle %s:%s: %v", repo, tag, err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatal(err)
	}
	cfg, err := converter.GetBundleConfigManifestDescriptor(&idx)
	if err != nil {
		t.Fatal(err)
	}
	data, _, err = c.GetManifest(ctx, repo, cfg.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	raw, err := c.GetBlob(ctx, repo, m.Config.Digest)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestRegistryBundleRoundTrip: a bundle pushed by cnab-to-oci v0.4.3's own
// FixupBundle and Push is relocated from its registry with the images'
// original registry stopped, pushed with --push-bundle next to the
// relocated images (their blobs mounted: only bundle.json uploaded), and
// cnab-to-oci's Pull reads it back there, every image with its digest;
// bundle.json stays byte for byte what cnab-to-oci stored.
func TestRegistryBundleRoundTrip(t *testing.T) {
	ctx := context.Background()
	vendor := registrytest.Start(t, registrytest.Options{})
	pub := registrytest.Start(t, registrytest.Options{})
	air := registrytest.Start(t, registrytest.Options{})
	f := seed(t, vendor)

	// The vendor publishes with cnab-to-oci: images fixed up into the
	// bundle's repository, then the bundle.
	r, err := resolver.New(resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle.Bundle{
		SchemaVersion: "v1.0.0", Name: "published", Version: "1.0.0",
		InvocationImages: []bundle.InvocationImage{{BaseImage: bundle.BaseImage{ImageType: "docker", Image: f.refs["inv"]}}},
		Images: map[string]bundle.Image{
			"web": {BaseImage: bundle.BaseImage{ImageType: "oci", Image: f.refs["index"]}},
			"cli": {BaseImage: bundle.BaseImage{ImageType: "oci", Image: f.refs["oci"]}},
		},
	}
	pubRef, err := reference.ParseNormalizedNamed(pub.Host + "/apps/published:1.0")
	if err != nil {
		t.Fatal(err)
	}
	located, err := cnabremotes.FixupBundle(ctx, b, pubRef, r, cnabremotes.WithAutoBundleUpdate())
	if err != nil {
		t.Fatalf("cnab-to-oci FixupBundle: %v", err)
	}
	if _, err := cnabremotes.Push(ctx, b, located, pubRef, r, true); err != nil {
		t.Fatalf("cnab-to-oci Push: %v", err)
	}
	stored := storedBundle(t, pub.Client(), "apps/published", "1.0")
	vendor.Close() // only the bundle's registry is left

	dir := t.TempDir()
	saved := filepath.Join(dir, "bundle.json")
	mapPath := filepath.Join(dir, "m.json")
	src := "oci://" + pub.Host + "/apps/published:1.0"

	// Relocate, then push the bundle next to the images: through a proxy
	// that counts what the push uploads.
	proxy := registrytest.NewProxy(air, registrytest.ProxyOptions{})
	defer proxy.Close()
	prefix := proxy.Host + "/team"
	if r := cli(t, nil, "fixup", src, "--repository-prefix", prefix, "--relocation-mapping", mapPath, "--save-bundle", saved); r.code != 0 {
		t.Fatalf("fixup of %s exited %d", src, r.code)
	}
	if got := readFile(t, saved); !bytes.Equal(got, stored) {
		t.Errorf("--save-bundle wrote\n%s\nwant the stored bytes\n%s", got, stored)
	}
	proxy.Reset()
	pushed := proxy.Host + "/apps/published:1.0"
	r2 := cli(t, nil, "fixup", src, "--repository-prefix", prefix, "--relocation-mapping", mapPath, "--push-bundle", pushed, "--output", "json", "--debug")
	if r2.code != 0 {
		t.Fatalf("fixup --push-bundle exited %d", r2.code)
	}
	// Pull, relocate and push are one client's: one docker config read.
	if n := strings.Count(r2.stderr, `msg="docker config read"`); n != 1 {
		t.Errorf("fixup %s --push-bundle --debug read the docker config %d times, want once", src, n)
	}
	if !strings.Contains(r2.stdout, `"pushedBundle": "`+pushed+"@sha256:") {
		t.Errorf("the JSON report does not name the pushed bundle: %s", r2.stdout)
	}
	if got, want := proxy.BytesUploaded(), int64(len(stored)); got != want {
		t.Errorf("--push-bundle uploaded %d bytes, want only bundle.json's %d (image blobs mounted)", got, want)
	}
	if n := proxy.Counts()["PUT manifest"]; n == 0 {
		t.Error("--push-bundle put no manifest")
	}

	// cnab-to-oci reads it there, and every image it names is there with
	// the vendor's digest.
	airRef, _ := reference.ParseNormalizedNamed(pushed)
	pulled, pulledMap, _, err := cnabremotes.Pull(ctx, airRef, r)
	if err != nil {
		t.Fatalf("cnab-to-oci Pull of the pushed bundle: %v", err)
	}
	if got := storedBundle(t, air.Client(), "apps/published", "1.0"); !bytes.Equal(got, stored) {
		t.Errorf("pushed bundle.json differs from the stored one:\n%s\nwant\n%s", got, stored)
	}
	for ref, k := range map[string]string{pulled.InvocationImages[0].Image: "inv", pulled.Images["web"].Image: "index", pulled.Images["cli"].Image: "oci"} {
		at, ok := pulledMap[ref]
		if !ok {
			t.Errorf("%s is not in the pulled relocation map %v", ref, pulledMap)
			continue
		}
		named, err := reference.ParseNormalizedNamed(at)
		if err != nil {
			t.Fatal(err)
		}
		d := named.(reference.Canonical).Digest()
		if d != f.images[k].Root.Digest || reference.Path(named) != "apps/published" {
			t.Errorf("%s is at %s, want %s in apps/published", ref, at, f.images[k].Root.Digest)
		}
		if got, err := air.Client().HeadManifest(ctx, "apps/published", d.String()); err != nil || got.Digest != d {
			t.Errorf("%s: %s not in the pushed bundle's repository: %v", ref, d, err)
		}
	}
	if rv := cli(t, nil, "verify", "oci://"+pushed, "--debug"); rv.code != 0 {
		t.Errorf("verify of the pushed bundle exited %d", rv.code)
	} else if n := strings.Count(rv.stderr, `msg="docker config read"`); n != 1 {
		t.Errorf("verify oci://%s --debug read the docker config %d times, want once (the pull and the checks are one client's)", pushed, n)
	}

	// export reads it too: an archive with the stored bundle.json.
	archive := filepath.Join(dir, "published.tgz")
	if r := cli(t, nil, "export", src, "--output", archive); r.code != 0 {
		t.Fatalf("export of %s exited %d", src, r.code)
	}
	if got := tarFile(t, archive, "bundle.json"); !bytes.Equal(got, stored) {
		t.Error("the exported archive's bundle.json is not the stored one")
	}

	// --push-bundle works with every mapping; cnab-to-oci pulls each.
	for name, args := range map[string][]string{
		"prefix":      {"--mapping", "prefix", "--repository-prefix", air.Host + "/pfx"},
		"many-to-one": {"--mapping", "many-to-one", "--target", air.Host + "/all/published"},
	} {
		t.Run(name, func(t *testing.T) {
			ref := air.Host + "/" + name + "/published:1.0"
			args := append([]string{"fixup", src, "--relocation-mapping", filepath.Join(t.TempDir(), "m.json"), "--push-bundle", ref}, args...)
			if r := cli(t, nil, args...); r.code != 0 {
				t.Fatalf("exited %d", r.code)
			}
			named, _ := reference.ParseNormalizedNamed(ref)
			if _, m, _, err := cnabremotes.Pull(ctx, named, r); err != nil || len(m) != 3 {
				t.Fatalf("cnab-to-oci Pull of %s: %v, %v", ref, m, err)
			}
			if rv := cli(t, nil, "verify", "oci://"+ref); rv.code != 0 {
				t.Errorf("verify of %s exited %d", ref, rv.code)
			}
		})
	}
}
