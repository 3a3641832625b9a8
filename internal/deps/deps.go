// Package deps pins modules the project uses so that concurrent work does
// not need to edit go.mod. It is removed once every import is in real code.
package deps

import (
	_ "github.com/cnabio/cnab-go/bundle"
	_ "github.com/containerd/containerd/remotes/docker"
	_ "github.com/distribution/reference"
	_ "github.com/docker/cli/cli/config"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/opencontainers/go-digest"
	_ "github.com/opencontainers/image-spec/specs-go/v1"
	_ "github.com/qri-io/jsonschema"
	_ "github.com/spf13/pflag"
	_ "golang.org/x/crypto/bcrypt"
	_ "golang.org/x/sync/errgroup"
)
