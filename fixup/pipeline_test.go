package fixup

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// waitFor polls cond for up to 10 s and reports whether it came true.
func waitFor(cond func() bool) bool {
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// An image whose blobs are all in is pushed, and done, while another
// image's blob is still on its way: the second image's blob is held at the
// source until the first image's manifest has reached the target.
func TestPipelinePushesAnImageAsSoonAsItsBlobsAreIn(t *testing.T) {
	t.Parallel()
	src, dst := newTestRegistry(t), newTestRegistry(t)
	small := src.seedImage(t, "vendor/small", "1.0", 1, 1<<10)
	big := src.seedImage(t, "vendor/big", "1.0", 2, 64<<10)
	held := "GET blob " + big.layers[0].Digest.String()
	src.setFault(func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
		if key != held {
			return false
		}
		if !waitFor(func() bool { return dst.count("PUT manifest "+small.tag) > 0 }) {
			writeRegistryError(w, http.StatusServiceUnavailable, "UNAVAILABLE")
			return true
		}
		time.Sleep(300 * time.Millisecond) // the big image ends well after the small one
		return false
	})
	res, err := relocateImages(t, src, dst, -1, -1, small, big)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range res.Images {
		if img.Err != nil {
			t.Errorf("%s: %v (the big image's blob waited for the small image's manifest, which never came)", img.Source, img.Err)
		}
	}
	if _, ok := dst.manifest(targetRepoOf(t, res, big), big.tag); !ok {
		t.Error("the big image was not pushed")
	}
	// Each image's duration ends when it was done, not when the run was.
	durations := map[string]time.Duration{}
	for _, img := range res.Images {
		durations[img.Source] = img.Duration
	}
	ds, db := durations[src.Host+"/vendor/small:1.0"], durations[src.Host+"/vendor/big:1.0"]
	if ds <= 0 || db-ds < 250*time.Millisecond {
		t.Errorf("durations: small %v, big %v; want the small one to end at least 250 ms before the big one", ds, db)
	}
}

// Blobs move while other images are still being planned: the second
// image's manifest is held at the source until a blob of the first image
// has reached the target.
func TestPipelineCopiesBlobsWhileImagesArePlanned(t *testing.T) {
	t.Parallel()
	src, dst := newTestRegistry(t), newTestRegistry(t)
	first := src.seedImage(t, "vendor/first", "1.0", 1, 8<<10)
	second := src.seedImage(t, "vendor/second", "2.0", 2, 8<<10)
	src.setFault(func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
		if !strings.HasSuffix(r.URL.Path, "/vendor/second/manifests/"+second.tag) {
			return false
		}
		if !waitFor(func() bool { return dst.hasBlob(first.layers[0].Digest) }) {
			writeRegistryError(w, http.StatusServiceUnavailable, "UNAVAILABLE")
			return true
		}
		return false
	})
	// One job: the second image is planned only after the first, and its
	// resolution waits for the first image's blob.
	res, err := relocateImagesJobs(t, src, dst, 1, first, second)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range res.Images {
		if img.Err != nil {
			t.Errorf("%s: %v (planning waited for a blob that only moves after planning)", img.Source, img.Err)
		}
	}
}

// Two images of one repository share a blob: whichever is planned
// second finds it placed, or being placed, and both are pushed with the
// blob uploaded once.
func TestPipelineSharedBlobInOneRepository(t *testing.T) {
	t.Parallel()
	src, dst := newTestRegistry(t), newTestRegistry(t)
	a := src.seedImage(t, "vendor/app", "1.0", 1, 16<<10)
	b := src.seedImage(t, "vendor/app", "2.0", 1, 16<<10) // same layers, same config
	res, err := relocateImages(t, src, dst, -1, -1, a, b)
	if err != nil {
		t.Fatal(err)
	}
	var copied, skipped int64
	for _, img := range res.Images {
		if img.Err != nil {
			t.Errorf("%s: %v", img.Source, img.Err)
		}
		copied += img.BytesCopied
		skipped += img.BytesSkipped
	}
	size := a.config.Size + a.layers[0].Size
	if copied != size || skipped != size {
		t.Errorf("copied %d and skipped %d bytes; want %d each (uploaded once, found once)", copied, skipped, size)
	}
	if n := dst.count("PUT blob " + a.layers[0].Digest.String()); n != 1 {
		t.Errorf("the shared layer was uploaded %d times, want once", n)
	}
}

// A blob that cannot be placed fails every image that needs it, also one
// planned after the failure, and the others go on.
func TestPipelineFailedBlobFailsLaterImages(t *testing.T) {
	t.Parallel()
	src, dst := newTestRegistry(t), newTestRegistry(t)
	a := src.seedImage(t, "vendor/app", "1.0", 1, 16<<10)
	b := src.seedImage(t, "vendor/app", "2.0", 1, 16<<10) // shares a's blobs
	ok := src.seedImage(t, "vendor/other", "1.0", 3, 16<<10)
	bad := "GET blob " + a.layers[0].Digest.String()
	src.setFault(func(w http.ResponseWriter, r *http.Request, key string, n int) bool {
		switch {
		case key == bad:
			writeRegistryError(w, http.StatusNotFound, "BLOB_UNKNOWN")
			return true
		case strings.HasSuffix(r.URL.Path, "/vendor/app/manifests/"+b.tag):
			// b is planned only once a's blob has failed.
			waitFor(func() bool { return src.count(bad) > 0 })
			time.Sleep(50 * time.Millisecond)
		}
		return false
	})
	res, _ := relocateImagesJobs(t, src, dst, 2, a, b, ok) // its error joins the images' errors
	if res == nil {
		t.Fatal("no result")
	}
	for _, img := range res.Images {
		wantErr := !strings.Contains(img.Source, "/vendor/other:")
		if (img.Err != nil) != wantErr {
			t.Errorf("%s: err = %v; want an error: %v", img.Source, img.Err, wantErr)
		}
	}
	if got, want := dst.repos(t), []string{targetRepoOf(t, res, ok)}; !slices.Equal(got, want) {
		t.Errorf("manifests were pushed to %v, want only the good image's %v", got, want)
	}
}

// Many images in few repositories, sharing blobs, few jobs: every image is
// pushed, and each image counts each of its blobs exactly once (copied,
// mounted or found), however its plan and the placements of the blobs it
// shares interleave; no blob is uploaded twice into one repository.
func TestPipelineCountsEveryBlobOnce(t *testing.T) {
	t.Parallel()
	src, dst := newTestRegistry(t), newTestRegistry(t)
	var imgs []seededImage
	for r := range 4 {
		for tag := range 10 {
			seed := byte(tag % 3)
			imgs = append(imgs, src.seedImage(t, fmt.Sprintf("vendor/r%d", r), fmt.Sprintf("t%d", tag), seed, 2<<10, 3<<10))
		}
	}
	res, err := relocateImagesJobs(t, src, dst, 3, imgs...)
	if err != nil {
		t.Fatal(err)
	}
	byRef := map[string]ImageResult{}
	for _, r := range res.Images {
		byRef[r.Source] = r
	}
	repos := map[digest.Digest]map[string]bool{}
	for _, img := range imgs {
		repo := targetRepoOf(t, res, img)
		if _, ok := dst.manifest(repo, img.tag); !ok {
			t.Errorf("%s:%s was not pushed to %s", img.repo, img.tag, repo)
		}
		var size int64
		for _, b := range img.blobs() {
			size += b.Size
			if repos[b.Digest] == nil {
				repos[b.Digest] = map[string]bool{}
			}
			repos[b.Digest][repo] = true
		}
		r := byRef[src.Host+"/"+img.repo+":"+img.tag]
		if got := r.BytesCopied + r.BytesMounted + r.BytesSkipped; got != size {
			t.Errorf("%s:%s counts %d blob bytes (copied %d, mounted %d, present %d), want %d: each blob once", img.repo, img.tag, got, r.BytesCopied, r.BytesMounted, r.BytesSkipped, size)
		}
	}
	for d, in := range repos {
		if n := dst.count("PUT blob " + d.String()); n < 1 || n > len(in) {
			t.Errorf("blob %s uploaded %d times, want at least once and at most once per repository (%d)", d, n, len(in))
		}
	}
}
