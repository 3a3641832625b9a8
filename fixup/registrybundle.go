package fixup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/cnabio/cnab-go/bundle"
	"github.com/cnabio/cnab-to-oci/converter"
	"github.com/cnabio/cnab-to-oci/relocation"
	"github.com/containerd/containerd/remotes"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/verify"
)

// maxBundleSize bounds a bundle read from a registry.
const maxBundleSize = 64 << 20

// bundleScheme prefixes a bundle kept in a registry where a path is
// expected: "oci://registry.corp/team/app:1.0".
const bundleScheme = "oci://"

// PullBundle reads the bundle ref names, kept in a registry in
// cnab-to-oci's format (docker-app, `cnab-to-oci push`, `porter publish`):
// an OCI index whose manifests are the bundle's config (a manifest whose
// config blob is bundle.json) and the bundle's images, all in the bundle's
// repository. It returns the bundle, parsed from the config blob's bytes
// exactly as stored (Bundle.Raw), and the relocation mapping saying where
// each image is (REPOSITORY@DIGEST), as cnab-to-oci's Pull computes it:
// pass it as Options.SourceMapping to relocate the images from there.
// Every byte read is checked against its digest.
func (c *Client) PullBundle(ctx context.Context, ref string) (*Bundle, relocation.ImageRelocationMap, error) {
	ctx = withoutLogs(ctx)
	n, err := parseRef("bundle", ref)
	if err != nil {
		return nil, nil, err
	}
	img := Image{Ref: ref, Named: n}
	src := newRegistrySource(c.reg)
	host := reference.Domain(n)
	fail := func(what string, err error) error {
		if errors.Is(err, ErrInvalidInput) {
			return err
		}
		return sideError{ErrSource, fmt.Errorf("bundle %s: %s: %w", ref, what, registryError(host, err))}
	}
	notBundle := func(format string, a ...any) error {
		return invalid(fmt.Errorf("%w %s: not a bundle in cnab-to-oci's format: %s", ErrInvalidBundle, ref, fmt.Sprintf(format, a...)))
	}
	desc, err := src.Resolve(ctx, img, refDigest(n))
	if err != nil {
		return nil, nil, fail("resolving", err)
	}
	if !isIndex(desc.MediaType) {
		return nil, nil, notBundle("its manifest is %s, not an index", desc.MediaType)
	}
	f, err := src.Fetcher(ctx, img)
	if err != nil {
		return nil, nil, fail("fetching", err)
	}
	data, err := fetchManifest(ctx, f, desc)
	if err != nil {
		return nil, nil, fail("reading its index", err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, nil, notBundle("its index: %v", err)
	}
	cfgDesc, err := converter.GetBundleConfigManifestDescriptor(&idx)
	if err != nil {
		return nil, nil, notBundle("no manifest of its index is annotated %s=%s", converter.CNABDescriptorTypeAnnotation, converter.CNABDescriptorTypeConfig)
	}
	data, err = fetchManifest(ctx, f, cfgDesc)
	if err != nil {
		return nil, nil, fail("reading its config manifest", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, nil, notBundle("its config manifest: %v", err)
	}
	if m.Config.Size > maxBundleSize || m.Config.Size < 0 {
		return nil, nil, notBundle("its config is %d bytes, more than the %d allowed", m.Config.Size, maxBundleSize)
	}
	raw, err := fetchBytes(ctx, f, m.Config)
	if err != nil {
		return nil, nil, fail("reading bundle.json", err)
	}
	b, err := Parse(raw)
	if err != nil {
		return nil, nil, invalid(fmt.Errorf("%s%s: bundle.json: %w", bundleScheme, ref, err))
	}
	b.path = bundleScheme + ref
	var cb bundle.Bundle
	if err := json.Unmarshal(raw, &cb); err != nil {
		return nil, nil, invalid(fmt.Errorf("%w %s%s: %v", ErrInvalidBundle, bundleScheme, ref, err))
	}
	located, err := converter.GenerateRelocationMap(&idx, &cb, n)
	if err != nil {
		return nil, nil, notBundle("%v", err)
	}
	return b, located, nil
}

// fetchBytes reads a blob whole, checking its size and digest.
func fetchBytes(ctx context.Context, f remotes.Fetcher, desc ocispec.Descriptor) ([]byte, error) {
	rc, err := f.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(verify.NewReader(rc, desc))
}

// PushBundle stores b, its bytes unchanged, in the registry under ref
// (HOST/REPO:TAG) in cnab-to-oci's format, so that `cnab-to-oci pull`,
// docker-app and porter find it and every image it names: each
// relocatable image, found where images says (a relocation mapping keyed
// by the bundle's references, such as Result.Mapping), is copied into
// ref's repository first, by digest (its blobs mounted when it is on the
// same registry: no bytes uploaded), then the config (bundle.json as a
// blob, and a manifest for it) and the index, under ref's tag. It returns
// the index's descriptor.
func (c *Client) PushBundle(ctx context.Context, b *Bundle, ref string, images relocation.ImageRelocationMap) (ocispec.Descriptor, error) {
	if b == nil {
		return ocispec.Descriptor{}, invalid(fmt.Errorf("%w: no bundle (nil)", ErrInvalidBundle))
	}
	ctx = withoutLogs(ctx)
	n, err := parseRef("bundle", ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if refDigest(n) != "" {
		return ocispec.Descriptor{}, invalid(fmt.Errorf("bundle %s: push it under a tag, not a digest", ref))
	}
	n = reference.TagNameOnly(n)
	repo := reference.TrimNamed(n)
	var cb bundle.Bundle
	if err := json.Unmarshal(b.Raw(), &cb); err != nil {
		return ocispec.Descriptor{}, invalid(fmt.Errorf("%w %s: %v", ErrInvalidBundle, b.path, err))
	}
	if len(cb.InvocationImages) != 1 {
		return ocispec.Descriptor{}, invalid(fmt.Errorf("%w %s: cnab-to-oci's format holds exactly one invocation image, the bundle has %d", ErrInvalidBundle, b.path, len(cb.InvocationImages)))
	}
	entries, _, err := distinctImages(b)
	if err != nil {
		return ocispec.Descriptor{}, err
	}

	// 1. Every image into the bundle's repository, by digest, without
	// its referrers: the index may only name manifests that are there.
	copier := *c
	copier.opts.Referrers = ReferrerOptions{Disabled: true}
	inRepo := relocation.ImageRelocationMap{}
	descs := map[string]ocispec.Descriptor{}
	for _, e := range entries {
		loc, ok := images[e.Image.Ref]
		if !ok {
			return ocispec.Descriptor{}, invalid(fmt.Errorf("bundle %s: image %s (%s): not in the relocation mapping", ref, e.Image.Ref, e.Image.Field))
		}
		desc, err := copier.Copy(ctx, loc, repo.String())
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("bundle %s: image %s: %w", ref, e.Image.Ref, err)
		}
		if e.Digest != "" && desc.Digest != e.Digest {
			return ocispec.Descriptor{}, fmt.Errorf("%w: bundle %s: image %s is %s at %s, the bundle records %s", ErrDigestMismatch, ref, e.Image.Ref, desc.Digest, loc, e.Digest)
		}
		inRepo[e.Image.Ref] = repo.String() + "@" + desc.Digest.String()
		descs[e.Image.Ref] = desc
	}
	// cnab-to-oci's index describes each image by the bundle's size and
	// media type: fill them in a copy (the stored bytes stay as they are),
	// and leave out the images that are not images (other types).
	fill := func(bi *bundle.BaseImage) {
		if d, ok := descs[bi.Image]; ok {
			bi.Size, bi.MediaType = uint64(d.Size), d.MediaType
		}
	}
	fill(&cb.InvocationImages[0].BaseImage)
	for name, img := range cb.Images {
		if _, ok := descs[img.Image]; !ok {
			delete(cb.Images, name)
			continue
		}
		fill(&img.BaseImage)
		cb.Images[name] = img
	}
	if _, ok := descs[cb.InvocationImages[0].Image]; !ok {
		return ocispec.Descriptor{}, invalid(fmt.Errorf("bundle %s: the invocation image %s is not of type docker or oci", ref, cb.InvocationImages[0].Image))
	}

	// 2. The config: bundle.json as a blob, and a manifest pointing at it.
	raw := b.Raw()
	cfg := ocispec.Descriptor{MediaType: converter.CNABConfigMediaType, Digest: digest.FromBytes(raw), Size: int64(len(raw))}
	cfgManifest, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, Config: cfg})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	cfgNode := node{desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(cfgManifest), Size: int64(len(cfgManifest))}, data: cfgManifest}

	// 3. The index naming the config and the images, under the tag.
	idx, err := converter.ConvertBundleToOCIIndex(&cb, n, cfgNode.desc, inRepo)
	if err != nil {
		return ocispec.Descriptor{}, invalid(fmt.Errorf("bundle %s: %w", ref, err))
	}
	if idx.MediaType == "" {
		idx.MediaType = ocispec.MediaTypeImageIndex
	}
	idxData, err := json.Marshal(idx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	root := node{desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(idxData), Size: int64(len(idxData))}, data: idxData}

	e := c.engine(nil, c.registryTarget(), nil)
	j := newJob(Image{Ref: bundleScheme + ref, Named: n}, root.desc.Digest)
	j.target = n
	if err := e.mapTarget(j, root.desc.Digest); err != nil {
		return ocispec.Descriptor{}, err
	}
	j.fetch = remotes.FetcherFunc(func(context.Context, ocispec.Descriptor) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	})
	if _, err := e.putBlob(ctx, j, j.repo, cfg, nil, nil); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("bundle %s: %w", ref, err)
	}
	if err := e.putManifest(ctx, j, cfgNode, "", false); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("bundle %s: %w", ref, err)
	}
	if err := e.putManifest(ctx, j, root, "", true); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("bundle %s: %w", ref, err)
	}
	return root.desc, nil
}
