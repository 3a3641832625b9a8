package fixup_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"regexp"
	"sort"
	"strings"

	"os"
	"path/filepath"

	"github.com/cnabio/cnab-relocate/fixup"
	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/cnabio/cnab-relocate/relocator"
)

// Planning needs no network: it shows where each image would go.
func ExampleNewPlan() {
	b, err := fixup.Parse([]byte(`{
		"name": "app", "version": "1.0.0",
		"invocationImages": [{"imageType": "docker", "image": "docker.io/istio/proxyv2:1.2"}],
		"images": {
			"builder": {"image": "projectriff/builder:v1"},
			"disk": {"imageType": "vm", "image": "https://example.com/disk.qcow2"}
		}
	}`))
	if err != nil {
		log.Fatal(err)
	}
	m, err := relocator.New(relocator.OneToOne, "example.com/user")
	if err != nil {
		log.Fatal(err)
	}
	plan, err := fixup.NewPlan(b, m)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range plan.Entries {
		fmt.Printf("%s -> %s\n", e.Image.Ref, e.Target)
	}
	for _, s := range plan.Skipped {
		fmt.Printf("left alone: %s (%s)\n", s.Ref, s.ImageType)
	}
	// Output:
	// docker.io/istio/proxyv2:1.2 -> example.com/user/istio-proxyv2-f93a2cacc6cafa0474a2d6990a4dd1a0:1.2
	// projectriff/builder:v1 -> example.com/user/projectriff-builder-a4a25a99d48adad8310050be267a10ce:v1
	// left alone: https://example.com/disk.qcow2 (vm)
}

// Relocate copies a loaded bundle's images and returns the relocation
// mapping; the zero ClientOptions use docker CLI credentials. This example
// runs two in-process registries to have something to copy.
func ExampleRelocate() {
	ctx := context.Background()
	src, dst := startRegistries()
	defer src.Close()
	defer dst.Close()
	img, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0", Layers: []int{1024}})
	if err != nil {
		log.Fatal(err)
	}

	b, err := fixup.Parse([]byte(`{"invocationImages": [{"image": "` + img.Ref(src.Host) + `"}]}`))
	if err != nil {
		log.Fatal(err)
	}
	m, err := relocator.New(relocator.OneToOne, dst.Host+"/team")
	if err != nil {
		log.Fatal(err)
	}
	res, err := fixup.Relocate(ctx, b, fixup.Options{Mapping: m})
	if err != nil {
		log.Fatal(err)
	}
	// The hash names the source repository, whose host has a random port
	// here: show it as <md5>.
	md5hex := regexp.MustCompile(`[0-9a-f]{32}`)
	for from, to := range res.Mapping {
		fmt.Println(strings.ReplaceAll(from, src.Host, "SOURCE"), "->", md5hex.ReplaceAllString(strings.ReplaceAll(to, dst.Host, "TARGET"), "<md5>"))
	}
	fmt.Println("same digest:", res.Digests[img.Ref(src.Host)] == img.Root.Digest)
	// Output:
	// SOURCE/vendor/app:1.0 -> TARGET/team/vendor-app-<md5>:1.0
	// same digest: true
}

// A whole job on one client: relocate (its events go to this call's
// sink), then verify the relocated bundle, with one set of credentials,
// token caches and connections.
func ExampleClient_Relocate() {
	ctx := context.Background()
	src, dst := startRegistries()
	defer src.Close()
	defer dst.Close()
	img, err := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0", Layers: []int{1024}})
	if err != nil {
		log.Fatal(err)
	}
	b, err := fixup.Parse([]byte(`{"invocationImages": [{"image": "` + img.Ref(src.Host) + `"}]}`))
	if err != nil {
		log.Fatal(err)
	}
	m, err := relocator.New(relocator.OneToOne, dst.Host+"/team")
	if err != nil {
		log.Fatal(err)
	}
	c, err := fixup.NewClient(fixup.ClientOptions{})
	if err != nil {
		log.Fatal(err)
	}
	done := 0
	res, err := c.Relocate(ctx, b, fixup.RelocateCall{
		Mapping: m,
		OnEvent: func(e fixup.Event) {
			if e.Kind == fixup.ImageDone {
				done++
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	checks, err := c.Verify(ctx, b, res.Mapping)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("images done:", done)
	fmt.Println("in place:", checks[0].OK, checks[0].Got == img.Root.Digest)
	// Output:
	// images done: 1
	// in place: true true
}

// OnEvent reports progress: images started and done, blobs copied, mounted
// or already present. The in-process registry shares blobs between
// repositories, so the layer both images have is copied once and found
// present the second time.
func ExampleClientOptions_onEvent() {
	ctx := context.Background()
	src, dst := startRegistries()
	defer src.Close()
	defer dst.Close()
	shared := registrytest.RandomBytes(1, 2048)
	a, _ := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/a", Tag: "1", SharedLayers: [][]byte{shared}, Seed: 1})
	c, _ := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/c", Tag: "1", SharedLayers: [][]byte{shared}, Seed: 2})
	b, _ := fixup.Parse([]byte(`{"invocationImages": [{"image": "` + a.Ref(src.Host) + `"}], "images": {"c": {"image": "` + c.Ref(src.Host) + `"}}}`))
	m, _ := relocator.New(relocator.OneToOne, dst.Host+"/team")

	counts := map[fixup.EventKind]int{}
	_, err := fixup.Relocate(ctx, b, fixup.Options{
		Mapping: m,
		ClientOptions: fixup.ClientOptions{
			Jobs:    1, // one blob at a time: the shared layer is copied, then found
			OnEvent: func(e fixup.Event) { counts[e.Kind]++ },
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	var kinds []string
	for k, n := range counts {
		if k != fixup.BlobProgress {
			kinds = append(kinds, fmt.Sprintf("%s: %d", k, n))
		}
	}
	sort.Strings(kinds)
	fmt.Println(strings.Join(kinds, "\n"))
	// Output:
	// blob-copied: 3
	// blob-skipped: 1
	// image-done: 2
	// image-planned: 2
	// image-started: 2
	// manifest-pushed: 2
}

// The zero ClientOptions work: docker CLI credentials, and registries on
// loopback reached over HTTPS, else plain HTTP.
func ExampleNewClient() {
	c, err := fixup.NewClient(fixup.ClientOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c != nil)
	// Output: true
}

// Digest says which manifest or index a tag points at now.
func ExampleClient_Digest() {
	ctx := context.Background()
	reg := registrytest.StartMemory(false)
	defer reg.Close()
	img, _ := reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0", Layers: []int{512}})

	c, _ := fixup.NewClient(fixup.ClientOptions{})
	d, err := c.Digest(ctx, reg.Host+"/vendor/app:1.0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(d == img.Root.Digest)
	// Output: true
}

// Copy copies one image, every platform of it, digests preserved; a
// destination without a tag gets the image by digest.
func ExampleClient_Copy() {
	ctx := context.Background()
	src, dst := startRegistries()
	defer src.Close()
	defer dst.Close()
	img, _ := src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0", Layers: []int{512}, Platforms: []string{"linux/amd64", "linux/arm64"}, OCI: true})

	c, _ := fixup.NewClient(fixup.ClientOptions{})
	desc, err := c.Copy(ctx, src.Host+"/vendor/app:1.0", dst.Host+"/team/app:1.0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(desc.MediaType, desc.Digest == img.Root.Digest)
	d, _ := c.Digest(ctx, dst.Host+"/team/app:1.0")
	fmt.Println("tag points at it:", d == img.Root.Digest)
	// Output:
	// application/vnd.oci.image.index.v1+json true
	// tag points at it: true
}

// NewLayout makes an empty OCI image layout; Add fetches images into it,
// each named by the reference it was added with.
func ExampleClient_NewLayout() {
	ctx := context.Background()
	reg := registrytest.StartMemory(false)
	defer reg.Close()
	img, _ := reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0", Layers: []int{512}})
	dir, _ := os.MkdirTemp("", "example-layout-")
	defer os.RemoveAll(dir)

	c, _ := fixup.NewClient(fixup.ClientOptions{})
	l, err := c.NewLayout(filepath.Join(dir, "layout"))
	if err != nil {
		log.Fatal(err)
	}
	desc, err := l.Add(ctx, reg.Host+"/vendor/app:1.0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(desc.Digest == img.Root.Digest)
	_, err = os.Stat(filepath.Join(dir, "layout", "index.json"))
	fmt.Println("index.json written:", err == nil)
	// Output:
	// true
	// index.json written: true
}

// ReadLayout opens a layout written by this tool, crane, skopeo or
// cnab-go; Find looks an image up by name, and Push copies it into a
// registry.
func ExampleClient_ReadLayout() {
	ctx := context.Background()
	src, dst := startRegistries()
	defer src.Close()
	defer dst.Close()
	src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0", Layers: []int{512}})
	dir, _ := os.MkdirTemp("", "example-layout-")
	defer os.RemoveAll(dir)
	c, _ := fixup.NewClient(fixup.ClientOptions{})
	l, _ := c.NewLayout(dir)
	l.Add(ctx, src.Host+"/vendor/app:1.0")

	l, err := c.ReadLayout(dir)
	if err != nil {
		log.Fatal(err)
	}
	desc, err := l.Find("1.0") // the tag alone names the one image tagged 1.0
	if err != nil {
		log.Fatal(err)
	}
	if err := l.Push(ctx, desc.Digest, dst.Host+"/team/app:1.0"); err != nil {
		log.Fatal(err)
	}
	d, _ := c.Digest(ctx, dst.Host+"/team/app:1.0")
	fmt.Println(d == desc.Digest)
	// Output: true
}

// Find takes the name as added, its normalised full form, or a tag that
// only one image carries.
func ExampleLayout_Find() {
	ctx := context.Background()
	reg := registrytest.StartMemory(false)
	defer reg.Close()
	a, _ := reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/a", Tag: "1.0", Seed: 1})
	reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/b", Tag: "2.0", Seed: 2})
	dir, _ := os.MkdirTemp("", "example-layout-")
	defer os.RemoveAll(dir)
	c, _ := fixup.NewClient(fixup.ClientOptions{})
	l, _ := c.NewLayout(dir)
	l.Add(ctx, reg.Host+"/vendor/a:1.0")
	l.Add(ctx, reg.Host+"/vendor/b:2.0")

	for _, ref := range []string{reg.Host + "/vendor/a:1.0", "1.0"} {
		desc, err := l.Find(ref)
		fmt.Println(err == nil && desc.Digest == a.Root.Digest)
	}
	_, err := l.Find("3.0")
	fmt.Println(errors.Is(err, fixup.ErrNotFound))
	// Output:
	// true
	// true
	// true
}

// Add fetches an image with its referrers (signatures, SBOMs) into the
// layout; Push carries them on to a registry.
func ExampleLayout_Add() {
	ctx := context.Background()
	reg := registrytest.StartMemory(false)
	defer reg.Close()
	reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0"})
	dir, _ := os.MkdirTemp("", "example-layout-")
	defer os.RemoveAll(dir)
	c, _ := fixup.NewClient(fixup.ClientOptions{})
	l, _ := c.NewLayout(dir)

	desc, err := l.Add(ctx, reg.Host+"/vendor/app:1.0")
	if err != nil {
		log.Fatal(err)
	}
	found, _ := l.Find(reg.Host + "/vendor/app:1.0")
	fmt.Println(found.Digest == desc.Digest)
	// Output: true
}

// Push copies an image of the layout into a registry: a destination
// without tag gets it by digest.
func ExampleLayout_Push() {
	ctx := context.Background()
	src, dst := startRegistries()
	defer src.Close()
	defer dst.Close()
	src.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/app", Tag: "1.0"})
	dir, _ := os.MkdirTemp("", "example-layout-")
	defer os.RemoveAll(dir)
	c, _ := fixup.NewClient(fixup.ClientOptions{})
	l, _ := c.NewLayout(dir)
	desc, _ := l.Add(ctx, src.Host+"/vendor/app:1.0")

	if err := l.Push(ctx, desc.Digest, dst.Host+"/team/app"); err != nil {
		log.Fatal(err)
	}
	d, err := c.Digest(ctx, dst.Host+"/team/app@"+desc.Digest.String())
	fmt.Println(err == nil && d == desc.Digest)
	// Output: true
}

func startRegistries() (src, dst *registrytest.Memory) {
	return registrytest.StartMemory(false), registrytest.StartMemory(false)
}
