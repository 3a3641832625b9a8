package relocator

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// gen makes random but valid references, deterministically.
type gen struct{ r *rand.Rand }

func newGen(seed uint64) gen { return gen{rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))} }

const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"

func (g gen) word(max int) string {
	n := 1 + g.r.IntN(max)
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 && i < n-1 && g.r.IntN(6) == 0 {
			b.WriteString([]string{".", "_", "__", "-", "--"}[g.r.IntN(5)])
		}
		b.WriteByte(alnum[g.r.IntN(len(alnum))])
	}
	return b.String()
}

func (g gen) repo() string {
	domains := []string{"", "docker.io", "index.docker.io", "gcr.io", "quay.io", "localhost",
		"localhost:5000", "registry.example.com:443", "127.0.0.1:5000", "[::1]:5000", g.word(8) + ".io"}
	d := domains[g.r.IntN(len(domains))]
	n := 1 + g.r.IntN(6)
	if g.r.IntN(20) == 0 {
		n = 20 + g.r.IntN(30) // long paths exercise the gap
	}
	comps := make([]string, n)
	for i := range comps {
		comps[i] = g.word(12)
	}
	s := strings.Join(comps, "/")
	if d != "" {
		s = d + "/" + s
	}
	return s
}

func (g gen) tag() string {
	const tagChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
	n := 1 + g.r.IntN(20)
	b := []byte{"aZ0_"[g.r.IntN(4)]}
	for i := 1; i < n; i++ {
		b = append(b, tagChars[g.r.IntN(len(tagChars))])
	}
	return string(b)
}

func (g gen) digest() digest.Digest {
	return digest.FromString(fmt.Sprint(g.r.Uint64()))
}

// repos returns n distinct valid normalised repositories.
func (g gen) repos(t testing.TB, n int) []reference.Named {
	seen := map[string]bool{}
	var out []reference.Named
	for len(out) < n {
		r, err := reference.ParseNormalizedNamed(g.repo())
		if err != nil || len(r.Name()) > reference.NameTotalLengthMax || seen[r.Name()] {
			continue
		}
		seen[r.Name()] = true
		out = append(out, r)
	}
	return out
}

func prefixes() []string {
	return []string{"example.com/user", "localhost:5000/team", "example.com", "registry.corp/a/b/c",
		"team", prefixOfLen(150), prefixOfLen(200), prefixOfLen(222)}
}

// TestPropertyTagDigest: x -> y implies x:t -> y:t, x@d -> y@d and x:t@d -> y:t@d.
func TestPropertyTagDigest(t *testing.T) {
	t.Parallel()
	g := newGen(1)
	for _, kind := range []Kind{OneToOne, Prefix} {
		for _, p := range prefixes() {
			t.Run(fmt.Sprintf("%s/%.30s", kind, p), func(t *testing.T) {
				m, err := New(kind, p)
				if err != nil {
					t.Skipf("New: %v", err)
				}
				for _, x := range g.repos(t, 300) {
					y, err := m.Map(x, "")
					if err != nil {
						if !errors.Is(err, ErrInvalidTarget) {
							t.Fatalf("Map(%s): %v", x, err)
						}
						continue
					}
					if !reference.IsNameOnly(y) {
						t.Fatalf("Map(%s) = %s has a tag or digest", x, y)
					}
					tg, d := g.tag(), g.digest()
					xt, _ := reference.WithTag(x, tg)
					xd, _ := reference.WithDigest(x, d)
					xtd, _ := reference.WithDigest(xt, d)
					for src, want := range map[reference.Named]string{
						xt:  y.String() + ":" + tg,
						xd:  y.String() + "@" + d.String(),
						xtd: y.String() + ":" + tg + "@" + d.String(),
					} {
						got, err := m.Map(src, "")
						if err != nil {
							t.Fatalf("Map(%s): %v", src, err)
						}
						if got.String() != want {
							t.Fatalf("Map(%s) = %s, want %s", src, got, want)
						}
						assertParses(t, got)
					}
				}
			})
		}
	}
}

// TestPropertyDistinct: distinct source repositories map to distinct target
// repositories under one-to-one, and under prefix when their paths differ;
// Check agrees.
func TestPropertyDistinct(t *testing.T) {
	t.Parallel()
	g := newGen(2)
	srcs := g.repos(t, 5000)
	for _, p := range prefixes() {
		t.Run(fmt.Sprintf("one-to-one/%.30s", p), func(t *testing.T) {
			m := mustNew(t, OneToOne, p)
			seen := map[string]string{}
			var mapped []reference.Named
			for _, x := range srcs {
				y, err := m.Map(x, "")
				if err != nil {
					if p == "team" && errors.Is(err, ErrInvalidTarget) {
						continue // hub-namespace prefix: normalisation may overflow
					}
					t.Fatalf("Map(%s): %v", x, err)
				}
				assertParses(t, y)
				if prev, ok := seen[y.Name()]; ok {
					t.Fatalf("%s and %s both map to %s", prev, x.Name(), y.Name())
				}
				seen[y.Name()] = x.Name()
				mapped = append(mapped, x)
			}
			if err := m.Check(mapped); err != nil {
				t.Fatalf("Check: %v", err)
			}
		})
	}
	t.Run("prefix", func(t *testing.T) {
		m := mustNew(t, Prefix, "example.com/user")
		byPath := map[string]string{}
		var distinct []reference.Named
		for _, x := range srcs {
			if _, dup := byPath[reference.Path(x)]; dup {
				continue
			}
			if len("example.com/user/"+reference.Path(x)) > reference.NameTotalLengthMax {
				if _, err := m.Map(x, ""); !errors.Is(err, ErrInvalidTarget) {
					t.Fatalf("Map(%s): %v; want ErrInvalidTarget", x, err)
				}
				continue
			}
			byPath[reference.Path(x)] = x.Name()
			distinct = append(distinct, x)
		}
		seen := map[string]string{}
		for _, x := range distinct {
			y, err := m.Map(x, "")
			if err != nil {
				t.Fatalf("Map(%s): %v", x, err)
			}
			assertParses(t, y)
			if prev, ok := seen[y.Name()]; ok {
				t.Fatalf("%s and %s both map to %s", prev, x.Name(), y.Name())
			}
			seen[y.Name()] = x.Name()
		}
		if err := m.Check(distinct); err != nil {
			t.Fatalf("Check: %v", err)
		}
		// The same path on another registry collides.
		other := mustParse(t, "other.example/"+reference.Path(distinct[0]))
		if err := m.Check(append(distinct, other)); !errors.Is(err, ErrCollision) {
			t.Fatalf("Check with %s: %v; want ErrCollision", other, err)
		}
	})
}

func assertParses(t testing.TB, y reference.Named) {
	t.Helper()
	back, err := reference.ParseNormalizedNamed(y.String())
	if err != nil {
		t.Fatalf("result %s does not parse: %v", y, err)
	}
	if back.String() != y.String() {
		t.Fatalf("result %s parses as %s", y, back)
	}
	if len(y.Name()) > reference.NameTotalLengthMax {
		t.Fatalf("result %s: name is %d characters", y, len(y.Name()))
	}
}
