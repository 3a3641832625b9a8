package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/registrytest"
)

// TestReferrersOnALaterTagPage: a registry that pages its tag lists (100
// a page; 250 other tags in the repository) still yields a signature
// whose tag is on the third page.
func TestReferrersOnALaterTagPage(t *testing.T) {
	ctx := context.Background()
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	c := src.Client()
	img, err := c.PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0", Seed: 31})
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := c.GetManifest(ctx, "vendor/app", "1.0")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 250 {
		if _, err := c.PushManifest(ctx, "vendor/app", fmt.Sprintf("a%03d", i), img.Root.MediaType, body); err != nil {
			t.Fatal(err)
		}
	}
	sigTag := "sha256-" + img.Root.Digest.Encoded() + ".sig"
	sig, err := c.PushArtifact(ctx, "vendor/app", registrytest.ArtifactSpec{ConfigType: ocispec.MediaTypeImageConfig, Tag: sigTag, Payload: []byte(`{"critical":{}}`)})
	if err != nil {
		t.Fatal(err)
	}
	pager := registrytest.NewProxy(src, registrytest.ProxyOptions{PageTags: 100})
	defer pager.Close()

	dir := t.TempDir()
	ref := pager.Host + "/vendor/app:1.0"
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, map[string]any{"name": "paged", "version": "1.0.0", "invocationImages": []any{map[string]any{"image": ref}}})
	mapPath := filepath.Join(dir, "m.json")
	if r := cli(t, nil, "fixup", bundlePath, "--repository-prefix", dst.Host+"/team", "--relocation-mapping", mapPath); r.code != 0 {
		t.Fatalf("fixup exited %d", r.code)
	}
	if n := pager.Counts()["GET tags"]; n < 3 {
		t.Errorf("%d tag list pages read, want 3 or more", n)
	}
	var m map[string]string
	readJSON(t, mapPath, &m)
	named, _ := reference.ParseNormalizedNamed(m[ref])
	got, err := dst.Client().HeadManifest(ctx, reference.Path(named), sigTag)
	if err != nil || got.Digest != sig.Digest {
		t.Errorf("the signature on the third tag page is not in the target: %v, %v", got, err)
	}
}
