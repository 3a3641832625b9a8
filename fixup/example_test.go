package fixup_test

import (
	"context"
	"fmt"
	"log"
	"regexp"
	"sort"
	"strings"

	"github.com/cnabio/cnab-relocate/fixup"
	"github.com/cnabio/cnab-relocate/internal/registrytest"
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
// mapping; the zero Options (apart from Mapping) use docker CLI credentials.
// This example starts two local registries to have something to copy.
func ExampleRelocate() {
	ctx := context.Background()
	src, dst := startRegistries(ctx)
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

// OnEvent reports progress: images started and done, blobs copied, mounted
// or already present.
func ExampleOptions_onEvent() {
	ctx := context.Background()
	src, dst := startRegistries(ctx)
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
		Jobs:    1, // one blob at a time, so the shared layer is copied, then mounted
		OnEvent: func(e fixup.Event) { counts[e.Kind]++ },
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
	// blob-mounted: 1
	// image-done: 2
	// image-planned: 2
	// image-started: 2
	// manifest-pushed: 2
}

func startRegistries(ctx context.Context) (*registrytest.Registry, *registrytest.Registry) {
	src, err := registrytest.StartProcess(ctx, registrytest.Options{})
	if err != nil {
		log.Fatal(err)
	}
	dst, err := registrytest.StartProcess(ctx, registrytest.Options{})
	if err != nil {
		src.Close()
		log.Fatal(err)
	}
	return src, dst
}
