package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// TestReferrersOnALaterTagPage: tag lists in pages of 100 (Link headers,
// n and last; 250 other tags in the repository) still yield a signature
// whose tag is on the third page.
func TestReferrersOnALaterTagPage(t *testing.T) {
	// 2.8 pages nothing: the proxy pages for it. 3 pages with the n the
	// client sends: the proxy lowers n to 100.
	t.Run("distribution-2.8, paged by a proxy", func(t *testing.T) {
		testLaterTagPage(t, registrytest.Distribution28, registrytest.ProxyOptions{PageTags: 100})
	})
	t.Run("distribution-3, paging itself", func(t *testing.T) {
		testLaterTagPage(t, registrytest.Distribution3, registrytest.ProxyOptions{LimitTags: 100})
	})
}

func testLaterTagPage(t *testing.T, impl registrytest.Impl, po registrytest.ProxyOptions) {
	ctx := context.Background()
	src := registrytest.Start(t, registrytest.Options{Impl: impl})
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
	pager := registrytest.NewProxy(src, po)
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
