package registrytest

import (
	"context"
	"encoding/json"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PushArtifact pushes an OCI artifact manifest (artifactType, the empty
// config, one layer holding payload) that refers to subject, by digest
// into repo, and under tag when tag is not "". A registry with the OCI
// referrers API lists it among subject's referrers. The descriptor
// returned carries the artifact type.
func (c *Client) PushArtifact(ctx context.Context, repo, tag, artifactType string, subject ocispec.Descriptor, payload []byte) (ocispec.Descriptor, error) {
	empty, err := c.pushBlob(ctx, repo, ocispec.MediaTypeEmptyJSON, []byte("{}"))
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layer, err := c.pushBlob(ctx, repo, artifactType, payload)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	subj := ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	body, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType, Config: empty, Layers: []ocispec.Descriptor{layer}, Subject: &subj,
	})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	ref := digest.FromBytes(body).String()
	if tag != "" {
		ref = tag
	}
	d, err := c.PushManifest(ctx, repo, ref, ocispec.MediaTypeImageManifest, body)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d.ArtifactType = artifactType
	return d, nil
}
