package fixup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/retry"
	"github.com/cnabio/cnab-relocate/internal/verify"
	"github.com/cnabio/cnab-relocate/layout"
)

// maxManifestSize bounds what is read into memory for a manifest or index;
// the OCI distribution spec lets registries refuse larger ones.
const maxManifestSize = 4 << 20

// node is a manifest or index of an image's content graph, with the exact
// bytes fetched from the source.
type node struct {
	desc ocispec.Descriptor
	data []byte
	// foreign are its non-distributable layers (foreign layers, layers
	// with URLs) that are not copied.
	foreign []ocispec.Descriptor
}

// graph is an image's content: manifests in push order (children before
// parents, the root last) and the blobs they reference, each once.
type graph struct {
	manifests []node
	blobs     []ocispec.Descriptor
	// leftOut are the manifests a delta archive leaves out (see
	// layout.ErrLeftOut): in the target already, they and their children
	// are not walked. The root among them leaves manifests empty.
	leftOut []ocispec.Descriptor
}

func (g *graph) size() (n int64) {
	for _, m := range g.manifests {
		n += m.desc.Size
	}
	for _, b := range g.blobs {
		n += b.Size
	}
	return n
}

// isManifest reports whether mediaType is a manifest or index that the
// engine walks.
func isManifest(mediaType string) bool {
	switch mediaType {
	case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		images.MediaTypeDockerSchema2Manifest, images.MediaTypeDockerSchema2ManifestList:
		return true
	}
	return false
}

func isIndex(mediaType string) bool {
	return mediaType == ocispec.MediaTypeImageIndex || mediaType == images.MediaTypeDockerSchema2ManifestList
}

// nonDistributable reports whether a layer must not be copied: foreign
// (Windows base) layers and OCI non-distributable layers live elsewhere by
// their licence, and registries refuse or redirect them.
func nonDistributable(d ocispec.Descriptor) bool {
	return d.MediaType == images.MediaTypeDockerSchema2LayerForeign ||
		d.MediaType == images.MediaTypeDockerSchema2LayerForeignGzip ||
		strings.Contains(d.MediaType, "nondistributable")
}

// walk fetches the manifests of the graph rooted at root from f, verifying
// each against its descriptor, and returns the graph. A manifest whose
// fetch fails transiently (a connection reset in the middle of its body)
// is fetched again, at most DefaultRetries times.
func walk(ctx context.Context, f remotes.Fetcher, root ocispec.Descriptor) (*graph, error) {
	return walkRetries(ctx, f, root, retry.Policy{Retries: DefaultRetries}, false, nil)
}

// walkRetries is walk with the retries of p.
// With withForeign, non-distributable layers are blobs to copy like the
// others (fetched by digest, never from their URLs); else they are left
// out, and noted on their manifest's node. succ gives each manifest's
// children (nil: successors; a platformFilter narrows it).
func walkRetries(ctx context.Context, f remotes.Fetcher, root ocispec.Descriptor, p retry.Policy, withForeign bool, succ successorsFunc) (*graph, error) {
	if succ == nil {
		succ = successors
	}
	g := &graph{}
	seenManifest := map[digest.Digest]bool{}
	seenBlob := map[digest.Digest]bool{}
	var visit func(desc ocispec.Descriptor, depth int) error
	visit = func(desc ocispec.Descriptor, depth int) error {
		if seenManifest[desc.Digest] {
			return nil
		}
		if depth > 8 {
			return fmt.Errorf("manifest %s: nested deeper than 8 levels", desc.Digest)
		}
		seenManifest[desc.Digest] = true
		if desc.Size > maxManifestSize {
			return fmt.Errorf("manifest %s: %d bytes is more than the %d allowed", desc.Digest, desc.Size, maxManifestSize)
		}
		var data []byte
		err := p.Do(ctx, "manifest "+desc.Digest.String(), func(int) error {
			var err error
			data, err = fetchManifest(ctx, f, desc)
			return err
		})
		if errors.Is(err, layout.ErrLeftOut) {
			g.leftOut = append(g.leftOut, ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size})
			return nil
		}
		if err != nil {
			return err
		}
		if desc.MediaType == "" || !isManifest(desc.MediaType) {
			desc.MediaType = sniffMediaType(data, desc.MediaType)
		}
		var foreign []ocispec.Descriptor
		children, err := succ(desc, data)
		if err != nil {
			return err
		}
		for _, c := range children {
			if isManifest(c.MediaType) {
				if err := visit(c, depth+1); err != nil {
					return err
				}
				continue
			}
			if (nonDistributable(c) || len(c.URLs) > 0) && !withForeign {
				foreign = append(foreign, c)
				continue
			}
			if seenBlob[c.Digest] {
				continue
			}
			if err := c.Digest.Validate(); err != nil {
				return fmt.Errorf("manifest %s: blob digest %q: %w", desc.Digest, c.Digest, err)
			}
			seenBlob[c.Digest] = true
			g.blobs = append(g.blobs, ocispec.Descriptor{MediaType: c.MediaType, Digest: c.Digest, Size: c.Size})
		}
		g.manifests = append(g.manifests, node{desc: ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}, data: data, foreign: foreign})
		return nil
	}
	if err := visit(root, 0); err != nil {
		return nil, err
	}
	return g, nil
}

// fetchManifest reads a manifest and checks its size and digest.
func fetchManifest(ctx context.Context, f remotes.Fetcher, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > maxManifestSize {
		return nil, fmt.Errorf("manifest %s: %d bytes is more than the %d allowed", desc.Digest, desc.Size, maxManifestSize)
	}
	rc, err := f.Fetch(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("fetching manifest %s: %w", desc.Digest, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(verify.NewReader(rc, desc))
	if err != nil {
		return nil, fmt.Errorf("fetching manifest %s: %w", desc.Digest, err)
	}
	return data, nil
}

// successors returns the descriptors a manifest or index references:
// an index's manifests, a manifest's config and layers.
func successors(desc ocispec.Descriptor, data []byte) ([]ocispec.Descriptor, error) {
	switch {
	case isIndex(desc.MediaType):
		var idx ocispec.Index
		if err := json.Unmarshal(data, &idx); err != nil {
			return nil, fmt.Errorf("index %s: %w", desc.Digest, err)
		}
		return idx.Manifests, nil
	case desc.MediaType == ocispec.MediaTypeImageManifest || desc.MediaType == images.MediaTypeDockerSchema2Manifest:
		var m ocispec.Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
		}
		return append([]ocispec.Descriptor{m.Config}, m.Layers...), nil
	}
	return nil, fmt.Errorf("manifest %s: unsupported media type %q (only OCI and Docker schema 2 images are relocated)", desc.Digest, desc.MediaType)
}

// sniffMediaType guesses the media type of a manifest served with a
// generic or missing Content-Type, from its mediaType field or its shape.
func sniffMediaType(data []byte, fallback string) string {
	var probe struct {
		MediaType     string          `json:"mediaType"`
		SchemaVersion int             `json:"schemaVersion"`
		Manifests     json.RawMessage `json:"manifests"`
		Layers        json.RawMessage `json:"layers"`
		FSLayers      json.RawMessage `json:"fsLayers"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return fallback
	}
	switch {
	case probe.MediaType != "":
		return probe.MediaType
	case probe.Manifests != nil:
		return ocispec.MediaTypeImageIndex
	case probe.Layers != nil:
		return ocispec.MediaTypeImageManifest
	case probe.FSLayers != nil:
		return images.MediaTypeDockerSchema1Manifest
	}
	return fallback
}
