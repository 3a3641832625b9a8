package fixup

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/relocator"
)

// TestPushPullBundle: a bundle pushed in cnab-to-oci's format is read
// back with its bytes unchanged, and the relocation map from its index
// points at each image in the bundle's repository by digest; relocating
// through that map reads the images there.
func TestPushPullBundle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := registrytest.StartMemory(false)
	defer reg.Close()
	inv, err := reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/inv", Tag: "1", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	web, err := reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/web", Tag: "2", Seed: 2, OCI: true, Platforms: []string{"linux/amd64", "linux/arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	// Not canonical, with an unknown key and a vm image: kept as they are.
	raw := []byte(`{"name":"app", "version":"1.0.0", "schemaVersion":"v1.0.0", "x-vendor":{"keep":true},
  "invocationImages":[{"imageType":"docker","image":"` + inv.Ref(reg.Host) + `"}],
  "images":{"web":{"imageType":"oci","image":"` + web.Ref(reg.Host) + `"},"disk":{"imageType":"vm","image":"https://example.com/d.qcow2"}}}`)
	b, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, ClientOptions{})
	ref := reg.Host + "/apps/app:1.0"
	located := map[string]string{inv.Ref(reg.Host): inv.Ref(reg.Host), web.Ref(reg.Host): web.Ref(reg.Host)}
	if _, err := c.PushBundle(ctx, b, ref, located); err != nil {
		t.Fatalf("PushBundle: %v", err)
	}

	got, m, err := c.PullBundle(ctx, ref)
	if err != nil {
		t.Fatalf("PullBundle: %v", err)
	}
	if !bytes.Equal(got.Raw(), raw) {
		t.Errorf("pulled bytes\n%s\nwant\n%s", got.Raw(), raw)
	}
	want := map[string]string{
		inv.Ref(reg.Host): reg.Host + "/apps/app@" + inv.Root.Digest.String(),
		web.Ref(reg.Host): reg.Host + "/apps/app@" + web.Root.Digest.String(),
	}
	if len(m) != len(want) || m[inv.Ref(reg.Host)] != want[inv.Ref(reg.Host)] || m[web.Ref(reg.Host)] != want[web.Ref(reg.Host)] {
		t.Errorf("relocation map %v, want %v", m, want)
	}

	// Relocate from the bundle's repository, with the vendor repositories
	// gone from the mapping's view: the names still come from the bundle.
	dst := registrytest.StartMemory(false)
	defer dst.Close()
	mapping, _ := relocator.New(relocator.OneToOne, dst.Host+"/team")
	res, err := Relocate(ctx, got, Options{Mapping: mapping, SourceMapping: m, ClientOptions: ClientOptions{ResolverOptions: c.opts.ResolverOptions}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Digests[web.Ref(reg.Host)] != web.Root.Digest || !strings.Contains(res.Mapping[web.Ref(reg.Host)], "/team/vendor-web-") {
		t.Errorf("relocated %v %v", res.Mapping, res.Digests)
	}
}

func TestPullBundleNotABundle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := registrytest.StartMemory(false)
	defer reg.Close()
	img, _ := reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1"})
	idx, _ := reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/multi", Tag: "1", OCI: true, Platforms: []string{"linux/amd64", "linux/arm64"}})
	c := newTestClient(t, ClientOptions{})
	for _, ref := range []string{img.Ref(reg.Host), idx.Ref(reg.Host)} {
		_, _, err := c.PullBundle(ctx, ref)
		if !errors.Is(err, ErrInvalidBundle) || !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), ref) {
			t.Errorf("PullBundle(%s) = %v, want ErrInvalidBundle naming it", ref, err)
		}
	}
	if _, _, err := c.PullBundle(ctx, reg.Host+"/nothing:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("PullBundle of nothing = %v, want ErrNotFound", err)
	}
}

func TestSourceMappingUnmapped(t *testing.T) {
	t.Parallel()
	b, _ := Parse([]byte(`{"invocationImages":[{"image":"127.0.0.1:1/a:1"}],"images":{"b":{"image":"127.0.0.1:1/b:1"},"v":{"imageType":"vm","image":"x"}}}`))
	m, _ := relocator.New(relocator.OneToOne, "127.0.0.1:2/team")
	c := newTestClient(t, ClientOptions{})
	_, err := c.Relocate(context.Background(), b, RelocateCall{Mapping: m, SourceMapping: map[string]string{"127.0.0.1:1/a:1": "127.0.0.1:3/a:1"}})
	if !errors.Is(err, ErrNotMapped) || !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), "127.0.0.1:1/b:1 (images.b)") || strings.Contains(err.Error(), "vm") {
		t.Errorf("got %v, want ErrNotMapped naming images.b only", err)
	}
	_, err = c.Relocate(context.Background(), b, RelocateCall{Mapping: m, SourceMapping: map[string]string{"127.0.0.1:1/a:1": "not a ref!", "127.0.0.1:1/b:1": "127.0.0.1:3/b:1"}})
	if !errors.Is(err, ErrInvalidImage) || !strings.Contains(err.Error(), "not a ref!") {
		t.Errorf("got %v, want ErrInvalidImage naming the bad mapped reference", err)
	}
}
