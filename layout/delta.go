package layout

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/opencontainers/go-digest"
)

// A delta archive is a thick bundle archive that leaves out, on purpose,
// the blobs and manifests that one or more base archives hold (export
// --base). It is a thick bundle archive all the same: bundle.json byte
// for byte, index.json naming every image. DeltaFile records what is left
// out and which base holds it; a reader that finds it knows that those
// blobs are to be in the target already (docs/output-formats.md).

// DeltaFile is the record of a delta archive, beside the layout.
const DeltaFile = "artifacts/base.json"

// maxDeltaSize bounds what is read into memory for DeltaFile.
const maxDeltaSize = 64 << 20

// Delta is the content of DeltaFile.
type Delta struct {
	// SchemaVersion is 1.
	SchemaVersion int `json:"schemaVersion"`
	// Bases are the archives the delta was made against, in the order given.
	Bases []Base `json:"bases"`
	// LeftOut are the blobs and manifests the delta does not hold, by
	// digest.
	LeftOut []LeftOut `json:"leftOut"`
}

// Base is an archive a delta was made against.
type Base struct {
	// Archive is the base's file name, as given to export (its directory
	// left out).
	Archive string `json:"archive"`
	// Bundle and Version are the base's bundle name and version.
	Bundle  string `json:"bundle"`
	Version string `json:"version"`
	// Digest is the sha256 of the archive's bytes (of its parts, one after
	// the other, for a split archive).
	Digest digest.Digest `json:"sha256"`
	// Size is the archive's size in bytes.
	Size int64 `json:"size"`
	// Thin is true for a thin bundle base: a bundle.json whose images were
	// in a registry. Digest and Size are then bundle.json's.
	Thin bool `json:"thin,omitempty"`
}

// LeftOut is a blob or manifest a delta leaves out.
type LeftOut struct {
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"mediaType,omitempty"`
	// Base is the index in Bases of the first base that holds it.
	Base int `json:"base"`
	// Images are the references (as the bundle writes them) of the images
	// that need it.
	Images []string `json:"images"`
}

// parseDelta parses and checks DeltaFile's bytes.
func parseDelta(data []byte) (*Delta, error) {
	var d Delta
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("%s: %v", DeltaFile, err)
	}
	if d.SchemaVersion != 1 {
		return nil, fmt.Errorf("%s: schemaVersion %d: want 1", DeltaFile, d.SchemaVersion)
	}
	for i, l := range d.LeftOut {
		if err := l.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("%s: leftOut[%d]: digest %q: %v", DeltaFile, i, l.Digest, err)
		}
		if l.Base < 0 || l.Base >= len(d.Bases) {
			return nil, fmt.Errorf("%s: leftOut[%d] (%s): base %d: there are %d bases", DeltaFile, i, l.Digest, l.Base, len(d.Bases))
		}
	}
	return &d, nil
}

// Holdings is what an archive holds, as a base of a delta needs it: the
// digests of its layout's blobs, not their bytes.
type Holdings struct {
	// Path is the archive's file, as given.
	Path string
	// BundleJSON is its bundle.json, byte for byte.
	BundleJSON []byte
	// Digest is the sha256 of the archive's bytes (all parts of a split
	// archive, in order), and Size their length.
	Digest digest.Digest
	Size   int64
	// Blobs are the layout's blobs (manifests among them) by digest, with
	// their sizes. The blobs a base that is itself a delta leaves out are
	// not among them: it does not hold them.
	Blobs map[digest.Digest]int64
}

// ReadHoldings reads the thick bundle archive at path (or the split
// archive it names, see WriteSplitArchive) once, as a stream, from its
// first byte to its last: the tar headers, bundle.json, and, to compute
// its sha256, every byte, none of them kept. Its entries are checked as
// OpenArchive checks them; errors name path and wrap ErrInvalidArchive
// (or ErrMissingPart).
func ReadHoldings(ctx context.Context, path string) (*Holdings, error) {
	h := &countingHash{h: sha256.New()}
	w, err := openWalkerThrough(path, func(r io.Reader) io.Reader { return io.TeeReader(r, h) })
	if err != nil {
		return nil, err
	}
	defer w.close()
	out := &Holdings{Path: path, Blobs: map[digest.Digest]int64{}}
	for {
		name, hdr, r, err := w.next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch {
		case name == BundleFile:
			if hdr.Size > maxBundleSize {
				return nil, w.bad("%s is %d bytes, more than the %d allowed", name, hdr.Size, maxBundleSize)
			}
			if out.BundleJSON, err = io.ReadAll(r); err != nil {
				return nil, err
			}
		case strings.HasPrefix(name, blobsPrefix):
			d, ok := blobDigest(name)
			if !ok {
				return nil, w.bad("entry %q: not a blob name (blobs/ALGORITHM/ENCODED)", hdr.Name)
			}
			out.Blobs[d] = hdr.Size
		}
	}
	// What follows the end of the tar (its padding, bytes after the gzip
	// stream) is the archive's too.
	if _, err := io.Copy(io.Discard, w.raw); err != nil {
		return nil, w.bad("%v", readError(err))
	}
	if out.BundleJSON == nil {
		return nil, w.bad("no %s at the root of the archive", BundleFile)
	}
	out.Digest, out.Size = digest.NewDigest(digest.SHA256, h.h), h.n
	return out, nil
}

// countingHash is a hash that counts what it is given.
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}
