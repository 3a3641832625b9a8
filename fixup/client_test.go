package fixup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-relocate/relocator"
	"github.com/cnabio/cnab-relocate/resolver"
)

const sbomArtifact = "application/spdx+json"

// newTestClient is a client with an empty docker configuration: never the
// host's credentials.
func newTestClient(t *testing.T, opts ClientOptions) *Client {
	t.Helper()
	opts.ResolverOptions.ConfigDir = t.TempDir()
	opts.ResolverOptions.CertsDir = "-"
	c, err := NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// referrersOf lists subject's referrers in repo through the registry's API.
func referrersOf(t *testing.T, host, repo string, subject ocispec.Descriptor) []ocispec.Descriptor {
	t.Helper()
	r, err := resolver.New(resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	refs, ok, err := r.Referrers(context.Background(), host+"/"+repo, subject.Digest)
	if err != nil || !ok {
		t.Fatalf("referrers of %s in %s/%s: %v (API: %v)", subject.Digest, host, repo, err, ok)
	}
	return refs
}

// TestLayoutAddPushCarriesReferrers: registry -> layout -> registry keeps
// the digest and takes the image's referrers along, found through the
// referrers API and put back where the target's API lists them.
func TestLayoutAddPushCarriesReferrers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, dst := registrytest.StartMemory(true), registrytest.StartMemory(true)
	defer src.Close()
	defer dst.Close()
	img, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0", OCI: true, Platforms: []string{"linux/amd64", "linux/arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	sbom, err := src.Client().PushArtifact(ctx, "vendor/app", registrytest.ArtifactSpec{ArtifactType: sbomArtifact, Subject: &img.Root, Payload: []byte(`{"spdxVersion":"SPDX-2.3"}`)})
	if err != nil {
		t.Fatal(err)
	}

	c := newTestClient(t, ClientOptions{})
	dir := filepath.Join(t.TempDir(), "layout")
	l, err := c.NewLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := l.Add(ctx, src.Host+"/vendor/app:1.0")
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != img.Root.Digest || desc.MediaType != ocispec.MediaTypeImageIndex {
		t.Fatalf("Add = %v, want the index %s", desc, img.Root.Digest)
	}
	// index.json is on disk after Add: a layout opened anew finds both.
	reread, err := c.ReadLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := reread.Find(src.Host + "/vendor/app:1.0"); err != nil || got.Digest != img.Root.Digest {
		t.Fatalf("Find after ReadLayout = %v, %v", got, err)
	}
	if refs, _ := (LayoutSource{Store: reread.store}).Referrers(ctx, Image{}, img.Root.Digest); len(refs) != 1 || refs[0].Desc.Digest != sbom.Digest {
		t.Fatalf("layout referrers of the image: %v, want the SBOM %s", refs, sbom.Digest)
	}

	if err := reread.Push(ctx, desc.Digest, dst.Host+"/team/app:1.0"); err != nil {
		t.Fatal(err)
	}
	d, err := c.Digest(ctx, dst.Host+"/team/app:1.0")
	if err != nil || d != img.Root.Digest {
		t.Fatalf("target tag: %s, %v; want %s", d, err, img.Root.Digest)
	}
	got := referrersOf(t, dst.Host, "team/app", img.Root)
	if len(got) != 1 || got[0].Digest != sbom.Digest {
		t.Fatalf("target referrers %v, want the SBOM %s", got, sbom.Digest)
	}
}

func TestCopy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, dst := registrytest.StartMemory(false), registrytest.StartMemory(false)
	defer src.Close()
	defer dst.Close()
	img, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0", Layers: []int{300, 200}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/other", Tag: "1.0", Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	var events []Event
	c := newTestClient(t, ClientOptions{OnEvent: func(e Event) { events = append(events, e) }})

	t.Run("without tag: by digest only", func(t *testing.T) {
		desc, err := c.Copy(ctx, src.Host+"/vendor/app:1.0", dst.Host+"/team/bydigest")
		if err != nil || desc.Digest != img.Root.Digest {
			t.Fatalf("Copy = %v, %v", desc, err)
		}
		if d, err := c.Digest(ctx, dst.Host+"/team/bydigest@"+img.Root.Digest.String()); err != nil || d != img.Root.Digest {
			t.Fatalf("by digest: %s, %v", d, err)
		}
		if tags, _ := dst.Client().Tags(ctx, "team/bydigest"); len(tags) != 0 {
			t.Errorf("tags %v, want none", tags)
		}
	})
	t.Run("a rerun costs nothing but the check", func(t *testing.T) {
		events = nil
		if _, err := c.Copy(ctx, src.Host+"/vendor/app:1.0", dst.Host+"/team/app:1.0"); err != nil {
			t.Fatal(err)
		}
		events = nil
		if _, err := c.Copy(ctx, src.Host+"/vendor/app:1.0", dst.Host+"/team/app:1.0"); err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(events, func(e Event) bool { return e.Kind == ImagePresent }) ||
			slices.ContainsFunc(events, func(e Event) bool { return e.Kind == BlobCopied || e.Kind == ManifestPushed }) {
			t.Errorf("rerun events %v, want image-present and nothing copied", events)
		}
	})
	t.Run("a digest in dst must be the root's", func(t *testing.T) {
		_, err := c.Copy(ctx, src.Host+"/vendor/app:1.0", dst.Host+"/team/app@"+other.Root.Digest.String())
		if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), src.Host+"/vendor/app:1.0") {
			t.Fatalf("Copy = %v, want a digest mismatch naming the source", err)
		}
	})
	t.Run("bad references are the caller's", func(t *testing.T) {
		// (None of them may parse: a host that parses would be looked up.)
		for _, ref := range []string{"127.0.0.1:1/UPPER:1", "app:bad tag", "app@sha256:123"} {
			if _, err := c.Copy(ctx, ref, dst.Host+"/x"); !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), ref) {
				t.Errorf("Copy(%q) = %v, want ErrInvalidInput naming it", ref, err)
			}
			if _, err := c.Digest(ctx, ref); !errors.Is(err, ErrInvalidInput) {
				t.Errorf("Digest(%q) = %v, want ErrInvalidInput", ref, err)
			}
		}
	})
	t.Run("missing source", func(t *testing.T) {
		_, err := c.Copy(ctx, src.Host+"/vendor/nothing:1", dst.Host+"/team/x:1")
		var re *RegistryError
		if !errors.Is(err, ErrNotFound) || !errors.Is(err, ErrSource) || !errors.As(err, &re) || re.Host != src.Host {
			t.Fatalf("Copy = %v, want a source ErrNotFound from %s", err, src.Host)
		}
	})
}

func TestNewLayoutRefusesANonEmptyDirectory(t *testing.T) {
	t.Parallel()
	c := newTestClient(t, ClientOptions{})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewLayout(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("NewLayout of a non-empty directory = %v, want an error naming it", err)
	}
	if _, err := c.ReadLayout(t.TempDir()); !errors.Is(err, layout.ErrInvalidLayout) {
		t.Fatalf("ReadLayout of an empty directory = %v, want ErrInvalidLayout", err)
	}
}

// TestLayoutFindForms: as written, normalised, or a tag alone when only
// one image has it; a tag two images share is an error naming both.
func TestLayoutFindForms(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := registrytest.StartMemory(false)
	defer reg.Close()
	a, _ := reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "library/a", Tag: "1.0", Seed: 1})
	reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/b", Tag: "1.0", Seed: 2})
	c := newTestClient(t, ClientOptions{})
	l, err := c.NewLayout(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{reg.Host + "/library/a:1.0", reg.Host + "/vendor/b:1.0"} {
		if _, err := l.Add(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := l.Find(reg.Host + "/library/a:1.0"); err != nil || d.Digest != a.Root.Digest {
		t.Errorf("Find as written = %v, %v", d, err)
	}
	_, err = l.Find("1.0")
	if !errors.Is(err, layout.ErrAmbiguous) || !strings.Contains(err.Error(), "library/a:1.0") || !strings.Contains(err.Error(), "vendor/b:1.0") {
		t.Errorf("Find(1.0) = %v, want ErrAmbiguous naming both", err)
	}
	if _, err := l.Find("2.0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Find(2.0) = %v, want ErrNotFound", err)
	}
}

// TestCallEvents: a call's OnEvent replaces the client's for that call
// only; calls without one (Export here) report to the client's.
func TestCallEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, dst := registrytest.StartMemory(false), registrytest.StartMemory(false)
	defer src.Close()
	defer dst.Close()
	img, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1", Layers: []int{512}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]byte(`{"invocationImages": [{"image": "` + img.Ref(src.Host) + `"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	m, err := relocator.New(relocator.OneToOne, dst.Host+"/team")
	if err != nil {
		t.Fatal(err)
	}
	var client, call []EventKind
	c := newTestClient(t, ClientOptions{OnEvent: func(e Event) { client = append(client, e.Kind) }})
	if _, err := c.Relocate(ctx, b, RelocateCall{Mapping: m, OnEvent: func(e Event) { call = append(call, e.Kind) }}); err != nil {
		t.Fatal(err)
	}
	if len(client) != 0 || !slices.Contains(call, ImageDone) {
		t.Errorf("Relocate with its own sink: the client's heard %v, the call's %v; want none, and image-done", client, call)
	}
	res, err := c.Export(ctx, b, ExportCall{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if !slices.Contains(client, ImageDone) {
		t.Errorf("Export without a sink: the client's heard %v, want image-done", client)
	}
}

// onlySource is a caller's own Source: a layout behind the four methods of
// Source alone.
type onlySource struct{ s Source }

func (o onlySource) Resolve(ctx context.Context, img Image, want digest.Digest) (ocispec.Descriptor, error) {
	return o.s.Resolve(ctx, img, want)
}
func (o onlySource) Fetcher(ctx context.Context, img Image) (Fetcher, error) {
	return o.s.Fetcher(ctx, img)
}
func (o onlySource) Location(img Image) (string, string) { return o.s.Location(img) }
func (o onlySource) Name(img Image) string               { return "mine: " + o.s.Name(img) }

// withReferrers is a caller's own Source that lists referrers too.
type withReferrers struct {
	onlySource
	ReferrerSource
}

// TestCallerSource: a caller's own Source is read like any other; its
// referrers travel when it is a ReferrerSource, and otherwise the result
// says nobody looked.
func TestCallerSource(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, dst := registrytest.StartMemory(true), registrytest.StartMemory(true)
	defer src.Close()
	defer dst.Close()
	img, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0", Layers: []int{700}})
	if err != nil {
		t.Fatal(err)
	}
	sbom, err := src.Client().PushArtifact(ctx, "vendor/app", registrytest.ArtifactSpec{ArtifactType: sbomArtifact, Subject: &img.Root, Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, ClientOptions{})
	l, err := c.NewLayout(filepath.Join(t.TempDir(), "layout"))
	if err != nil {
		t.Fatal(err)
	}
	ref := src.Host + "/vendor/app:1.0"
	if _, err := l.Add(ctx, ref); err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]byte(`{"invocationImages": [{"image": "` + ref + `"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	layoutSrc := LayoutSource{Store: l.store, Path: "layout"}
	for _, tc := range []struct {
		name     string
		src      Source
		searched bool
	}{
		{"a Source", onlySource{layoutSrc}, false},
		{"a Source and ReferrerSource", withReferrers{onlySource{layoutSrc}, layoutSrc}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := relocator.New(relocator.OneToOne, dst.Host+"/"+strings.ToLower(strings.ReplaceAll(tc.name, " ", "-")))
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.Relocate(ctx, b, RelocateCall{Mapping: m, Source: tc.src})
			if err != nil {
				t.Fatal(err)
			}
			r := res.Images[0]
			if r.Digest != img.Root.Digest || r.ReferrersSearched != tc.searched {
				t.Fatalf("relocated %s (searched: %v), want %s (searched: %v)", r.Digest, r.ReferrersSearched, img.Root.Digest, tc.searched)
			}
			if got := len(r.Referrers) == 1 && r.Referrers[0].Digest == sbom.Digest; got != tc.searched {
				t.Errorf("referrers copied %v, want the SBOM %v", r.Referrers, tc.searched)
			}
		})
	}
}
