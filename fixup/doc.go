// Package fixup copies the images of CNAB bundles, and single images,
// between registries and OCI image layouts, digests preserved.
//
// # Two levels
//
// Bundle level: Relocate copies every image of type docker or oci of a
// Bundle (LoadFile, Parse, FromCNAB, LoadArchive) to where a
// relocator.Mapping says, and returns the CNAB relocation mapping; Export
// and ExportArchive fetch them into an OCI image layout, a thick bundle;
// Verify checks with HEAD requests that relocated images are in place;
// NewPlan says where each would go without any network access.
//
// Image level: a Client (NewClient) resolves (Digest) and copies (Copy) one
// image, and fills (Layout.Add) and empties (Layout.Push) OCI image layouts
// it creates (NewLayout) or opens (ReadLayout).
//
// All of them are runs of one engine, whose source and target are each a
// registry or an OCI image layout: one planner, one blob scheduler, one
// rule for retries and verification, one event stream.
//
// # Contract
//
//   - The whole content graph travels: every platform of an index, every
//     config and layer (foreign, non-distributable layers excepted), and
//     the referrers (signatures, SBOMs, attestations) that
//     ClientOptions.Referrers selects, recursively.
//   - Manifests are copied byte for byte, so every digest is preserved.
//     Every byte read is checked against its descriptor's size and digest
//     while it streams; content that does not match never completes an
//     upload (ErrDigestMismatch).
//   - Children land before their parents, and an image's root (and its tag)
//     last, after its referrers: a reader never sees a manifest whose
//     content is missing, and an image that is present is complete. A
//     rerun after a failure or an interruption resumes: what the target
//     holds is not sent again, and an image already in place costs one
//     request.
//   - Each unique blob is moved once per target registry, and mounted into
//     the other repositories that need it there (or from the source when
//     source and target share a registry). A blob that no image still
//     needs (the others failed) is not moved.
//   - Transient failures are retried, bounded (ClientOptions.Retries), with
//     backoff that honours Retry-After; a failed image does not stop the
//     others, and the error names each image that failed and the side
//     (ErrSource, ErrTarget) and registry (*RegistryError) at fault.
//   - Errors match this package's sentinels with errors.Is: ErrInvalidInput
//     (the caller's input: a bundle, a reference, an option), ErrNotFound,
//     ErrDigestMismatch, ErrAuthentication, ErrPlainHTTP,
//     ErrUnknownAuthority, ErrOutput, ErrUnsupportedResolver. A registry's
//     answer (status, error code, message) is in a *RegistryError. No error
//     names a command-line flag; the CLI adds its own hints.
//   - The library never prints and never panics on a caller's input: it
//     reports through ClientOptions.OnEvent and ClientOptions.Logger.
//     Every zero value of an option means its default.
//   - Relocate, Export and every Client method are safe for concurrent use
//     and honour their context's cancellation.
package fixup
