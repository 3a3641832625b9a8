package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/relocator"
)

const mib = 1 << 20

// scenario is the bundle the benchmark relocates: its images, seeded in the
// source registry, and the bundle.json that names them through the source
// proxy.
type scenario struct {
	images []registrytest.Image
	refs   []string // as written in the bundle: proxyHost/repo:tag
	// uniqueBytes is the size of every distinct blob (layers and configs)
	// of the bundle: what a copy into an empty registry must upload at
	// least. perImageBytes counts a blob once per image that uses it:
	// what a tool without cross-repository mounts uploads.
	uniqueBytes, perImageBytes int64
	uniqueBlobs                int // distinct blobs
	blobPlacements             int // (blob, image) pairs: blobs a one-to-one copy places
	manifests                  int // manifests and indexes of all images
	platforms                  int
	bundlePath                 string
}

// layout decides the image specs: one shared base layer in every image
// (sharedMiB/(n-1) MiB, so the images together count sharedMiB more than the
// unique bytes), the rest of uniqueMiB spread over the images' platforms with
// varying weights, three layers per platform (60/30/10 %).
func layout(n, uniqueMiB, sharedMiB, multiarch int) ([]registrytest.ImageSpec, error) {
	if n < 1 {
		return nil, fmt.Errorf("-images %d: want at least 1", n)
	}
	if multiarch < 0 || multiarch > n {
		return nil, fmt.Errorf("-multiarch %d: want 0 to -images (%d)", multiarch, n)
	}
	var base []byte
	if n > 1 && sharedMiB > 0 {
		base = registrytest.RandomBytes(424242, sharedMiB*mib/(n-1))
	}
	own := int64(uniqueMiB)*mib - int64(len(base))
	if own < int64(n+multiarch)*3*1024 {
		return nil, fmt.Errorf("-unique-mib %d is too small for %d images with a shared layer of %.1f MiB (-shared-mib %d spread over %d images): raise -unique-mib or lower -shared-mib",
			uniqueMiB, n, float64(len(base))/mib, sharedMiB, n-1)
	}
	// Image 0 is the invocation image; images 1..multiarch are multi-arch.
	weight := func(i int) int64 { return int64(1 + i%3) }
	multi := func(i int) bool { return i >= 1 && i <= multiarch || multiarch == n && i == 0 }
	var slots int64
	for i := range n {
		p := int64(1)
		if multi(i) {
			p = 2
		}
		slots += p * weight(i)
	}
	var specs []registrytest.ImageSpec
	var used int64
	for i := range n {
		s := registrytest.ImageSpec{
			Repo: fmt.Sprintf("vendor/app-%02d", i),
			Tag:  "1.0",
			Seed: int64(1000 + i),
		}
		if base != nil {
			s.SharedLayers = [][]byte{base}
		}
		if multi(i) {
			s.Platforms = []string{"linux/amd64", "linux/arm64"}
			s.OCI = i%2 == 1 // OCI indexes and Docker manifest lists both
		}
		per := own * weight(i) / slots // bytes of each of its platforms
		if i == n-1 {
			per = (own - used) / int64(max(len(s.Platforms), 1))
		}
		used += per * int64(max(len(s.Platforms), 1))
		a, b := per*6/10, per*3/10
		s.Layers = []int{int(a), int(b), int(per - a - b)}
		specs = append(specs, s)
	}
	return specs, nil
}

// seed pushes the specs into reg (directly, not through a proxy) and
// writes the bundle, whose references go through srcHost (the proxy).
func seed(ctx context.Context, reg *registrytest.Registry, srcHost string, specs []registrytest.ImageSpec, dir string) (*scenario, error) {
	c := reg.Client()
	imgs := make([]registrytest.Image, len(specs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	// The shared layer is pushed by the first image alone, before the
	// others, so that they do not race uploading it.
	var first sync.Once
	var firstErr error
	for i, s := range specs {
		g.Go(func() error {
			first.Do(func() { imgs[0], firstErr = c.PushImage(gctx, specs[0]) })
			if firstErr != nil {
				return firstErr
			}
			if i == 0 {
				return nil
			}
			img, err := c.PushImage(gctx, s)
			imgs[i] = img
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("seeding the source registry: %w", err)
	}

	sc := &scenario{images: imgs, bundlePath: filepath.Join(dir, "bundle.json")}
	seen := map[digest.Digest]bool{}
	for _, img := range imgs {
		sc.platforms += len(img.Manifests)
		sc.manifests += len(img.Manifests)
		if len(img.Manifests) > 1 {
			sc.manifests++
		}
		for _, b := range img.Blobs {
			sc.perImageBytes += b.Size
			sc.blobPlacements++
			if !seen[b.Digest] {
				seen[b.Digest] = true
				sc.uniqueBytes += b.Size
				sc.uniqueBlobs++
			}
		}
		sc.refs = append(sc.refs, img.Ref(srcHost))
	}
	if err := writeBundle(sc.bundlePath, "bench", sc.refs, imgs); err != nil {
		return nil, err
	}
	return sc, nil
}

// writeBundle writes a bundle.json: the first image is the invocation
// image, the others are entries of "images"; every one records its
// contentDigest, as a bundle made by cnab-to-oci does.
func writeBundle(path, name string, refs []string, imgs []registrytest.Image) error {
	entry := func(i int) map[string]any {
		t := "docker"
		if imgs[i].Root.MediaType == "application/vnd.oci.image.index.v1+json" || imgs[i].Root.MediaType == "application/vnd.oci.image.manifest.v1+json" {
			t = "oci"
		}
		return map[string]any{"imageType": t, "image": refs[i], "contentDigest": imgs[i].Root.Digest.String(), "size": imgs[i].Root.Size, "mediaType": imgs[i].Root.MediaType}
	}
	images := map[string]any{}
	for i := 1; i < len(refs); i++ {
		images[fmt.Sprintf("app-%02d", i)] = entry(i)
	}
	doc := map[string]any{
		"schemaVersion":    "v1.0.0",
		"name":             name,
		"version":          "1.0.0",
		"invocationImages": []any{entry(0)},
		"images":           images,
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// targets returns the one-to-one target of each reference under prefix, as
// cnab-relocate names them (tag kept).
func targets(prefix string, refs []string) ([]string, error) {
	m, err := relocator.New(relocator.OneToOne, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(refs))
	for i, r := range refs {
		n, err := reference.ParseNormalizedNamed(r)
		if err != nil {
			return nil, err
		}
		t, err := m.Map(n, "")
		if err != nil {
			return nil, err
		}
		out[i] = t.String()
	}
	return out, nil
}
