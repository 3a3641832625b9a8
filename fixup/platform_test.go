package fixup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/relocator"
	"github.com/cnabio/cnab-relocate/resolver"

	"github.com/containerd/containerd/images"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestPlatformFilter(t *testing.T) {
	t.Parallel()
	child := func(name, os, arch, variant string) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(name), Size: 100,
			Platform: &ocispec.Platform{OS: os, Architecture: arch, Variant: variant}}
	}
	amd, arm, s390 := child("amd64", "linux", "amd64", ""), child("arm64", "linux", "arm64", "v8"), child("s390x", "linux", "s390x", "")
	att := func(of ocispec.Descriptor) ocispec.Descriptor {
		d := child("att "+of.Digest.String(), "unknown", "unknown", "")
		d.Annotations = map[string]string{annotationReferenceType: attestationManifest, annotationReferenceDigest: of.Digest.String()}
		return d
	}
	artifact := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("artifact"), Size: 10}
	for _, tc := range []struct {
		name      string
		mediaType string
		children  []ocispec.Descriptor
		want      []ocispec.Platform
		kept      []ocispec.Descriptor
		left      []string
		err       string
	}{
		{"arm64 matches arm64/v8", ocispec.MediaTypeImageIndex, []ocispec.Descriptor{amd, arm, s390}, []ocispec.Platform{{OS: "linux", Architecture: "arm64"}}, []ocispec.Descriptor{arm}, []string{"linux/amd64", "linux/s390x"}, ""},
		{"docker list, two asked", images.MediaTypeDockerSchema2ManifestList, []ocispec.Descriptor{amd, arm, s390}, []ocispec.Platform{{OS: "linux", Architecture: "s390x"}, {OS: "linux", Architecture: "amd64"}}, []ocispec.Descriptor{amd, s390}, []string{"linux/arm64/v8"}, ""},
		{"attestations follow their manifest, artifacts stay in", ocispec.MediaTypeImageIndex, []ocispec.Descriptor{amd, att(amd), arm, att(arm), artifact}, []ocispec.Platform{{OS: "linux", Architecture: "amd64"}}, []ocispec.Descriptor{amd, att(amd), artifact}, []string{"linux/arm64/v8"}, ""},
		{"all match: whole", ocispec.MediaTypeImageIndex, []ocispec.Descriptor{amd}, []ocispec.Platform{{OS: "linux", Architecture: "amd64"}}, []ocispec.Descriptor{amd}, nil, ""},
		{"none matches", ocispec.MediaTypeImageIndex, []ocispec.Descriptor{amd, arm, att(arm)}, []ocispec.Platform{{OS: "linux", Architecture: "ppc64le"}}, nil, nil, "no manifest for linux/ppc64le; it has linux/amd64, linux/arm64/v8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, _ := json.Marshal(ocispec.Index{MediaType: tc.mediaType, Manifests: tc.children})
			idx := ocispec.Descriptor{MediaType: tc.mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
			f := newPlatformFilter(tc.want)
			got, err := f.wrap(successors)(idx, data)
			if tc.err != "" {
				if !errors.Is(err, ErrNoPlatform) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want ErrNoPlatform saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tc.kept, func(a, b ocispec.Descriptor) bool { return a.Digest == b.Digest }) {
				t.Errorf("kept %v, want %v", got, tc.kept)
			}
			if _, left := f.result(); !slices.Equal(left, tc.left) {
				t.Errorf("left %v, want %v", left, tc.left)
			}
			if got, want := f.missing(idx.Digest), len(tc.children)-len(tc.kept); got != want {
				t.Errorf("missing %d, want %d", got, want)
			}
		})
	}
	// A manifest travels whole whatever its platform.
	m, _ := json.Marshal(ocispec.Manifest{Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromString("c"), Size: 1}})
	got, err := newPlatformFilter([]ocispec.Platform{{OS: "linux", Architecture: "amd64"}}).wrap(successors)(ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m)}, m)
	if err != nil || len(got) != 1 {
		t.Errorf("a manifest: %v, %v; want its config", got, err)
	}
}

// TestSparseRefusalNamesEachImage: once a target registry refused one
// sparse index, an image planned after it is failed before any push, and
// its error names its own platforms left behind, not only the refused
// image's (go-containerregistry's registry refuses sparse indexes).
func TestSparseRefusalNamesEachImage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, dst := newTestRegistry(t), newTestRegistry(t)
	var imgs []registrytest.Image
	for i, plat := range []string{"linux/arm64", "linux/s390x"} {
		img, err := src.direct.PushImage(ctx, registrytest.ImageSpec{Repo: fmt.Sprintf("vendor/img%d", i), Tag: "1",
			Layers: []int{100}, Seed: int64(i), OCI: true, Platforms: []string{"linux/amd64", plat}})
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	// The second image is read only once the first has failed.
	firstFailed := make(chan struct{})
	src.setFault(func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
		if strings.Contains(r.URL.Path, "/vendor/img1/") {
			select {
			case <-firstFailed:
			case <-time.After(10 * time.Second):
			}
		}
		return false
	})
	var once sync.Once
	onEvent := func(ev Event) {
		if ev.Kind == ImageFailed && strings.Contains(ev.Image, "vendor/img0") {
			once.Do(func() { close(firstFailed) })
		}
	}
	doc, _ := json.Marshal(map[string]any{"name": "sparse", "version": "1.0.0", "invocationImages": []any{
		map[string]any{"image": imgs[0].Ref(src.Host)}, map[string]any{"image": imgs[1].Ref(src.Host)}}})
	b, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	m, err := relocator.New(relocator.OneToOne, dst.Host+"/team")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Relocate(ctx, b, Options{Mapping: m, ClientOptions: ClientOptions{
		ResolverOptions: resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"},
		Platforms:       []ocispec.Platform{{OS: "linux", Architecture: "amd64"}}, OnEvent: onEvent}})
	if !errors.Is(err, ErrSparseIndex) || res == nil || len(res.Images) != 2 {
		t.Fatalf("got %v, want ErrSparseIndex for both images", err)
	}
	first, second := res.Images[0].Err, res.Images[1].Err
	if first == nil || second == nil {
		t.Fatalf("errors %v and %v, want both images failed", first, second)
	}
	if !strings.Contains(first.Error(), "refuses the sparse index") || !strings.Contains(first.Error(), "linux/arm64") {
		t.Errorf("the first image's error does not name its refusal and platform: %v", first)
	}
	for _, want := range []string{"not tried", imgs[1].Root.Digest.String(), "linux/s390x", "refuses the sparse index"} {
		if !strings.Contains(second.Error(), want) {
			t.Errorf("the second image's error does not say %q: %v", want, second)
		}
	}
	for _, bl := range imgs[1].Blobs {
		if dst.hasBlob(bl.Digest) {
			t.Errorf("blob %s of the second image was pushed: it was not failed before its content moved", bl.Digest)
		}
	}
	repo := targetRepoOf(t, res, seededImage{repo: "vendor/img1", tag: "1"})
	if _, ok := dst.manifest(repo, imgs[1].Root.Digest.String()); ok {
		t.Errorf("the second image's index is in the target (%s)", repo)
	}
}
