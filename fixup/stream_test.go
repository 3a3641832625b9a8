package fixup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/layout"
	"github.com/cnabio/cnab-relocate/relocator"
	"github.com/cnabio/cnab-relocate/resolver"
)

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// streamFixture exports two images sharing a layer — one with a layer too
// big to be held in memory (it streams), one with small layers (held and
// uploaded while the archive is read) — to a thick archive, and returns
// the archive, its bundle and the big layer's digest.
func streamFixture(t *testing.T) (archive string, b *Bundle, imgs []registrytest.Image, big digest.Digest) {
	t.Helper()
	ctx := context.Background()
	reg := registrytest.StartMemory(false)
	defer reg.Close()
	shared := registrytest.RandomBytes(7, 64<<10)
	bigImg, err := reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/big", Tag: "1", Layers: []int{streamBufferBlob + 1<<20}, SharedLayers: [][]byte{shared}, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	small, err := reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/small", Tag: "1", Layers: []int{100 << 10, 200 << 10}, SharedLayers: [][]byte{shared}, Seed: 2, OCI: true, Platforms: []string{"linux/amd64", "linux/arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, bl := range bigImg.Blobs {
		if bl.Size > streamBufferBlob {
			big = bl.Digest
		}
	}
	raw := []byte(`{"name":"s","version":"1.0.0","invocationImages":[{"image":"` + bigImg.Ref(reg.Host) + `"}],"images":{"small":{"image":"` + small.Ref(reg.Host) + `"}}}`)
	b, err = Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	archive = filepath.Join(t.TempDir(), "app.tgz")
	opts := ExportOptions{ClientOptions: ClientOptions{ResolverOptions: resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"}}}
	if err := ExportArchive(ctx, b, raw, archive, opts); err != nil {
		t.Fatal(err)
	}
	return archive, b, []registrytest.Image{bigImg, small}, big
}

// TestRelocateArchiveStreams relocates a thick archive read as a stream:
// nothing is written to disk, every blob lands with its digest, and an
// upload of the streamed layer that fails after the stream has passed it
// is done again by another pass over the archive.
func TestRelocateArchiveStreams(t *testing.T) {
	archive, _, imgs, big := streamFixture(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx := context.Background()
	dst := registrytest.StartMemory(false)
	defer dst.Close()
	failBigOnce := registrytest.FaultRule{
		Match: func(r *http.Request) bool {
			return r.Method == http.MethodPut && strings.Contains(r.URL.RawQuery, big.Encoded())
		},
		Fault: registrytest.Fault{Kind: registrytest.FaultStatus, Status: http.StatusInternalServerError},
		Times: 1,
	}
	proxy := registrytest.NewProxyURL(dst.URL, nil, registrytest.ProxyOptions{Faults: registrytest.FaultOptions{Rules: []registrytest.FaultRule{failBigOnce}}})
	defer proxy.Close()

	b, a, err := LoadArchive(ctx, archive)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var logs syncBuffer
	m, _ := relocator.New(relocator.OneToOne, proxy.Host+"/team")
	res, err := Relocate(ctx, b, Options{Mapping: m, Source: ArchiveSource{Archive: a}, ClientOptions: ClientOptions{
		ResolverOptions: resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"},
		Logger:          slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}})
	if err != nil {
		t.Fatalf("Relocate: %v\n%s", err, logs.String())
	}
	if got := proxy.Injected(); got["status 500"] != 1 {
		t.Fatalf("faults injected %v, want the one 500", got)
	}
	if !strings.Contains(logs.String(), "reading the archive again") {
		t.Errorf("the failed streamed upload was not done in a second pass:\n%s", logs.String())
	}
	for i, img := range imgs {
		if res.Images[i].Digest != img.Root.Digest {
			t.Errorf("%s: digest %s, want %s", res.Images[i].Source, res.Images[i].Digest, img.Root.Digest)
		}
		repo := strings.TrimPrefix(strings.SplitN(res.Images[i].Target, ":", 3)[1], strings.Split(proxy.Host, ":")[1]+"/")
		for _, bl := range img.Blobs {
			if ok, err := dst.Client().BlobExists(ctx, repo, bl.Digest); !ok || err != nil {
				t.Errorf("%s: blob %s missing in %s: %v", res.Images[i].Source, bl.Digest, repo, err)
			}
		}
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("written to $TMPDIR: %v", ents)
	}
}

// rewriteArchive copies the .tgz at src to dst, passing each file's
// content through change.
func rewriteArchive(t *testing.T, src, dst string, change func(name string, data []byte) []byte) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	zw := gzip.NewWriter(out)
	tr, tw := tar.NewReader(zr), tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		data = change(h.Name, data)
		h.Size = int64(len(data))
		tw.WriteHeader(h)
		tw.Write(data)
	}
	tw.Close()
	zw.Close()
}

// TestRelocateArchiveCorruptLayer: a streamed layer whose bytes do not
// match fails its image, naming the archive and the blob, and nothing of
// that image is tagged in the target; the other image is relocated.
func TestRelocateArchiveCorruptLayer(t *testing.T) {
	t.Parallel()
	archive, _, imgs, big := streamFixture(t)
	ctx := context.Background()
	bad := filepath.Join(t.TempDir(), "bad.tgz")
	rewriteArchive(t, archive, bad, func(name string, data []byte) []byte {
		if strings.HasSuffix(name, big.Encoded()) {
			data[len(data)/2] ^= 1
		}
		return data
	})
	res, dst, err := relocateArchive(t, bad)
	defer dst.Close()
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), big.String()) || !strings.Contains(err.Error(), imgs[0].Ref("")[1:]) {
		t.Fatalf("got %v, want a digest mismatch naming the archive, the blob and the image", err)
	}
	if res.Images[0].Err == nil || res.Images[1].Err != nil {
		t.Fatalf("results %+v, want the big image failed and the small one relocated", res.Images)
	}
	repo := strings.TrimPrefix(strings.SplitN(res.Images[0].Target, ":", 2)[0], dst.Host+"/")
	if _, err := dst.Client().HeadManifest(ctx, repo, "1"); err == nil {
		t.Errorf("the failed image is tagged in %s", repo)
	}
}

// TestRelocateArchiveTruncated: an archive cut short after its metadata
// opens, then fails when its layers stream: every image it feeds fails,
// as bad input naming the archive, and none is tagged in the target.
func TestRelocateArchiveTruncated(t *testing.T) {
	t.Parallel()
	archive, _, imgs, _ := streamFixture(t)
	ctx := context.Background()
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.tgz")
	if err := os.WriteFile(cut, data[:len(data)*3/4], 0o644); err != nil {
		t.Fatal(err)
	}
	res, dst, err := relocateArchive(t, cut)
	defer dst.Close()
	if !errors.Is(err, ErrInvalidInput) || !errors.Is(err, layout.ErrInvalidArchive) || !strings.Contains(err.Error(), cut) || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("got %v, want bad input naming the truncated archive", err)
	}
	for i, r := range res.Images {
		if r.Err == nil {
			t.Errorf("%s relocated from a truncated archive", r.Source)
		}
		repo := strings.TrimPrefix(strings.SplitN(r.Target, ":", 3)[1], strings.Split(dst.Host, ":")[1]+"/")
		if _, err := dst.Client().HeadManifest(ctx, repo, imgs[i].Tag); err == nil {
			t.Errorf("%s is tagged in the target", r.Source)
		}
	}
}

// TestRelocatePlainTarArchive: an archive that is a plain tar (not
// gzipped) streams the same.
func TestRelocatePlainTarArchive(t *testing.T) {
	t.Parallel()
	archive, _, imgs, _ := streamFixture(t)
	in, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(t.TempDir(), "app.tar")
	out, err := os.Create(plain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	out.Close()
	res, dst, err := relocateArchive(t, plain)
	defer dst.Close()
	if err != nil {
		t.Fatal(err)
	}
	for i, img := range imgs {
		if res.Images[i].Digest != img.Root.Digest {
			t.Errorf("%s: %s, want %s", res.Images[i].Source, res.Images[i].Digest, img.Root.Digest)
		}
	}
}

// relocateArchive relocates the archive at path, read as a stream, into a
// new in-process registry under team/, and returns the result and the
// registry (the caller closes it).
func relocateArchive(t *testing.T, path string) (*Result, *registrytest.Memory, error) {
	t.Helper()
	ctx := context.Background()
	b, a, err := LoadArchive(ctx, path)
	if err != nil {
		t.Fatalf("the archive opens: %v", err)
	}
	defer a.Close()
	dst := registrytest.StartMemory(false)
	m, _ := relocator.New(relocator.OneToOne, dst.Host+"/team")
	res, err := Relocate(ctx, b, Options{Mapping: m, Source: ArchiveSource{Archive: a}, ClientOptions: ClientOptions{
		ResolverOptions: resolver.Options{ConfigDir: t.TempDir(), CertsDir: "-"},
	}})
	return res, dst, err
}
