package fixup

import (
	"context"
	"errors"
	"testing"

	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/relocator"
)

// pushOnly is a resolver whose pusher only has containerd's Push method:
// it cannot stream, and the first push must say so rather than panic.
type pushOnly struct{ remotes.Resolver }

type notIngester struct{ remotes.Pusher }

func (p pushOnly) Pusher(ctx context.Context, ref string) (remotes.Pusher, error) {
	return notIngester{}, nil
}

func TestAPusherThatCannotStreamIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, dst := registrytest.StartMemory(false), registrytest.StartMemory(false)
	defer src.Close()
	defer dst.Close()
	img, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1"})
	if err != nil {
		t.Fatal(err)
	}
	plain := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts))})
	// NewClient makes no request, and no probe push: the first push says it.
	c, err := NewClient(ClientOptions{Resolver: pushOnly{plain}})
	if err != nil {
		t.Fatalf("NewClient = %v, want a client", err)
	}
	_, err = c.Copy(ctx, img.Ref(src.Host), dst.Host+"/team/app:1")
	if !errors.Is(err, ErrUnsupportedResolver) || !errors.Is(err, ErrTarget) {
		t.Fatalf("Copy = %v, want ErrUnsupportedResolver at the target", err)
	}
	if tags, _ := dst.Client().Tags(ctx, "team/app"); len(tags) != 0 {
		t.Errorf("the target has tags %v, want none", tags)
	}
}

// TestReferrersSearchedSaysWhetherAnybodyLooked: a plain containerd
// resolver cannot list tags or referrers; the result says the referrers
// were not searched instead of reporting none.
func TestReferrersSearchedSaysWhetherAnybodyLooked(t *testing.T) {
	ctx := context.Background()
	src, dst := registrytest.StartMemory(true), registrytest.StartMemory(true)
	defer src.Close()
	defer dst.Close()
	img, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]byte(`{"invocationImages": [{"image": "` + img.Ref(src.Host) + `"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	plain := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts))})
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	for _, tc := range []struct {
		name     string
		opts     ClientOptions
		prefix   string
		searched bool
	}{
		{"containerd's resolver", ClientOptions{Resolver: plain}, "a", false},
		{"this module's resolver", ClientOptions{}, "b", true},
		{"referrers off", ClientOptions{Referrers: ReferrerOptions{Disabled: true}}, "c", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := relocator.New(relocator.OneToOne, dst.Host+"/"+tc.prefix)
			res, err := Relocate(ctx, b, Options{Mapping: m, ClientOptions: tc.opts})
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Images[0].ReferrersSearched; got != tc.searched {
				t.Errorf("ReferrersSearched = %v, want %v", got, tc.searched)
			}
		})
	}
}

// TestNoPanicOnCallerInput: what a Go caller passes is checked, never a
// panic: nil bundles, nil mappings, empty references.
func TestNoPanicOnCallerInput(t *testing.T) {
	ctx := context.Background()
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	m, _ := relocator.New(relocator.OneToOne, "127.0.0.1:1/team")
	c, err := NewClient(ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"Relocate nil bundle":  func() error { _, err := Relocate(ctx, nil, Options{Mapping: m}); return err },
		"Relocate nil mapping": func() error { b, _ := Parse([]byte(`{}`)); _, err := Relocate(ctx, b, Options{}); return err },
		"NewPlan nil bundle":   func() error { _, err := NewPlan(nil, m); return err },
		"NewPlan nil mapping":  func() error { b, _ := Parse([]byte(`{}`)); _, err := NewPlan(b, nil); return err },
		"Export nil bundle":    func() error { _, err := Export(ctx, nil, ExportOptions{}); return err },
		"Verify nil bundle":    func() error { _, err := Verify(ctx, nil, nil, VerifyOptions{}); return err },
		"Rewrite nil bundle":   func() error { _, err := (*Bundle)(nil).Rewrite(nil, nil); return err },
		"Copy empty":           func() error { _, err := c.Copy(ctx, "", ""); return err },
		"Digest empty":         func() error { _, err := c.Digest(ctx, ""); return err },
		"NewLayout empty":      func() error { _, err := c.NewLayout(""); return err },
		"Push bad digest":      func() error { l, _ := c.NewLayout(t.TempDir()); return l.Push(ctx, "sha256:nope", "127.0.0.1:1/x") },
	} {
		t.Run(name, func(t *testing.T) {
			if err := call(); !errors.Is(err, ErrInvalidInput) {
				t.Errorf("got %v, want an ErrInvalidInput", err)
			}
		})
	}
}
