package e2e

import (
	"archive/tar"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// platformImages are the images of the --platform tests, in a source
// registry: an OCI index (linux/amd64, linux/arm64/v8, linux/s390x), a
// Docker manifest list (linux/amd64, linux/arm/v7) and a single-platform
// linux/s390x image, which travels whole whatever --platform says.
type platformImages struct {
	index, list, solo registrytest.Image
	bundle            string // bundle.json naming the three
}

func pushPlatformImages(t *testing.T, src *registrytest.Registry) platformImages {
	t.Helper()
	ctx := context.Background()
	c := src.Client()
	var p platformImages
	var err error
	if p.index, err = c.PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0", OCI: true, Seed: 1, Layers: []int{32 << 10},
		Platforms: []string{"linux/amd64", "linux/arm64/v8", "linux/s390x"}}); err != nil {
		t.Fatal(err)
	}
	if p.list, err = c.PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/db", Tag: "2.0", Seed: 2, Layers: []int{16 << 10},
		Platforms: []string{"linux/amd64", "linux/arm/v7"}}); err != nil {
		t.Fatal(err)
	}
	if p.solo, err = c.PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/tool", Tag: "3.0", Seed: 3, Layers: []int{8 << 10},
		Platforms: []string{"linux/s390x"}}); err != nil {
		t.Fatal(err)
	}
	p.bundle = filepath.Join(t.TempDir(), "bundle.json")
	writeJSON(t, p.bundle, map[string]any{
		"schemaVersion": "v1.2.0", "name": "platforms", "version": "1.0.0",
		"invocationImages": []any{map[string]any{"image": p.index.Ref(src.Host), "imageType": "oci", "contentDigest": p.index.Root.Digest.String(), "size": p.index.Root.Size}},
		"images": map[string]any{
			"db":   map[string]any{"image": p.list.Ref(src.Host), "imageType": "docker"},
			"tool": map[string]any{"image": p.solo.Ref(src.Host), "imageType": "docker"},
		},
	})
	return p
}

// blobsOf returns the config and layers of manifest m of img at src.
func blobsOf(t *testing.T, src *registrytest.Registry, img registrytest.Image, m ocispec.Descriptor) []digest.Digest {
	t.Helper()
	data, _, err := src.Client().GetManifest(context.Background(), img.Repo, m.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(data, &man); err != nil {
		t.Fatal(err)
	}
	out := []digest.Digest{man.Config.Digest}
	for _, l := range man.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// fixupPlatform relocates the bundle with the prefix mapping (target
// repositories team/vendor/...) and the extra flags, JSON report on stdout.
func fixupPlatform(t *testing.T, p platformImages, dst *registrytest.Registry, out string, extra ...string) result {
	args := append([]string{"fixup", p.bundle, "--mapping", "prefix", "--repository-prefix", dst.Host + "/team",
		"--relocation-mapping", filepath.Join(out, "map.json"), "--output-bundle", filepath.Join(out, "bundle.json"), "-o", "json"}, extra...)
	return cli(t, nil, args...)
}

// TestPlatformSparseKept: into distribution v3 configured for sparse
// indexes, --platform linux/arm64 --platform linux/arm/v7 copies the
// arm64/v8 manifest of the OCI index (linux/arm64 matches linux/arm64/v8,
// as containerd matches it) and the arm/v7 one of the Docker manifest list,
// with their blobs, and not the others; each index is pushed as it is, so
// its tag, the mapping and the bundle's contentDigest keep their digests;
// the single-platform s390x image travels whole; the report says which
// platforms went and which stayed.
func TestPlatformSparseKept(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{Impl: registrytest.Distribution3, SparseIndexes: true})
	p := pushPlatformImages(t, src)
	out := t.TempDir()
	r := fixupPlatform(t, p, dst, out, "--platform", "linux/arm64", "--platform", "linux/arm/v7")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0", r.code)
	}
	ctx := context.Background()
	dc := dst.Client()
	for _, tc := range []struct {
		img  registrytest.Image
		keep []int // positions of the manifests that travel
	}{
		{p.index, []int{1}},
		{p.list, []int{1}},
		{p.solo, []int{0}},
	} {
		repo := "team/" + tc.img.Repo
		got, err := dc.HeadManifest(ctx, repo, tc.img.Tag)
		if err != nil {
			t.Fatalf("%s:%s in the target: %v", repo, tc.img.Tag, err)
		}
		if got.Digest != tc.img.Root.Digest {
			t.Errorf("%s:%s is %s in the target, want the source's %s (the index byte for byte)", repo, tc.img.Tag, got.Digest, tc.img.Root.Digest)
		}
		for i, m := range tc.img.Manifests {
			want := slices.Contains(tc.keep, i)
			_, err := dc.HeadManifest(ctx, repo, m.Digest.String())
			if have := err == nil; have != want {
				t.Errorf("%s: manifest %d (%v) in the target: %v, want %v (err %v)", repo, i, m.Platform, have, want, err)
			}
			for _, b := range blobsOf(t, src, tc.img, m) {
				have, err := dc.BlobExists(ctx, repo, b)
				if err != nil {
					t.Fatal(err)
				}
				if have != want {
					t.Errorf("%s: blob %s of manifest %d (%v) in the target: %v, want %v", repo, b, i, m.Platform, have, want)
				}
			}
		}
	}
	var rep struct {
		Images []struct {
			Source, Digest           string
			Platforms, PlatformsLeft []string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("report: %v", err)
	}
	want := map[string][2][]string{
		p.index.Ref(src.Host): {{"linux/arm64/v8"}, {"linux/amd64", "linux/s390x"}},
		p.list.Ref(src.Host):  {{"linux/arm/v7"}, {"linux/amd64"}},
		p.solo.Ref(src.Host):  {nil, nil},
	}
	for _, i := range rep.Images {
		w := want[i.Source]
		if !slices.Equal(i.Platforms, w[0]) || !slices.Equal(i.PlatformsLeft, w[1]) {
			t.Errorf("report for %s: platforms %v, left %v; want %v, %v", i.Source, i.Platforms, i.PlatformsLeft, w[0], w[1])
		}
	}
	var mapping map[string]string
	readJSON(t, filepath.Join(out, "map.json"), &mapping)
	if got, want := mapping[p.index.Ref(src.Host)], dst.Host+"/team/vendor/app:1.0"; got != want {
		t.Errorf("mapping: %q, want %q", got, want)
	}
	var b struct {
		InvocationImages []struct{ Image, ContentDigest string }
		Images           map[string]struct{ Image, ContentDigest string }
	}
	readJSON(t, filepath.Join(out, "bundle.json"), &b)
	if got := b.InvocationImages[0].ContentDigest; got != p.index.Root.Digest.String() {
		t.Errorf("rewritten bundle's contentDigest %s, want the index's %s", got, p.index.Root.Digest)
	}
	if got := b.Images["db"].ContentDigest; got != p.list.Root.Digest.String() {
		t.Errorf("rewritten bundle's db contentDigest %s, want the list's %s", got, p.list.Root.Digest)
	}

	// A rerun finds everything in place.
	r = fixupPlatform(t, p, dst, t.TempDir(), "--platform", "linux/arm64,linux/arm/v7")
	if r.code != 0 || !strings.Contains(r.stdout, `"present": true`) {
		t.Errorf("rerun: exit %d, want 0 with every image present", r.code)
	}

	// A second hop from there reads each index as it is there: without
	// --platform the absent manifests are a clear error; with it the same
	// digests go on.
	next := registrytest.Start(t, registrytest.Options{Impl: registrytest.Distribution3, SparseIndexes: true})
	hop := t.TempDir()
	hop2 := func(extra ...string) result {
		return cli(t, nil, append([]string{"fixup", p.bundle, "--source-relocation-mapping", filepath.Join(out, "map.json"), "--mapping", "prefix",
			"--repository-prefix", next.Host + "/air", "--relocation-mapping", filepath.Join(hop, "map.json")}, extra...)...)
	}
	if r := hop2(); r.code != 1 || !strings.Contains(r.stderr, "sparse") || !strings.Contains(r.stderr, p.index.Ref(src.Host)) {
		t.Errorf("second hop without --platform: exit %d, want 1 naming the image and saying its index is sparse", r.code)
	}
	if r := hop2("--platform", "linux/arm64,linux/arm/v7"); r.code != 0 {
		t.Errorf("second hop with --platform: exit %d, want 0", r.code)
	}
	if got, err := next.Client().HeadManifest(ctx, "air/"+p.index.Repo, p.index.Tag); err != nil || got.Digest != p.index.Root.Digest {
		t.Errorf("second hop: %v (%v), want the source's index %s", got.Digest, err, p.index.Root.Digest)
	}

	// Signatures added since: --refresh-referrers copies that of the
	// manifest that travelled, not that of one left at the source.
	sig := func(m ocispec.Descriptor) string {
		tag := "sha256-" + m.Digest.Encoded() + ".sig"
		if _, err := src.Client().PushArtifact(ctx, p.index.Repo, registrytest.ArtifactSpec{Payload: []byte("signature of " + m.Digest.String()), Tag: tag}); err != nil {
			t.Fatal(err)
		}
		return tag
	}
	kept, left := sig(p.index.Manifests[1]), sig(p.index.Manifests[2])
	r = fixupPlatform(t, p, dst, t.TempDir(), "--platform", "linux/arm64,linux/arm/v7", "--refresh-referrers")
	if r.code != 0 {
		t.Errorf("--refresh-referrers: exit %d, want 0", r.code)
	}
	if _, err := dc.HeadManifest(ctx, "team/"+p.index.Repo, kept); err != nil {
		t.Errorf("the signature of the arm64 manifest is not in the target: %v", err)
	}
	if _, err := dc.HeadManifest(ctx, "team/"+p.index.Repo, left); err == nil {
		t.Error("the signature of the s390x manifest, left at the source, was copied")
	}
}

// TestPlatformSparseRefused: distribution 2.8 refuses a sparse index, and
// so does go-containerregistry's registry ("Sub-manifest not found"):
// exit 1 naming the image and the registry and the way out, no tag pushed
// for the index, nothing written. Without --platform both take the images.
func TestPlatformSparseRefused(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	p := pushPlatformImages(t, src)
	for _, impl := range []registrytest.Impl{registrytest.Distribution28, registrytest.GGCR} {
		t.Run(impl.String(), func(t *testing.T) {
			dst := registrytest.Start(t, registrytest.Options{Impl: impl})
			out := t.TempDir()
			r := fixupPlatform(t, p, dst, out, "--platform", "linux/amd64")
			if r.code != 1 {
				t.Fatalf("exit %d, want 1", r.code)
			}
			for _, want := range []string{p.index.Ref(src.Host), dst.Host, "sparse index", "--platform-index rewrite", "linux/arm64/v8, linux/s390x"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("the error does not say %q", want)
				}
			}
			if got := dirEntries(t, out); len(got) != 0 {
				t.Errorf("written after the failure: %v", got)
			}
			ctx := context.Background()
			for _, img := range []registrytest.Image{p.index, p.list} {
				if _, err := dst.Client().HeadManifest(ctx, "team/"+img.Repo, img.Tag); err == nil {
					t.Errorf("team/%s:%s is in the target: a refused index is under its tag", img.Repo, img.Tag)
				}
			}
			// The image without an index is not the problem.
			if _, err := dst.Client().HeadManifest(ctx, "team/"+p.solo.Repo, p.solo.Tag); err != nil {
				t.Errorf("the single-platform image is not in the target: %v", err)
			}
		})
	}
}

// TestPlatformNoMatch: an index without a manifest for the platforms asked
// for fails its image, exit 1, naming it and the platforms it has; a bad
// --platform is a usage error, exit 2.
func TestPlatformNoMatch(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{Impl: registrytest.Distribution3, SparseIndexes: true})
	p := pushPlatformImages(t, src)
	out := t.TempDir()
	r := fixupPlatform(t, p, dst, out, "--platform", "linux/arm64")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (the manifest list has no linux/arm64)", r.code)
	}
	for _, want := range []string{p.list.Ref(src.Host), "no manifest for linux/arm64", "it has linux/amd64, linux/arm/v7"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the error does not say %q", want)
		}
	}
	if got := dirEntries(t, out); len(got) != 0 {
		t.Errorf("written after the failure: %v", got)
	}
	r = cli(t, nil, "fixup", p.bundle, "--repository-prefix", dst.Host+"/team", "--dry-run", "--platform", "linux/amd64")
	if r.code != 0 || strings.Count(r.stdout, "platforms: linux/amd64 go, every other stays") != 3 {
		t.Errorf("--dry-run --platform: exit %d, want 0 and the selection under each of the 3 images", r.code)
	}
	r = fixupPlatform(t, p, dst, out, "--platform", "arm64")
	if r.code != 2 || !strings.Contains(r.stderr, `--platform "arm64"`) {
		t.Errorf("--platform arm64: exit %d, want 2 naming it", r.code)
	}
}

// TestPlatformExport: export --platform writes only the matching content
// into the archive's layout, each index as it is (a sparse index), and
// bundle.json byte for byte.
func TestPlatformExport(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	p := pushPlatformImages(t, src)
	archive := filepath.Join(t.TempDir(), "app.tgz")
	r := cli(t, nil, "export", p.bundle, "--output", archive, "--platform", "linux/amd64")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	members := archiveMembers(t, archive)
	want, _ := os.ReadFile(p.bundle)
	if string(members["bundle.json"]) != string(want) {
		t.Error("bundle.json in the archive is not the bundle byte for byte")
	}
	for _, tc := range []struct {
		img  registrytest.Image
		keep []int
	}{{p.index, []int{0}}, {p.list, []int{0}}, {p.solo, []int{0}}} {
		if _, ok := members[layoutBlob(tc.img.Root.Digest)]; !ok {
			t.Errorf("%s: the index %s is not in the archive", tc.img.Repo, tc.img.Root.Digest)
		}
		for i, m := range tc.img.Manifests {
			w := slices.Contains(tc.keep, i)
			for _, d := range append([]digest.Digest{m.Digest}, blobsOf(t, src, tc.img, m)...) {
				if _, have := members[layoutBlob(d)]; have != w {
					t.Errorf("%s: %s of manifest %d (%v) in the archive: %v, want %v", tc.img.Repo, d, i, m.Platform, have, w)
				}
			}
		}
	}

	// A dry run of a full archive reads its indexes (from the archive: a
	// dry run contacts no registry) and says per image which platforms go
	// and which stay.
	full := filepath.Join(t.TempDir(), "full.tgz")
	if r := cli(t, nil, "export", p.bundle, "--output", full); r.code != 0 {
		t.Fatalf("export: exit %d", r.code)
	}
	r = cli(t, nil, "fixup", full, "--repository-prefix", "127.0.0.1:1/team", "--dry-run", "--platform", "linux/amd64")
	for _, want := range []string{
		"platforms: linux/amd64 go; linux/arm64/v8, linux/s390x stay",
		"platforms: linux/amd64 go; linux/arm/v7 stay",
		"platforms: a single-platform image: it goes whole",
	} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("dry run of the full archive: exit %d, want 0 saying %q", r.code, want)
		}
	}

	// The sparse archive is relocated as it is, with or without --platform.
	dst := registrytest.Start(t, registrytest.Options{Impl: registrytest.Distribution3, SparseIndexes: true})
	for _, extra := range [][]string{{"--platform", "linux/amd64"}, nil} {
		out := t.TempDir()
		args := append([]string{"fixup", archive, "--mapping", "prefix", "--repository-prefix", dst.Host + "/t" + strings.Join(extra, ""),
			"--relocation-mapping", filepath.Join(out, "map.json")}, extra...)
		if r := cli(t, nil, args...); r.code != 0 {
			t.Errorf("fixup of the sparse archive %v: exit %d, want 0", extra, r.code)
		}
	}
	// Into distribution 2.8 the sparse archive is refused, clearly, and
	// --platform-index rewrite pushes new indexes of what it has.
	old := registrytest.Start(t, registrytest.Options{})
	fixupArchive := func(extra ...string) result {
		return cli(t, nil, append([]string{"fixup", archive, "--mapping", "prefix", "--repository-prefix", old.Host + "/team",
			"--relocation-mapping", filepath.Join(t.TempDir(), "map.json")}, extra...)...)
	}
	if r := fixupArchive(); r.code != 1 || !strings.Contains(r.stderr, "sparse index") || !strings.Contains(r.stderr, "--platform-index rewrite") {
		t.Errorf("sparse archive into 2.8: exit %d, want 1 saying it refuses the sparse index and what to do", r.code)
	}
	if r := fixupArchive("--platform-index", "rewrite"); r.code != 0 {
		t.Errorf("sparse archive into 2.8 with --platform-index rewrite: exit %d, want 0", r.code)
	}
	data, _, err := old.Client().GetManifest(context.Background(), "team/"+p.index.Repo, p.index.Tag)
	var idx ocispec.Index
	if err == nil {
		err = json.Unmarshal(data, &idx)
	}
	if err != nil || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != p.index.Manifests[0].Digest {
		t.Errorf("rewritten index from the archive: %v (%v), want only the linux/amd64 manifest", idx.Manifests, err)
	}
}

func layoutBlob(d digest.Digest) string {
	return "artifacts/layout/blobs/" + d.Algorithm().String() + "/" + d.Encoded()
}

// archiveMembers reads a gzipped tar: member name -> content.
func archiveMembers(t *testing.T, path string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	eachTarEntry(t, path, func(h *tar.Header, r io.Reader) bool {
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(h.Name, "./")] = data
		return true
	})
	return out
}

// TestPlatformRewrite: into distribution 2.8, which refuses sparse
// indexes, --platform-index rewrite pushes new indexes listing exactly
// the manifests copied (the original's descriptors, in order); their
// digests are what the mapping, the rewritten bundle and the report
// record; a signature of a kept manifest travels, one of the original
// index does not and the report says so; verify passes on the rewritten
// bundle; a rerun finds every image in place and writes the same mapping.
func TestPlatformRewrite(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	p := pushPlatformImages(t, src)
	ctx := context.Background()
	sc := src.Client()
	sigOf := func(d digest.Digest, seed string) ocispec.Descriptor {
		s, err := sc.PushArtifact(ctx, p.index.Repo, registrytest.ArtifactSpec{Payload: []byte("signature of " + d.String() + seed), Tag: "sha256-" + d.Encoded() + ".sig"})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	indexSig, childSig := sigOf(p.index.Root.Digest, "index"), sigOf(p.index.Manifests[0].Digest, "amd64")

	out := t.TempDir()
	r := fixupPlatform(t, p, dst, out, "--platform", "linux/amd64", "--platform-index", "rewrite")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0", r.code)
	}
	var rep struct {
		Images []struct {
			Source, Digest, MediaType, RewrittenFrom string
			ReferrersDropped                         []string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("report: %v", err)
	}
	newDigest := map[string]string{}
	for _, i := range rep.Images {
		newDigest[i.Source] = i.Digest
	}
	var b struct {
		InvocationImages []struct {
			Image, ContentDigest string
			Size                 int64
		}
		Images map[string]struct{ Image, ContentDigest string }
	}
	readJSON(t, filepath.Join(out, "bundle.json"), &b)
	var mapping map[string]string
	readJSON(t, filepath.Join(out, "map.json"), &mapping)
	if data, _, err := dst.Client().GetManifest(ctx, "team/"+p.index.Repo, p.index.Tag); err != nil || b.InvocationImages[0].Size != int64(len(data)) {
		t.Errorf("rewritten bundle's size %d, want the new index's %d (%v)", b.InvocationImages[0].Size, len(data), err)
	}
	for _, tc := range []struct {
		img     registrytest.Image
		entry   string
		digest  string // in the rewritten bundle
		rewrite bool
	}{
		{p.index, "app", b.InvocationImages[0].ContentDigest, true},
		{p.list, "db", b.Images["db"].ContentDigest, true},
		{p.solo, "tool", b.Images["tool"].ContentDigest, false},
	} {
		ref := tc.img.Ref(src.Host)
		data, got, err := dst.Client().GetManifest(ctx, "team/"+tc.img.Repo, tc.img.Tag)
		if err != nil {
			t.Fatalf("%s in the target: %v", ref, err)
		}
		if got.Digest.String() != newDigest[ref] || tc.digest != newDigest[ref] {
			t.Errorf("%s: target %s, report %s, bundle %s: want them equal", ref, got.Digest, newDigest[ref], tc.digest)
		}
		if (got.Digest != tc.img.Root.Digest) != tc.rewrite {
			t.Errorf("%s: target digest %s, source %s: rewritten %v, want %v", ref, got.Digest, tc.img.Root.Digest, got.Digest != tc.img.Root.Digest, tc.rewrite)
		}
		if !tc.rewrite {
			continue
		}
		var idx ocispec.Index
		if err := json.Unmarshal(data, &idx); err != nil {
			t.Fatal(err)
		}
		if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != tc.img.Manifests[0].Digest || idx.MediaType != tc.img.Root.MediaType {
			t.Errorf("%s: rewritten index lists %v (%s), want only the linux/amd64 manifest %s (%s)", ref, idx.Manifests, idx.MediaType, tc.img.Manifests[0].Digest, tc.img.Root.MediaType)
		}
		if want := dst.Host + "/team/" + tc.img.Repo + ":" + tc.img.Tag; mapping[ref] != want {
			t.Errorf("mapping %s: %s, want %s", ref, mapping[ref], want)
		}
		for _, i := range rep.Images {
			if i.Source == ref && i.RewrittenFrom != tc.img.Root.Digest.String() {
				t.Errorf("%s: report rewrittenFrom %q, want %s", ref, i.RewrittenFrom, tc.img.Root.Digest)
			}
		}
	}
	if _, err := dst.Client().HeadManifest(ctx, "team/"+p.index.Repo, "sha256-"+p.index.Manifests[0].Digest.Encoded()+".sig"); err != nil {
		t.Errorf("the signature %s of the kept manifest is not in the target: %v", childSig.Digest, err)
	}
	if _, err := dst.Client().HeadManifest(ctx, "team/"+p.index.Repo, "sha256-"+p.index.Root.Digest.Encoded()+".sig"); err == nil {
		t.Errorf("the signature %s of the original index was copied", indexSig.Digest)
	}
	if i := rep.Images[0]; i.Source != p.index.Ref(src.Host) || !slices.Equal(i.ReferrersDropped, []string{indexSig.Digest.String()}) {
		t.Errorf("report for %s: referrersDropped %v, want [%s]", i.Source, i.ReferrersDropped, indexSig.Digest)
	}
	if r := cli(t, nil, "verify", filepath.Join(out, "bundle.json")); r.code != 0 {
		t.Errorf("verify of the rewritten bundle: exit %d", r.code)
	}

	again := t.TempDir()
	r = fixupPlatform(t, p, dst, again, "--platform", "linux/amd64", "--platform-index", "rewrite")
	if r.code != 0 || strings.Count(r.stdout, `"present": true`) != 3 {
		t.Errorf("rerun: exit %d, want 0 with the 3 images present", r.code)
	}
	first, _ := os.ReadFile(filepath.Join(out, "map.json"))
	second, _ := os.ReadFile(filepath.Join(again, "map.json"))
	if string(first) != string(second) {
		t.Errorf("rerun mapping differs:\n%s\n%s", first, second)
	}
	// The plain summary says it too.
	r = cli(t, nil, "fixup", p.bundle, "--mapping", "prefix", "--repository-prefix", dst.Host+"/team", "--relocation-mapping", filepath.Join(t.TempDir(), "map.json"),
		"--platform", "linux/amd64", "--platform-index", "rewrite")
	if want := "rewritten " + p.index.Root.Digest.String() + " -> " + newDigest[p.index.Ref(src.Host)]; r.code != 0 || !strings.Contains(r.stdout, want) {
		t.Errorf("plain output: exit %d, want 0 saying %q", r.code, want)
	}
	if r := cli(t, nil, "export", p.bundle, "--output", filepath.Join(t.TempDir(), "a.tgz"), "--platform-index", "rewrite"); r.code != 2 {
		t.Errorf("export --platform-index: exit %d, want 2 (a fixup flag)", r.code)
	}
}
