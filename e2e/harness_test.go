package e2e

// These tests check the registry harness (internal/testkit/registrytest) against a real
// docker-registry; they moved here from internal/testkit/registrytest so that make unit
// runs without the registry binary.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// harnessCheckImage reads every digest of img back from the registry with HEAD (and the root with
// GET), through c.
func harnessCheckImage(t *testing.T, c *registrytest.Client, img registrytest.Image) {
	t.Helper()
	ctx := context.Background()
	refs := []string{img.Root.Digest.String()}
	if img.Tag != "" {
		refs = append(refs, img.Tag)
	}
	for _, ref := range refs {
		got, err := c.HeadManifest(ctx, img.Repo, ref)
		if err != nil {
			t.Fatalf("HeadManifest(%s, %s): %v", img.Repo, ref, err)
		}
		if diff := cmp.Diff(img.Root, got); diff != "" {
			t.Errorf("HeadManifest(%s, %s) (-want +got):\n%s", img.Repo, ref, diff)
		}
	}
	for _, m := range img.Manifests {
		got, err := c.HeadManifest(ctx, img.Repo, m.Digest.String())
		if err != nil {
			t.Fatalf("HeadManifest(%s, %s): %v", img.Repo, m.Digest, err)
		}
		if got.Digest != m.Digest || got.Size != m.Size || got.MediaType != m.MediaType {
			t.Errorf("HeadManifest(%s, %s) = %+v, want %+v", img.Repo, m.Digest, got, m)
		}
	}
	for _, b := range img.Blobs {
		ok, err := c.BlobExists(ctx, img.Repo, b.Digest)
		if err != nil || !ok {
			t.Errorf("BlobExists(%s, %s) = %v, %v; want true", img.Repo, b.Digest, ok, err)
		}
	}
	body, desc, err := c.GetManifest(ctx, img.Repo, img.Root.Digest.String())
	if err != nil {
		t.Fatalf("GetManifest: %v", err)
	}
	if diff := cmp.Diff(img.Root, desc); diff != "" {
		t.Errorf("GetManifest descriptor (-want +got):\n%s", diff)
	}
	if len(img.Manifests) > 1 {
		var index ocispec.Index
		if err := json.Unmarshal(body, &index); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(img.Manifests, index.Manifests); diff != "" {
			t.Errorf("index manifests (-want +got):\n%s", diff)
		}
	}
}

func TestHarnessPlainRegistry(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	if !strings.HasPrefix(r.URL, "http://127.0.0.1:") || r.URL != "http://"+r.Host || r.CAFile != "" || r.CertPool != nil {
		t.Errorf("Registry = URL %q, Host %q, CAFile %q", r.URL, r.Host, r.CAFile)
	}
	c := r.Client()
	ctx := context.Background()
	shared := registrytest.RandomBytes(99, 3000)
	specs := []registrytest.ImageSpec{
		{Repo: "oci/multi", Tag: "v1", Layers: []int{1024, 2048}, SharedLayers: [][]byte{shared}, Seed: 1, OCI: true,
			Platforms: []string{"linux/amd64", "linux/arm64/v8"}},
		{Repo: "docker/multi", Tag: "v1", Layers: []int{512}, SharedLayers: [][]byte{shared}, Seed: 2,
			Platforms: []string{"linux/amd64", "linux/arm/v7"}},
		{Repo: "docker/single", Tag: "latest", Layers: []int{100, 200}, Seed: 3},
		{Repo: "oci/untagged", Layers: []int{10}, Seed: 4, OCI: true},
	}
	for _, spec := range specs {
		t.Run(spec.Repo, func(t *testing.T) {
			img, err := c.PushImage(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			wantRoot, wantManifest := registrytest.MediaTypeDockerManifest, registrytest.MediaTypeDockerManifest
			if spec.OCI {
				wantRoot, wantManifest = ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageManifest
			}
			if len(spec.Platforms) > 1 {
				wantRoot = registrytest.MediaTypeDockerManifestList
				if spec.OCI {
					wantRoot = ocispec.MediaTypeImageIndex
				}
			}
			n := max(len(spec.Platforms), 1)
			if img.Root.MediaType != wantRoot || len(img.Manifests) != n || img.Manifests[0].MediaType != wantManifest {
				t.Errorf("pushed root %s with %d manifests of %s; want %s, %d, %s",
					img.Root.MediaType, len(img.Manifests), img.Manifests[0].MediaType, wantRoot, n, wantManifest)
			}
			// Each platform has a config and its own layers; shared layers count once.
			if want := n*(1+len(spec.Layers)) + len(spec.SharedLayers); len(img.Blobs) != want {
				t.Errorf("got %d blobs, want %d", len(img.Blobs), want)
			}
			harnessCheckImage(t, c, img)

			again, err := c.PushImage(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(img, again); diff != "" {
				t.Errorf("pushing the same spec again (-first +second):\n%s", diff)
			}
		})
	}

	t.Run("errors", func(t *testing.T) {
		_, err := c.HeadManifest(ctx, "oci/multi", "nope")
		if !errors.Is(err, registrytest.ErrNotFound) {
			t.Errorf("HeadManifest of a missing tag: %v, want ErrNotFound", err)
		}
		ok, err := c.BlobExists(ctx, "oci/multi", digest.FromString("missing"))
		if ok || err != nil {
			t.Errorf("BlobExists of a missing blob = %v, %v", ok, err)
		}
		bad := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` +
			digest.FromString("absent").String() + `","size":10}]}`)
		_, err = c.PushManifest(ctx, "oci/multi", "bad", ocispec.MediaTypeImageIndex, bad)
		var re *registrytest.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest || !strings.Contains(re.Body, "MANIFEST_BLOB_UNKNOWN") {
			t.Errorf("index with a missing child: %v, want 400 MANIFEST_BLOB_UNKNOWN", err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		img, err := c.PushImage(ctx, registrytest.ImageSpec{Repo: "del/me", Tag: "x", Layers: []int{5}, Seed: 5})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteManifest(ctx, img.Repo, img.Root.Digest); err != nil {
			t.Fatal(err)
		}
		if _, err := c.HeadManifest(ctx, img.Repo, img.Root.Digest.String()); !errors.Is(err, registrytest.ErrNotFound) {
			t.Errorf("HeadManifest after delete: %v, want ErrNotFound", err)
		}
	})
}

func TestHarnessTLSRegistryWithAuth(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{TLS: true, Htpasswd: map[string]string{"alice": "s3cret", "bob": "hunter2"}})
	if !strings.HasPrefix(r.URL, "https://127.0.0.1:") || r.Username != "alice" || r.Password != "s3cret" {
		t.Errorf("Registry = URL %q, user %q:%q", r.URL, r.Username, r.Password)
	}
	pemFile, err := os.ReadFile(r.CAFile)
	if err != nil || !bytes.Equal(pemFile, r.CAPEM) {
		t.Errorf("CAFile %s does not hold CAPEM (%v)", r.CAFile, err)
	}
	ctx := context.Background()

	img, err := r.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "secure/app", Tag: "1.0", Layers: []int{4096}, Seed: 7, OCI: true,
		Platforms: []string{"linux/amd64", "windows/amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	harnessCheckImage(t, r.Client(), img)
	bob := registrytest.NewClient(r.URL, &http.Client{Transport: r.Transport()}, "bob", "hunter2")
	harnessCheckImage(t, bob, img)

	resp, err := r.HTTPClient().Get(r.URL + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/ with HTTPClient: %s", resp.Status)
	}

	for _, tc := range []struct{ name, user, pass string }{
		{"wrong password", "alice", "wrong"},
		{"unknown user", "mallory", "s3cret"},
		{"no credentials", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := registrytest.NewClient(r.URL, &http.Client{Transport: r.Transport()}, tc.user, tc.pass)
			_, err := c.HeadManifest(ctx, img.Repo, img.Tag)
			if !errors.Is(err, registrytest.ErrUnauthorized) {
				t.Errorf("HeadManifest: %v, want ErrUnauthorized", err)
			}
		})
	}

	t.Run("through a proxy", func(t *testing.T) {
		p := registrytest.NewProxy(r, registrytest.ProxyOptions{})
		defer p.Close()
		c := registrytest.NewClient(p.URL, nil, r.Username, r.Password)
		img, err := c.PushImage(ctx, registrytest.ImageSpec{Repo: "secure/proxied", Tag: "1", Layers: []int{100}, Seed: 8})
		if err != nil {
			t.Fatal(err)
		}
		harnessCheckImage(t, r.Client(), img)
		if got := p.Counts()["PUT blob"]; got != 2 {
			t.Errorf("PUT blob through the proxy: %d, want 2", got)
		}
	})

	t.Run("untrusted", func(t *testing.T) {
		c := registrytest.NewClient(r.URL, nil, r.Username, r.Password)
		var unknownAuthority x509.UnknownAuthorityError
		if _, err := c.HeadManifest(ctx, img.Repo, img.Tag); !errors.As(err, &unknownAuthority) {
			t.Errorf("HeadManifest without the CA: %v, want an unknown authority error", err)
		}
	})
}

func TestHarnessProxyCounts(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	p := registrytest.NewProxy(r, registrytest.ProxyOptions{})
	defer p.Close()
	c := registrytest.NewClient(p.URL, nil, "", "")
	ctx := context.Background()

	spec := registrytest.ImageSpec{Repo: "counted/app", Tag: "v1", Layers: []int{1000, 2000}, Seed: 11}
	img, err := c.PushImage(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	var blobBytes int64
	for _, b := range img.Blobs {
		blobBytes += b.Size
	}
	want := map[string]int{"HEAD blob": 3, "POST upload": 3, "PUT blob": 3, "PUT manifest": 1}
	if diff := cmp.Diff(want, p.Counts()); diff != "" {
		t.Errorf("cold push counts (-want +got):\n%s", diff)
	}
	if got := p.BytesUploaded(); got != blobBytes {
		t.Errorf("BytesUploaded = %d, want %d", got, blobBytes)
	}
	for _, req := range p.Requests() {
		if strings.HasPrefix(req, "PUT /v2/counted/app/blobs/uploads/") && !strings.Contains(req, "digest=sha256%3A") {
			t.Errorf("upload PUT without digest: %s", req)
		}
	}

	p.Reset()
	if _, err := c.PushImage(ctx, spec); err != nil {
		t.Fatal(err)
	}
	harnessCheckImage(t, c, img)
	want = map[string]int{"HEAD blob": 6, "PUT manifest": 1, "HEAD manifest": 3, "GET manifest": 1}
	if diff := cmp.Diff(want, p.Counts()); diff != "" {
		t.Errorf("warm push and check counts (-want +got):\n%s", diff)
	}
	if got := p.BytesUploaded(); got != 0 {
		t.Errorf("BytesUploaded after Reset and a warm push = %d, want 0", got)
	}

	// A cross-repository mount from a repository that has the blob answers 201.
	p.Reset()
	req, _ := http.NewRequest(http.MethodPost, p.URL+"/v2/other/app/blobs/uploads/?mount="+img.Blobs[0].Digest.String()+"&from=counted/app", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("mount: %s, want 201", resp.Status)
	}
	if diff := cmp.Diff(map[string]int{"POST mount": 1}, p.Counts()); diff != "" {
		t.Errorf("mount counts (-want +got):\n%s", diff)
	}
	if got := p.Requests(); len(got) != 1 || !strings.HasPrefix(got[0], "POST /v2/other/app/blobs/uploads/?mount=sha256:") {
		t.Errorf("Requests() = %q", got)
	}
}

func TestHarnessStartProcessClose(t *testing.T) {
	r, err := registrytest.StartProcess(context.Background(), registrytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir, host := r.Dir, r.Host
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Dir %s still there after Close (%v)", dir, err)
	}
	if resp, err := http.Get("http://" + host + "/v2/"); err == nil {
		resp.Body.Close()
		t.Errorf("registry still answers after Close")
	}
}
