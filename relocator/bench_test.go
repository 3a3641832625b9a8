package relocator

import (
	"testing"

	"github.com/distribution/reference"
)

func BenchmarkOneToOne(b *testing.B) {
	m := mustNew(b, OneToOne, "registry.corp/team")
	srcs := []reference.Named{
		mustParse(b, "docker.io/istio/proxyv2:1.2"),
		mustParse(b, "nginx@"+dgstA),
		mustParse(b, "gcr.io/cf-elafros/knative-releases/github.com/knative/serving/cmd/autoscaler:v1@"+dgstB),
	}
	b.Run("Map", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := m.Map(srcs[i%len(srcs)], ""); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("oneToOneRepo", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			_ = oneToOneName("registry.corp/team", srcs[i%len(srcs)].Name())
		}
	})
	long := mustParse(b, "example.com/"+repeatPath("component", 24)) // 239 characters: needs the gap
	b.Run("LongPath", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := m.Map(long, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func repeatPath(c string, n int) string {
	s := c
	for i := 1; i < n; i++ {
		s += "/" + c
	}
	return s
}

func BenchmarkCheck(b *testing.B) {
	srcs := newGen(3).repos(b, 100)
	for _, kind := range []Kind{OneToOne, Prefix} {
		m := mustNew(b, kind, "registry.corp/team")
		if err := m.Check(srcs); err != nil {
			b.Fatal(err)
		}
		b.Run(string(kind), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := m.Check(srcs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
