package relocator

import (
	"errors"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

// FuzzMap: for any reference and prefix, New and Map never panic; whenever
// both the prefix and the reference are accepted, the one-to-one result
// parses, is at most 255 characters, keeps the source's tag and digest, and
// Map fails only with ErrInvalidTarget, and only for a prefix that docker
// normalisation lengthens (a Docker Hub namespace). Prefix mapping results
// parse or fail with ErrInvalidTarget.
func FuzzMap(f *testing.F) {
	for _, s := range [][2]string{
		{"docker.io/istio/proxyv2:1.2", "example.com/user"},
		{"projectriff/builder:v1", "example.com/user"},
		{"nginx", "localhost:5000/team"},
		{"localhost:5000/a/b@" + dgstA, "example.com"},
		{"gcr.io/cf-elafros/knative-releases/github.com/knative/serving/cmd/autoscaler:t@" + dgstB, "registry.corp/a"},
		{"[::1]:5000/a/b", "[::1]:5000"},
		{"example.com/" + strings.Repeat("a/", 100) + "b", "example.com/user"},
		{"istio/proxyv2", prefixOfLen(222)},
		{"a/b", strings.Repeat("p", 150)},
		{"Example.com/x", "docker.io"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, ref, prefix string) {
		src, err := reference.ParseNormalizedNamed(ref)
		m, errNew := New(OneToOne, prefix)
		pm, errPrefix := New(Prefix, prefix)
		_ = oneToOneRepo(prefix, mustName(src, err))
		if errNew == nil && errPrefix != nil {
			t.Fatalf("prefix %q valid for one-to-one but not prefix: %v", prefix, errPrefix)
		}
		if errNew != nil && !errors.Is(errNew, ErrInvalidPrefix) {
			t.Fatalf("New(%q): %v does not wrap ErrInvalidPrefix", prefix, errNew)
		}
		if err != nil {
			return
		}
		if errPrefix == nil {
			y, err := pm.Map(src, "")
			if err != nil {
				if !errors.Is(err, ErrInvalidTarget) {
					t.Fatalf("prefix Map(%s): %v", src, err)
				}
			} else {
				assertParses(t, y)
				if !strings.HasSuffix(y.String(), reference.Path(src)+strings.TrimPrefix(src.String(), src.Name())) {
					t.Fatalf("prefix Map(%s) = %s loses the path", src, y)
				}
			}
		}
		if errNew != nil {
			return
		}
		y, err := m.Map(src, "")
		if err != nil {
			if !errors.Is(err, ErrInvalidTarget) {
				t.Fatalf("Map(%s) with prefix %q: %v", src, prefix, err)
			}
			if explicitDomain(prefix) {
				t.Fatalf("Map(%s) with prefix %q (explicit registry): %v", src, prefix, err)
			}
			return
		}
		assertParses(t, y)
		if got, want := tagOf(y), tagOf(src); got != want {
			t.Fatalf("Map(%s) = %s: tag %q, want %q", src, y, got, want)
		}
		if got, want := digestOf(y), digestOf(src); got != want {
			t.Fatalf("Map(%s) = %s: digest %q, want %q", src, y, got, want)
		}
		if explicitDomain(prefix) && y.Name() != oneToOneRepo(prefix, src) {
			t.Fatalf("Map(%s) = %s, oneToOneRepo = %s", src, y, oneToOneRepo(prefix, src))
		}
		if err := m.Check([]reference.Named{src, y}); err != nil && !errors.Is(err, ErrInvalidTarget) {
			t.Fatalf("Check: %v", err)
		}
	})
}

// mustName gives oneToOneRepo something to chew on even for refs that do not parse.
func mustName(n reference.Named, err error) reference.Named {
	if err == nil {
		return n
	}
	r, _ := reference.WithName("docker.io/library/x")
	return r
}

// explicitDomain reports whether docker reads prefix unchanged (it starts
// with a registry host and is not rewritten by normalisation).
func explicitDomain(prefix string) bool {
	n, err := reference.ParseNormalizedNamed(prefix + "/x")
	return err == nil && n.Name() == prefix+"/x"
}

func tagOf(r reference.Named) string {
	if t, ok := r.(reference.Tagged); ok {
		return t.Tag()
	}
	return ""
}

func digestOf(r reference.Named) string {
	if d, ok := r.(reference.Digested); ok {
		return d.Digest().String()
	}
	return ""
}
