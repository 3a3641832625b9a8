package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cnabio/cnab-to-oci/relocation"

	"github.com/cnabio/cnab-relocate/fixup"
	"github.com/cnabio/cnab-relocate/layout"
)

// input is what a command reads: a bundle, and where its images are.
type input struct {
	bundle *fixup.Bundle
	// source reads a thick bundle's layout; nil: registries.
	source fixup.Source
	// mapping says where the images are now (relocated before); nil:
	// where the bundle says. mappingName names it in messages.
	mapping     relocation.ImageRelocationMap
	mappingName string
	close       func()
}

// isRegistryBundle reports whether path names a bundle kept in a registry
// (oci://HOST/REPO:TAG).
func isRegistryBundle(path string) bool { return strings.HasPrefix(path, bundleScheme) }

// bundleScheme prefixes a bundle kept in a registry where a path is
// expected: oci://HOST/REPO:TAG.
const bundleScheme = "oci://"

// loadInput loads a bundle.json file, a thick bundle archive (with the
// relocation-mapping.json porter writes beside bundle.json, if any), or a
// bundle kept in a registry (oci://..., with the relocation map saying
// where its images are in its repository). A --source-relocation-mapping
// FILE (mappingFile) says where the images are instead. client makes the
// client that reads a registry's bundle. The caller must call close.
func loadInput(ctx context.Context, path, mappingFile string, client func() (*fixup.Client, error)) (*input, error) {
	in := &input{close: func() {}}
	switch thick, err := layout.IsArchive(path); {
	case isRegistryBundle(path):
		c, err := client()
		if err != nil {
			return nil, err
		}
		in.bundle, in.mapping, err = c.PullBundle(ctx, strings.TrimPrefix(path, bundleScheme))
		if err != nil {
			return nil, err
		}
		in.mappingName = "the relocation map of " + path
	case errors.Is(err, layout.ErrMissingPart):
		return nil, err // exit 1, naming the part
	case err == nil && thick:
		b, a, err := fixup.LoadArchive(ctx, path)
		if err != nil {
			return nil, err
		}
		in.bundle, in.source, in.close = b, fixup.ArchiveSource{Archive: a}, func() { a.Close() }
		if a.RelocationMapping != nil {
			in.mappingName = path + ": " + layout.MappingFile
			if in.mapping, err = fixup.ParseRelocationMapping(a.RelocationMapping); err != nil {
				in.close()
				return nil, fmt.Errorf("%s: %w", in.mappingName, err)
			}
		}
	default:
		b, err := fixup.LoadFile(path)
		if err != nil {
			return nil, err
		}
		in.bundle = b
	}
	if mappingFile != "" {
		m, err := readMapping(mappingFile)
		if err != nil {
			in.close()
			return nil, err
		}
		in.mapping, in.mappingName = m, "source relocation mapping "+mappingFile
	}
	return in, nil
}

// readMapping reads a CNAB relocation mapping file; errors name it (exit 2).
func readMapping(path string) (relocation.ImageRelocationMap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, invalidf("relocation mapping %s: %v", path, errors.Unwrap(err))
	}
	m, err := fixup.ParseRelocationMapping(data)
	if err != nil {
		return nil, fmt.Errorf("relocation mapping %s: %w", path, err)
	}
	return m, nil
}

// explain names the mapping in an error about an image it lacks.
func (in *input) explain(err error) error {
	if errors.Is(err, fixup.ErrNotMapped) && in.mappingName != "" {
		return fmt.Errorf("%s: %w", in.mappingName, err)
	}
	return inBundle(in.bundle.Path(), err)
}
