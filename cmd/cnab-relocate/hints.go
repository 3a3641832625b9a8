package main

import (
	"errors"
	"slices"

	"github.com/cnabio/cnab-relocate/fixup"
)

// hints returns what a user can do about err, naming this command's flags:
// the library's errors say what went wrong at which registry (a
// *fixup.RegistryError matching fixup.ErrPlainHTTP, ErrUnknownAuthority or
// ErrAuthentication); the CLI says which flag fixes it. One hint per
// distinct cause, for every registry error in err's tree.
func hints(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		var re *fixup.RegistryError
		if errors.As(err, &re) && err == error(re) {
			if h := hint(re); h != "" && !slices.Contains(out, h) {
				out = append(out, h)
			}
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

func hint(re *fixup.RegistryError) string {
	host := re.Host
	switch {
	case errors.Is(re, fixup.ErrSparseIndex):
		return "the registry " + host + " refuses an index whose other platforms are absent: --platform-index rewrite gives a new index of the platforms copied instead (a new digest), or drop --platform to copy every platform, or let the registry take sparse indexes (distribution v3: validation.manifests.indexes.platforms: list or none)"
	case errors.Is(re, fixup.ErrNonDistributable):
		return "the image has non-distributable (foreign) layers: copy them with --include-non-distributable, into a target that accepts layer URLs (distribution: validation.manifests.urls.allow)"
	case errors.Is(re, fixup.ErrPlainHTTP):
		return "the registry speaks plain HTTP: allow it with --insecure-registry " + host
	case errors.Is(re, fixup.ErrUnknownAuthority):
		return "trust its CA with --ca-cert FILE, or allow it with --insecure-registry " + host
	case errors.Is(re, fixup.ErrAuthentication):
		return "log in with `docker login " + host + "`, or point DOCKER_CONFIG or --docker-config at the config.json that has the credentials"
	}
	return ""
}
