package registrytest

import (
	"context"
	"encoding/json"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ArtifactSpec describes an OCI artifact manifest for PushArtifact: a
// signature, an SBOM, an attestation.
type ArtifactSpec struct {
	// ArtifactType is the manifest's artifactType ("" for none, as cosign
	// writes signatures).
	ArtifactType string
	// ConfigType is the config's media type. Default the OCI empty
	// descriptor's type (with content "{}"); another type gets an image
	// config's content.
	ConfigType string
	// LayerType is the one layer's media type. Default ArtifactType, else
	// cosign's simple signing type.
	LayerType string
	// Payload is the layer's content.
	Payload []byte
	// Subject, when set, is the manifest the artifact refers to: a
	// registry with the OCI referrers API lists it.
	Subject *ocispec.Descriptor
	// Tag, when set, is the tag it is pushed under; else by digest.
	Tag string
}

// PushArtifact pushes the artifact spec describes into repo and returns
// its descriptor, with the artifact type the referrers API should report
// for it (its artifactType, else its config's media type).
func (c *Client) PushArtifact(ctx context.Context, repo string, spec ArtifactSpec) (ocispec.Descriptor, error) {
	configType, config := spec.ConfigType, []byte(`{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]}}`)
	if configType == "" {
		configType, config = ocispec.MediaTypeEmptyJSON, []byte("{}")
	}
	layerType := spec.LayerType
	if layerType == "" {
		layerType = spec.ArtifactType
	}
	if layerType == "" {
		layerType = "application/vnd.dev.cosign.simplesigning.v1+json"
	}
	cfg, err := c.pushBlob(ctx, repo, configType, config)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layer, err := c.pushBlob(ctx, repo, layerType, spec.Payload)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: spec.ArtifactType, Config: cfg, Layers: []ocispec.Descriptor{layer},
	}
	if spec.Subject != nil {
		m.Subject = &ocispec.Descriptor{MediaType: spec.Subject.MediaType, Digest: spec.Subject.Digest, Size: spec.Subject.Size}
	}
	body, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	ref := digest.FromBytes(body).String()
	if spec.Tag != "" {
		ref = spec.Tag
	}
	d, err := c.PushManifest(ctx, repo, ref, ocispec.MediaTypeImageManifest, body)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d.ArtifactType = spec.ArtifactType
	if d.ArtifactType == "" {
		d.ArtifactType = configType
	}
	return d, nil
}
