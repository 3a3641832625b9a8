package fixup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PlatformIndex says what becomes of an index that loses manifests to
// ClientOptions.Platforms.
type PlatformIndex string

const (
	// KeepIndex (the zero value) pushes the index byte for byte, its
	// digest kept: a sparse index, which some registries refuse
	// (ErrSparseIndex).
	KeepIndex PlatformIndex = ""
	// RewriteIndex replaces it with a new index listing exactly the
	// manifests copied: the original's descriptors, bytes unchanged, in
	// its order, its other fields kept, the same media type. The new
	// digest is the image's digest in the results; the referrers of the
	// original index (they sign what is gone) are not copied.
	RewriteIndex PlatformIndex = "rewrite"
)

// rewriteIndex returns data, an index, with only the manifests keep
// accepts, each descriptor's bytes as they are but for those in replace,
// whose digest and size are set to the new ones (a nested index that was
// rewritten). The rest of the document is kept byte for byte; only the
// "manifests" array is written anew, compact.
func rewriteIndex(data []byte, keep func(digest.Digest) bool, replace map[digest.Digest]ocispec.Descriptor) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("index: not a JSON object")
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("index: %w", err)
		}
		start := dec.InputOffset()
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("index: %w", err)
		}
		end := dec.InputOffset()
		if key != "manifests" {
			continue
		}
		var list []json.RawMessage
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, fmt.Errorf("index: manifests: %w", err)
		}
		var b bytes.Buffer
		b.WriteByte('[')
		n := 0
		for _, d := range list {
			var probe struct {
				Digest digest.Digest `json:"digest"`
			}
			if err := json.Unmarshal(d, &probe); err != nil {
				return nil, fmt.Errorf("index: manifests: %w", err)
			}
			if !keep(probe.Digest) {
				continue
			}
			if nd, ok := replace[probe.Digest]; ok {
				var fields map[string]json.RawMessage
				if err := json.Unmarshal(d, &fields); err != nil {
					return nil, fmt.Errorf("index: manifests: %w", err)
				}
				fields["digest"] = json.RawMessage(strconv.Quote(nd.Digest.String()))
				fields["size"] = json.RawMessage(strconv.FormatInt(nd.Size, 10))
				if d, err = json.Marshal(fields); err != nil {
					return nil, err
				}
			}
			if n > 0 {
				b.WriteByte(',')
			}
			b.Write(d)
			n++
		}
		b.WriteByte(']')
		// The value starts after the colon and any space that follow the key.
		at := int(start) + bytes.IndexByte(data[start:end], '[')
		out := append([]byte{}, data[:at]...)
		out = append(out, b.Bytes()...)
		return append(out, data[end:]...), nil
	}
	return nil, fmt.Errorf("index: no manifests")
}

// rewriteIndexes replaces, in g, each index of j that lost manifests to
// the platform filter (and each index above one) with its rewritten form,
// children first, and makes j's root and target the new root's. It
// returns the digests replaced (old -> new).
func (e *engine) rewriteIndexes(j *job, g *graph) (map[digest.Digest]ocispec.Descriptor, error) {
	replaced := map[digest.Digest]ocispec.Descriptor{}
	f := j.platforms
	for i, n := range g.manifests {
		if !isIndex(n.desc.MediaType) {
			continue
		}
		kept := f.keptChildren(n.desc.Digest)
		var idx ocispec.Index
		if err := json.Unmarshal(n.data, &idx); err != nil {
			return nil, fmt.Errorf("index %s: %w", n.desc.Digest, err)
		}
		below := false
		for _, c := range idx.Manifests {
			if _, ok := replaced[c.Digest]; ok && (kept == nil || kept[c.Digest]) {
				below = true
			}
		}
		if kept == nil && !below {
			continue
		}
		keep := func(d digest.Digest) bool { return kept == nil || kept[d] }
		data, err := rewriteIndex(n.data, keep, replaced)
		if err != nil {
			return nil, fmt.Errorf("rewriting index %s: %w", n.desc.Digest, err)
		}
		nd := ocispec.Descriptor{MediaType: n.desc.MediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
		replaced[n.desc.Digest] = nd
		g.manifests[i] = node{desc: nd, data: data, foreign: n.foreign}
	}
	if nd, ok := replaced[j.root.Digest]; ok {
		j.res.RewrittenFrom = j.root.Digest
		j.root = nd
		if d, ok := j.target.(reference.Digested); ok && d.Digest() != nd.Digest {
			t, err := reference.WithDigest(trimDigest(j.target), nd.Digest)
			if err != nil {
				return nil, err
			}
			j.target = t
		}
	}
	return replaced, nil
}

// trimDigest is n without its digest (its tag kept).
func trimDigest(n reference.Named) reference.Named {
	name := reference.TrimNamed(n)
	if t, ok := n.(reference.Tagged); ok {
		if nt, err := reference.WithTag(name, t.Tag()); err == nil {
			return nt
		}
	}
	return name
}

// dropReferrers returns refs without the referrers of the indexes in
// replaced, and without theirs, noting them in j's result.
func (j *job) dropReferrers(refs []referrerGraph, replaced map[digest.Digest]ocispec.Descriptor) []referrerGraph {
	if len(replaced) == 0 {
		return refs
	}
	gone := map[digest.Digest]bool{}
	for d := range replaced {
		gone[d] = true
	}
	var out []referrerGraph
	// refs are in the order they were found: each after its subject.
	for _, r := range refs {
		if gone[r.subject] {
			gone[r.Desc.Digest] = true
			j.res.ReferrersDropped = append(j.res.ReferrersDropped, r.Desc.Digest)
			continue
		}
		out = append(out, r)
	}
	return out
}
