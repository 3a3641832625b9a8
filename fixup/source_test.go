package fixup

import (
	"errors"
	"strings"
	"testing"
)

// relocateBundle relocates one image, recorded with contentDigest (none
// when ""), from src into dst/team.
func relocateBundle(t *testing.T, src, dst *testRegistry, img seededImage, contentDigest string) (*Result, error) {
	t.Helper()
	inv := map[string]any{"image": src.Host + "/" + img.repo + ":" + img.tag}
	if contentDigest != "" {
		inv["contentDigest"] = contentDigest
	}
	return relocateInv(t, nil, dst, 0, 0, 0, []any{inv})
}

// The source root is resolved and read in one GET of the tag: no HEAD
// first, no GET by digest after.
func TestResolveReadsTheRootOnce(t *testing.T) {
	t.Parallel()
	src, dst := newTestRegistry(t), newTestRegistry(t)
	img := src.seedImage(t, "vendor/app", "1.0", 1, 4<<10)
	if _, err := relocateBundle(t, src, dst, img, img.root.Digest.String()); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]int{
		"GET manifest " + img.tag:                  1,
		"HEAD manifest " + img.tag:                 0,
		"GET manifest " + img.root.Digest.String(): 0,
	} {
		if n := src.count(key); n != want {
			t.Errorf("source: %s: %d requests, want %d", key, n, want)
		}
	}
	if len(dst.repos(t)) == 0 {
		t.Error("nothing was pushed")
	}
}

// A tag that moved away from the digest the bundle records fails the image,
// naming both digests, before anything is uploaded.
func TestResolveCatchesAMovedTag(t *testing.T) {
	t.Parallel()
	src, dst := newTestRegistry(t), newTestRegistry(t)
	img := src.seedImage(t, "vendor/app", "1.0", 1, 4<<10)
	old := src.seedImage(t, "vendor/app", "0.9", 2, 4<<10)
	res, err := relocateBundle(t, src, dst, img, old.root.Digest.String())
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("err = %v, want a digest mismatch", err)
	}
	if msg := err.Error(); !strings.Contains(msg, img.root.Digest.String()) || !strings.Contains(msg, "the bundle records "+old.root.Digest.String()) {
		t.Errorf("error %q does not name what the tag holds and what the bundle records", msg)
	}
	if res == nil || len(res.Images) != 1 || res.Images[0].Err == nil {
		t.Errorf("result %+v: want the image failed", res)
	}
	if n, repos := dst.count("POST upload"), dst.repos(t); n != 0 || len(repos) != 0 {
		t.Errorf("the target got %d uploads and manifests in %v; want none", n, repos)
	}
}

// Without a contentDigest the source is asked with a HEAD, so a rerun that
// finds the image in the target GETs no manifest (a pull, to Docker Hub).
func TestResolveWithoutDigestRerunGetsNoManifest(t *testing.T) {
	t.Parallel()
	src, dst := newTestRegistry(t), newTestRegistry(t)
	img := src.seedImage(t, "vendor/app", "1.0", 1, 4<<10)
	for run := range 2 {
		if _, err := relocateBundle(t, src, dst, img, ""); err != nil {
			t.Fatalf("run %d: %v", run+1, err)
		}
	}
	for key, want := range map[string]int{
		"HEAD manifest " + img.tag:                 2, // once per run
		"GET manifest " + img.tag:                  0,
		"GET manifest " + img.root.Digest.String(): 1, // the first run's walk
	} {
		if n := src.count(key); n != want {
			t.Errorf("source: %s: %d requests over two runs, want %d", key, n, want)
		}
	}
}
