package fixup

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestRewriteIndex: the new index lists exactly the kept descriptors, in
// order, each byte for byte (unknown fields, annotations, odd spacing),
// and keeps every other field of the index, as written.
func TestRewriteIndex(t *testing.T) {
	t.Parallel()
	a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
	data := []byte(`{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests" : [
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + a.String() + `","size":10,"platform":{"architecture":"amd64","os":"linux"},"x-unknown":{"k": [1, 2]}},
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + b.String() + `","size":11,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
    {"digest":"` + c.String() + `",  "size":12, "mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"z":"1","a":"2"},"platform":{"os":"linux","architecture":"s390x"}}
  ],
  "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
  "x-extra": true
}
`)
	keep := func(d digest.Digest) bool { return d != b }
	got, err := rewriteIndex(data, keep, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests" : [{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + a.String() + `","size":10,"platform":{"architecture":"amd64","os":"linux"},"x-unknown":{"k": [1, 2]}},{"digest":"` + c.String() + `",  "size":12, "mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"z":"1","a":"2"},"platform":{"os":"linux","architecture":"s390x"}}],
  "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
  "x-extra": true
}
`
	if string(got) != want {
		t.Errorf("rewritten:\n%s\nwant:\n%s", got, want)
	}
	again, _ := rewriteIndex(data, keep, nil)
	if digest.FromBytes(again) != digest.FromBytes(got) {
		t.Error("two rewrites differ")
	}
	// A nested index rewritten below gets its new digest and size.
	nd := ocispec.Descriptor{Digest: digest.FromString("new"), Size: 99}
	got, err = rewriteIndex(data, func(d digest.Digest) bool { return d == a }, map[digest.Digest]ocispec.Descriptor{a: nd})
	if err != nil {
		t.Fatal(err)
	}
	wantNested := `"manifests" : [{"digest":"` + nd.Digest.String() + `","mediaType":"application/vnd.oci.image.manifest.v1+json","platform":{"architecture":"amd64","os":"linux"},"size":99,"x-unknown":{"k":[1,2]}}],`
	if !strings.Contains(string(got), wantNested) {
		t.Errorf("nested:\n%s\nwant it to hold:\n%s", got, wantNested)
	}
	if _, err := rewriteIndex([]byte(`{"schemaVersion":2}`), keep, nil); err == nil {
		t.Error("an index without manifests: no error")
	}
}
