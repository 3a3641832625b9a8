package fixup

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strconv"

	"github.com/cnabio/cnab-go/bundle"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/canonical"
)

// Image types that relocation copies. An absent imageType means "oci", as
// CNAB says.
const (
	ImageTypeOCI    = "oci"
	ImageTypeDocker = "docker"
)

// Bundle is a CNAB bundle.json as loaded: the whole document, kept so that
// a rewrite changes nothing but image references, and the images in it.
type Bundle struct {
	// Images lists the invocation images, in order, then the entries of
	// "images", sorted by key.
	Images []Image

	doc  map[string]any
	raw  []byte
	path string
}

// Image is one image entry of a bundle.
type Image struct {
	// Field says where the image sits in the bundle, e.g.
	// "invocationImages[0]" or "images.web".
	Field string
	// Ref is the "image" field exactly as written.
	Ref string
	// ImageType is the imageType as written ("" when absent).
	ImageType string
	// ContentDigest is the contentDigest as written ("" when absent).
	ContentDigest string
	// Named is the parsed, normalised reference; nil when the image is not
	// relocatable.
	Named reference.Named

	entry map[string]any
}

// Relocatable reports whether relocation copies this image: its type is
// docker or oci (or absent).
func (i Image) Relocatable() bool {
	switch i.ImageType {
	case "", ImageTypeOCI, ImageTypeDocker:
		return true
	}
	return false
}

// Digest returns the image's root digest as far as the bundle knows it:
// contentDigest, else the digest in its reference, else "". It is an error
// when contentDigest is invalid or disagrees with the reference's digest.
func (i Image) Digest() (digest.Digest, error) {
	var refDigest digest.Digest
	if c, ok := i.Named.(reference.Canonical); ok {
		refDigest = c.Digest()
	}
	if i.ContentDigest == "" {
		return refDigest, nil
	}
	d, err := digest.Parse(i.ContentDigest)
	if err != nil {
		return "", invalid(fmt.Errorf("%w %s (%s): contentDigest %q: %v", ErrInvalidImage, i.Ref, i.Field, i.ContentDigest, err))
	}
	if refDigest != "" && refDigest != d {
		return "", invalid(fmt.Errorf("%w %s (%s): contentDigest %s differs from the digest in the reference", ErrInvalidImage, i.Ref, i.Field, d))
	}
	return d, nil
}

// LoadFile reads and parses a bundle.json file. Errors name the file.
func LoadFile(path string) (*Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is named once, below
		}
		return nil, invalid(fmt.Errorf("%w %s: %v", ErrInvalidBundle, path, err))
	}
	b, err := Parse(data)
	if err != nil {
		return nil, invalid(fmt.Errorf("%s: %w", path, err))
	}
	b.path = path
	return b, nil
}

// Parse parses a bundle.json document. It requires only what relocation
// needs: an object whose relocatable images (invocationImages and images of
// type docker, oci or no type) have a valid "image" reference. Everything
// else, known or not, is kept as it is. "images", "invocationImages" and
// other sections may be null.
func Parse(data []byte) (*Bundle, error) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, invalid(fmt.Errorf("%w: %v", ErrInvalidBundle, jsonError(data, err)))
	}
	if doc == nil {
		return nil, invalid(fmt.Errorf("%w: the document is null, not a bundle object", ErrInvalidBundle))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalid(fmt.Errorf("%w: unexpected data after the bundle object", ErrInvalidBundle))
	}
	b := &Bundle{doc: doc, raw: data}

	inv, err := optional[[]any](doc, "invocationImages")
	if err != nil {
		return nil, err
	}
	if len(inv) == 0 {
		return nil, invalid(fmt.Errorf("%w: no invocation image (invocationImages is empty or missing)", ErrInvalidBundle))
	}
	for i, v := range inv {
		img, err := newImage(fmt.Sprintf("invocationImages[%d]", i), v)
		if err != nil {
			return nil, err
		}
		b.Images = append(b.Images, img)
	}
	images, err := optional[map[string]any](doc, "images")
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(images))
	for k := range images {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		img, err := newImage("images."+k, images[k])
		if err != nil {
			return nil, err
		}
		b.Images = append(b.Images, img)
	}
	return b, nil
}

// optional returns doc[key] as T; absent or null gives the zero T.
func optional[T any](doc map[string]any, key string) (T, error) {
	var zero T
	v, ok := doc[key]
	if !ok || v == nil {
		return zero, nil
	}
	t, ok := v.(T)
	if !ok {
		return zero, invalid(fmt.Errorf("%w: %q is a %s, want %s", ErrInvalidBundle, key, jsonType(v), jsonType(zero)))
	}
	return t, nil
}

func newImage(field string, v any) (Image, error) {
	entry, ok := v.(map[string]any)
	if !ok {
		return Image{}, invalid(fmt.Errorf("%w: %s is a %s, want an object", ErrInvalidBundle, field, jsonType(v)))
	}
	img := Image{Field: field, entry: entry}
	for key, dst := range map[string]*string{"image": &img.Ref, "imageType": &img.ImageType, "contentDigest": &img.ContentDigest} {
		switch s := entry[key].(type) {
		case nil:
		case string:
			*dst = s
		default:
			return Image{}, invalid(fmt.Errorf("%w: %s.%s is a %s, want a string", ErrInvalidBundle, field, key, jsonType(s)))
		}
	}
	if !img.Relocatable() {
		return img, nil
	}
	if img.Ref == "" {
		return Image{}, invalid(fmt.Errorf("%w: %s has no \"image\" reference", ErrInvalidImage, field))
	}
	named, err := reference.ParseNormalizedNamed(img.Ref)
	if err != nil {
		return Image{}, invalid(fmt.Errorf("%w %q (%s): not a valid image reference: %v", ErrInvalidImage, img.Ref, field, err))
	}
	img.Named = named
	return img, nil
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number, float64:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// jsonError adds a line and column to JSON syntax errors.
func jsonError(data []byte, err error) error {
	var se *json.SyntaxError
	off := int64(-1)
	switch e := err.(type) {
	case *json.SyntaxError:
		se = e
		off = e.Offset
	case *json.UnmarshalTypeError:
		if e.Field == "" {
			return fmt.Errorf("the document is a JSON %s, not a bundle object", e.Value)
		}
		off = e.Offset
	}
	if err == io.EOF {
		return fmt.Errorf("empty file")
	}
	if err == io.ErrUnexpectedEOF {
		line := bytes.Count(data, []byte("\n")) + 1
		return fmt.Errorf("malformed JSON at line %d: unexpected end of file", line)
	}
	if off < 0 {
		return err
	}
	line, col := 1, 1
	for _, c := range data[:min(int(off), len(data))] {
		if c == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	msg := err.Error()
	if se != nil {
		msg = se.Error()
	}
	return fmt.Errorf("malformed JSON at line %s, column %s: %s", strconv.Itoa(line), strconv.Itoa(col), msg)
}

// Rewrite returns the bundle as canonical JSON with each relocated image's
// "image" replaced by mapping[ref] and its "contentDigest" set to
// digests[ref]. Every other field is kept. The receiver is not modified.
func (b *Bundle) Rewrite(mapping map[string]string, digests map[string]digest.Digest) ([]byte, error) {
	return b.rewrite(mapping, digests, nil)
}

// RewriteRoots is Rewrite with each image's root descriptor (Result.Roots):
// an image whose root is not the digest the bundle records (an index
// rewritten to some platforms) gets its digest as contentDigest and, where
// the entry has a "size", its size.
func (b *Bundle) RewriteRoots(mapping map[string]string, roots map[string]ocispec.Descriptor) ([]byte, error) {
	digests := map[string]digest.Digest{}
	for ref, d := range roots {
		digests[ref] = d.Digest
	}
	return b.rewrite(mapping, digests, roots)
}

func (b *Bundle) rewrite(mapping map[string]string, digests map[string]digest.Digest, roots map[string]ocispec.Descriptor) ([]byte, error) {
	if b == nil {
		return nil, invalid(fmt.Errorf("%w: no bundle (nil)", ErrInvalidBundle))
	}
	doc := deepCopy(b.doc).(map[string]any)
	set := func(entry map[string]any) {
		ref, _ := entry["image"].(string)
		if to, ok := mapping[ref]; ok {
			entry["image"] = to
			if d, ok := digests[ref]; ok && d != "" {
				old, _ := entry["contentDigest"].(string)
				entry["contentDigest"] = d.String()
				if _, sized := entry["size"]; sized && old != "" && old != d.String() && roots[ref].Size > 0 {
					entry["size"] = roots[ref].Size
				}
			}
		}
	}
	for _, img := range b.Images {
		if !img.Relocatable() {
			continue
		}
		set(lookupEntry(doc, img.Field))
	}
	return canonical.JSON(doc)
}

// lookupEntry finds the image entry named by field in doc.
func lookupEntry(doc map[string]any, field string) map[string]any {
	var idx int
	if _, err := fmt.Sscanf(field, "invocationImages[%d]", &idx); err == nil {
		return doc["invocationImages"].([]any)[idx].(map[string]any)
	}
	return doc["images"].(map[string]any)[field[len("images."):]].(map[string]any)
}

func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, e := range t {
			s[i] = deepCopy(e)
		}
		return s
	}
	return v
}

// Raw returns the bytes the bundle was parsed from, unchanged (CNAB
// signatures cover them). The caller must not modify them.
func (b *Bundle) Raw() []byte { return b.raw }

// Path is the file the bundle was loaded from ("" when parsed from memory).
func (b *Bundle) Path() string { return b.path }

// FromCNAB converts a cnab-go bundle, as docker-app and other cnab-go users
// hold it, for Relocate. Fields cnab-go does not model are not in it, so
// callers that have the original bundle.json should Parse that instead.
func FromCNAB(b *bundle.Bundle) (*Bundle, error) {
	data, err := json.Marshal(b)
	if err != nil {
		return nil, invalid(fmt.Errorf("%w: %v", ErrInvalidBundle, err))
	}
	return Parse(data)
}
