package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/reference"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

const (
	dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	foreignLayer   = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// pushWindows pushes an image as older Windows images are: a foreign base
// layer, with URLs where it is distributed from, and a layer of its own.
func pushWindows(t *testing.T, src *registrytest.Registry) (ref string, foreign ocispec.Descriptor) {
	t.Helper()
	ctx := context.Background()
	c := src.Client()
	cfg, err := c.PushBlob(ctx, "win/app", []byte(`{"os":"windows","architecture":"amd64"}`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MediaType = "application/vnd.docker.container.image.v1+json"
	foreign, _ = c.PushBlob(ctx, "win/app", registrytest.RandomBytes(5, 64<<10))
	foreign.MediaType = foreignLayer
	// Never fetched from there: the address does not exist.
	foreign.URLs = []string{"https://foreign.invalid/blobs/" + foreign.Digest.String()}
	own, _ := c.PushBlob(ctx, "win/app", registrytest.RandomBytes(6, 16<<10))
	own.MediaType = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	data, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: dockerManifest, Config: cfg, Layers: []ocispec.Descriptor{foreign, own}})
	if _, err := c.PushManifest(ctx, "win/app", "ltsc2019", dockerManifest, data); err != nil {
		t.Fatal(err)
	}
	return src.Host + "/win/app:ltsc2019", foreign
}

// TestNonDistributableLayers: by default a foreign layer is not copied
// and a target that wants it refuses the manifest, with an error naming
// the image, the layer and the cause; --include-non-distributable copies
// it from the source (fixup and export), and a target that refuses layer
// URLs still says so clearly.
func TestNonDistributableLayers(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{AllowLayerURLs: true})
	strict := registrytest.Start(t, registrytest.Options{})
	open := registrytest.Start(t, registrytest.Options{AllowLayerURLs: true})
	ref, foreign := pushWindows(t, src)
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, map[string]any{"name": "win", "version": "1.0.0", "invocationImages": []any{map[string]any{"image": ref, "imageType": "docker"}}})
	fixup := func(target *registrytest.Registry, input string, extra ...string) (result, string) {
		out := t.TempDir()
		args := append([]string{"fixup", input, "--repository-prefix", target.Host + "/team", "--relocation-mapping", filepath.Join(out, "m.json")}, extra...)
		return cli(t, nil, args...), out
	}

	r, out := fixup(strict, bundlePath)
	if r.code != 1 {
		t.Fatalf("default into a strict target: exit %d, want 1", r.code)
	}
	for _, want := range []string{ref, foreign.Digest.String(), "non-distributable", "MANIFEST_BLOB_UNKNOWN", "--include-non-distributable"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the error does not say %q:\n%s", want, r.stderr)
		}
	}
	if got := dirEntries(t, out); len(got) != 0 {
		t.Errorf("written after the failure: %v", got)
	}

	r, out = fixup(open, bundlePath, "--include-non-distributable")
	if r.code != 0 {
		t.Fatalf("--include-non-distributable into a target that accepts URLs: exit %d", r.code)
	}
	var mapping map[string]string
	readJSON(t, filepath.Join(out, "m.json"), &mapping)
	named, _ := reference.ParseNormalizedNamed(mapping[ref])
	if ok, err := open.Client().BlobExists(context.Background(), reference.Path(named), foreign.Digest); !ok || err != nil {
		t.Errorf("the foreign layer is not in the target: %v", err)
	}

	r, _ = fixup(strict, bundlePath, "--include-non-distributable")
	if r.code != 1 || !strings.Contains(r.stderr, "refuses manifests whose layers carry URLs") || !strings.Contains(r.stderr, foreign.Digest.String()) {
		t.Errorf("--include-non-distributable into a strict target: exit %d, stderr:\n%s", r.code, r.stderr)
	}

	// export carries it in the archive with the flag; the archive then
	// relocates with the source gone.
	archive := filepath.Join(dir, "win.tgz")
	if r := cli(t, nil, "export", bundlePath, "--output", archive, "--include-non-distributable"); r.code != 0 {
		t.Fatalf("export exited %d", r.code)
	}
	if data := tarFile(t, archive, "artifacts/layout/blobs/sha256/"+foreign.Digest.Encoded()); int64(len(data)) != foreign.Size {
		t.Errorf("the archive carries %d bytes of the foreign layer, want %d", len(data), foreign.Size)
	}
	src.Close()
	open2 := registrytest.Start(t, registrytest.Options{AllowLayerURLs: true})
	if r, _ := fixup(open2, archive, "--include-non-distributable"); r.code != 0 {
		t.Errorf("fixup of the archive exited %d", r.code)
	}
}
