package registrytest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ImageSpec describes an image for PushImage.
type ImageSpec struct {
	// Repo is the repository, "team/app" say.
	Repo string
	// Tag is pushed on the root (index or manifest); "" pushes the root by digest only.
	Tag string
	// Layers are the sizes of the image's own layers, whose content is RandomBytes derived from
	// Seed, the platform's position and the layer's position: the same spec gives the same digests.
	Layers []int
	// SharedLayers are exact layer contents put before the random ones in every platform's
	// manifest, to make images share blobs.
	SharedLayers [][]byte
	// Seed makes the random layers, and the config, of different specs differ.
	Seed int64
	// OCI selects OCI media types; default Docker schema 2.
	OCI bool
	// Platforms are "os/arch" or "os/arch/variant". With more than one, the root is an OCI index
	// (OCI) or a Docker manifest list whose manifests are pushed first, by digest, to Repo.
	// Default {"linux/amd64"}.
	Platforms []string
}

// Image is what PushImage pushed.
type Image struct {
	Repo, Tag string
	// Root is the index, manifest list or (single platform) manifest.
	Root ocispec.Descriptor
	// Manifests are the image manifests, in platform order, with their platform; for a
	// single-platform image, the root itself.
	Manifests []ocispec.Descriptor
	// Blobs are the configs and layers, without duplicates, in push order.
	Blobs []ocispec.Descriptor
}

// Ref returns the image's reference on host: host/repo:tag, or host/repo@digest without a tag.
func (i Image) Ref(host string) string {
	if i.Tag != "" {
		return host + "/" + i.Repo + ":" + i.Tag
	}
	return host + "/" + i.Repo + "@" + i.Root.Digest.String()
}

// DigestRef returns host/repo@digest of the root.
func (i Image) DigestRef(host string) string {
	return host + "/" + i.Repo + "@" + i.Root.Digest.String()
}

// RandomBytes returns n pseudo-random bytes, the same for the same seed (ChaCha8).
func RandomBytes(seed int64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], uint64(seed))
	copy(s[8:], "registrytest.RandomBytes")
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// layerSeed derives the seed of a spec's layer from its seed and positions.
func layerSeed(seed int64, platform, layer int) int64 {
	h := sha256.Sum256([]byte(fmt.Sprintf("registrytest layer %d %d %d", seed, platform, layer)))
	return int64(binary.LittleEndian.Uint64(h[:8]))
}

// PushImage builds the image spec describes and pushes it: blobs first, then the manifests,
// then the index or manifest list, the root last, under spec.Tag if set. Configs carry a fixed
// creation time and one history entry per layer, like real images (so distribution can convert
// them to schema 1 when a client asks without Accept).
func (c *Client) PushImage(ctx context.Context, spec ImageSpec) (Image, error) {
	if spec.Repo == "" {
		return Image{}, fmt.Errorf("pushing image: empty ImageSpec.Repo")
	}
	platforms := spec.Platforms
	if len(platforms) == 0 {
		platforms = []string{"linux/amd64"}
	}
	manifestType, indexType, configType, layerType := MediaTypeDockerManifest, MediaTypeDockerManifestList, MediaTypeDockerConfig, MediaTypeDockerLayer
	if spec.OCI {
		manifestType, indexType, configType, layerType = ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageLayerGzip
	}
	img := Image{Repo: spec.Repo, Tag: spec.Tag}
	name := spec.Repo
	if spec.Tag != "" {
		name += ":" + spec.Tag
	}
	created := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC) // fixed, for stable digests
	pushed := map[digest.Digest]bool{}
	push := func(mediaType string, data []byte) (ocispec.Descriptor, error) {
		d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
		if pushed[d.Digest] {
			return d, nil
		}
		if _, err := c.pushBlob(ctx, spec.Repo, mediaType, data); err != nil {
			return ocispec.Descriptor{}, err
		}
		pushed[d.Digest] = true
		img.Blobs = append(img.Blobs, d)
		return d, nil
	}

	for pi, p := range platforms {
		platform, err := parsePlatform(p)
		if err != nil {
			return Image{}, fmt.Errorf("pushing image %s: %w", name, err)
		}
		layers := make([]ocispec.Descriptor, 0, len(spec.SharedLayers)+len(spec.Layers))
		diffIDs := make([]digest.Digest, 0, cap(layers))
		for _, data := range spec.SharedLayers {
			d, err := push(layerType, data)
			if err != nil {
				return Image{}, fmt.Errorf("pushing image %s: %w", name, err)
			}
			layers, diffIDs = append(layers, d), append(diffIDs, d.Digest)
		}
		for li, size := range spec.Layers {
			d, err := push(layerType, RandomBytes(layerSeed(spec.Seed, pi, li), size))
			if err != nil {
				return Image{}, fmt.Errorf("pushing image %s: %w", name, err)
			}
			layers, diffIDs = append(layers, d), append(diffIDs, d.Digest)
		}
		history := make([]ocispec.History, len(diffIDs))
		for i := range history {
			history[i] = ocispec.History{Created: &created, CreatedBy: fmt.Sprintf("registrytest layer %d", i)}
		}
		config, err := json.Marshal(ocispec.Image{
			Created:  &created,
			Platform: platform,
			History:  history,
			Config: ocispec.ImageConfig{
				Labels: map[string]string{"org.cnab.relocate.registrytest.seed": strconv.FormatInt(spec.Seed, 10)},
			},
			RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
		})
		if err != nil {
			return Image{}, err
		}
		configDesc, err := push(configType, config)
		if err != nil {
			return Image{}, fmt.Errorf("pushing image %s: %w", name, err)
		}
		manifest, err := json.Marshal(ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: manifestType,
			Config:    configDesc,
			Layers:    layers,
		})
		if err != nil {
			return Image{}, err
		}
		ref := digest.FromBytes(manifest).String()
		if len(platforms) == 1 && spec.Tag != "" {
			ref = spec.Tag
		}
		desc, err := c.PushManifest(ctx, spec.Repo, ref, manifestType, manifest)
		if err != nil {
			return Image{}, fmt.Errorf("pushing image %s: %w", name, err)
		}
		desc.Platform = &platform
		img.Manifests = append(img.Manifests, desc)
	}

	if len(platforms) == 1 {
		img.Root = img.Manifests[0]
		img.Root.Platform = nil
		return img, nil
	}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: indexType,
		Manifests: img.Manifests,
	})
	if err != nil {
		return Image{}, err
	}
	ref := spec.Tag
	if ref == "" {
		ref = digest.FromBytes(index).String()
	}
	root, err := c.PushManifest(ctx, spec.Repo, ref, indexType, index)
	if err != nil {
		return Image{}, fmt.Errorf("pushing image %s: %w", name, err)
	}
	img.Root = root
	return img, nil
}

// parsePlatform parses "os/arch" or "os/arch/variant".
func parsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] == "") {
		return ocispec.Platform{}, fmt.Errorf("invalid platform %q (want os/arch[/variant])", s)
	}
	p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}
