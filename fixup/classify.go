package fixup

import (
	"encoding/json"
	"errors"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func (e *engine) sourceErr(j *job, what string, err error) error {
	if errors.Is(err, ErrInvalidInput) || errors.Is(err, ErrSource) {
		return err
	}
	host, _ := e.src.Location(j.img)
	if host != "" {
		err = registryError(host, err)
	}
	return sideError{ErrSource, fmt.Errorf("%s: %s: %w", e.src.Name(j.img), what, err)}
}

func (e *engine) targetErr(j *job, what string, err error) error {
	if errors.Is(err, ErrInvalidInput) || errors.Is(err, ErrSource) || errors.Is(err, ErrTarget) {
		return err
	}
	var ce error = err
	if j.host != "" {
		ce = registryError(j.host, err)
	}
	if errors.Is(err, ErrOutput) {
		// A local write: the layout's path is in the message already.
		return sideError{ErrTarget, fmt.Errorf("%s: %w", what, ce)}
	}
	return sideError{ErrTarget, fmt.Errorf("%s: %s: %w", e.dst.describe(j.host), what, ce)}
}

// foreignErr explains a target's refusal of a manifest with
// non-distributable layers (foreign layers, layers with URLs): they were
// not copied, or the target refuses layer URLs. Other errors, and
// manifests without such layers, are returned as they are.
func (e *engine) foreignErr(n node, err error) error {
	layers := n.foreign
	if e.c.opts.IncludeNonDistributable {
		layers = nil
		var m ocispec.Manifest
		if json.Unmarshal(n.data, &m) == nil {
			for _, l := range m.Layers {
				if nonDistributable(l) || len(l.URLs) > 0 {
					layers = append(layers, l)
				}
			}
		}
	}
	if len(layers) == 0 || errors.Is(err, ErrAuthentication) || errors.Is(err, ErrSource) {
		return err
	}
	l := layers[0]
	why := "it was not copied (non-distributable layers are not, unless asked for)"
	if e.c.opts.IncludeNonDistributable {
		why = "it was copied, and the target refuses manifests whose layers carry URLs"
	}
	return &foreignError{err: fmt.Errorf("manifest %s has %d non-distributable layer(s), the first %s (%s, URLs %v): %s: %w", n.desc.Digest, len(layers), l.Digest, l.MediaType, l.URLs, why, err)}
}

// foreignError matches ErrNonDistributable and what it wraps.
type foreignError struct{ err error }

func (e *foreignError) Error() string { return e.err.Error() }

func (e *foreignError) Unwrap() []error { return []error{ErrNonDistributable, e.err} }
