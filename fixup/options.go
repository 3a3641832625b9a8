package fixup

import (
	"log/slog"
	"time"

	"github.com/cnabio/cnab-to-oci/relocation"
	"github.com/containerd/containerd/remotes"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/retry"
	"github.com/cnabio/cnab-relocate/relocator"
	"github.com/cnabio/cnab-relocate/resolver"
)

// DefaultJobs is the default number of blobs copied at once.
const DefaultJobs = 8

// DefaultRetries is how many times a failed request or transfer is retried
// when ClientOptions.Retries is nil.
const DefaultRetries = retry.Default

// ClientOptions configures a Client. The zero value works: docker CLI
// credentials, loopback registries over HTTPS then plain HTTP, DefaultJobs,
// DefaultRetries, every referrer copied, no events, no logs.
type ClientOptions struct {
	// Resolver reaches the registries. Nil means one made by resolver.New
	// from ResolverOptions. Another than a *resolver.Resolver is used
	// through containerd's interfaces only: it resolves (HEAD) before
	// each read and each push, its pusher must be a content.Ingester
	// (containerd's is; another fails its first push with
	// ErrUnsupportedResolver), it cannot tell a mounted blob from one that
	// was there (both are BlobSkipped), and it cannot list tags or
	// referrers, so it copies none and each image's result says so
	// (ReferrersSearched).
	Resolver remotes.Resolver
	// ResolverOptions configures the resolver made when Resolver is nil:
	// credentials, CAs, insecure hosts. Its Retries and Logger default to
	// this struct's.
	ResolverOptions resolver.Options
	// Jobs bounds how many blobs (of all images) are copied at once, how
	// many images are planned at once, and how many push their manifests at
	// once (as soon as their own blobs are in, while other blobs are copied).
	// Zero means DefaultJobs.
	Jobs int
	// Retries is how many times a failed blob or manifest transfer is
	// retried whole (after the transport's own retries of single
	// requests). Nil means DefaultRetries; a pointer to 0 means none.
	Retries *int
	// Referrers selects the artifacts (signatures, SBOMs, attestations)
	// copied with each image into its target. The zero value copies them
	// all and fails an image whose referrers cannot be copied.
	Referrers ReferrerOptions
	// IncludeNonDistributable copies non-distributable (foreign) layers,
	// as older Windows images have, like the others: from the source
	// registry or layout, never from their URLs, manifests unchanged, so
	// that an air-gapped site can pull them. The target must accept
	// layers with URLs (distribution: validation.manifests.urls.allow).
	// By default they are left out, and a target that wants them refuses
	// the manifest (ErrNonDistributable).
	IncludeNonDistributable bool
	// Platforms, when not empty, selects what of each index (manifest
	// list) travels: the manifests for these platforms, matched as
	// containerd's platforms package matches them (linux/arm64 matches
	// linux/arm64/v8), with their referrers; the index itself is pushed
	// byte for byte, so its digest stays (a sparse index: its other
	// manifests are absent). A single-platform image travels whole,
	// whatever its platform. An index without a matching manifest fails
	// its image (ErrNoPlatform). Empty means every platform.
	Platforms []ocispec.Platform
	// PlatformIndex says what becomes of an index that loses manifests to
	// Platforms: KeepIndex (the zero value) pushes it as it is,
	// RewriteIndex pushes a new index of the manifests copied. Export
	// refuses RewriteIndex: an archive keeps bundle.json as it is.
	PlatformIndex PlatformIndex
	// OnEvent receives progress events. Calls are serialised; the function
	// must not block for long. Nil means no events.
	OnEvent func(Event)
	// Logger receives debug records. Nil discards them.
	Logger *slog.Logger
}

// Options configures the package-level Relocate: a client's options and
// one call's (their fields as in RelocateCall). Only Mapping is required.
type Options struct {
	ClientOptions
	// Mapping decides each image's target reference. Required.
	Mapping *relocator.Mapping
	// Source is where content comes from (see RelocateCall.Source).
	Source Source
	// SourceMapping says where the bundle's images are now (see
	// RelocateCall.SourceMapping).
	SourceMapping relocation.ImageRelocationMap
}

// EventKind says what an Event reports.
type EventKind string

// Event kinds, in the order they happen for an image.
const (
	ImageStarted   EventKind = "image-started"   // the image is being planned
	ImagePlanned   EventKind = "image-planned"   // its graph is known: Size is the bytes to copy
	ImagePresent   EventKind = "image-present"   // already in the target: nothing to do
	BlobProgress   EventKind = "blob-progress"   // Bytes more of blob Digest were uploaded
	BlobCopied     EventKind = "blob-copied"     // blob uploaded (Size bytes)
	BlobMounted    EventKind = "blob-mounted"    // blob mounted from another repository
	BlobSkipped    EventKind = "blob-skipped"    // blob already in the target repository
	ManifestPushed EventKind = "manifest-pushed" // a manifest or index was pushed
	ReferrerCopied EventKind = "referrer-copied" // a referrer (Digest) of the image was copied
	ReferrerFailed EventKind = "referrer-failed" // a referrer could not be found or copied (best effort): Err says why
	ImageDone      EventKind = "image-done"      // every part of the image is in the target
	ImageFailed    EventKind = "image-failed"    // the image could not be relocated: Err says why
)

// Event reports progress. Image is the reference as written in the bundle.
type Event struct {
	Kind   EventKind
	Image  string
	Target string
	Digest digest.Digest
	Size   int64
	Bytes  int64
	Err    error
	Time   time.Time
}

// ImageResult is the outcome for one distinct image reference of a bundle.
type ImageResult struct {
	// Source is the reference as written in the bundle.
	Source string `json:"source"`
	// Target is the relocated reference.
	Target string `json:"target"`
	// Digest and MediaType describe the root manifest or index.
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType,omitempty"`
	// Bytes by what happened to them: uploaded, mounted from another
	// repository, or already present.
	BytesCopied  int64 `json:"bytesCopied"`
	BytesMounted int64 `json:"bytesMounted"`
	BytesSkipped int64 `json:"bytesSkipped"`
	// Referrers lists the artifacts copied with the image.
	Referrers []ReferrerResult `json:"referrers,omitempty"`
	// Present is true when the image was already in the target (its
	// referrers are then not looked for: one HEAD is all a rerun costs).
	Present bool `json:"present,omitempty"`
	// ReferrersSearched is true when the source was searched for the
	// image's referrers. It is false when referrers are off, when the image
	// was already present, and when the source cannot list tags or
	// referrers (a resolver other than resolver.Resolver): then Referrers
	// is empty because nobody looked, not because there are none.
	ReferrersSearched bool `json:"referrersSearched"`
	// Platforms are the platforms of the image's indexes that were copied,
	// and PlatformsLeft those left at the source, when
	// ClientOptions.Platforms selects some (os/arch[/variant], in index
	// order); both are empty for a single-platform image and without a
	// selection.
	Platforms     []string `json:"platforms,omitempty"`
	PlatformsLeft []string `json:"platformsLeft,omitempty"`
	// RewrittenFrom is the source's root digest when the root was an index
	// rewritten to the platforms copied (RewriteIndex): Digest is then the
	// new index's. ReferrersDropped are the referrers of rewritten indexes
	// (and theirs), not copied: they sign what is gone.
	RewrittenFrom    digest.Digest   `json:"rewrittenFrom,omitempty"`
	ReferrersDropped []digest.Digest `json:"referrersDropped,omitempty"`
	// Duration is how long the image took, from the start of its planning
	// until it was done, found present, or failed.
	Duration time.Duration `json:"-"`
	Err      error         `json:"-"`
}

// Result is the outcome of Relocate.
type Result struct {
	// Images has one entry per distinct relocatable reference, in bundle order.
	Images []ImageResult
	// Mapping is the relocation mapping: reference as written -> relocated
	// reference (CNAB Core 103), in cnab-to-oci's type so docker-app can
	// hand it on. Complete only when Relocate returns nil.
	Mapping relocation.ImageRelocationMap
	// Digests maps each reference as written to its root digest.
	Digests map[string]digest.Digest
	// Roots maps each reference as written to its root's descriptor (for
	// Bundle.RewriteRoots).
	Roots map[string]ocispec.Descriptor
	// Skipped lists images left alone because of their type.
	Skipped []Image
}
