// Package layout reads and writes OCI image layouts and the thick bundle
// archives (CNAB Core 104) that carry them.
//
// # Image layout
//
// A Store is a directory holding an OCI image layout:
//
//	oci-layout               {"imageLayoutVersion":"1.0.0"}
//	index.json               an OCI image index: one entry per image
//	blobs/<alg>/<hex>        content, addressed by digest
//
// Each index.json entry names its image with the annotation
// org.opencontainers.image.ref.name. Thick bundles written by this package
// set it to the image reference exactly as written in bundle.json
// (e.g. "registry.example.com/app:1.0" or "nginx"). Find also accepts what
// other tools write there: the normalised full name
// ("docker.io/library/nginx:latest", as containerd writes it) or the tag
// alone ("1.0", as `crane pull --format=oci` and `skopeo copy ... oci:DIR:TAG`
// write it), and prefers a match by digest over any name.
//
// Blobs are written to a temporary file in the layout, checked against
// their size and digest while they stream, and renamed into place; they are
// checked again whenever they are read. index.json is written the same way,
// its entries sorted by reference name, then digest.
//
// # Thick bundle archive
//
// A thick bundle is a gzipped tar (a plain tar is read too) holding:
//
//	bundle.json              the bundle, byte for byte
//	artifacts/layout/        the image layout above (optional)
//
// ReadArchive extracts an archive, streaming, into a new directory under
// os.TempDir ($TMPDIR). It accepts only regular files and directories whose
// names are relative and have no ".." element; links, devices, fifos,
// sparse files, absolute or escaping names, duplicate files, and truncated
// or corrupt archives are errors that name the archive and the entry. WriteArchive
// writes a deterministic archive: entries sorted by name, modification
// time the Unix epoch, owner 0:0 without names, mode 0644 for files and
// 0755 for directories, and a gzip header without name or time, so that
// the same input always gives the same bytes.
package layout
