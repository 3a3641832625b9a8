package fixup

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

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
