package resolver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/resolver"
)

// TestPushBlobRequests: on registries that mount, a blob costs one POST
// when it is there already or can be mounted, and POST + PUT otherwise:
// no HEAD. On one that does not (go-containerregistry's), the first
// declined mount from a repository that has the blob makes every later
// blob looked for first, so that what is there is still not uploaded.
func TestPushBlobRequests(t *testing.T) {
	t.Parallel()
	for _, impl := range registrytest.Impls {
		t.Run(impl.String(), func(t *testing.T) {
			reg := registrytest.Start(t, registrytest.Options{Impl: impl})
			p := registrytest.NewProxy(reg, registrytest.ProxyOptions{})
			defer p.Close()
			r, err := resolver.New(resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			data := registrytest.RandomBytes(7, 4096)
			desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(data), Size: int64(len(data))}
			opened := 0
			open := func(context.Context) (io.ReadCloser, error) {
				opened++
				return io.NopCloser(bytes.NewReader(data)), nil
			}
			mounts := impl != registrytest.GGCR
			step := func(name, repo, from string, want resolver.BlobPush, wantOpened int, wantCounts map[string]int) {
				t.Helper()
				p.Reset()
				opened = 0
				got, err := r.PushBlob(ctx, p.Host+"/"+repo, desc, from, open)
				if err != nil {
					t.Fatalf("%s: PushBlob: %v", name, err)
				}
				if got != want || opened != wantOpened {
					t.Errorf("%s: PushBlob = %v, opened %d times; want %v, %d", name, got, opened, want, wantOpened)
				}
				if diff := cmp.Diff(wantCounts, p.Counts()); diff != "" {
					t.Errorf("%s: requests (-want +got):\n%s", name, diff)
				}
			}

			step("cold", "team/a", "", resolver.BlobUploaded, 1, map[string]int{"POST mount": 1, "PUT blob": 1})
			if got, err := reg.Client().GetBlob(ctx, "team/a", desc.Digest); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("team/a has %d bytes of the blob (%v); want the %d pushed", len(got), err, len(data))
			}
			if mounts {
				step("there already", "team/a", "", resolver.BlobExisted, 0, map[string]int{"POST mount": 1})
				step("mounted", "team/b", "team/a", resolver.BlobMounted, 0, map[string]int{"POST mount": 1})
			} else {
				// Declined: looked for, found (this registry keeps blobs
				// for all its repositories), not uploaded.
				step("mount declined", "team/b", "team/a", resolver.BlobExisted, 0, map[string]int{"POST mount": 1, "HEAD blob": 1})
				step("there already", "team/a", "", resolver.BlobExisted, 0, map[string]int{"HEAD blob": 1})
			}
			if ok, err := reg.Client().BlobExists(ctx, "team/b", desc.Digest); err != nil || !ok {
				t.Errorf("team/b has the blob: %v, %v; want true", ok, err)
			}
		})
	}
}

// TestPushBlobBadBody: content that fails on the way is never stored, and
// its error is PushBlob's as it is.
func TestPushBlobBadBody(t *testing.T) {
	t.Parallel()
	reg := registrytest.Start(t, registrytest.Options{})
	r, err := resolver.New(resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := registrytest.RandomBytes(8, 1<<20)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(data), Size: int64(len(data))}
	broken := io.ErrClosedPipe
	_, err = r.PushBlob(ctx, reg.Host+"/team/a", desc, "", func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(bytes.NewReader(data[:len(data)/2]), failingReader{broken})), nil
	})
	if err != broken {
		t.Errorf("PushBlob = %v; want the body's error %v as it is", err, broken)
	}
	if ok, err := reg.Client().BlobExists(ctx, "team/a", desc.Digest); err != nil || ok {
		t.Errorf("team/a has the blob: %v, %v; want false", ok, err)
	}
}

// failingReader is a reader that fails.
type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

// seedManifest pushes a one-layer image of seed to reg as team/a:1 and
// returns it with its manifest's bytes and descriptor.
func seedManifest(t *testing.T, ctx context.Context, reg *registrytest.Registry, seed int64) (registrytest.Image, []byte, ocispec.Descriptor) {
	t.Helper()
	img, err := reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "team/a", Tag: "1", Layers: []int{100}, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	data, desc, err := reg.Client().GetManifest(ctx, "team/a", "1")
	if err != nil {
		t.Fatal(err)
	}
	return img, data, desc
}

// TestPushManifest: one PUT, byte for byte, under a tag.
func TestPushManifest(t *testing.T) {
	t.Parallel()
	reg := registrytest.Start(t, registrytest.Options{})
	p := registrytest.NewProxy(reg, registrytest.ProxyOptions{})
	defer p.Close()
	ctx := context.Background()
	img, data, desc := seedManifest(t, ctx, reg, 3)
	r, err := resolver.New(resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PushManifest(ctx, p.Host+"/team/a", "2", desc.MediaType, data); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int{"PUT manifest": 1}, p.Counts()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	got, gdesc, err := reg.Client().GetManifest(ctx, "team/a", "2")
	if err != nil || !bytes.Equal(got, data) || gdesc.Digest != img.Root.Digest {
		t.Errorf("team/a:2 = %s (%v); want the bytes of %s", gdesc.Digest, err, img.Root.Digest)
	}
}

// TestDeadTokens: a token server whose tokens the registry refuses on
// arrival (its clock far ahead) costs a request sent again with a new
// token each time, up to three times running; a fourth refusal is a failed
// login, an *AuthError, after a bounded number of tokens — never a loop.
func TestDeadTokens(t *testing.T) {
	t.Parallel()
	reg := registrytest.Start(t, registrytest.Options{TokenAuth: &registrytest.TokenAuth{TTL: time.Minute}})
	p := registrytest.NewProxy(reg, registrytest.ProxyOptions{})
	defer p.Close()
	ctx := context.Background()
	img, data, desc := seedManifest(t, ctx, reg, 5)
	blob := registrytest.RandomBytes(9, 2048)
	bdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	open := func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(blob)), nil }
	r, err := resolver.New(resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	// Each step its own repository: a scope of its own, no token kept.
	for _, tc := range []struct {
		name string
		dead int
		push func(repo string) error
		// want: requests of the kind, tokens issued; fail: an *AuthError.
		kind   string
		want   int
		tokens int
		fail   bool
	}{
		// The first request learns the challenge (no token yet), then 3
		// refused, then 1 let through.
		{name: "manifest, 3 dead tokens", dead: 3, kind: "PUT manifest", want: 5, tokens: 4, push: func(string) error {
			return r.PushManifest(ctx, p.Host+"/team/a", "2", desc.MediaType, data)
		}},
		{name: "blob, 3 dead tokens", dead: 3, kind: "POST mount", want: 4, tokens: 4, push: func(repo string) error {
			_, err := r.PushBlob(ctx, p.Host+"/"+repo, bdesc, "", open)
			return err
		}},
		{name: "manifest, every token dead", dead: 100, kind: "PUT manifest", want: 4, tokens: 4, fail: true, push: func(repo string) error {
			return r.PushManifest(ctx, p.Host+"/"+repo, "1", desc.MediaType, data)
		}},
	} {
		repo := fmt.Sprintf("team/dead-%d", len(reg.Tokens.Issued()))
		p.Reset()
		before := reg.Tokens.Total()
		reg.Tokens.DeadOnArrival(tc.dead)
		err := tc.push(repo)
		reg.Tokens.DeadOnArrival(0)
		var ae *resolver.AuthError
		switch {
		case tc.fail && !errors.As(err, &ae):
			t.Errorf("%s: error = %v; want an *AuthError", tc.name, err)
		case !tc.fail && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		}
		if got := p.Counts()[tc.kind]; got != tc.want {
			t.Errorf("%s: %d %s requests; want %d (%v)", tc.name, got, tc.kind, tc.want, p.Counts())
		}
		if got := reg.Tokens.Total() - before; got != tc.tokens {
			t.Errorf("%s: %d tokens issued; want %d", tc.name, got, tc.tokens)
		}
		if tc.fail {
			continue
		}
		if tc.kind == "PUT manifest" {
			if _, gdesc, err := reg.Client().GetManifest(ctx, "team/a", "2"); err != nil || gdesc.Digest != img.Root.Digest {
				t.Errorf("%s: team/a:2 = %s (%v); want %s", tc.name, gdesc.Digest, err, img.Root.Digest)
			}
		} else if got, err := reg.Client().GetBlob(ctx, repo, bdesc.Digest); err != nil || !bytes.Equal(got, blob) {
			t.Errorf("%s: %s has %d bytes of the blob (%v); want %d", tc.name, repo, len(got), err, len(blob))
		}
	}
}

// TestUploadMeetsDeadToken: an upload PUT refused for its token (it died
// on the way: the registry answers 401 with its challenge, as distribution
// does) is done again whole, with a new token, up to three times.
func TestUploadMeetsDeadToken(t *testing.T) {
	t.Parallel()
	reg := registrytest.Start(t, registrytest.Options{TokenAuth: &registrytest.TokenAuth{TTL: time.Minute}})
	p := registrytest.NewProxy(reg, registrytest.ProxyOptions{})
	defer p.Close()
	ctx := context.Background()
	r, err := resolver.New(resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		refused int // PUTs answered 401
		puts    int
		wantErr bool
	}{
		{refused: 3, puts: 4},
		{refused: 4, puts: 4, wantErr: true},
	} {
		repo := fmt.Sprintf("team/put-%d", tc.refused)
		blob := registrytest.RandomBytes(int64(tc.refused), 4096)
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
		opened := 0
		open := func(context.Context) (io.ReadCloser, error) {
			opened++
			return io.NopCloser(bytes.NewReader(blob)), nil
		}
		refused := 0
		p.SetHook(func(w http.ResponseWriter, q *http.Request) bool {
			if q.Method != http.MethodPut || refused == tc.refused {
				return false
			}
			refused++
			io.Copy(io.Discard, q.Body)
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="registrytest",scope="repository:%s:pull,push"`, reg.Tokens.URL, repo))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return true
		})
		p.Reset()
		before := reg.Tokens.Total()
		got, err := r.PushBlob(ctx, p.Host+"/"+repo, desc, "", open)
		p.SetHook(nil)
		if tc.wantErr != (err != nil) {
			t.Errorf("%d PUTs refused: PushBlob = %v, %v; want an error: %v", tc.refused, got, err, tc.wantErr)
		}
		if n := p.Counts()["PUT blob"]; n != tc.puts || opened != tc.puts {
			t.Errorf("%d PUTs refused: %d PUTs, opened %d times; want %d", tc.refused, n, opened, tc.puts)
		}
		// A new token after each refusal (the first POST learns the
		// challenge and fetches the first).
		if n := reg.Tokens.Total() - before; n != tc.puts {
			t.Errorf("%d PUTs refused: %d tokens issued; want %d", tc.refused, n, tc.puts)
		}
		if tc.wantErr {
			continue
		}
		if b, err := reg.Client().GetBlob(ctx, repo, desc.Digest); err != nil || !bytes.Equal(b, blob) || got != resolver.BlobUploaded {
			t.Errorf("%d PUTs refused: PushBlob = %v; %s has %d bytes of the blob (%v); want it uploaded", tc.refused, got, repo, len(b), err)
		}
	}
}
