package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// deltaRelease is a release of the delta test's bundle: its images by key,
// in the source registry, and its bundle.json.
type deltaRelease struct {
	images map[string]registrytest.Image
	bundle string
}

// pushRelease pushes specs to c and writes their bundle, version version,
// under dir.
func pushRelease(t *testing.T, src *registrytest.Registry, dir, version string, specs map[string]registrytest.ImageSpec) deltaRelease {
	t.Helper()
	rel := deltaRelease{images: map[string]registrytest.Image{}, bundle: filepath.Join(dir, "bundle-"+version+".json")}
	images := map[string]any{}
	for k, s := range specs {
		img, err := src.Client().PushImage(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		rel.images[k] = img
		if k != "inv" {
			images[k] = map[string]any{"imageType": "docker", "image": img.Ref(src.Host)}
		}
	}
	writeJSON(t, rel.bundle, map[string]any{
		"schemaVersion": "v1.0.0", "name": "vendor-app", "version": version,
		"invocationImages": []any{map[string]any{"imageType": "docker", "image": rel.images["inv"].Ref(src.Host)}},
		"images":           images,
	})
	return rel
}

// catalog lists the repositories of r (GET /v2/_catalog).
func catalog(t *testing.T, r *registrytest.Registry) []string {
	t.Helper()
	resp, err := r.HTTPClient().Get(r.URL + "/v2/_catalog")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Repositories []string `json:"repositories"`
	}
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &body) != nil {
		t.Fatalf("catalog of %s: %s %s", r.Host, resp.Status, data)
	}
	return body.Repositories
}

// TestDeltaArchive: release 1 (8 images) exported whole, release 2 (3
// images changed; one of them now has a layer that release 1 had only in
// another image's repository) exported as a delta against it. The delta
// holds the new content and a few hundred KiB more at most. Release 1
// then the delta into one registry: all of release 2 is there, the moved
// layer mounted, and verify agrees; a rerun is one request per image. The
// delta alone into an empty registry is refused, naming what is missing,
// and the registry is left empty. A split delta is the delta in parts and
// relocates the same.
func TestDeltaArchive(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dir := t.TempDir()
	base := registrytest.RandomBytes(900, 256<<10) // every image's base layer
	dbOnly := registrytest.RandomBytes(901, 192<<10)
	r1 := map[string]registrytest.ImageSpec{}
	names := []string{"inv", "web", "api", "db", "cache", "queue", "auth", "ui"}
	for i, k := range names {
		s := registrytest.ImageSpec{Repo: "vendor/" + k, Tag: "1.0", Layers: []int{160 << 10, 96 << 10}, Seed: int64(100 + i), SharedLayers: [][]byte{base}}
		if k == "db" {
			s.SharedLayers = append(s.SharedLayers, dbOnly)
		}
		r1[k] = s
	}
	rel1 := pushRelease(t, src, dir, "1.0.0", r1)
	r2 := map[string]registrytest.ImageSpec{}
	for k, s := range r1 {
		r2[k] = s
	}
	changed := []string{"web", "api", "ui"}
	const newLayer = 300 << 10
	for i, k := range changed {
		s := r2[k]
		s.Tag, s.Seed, s.Layers = "2.0", int64(200+i), []int{newLayer}
		if k == "web" {
			s.SharedLayers = [][]byte{base, dbOnly} // in release 1, only in vendor/db
		}
		r2[k] = s
	}
	rel2 := pushRelease(t, src, dir, "2.0.0", r2)

	// Outside: release 1 whole, release 2 as a delta, plain and split.
	whole1, whole2 := filepath.Join(dir, "app-1.tgz"), filepath.Join(dir, "app-2.tgz")
	delta := filepath.Join(dir, "app-2-delta.tgz")
	for _, args := range [][]string{
		{"export", rel1.bundle, "--output", whole1},
		{"export", rel2.bundle, "--output", whole2},
		{"export", rel2.bundle, "--base", whole1, "--output", delta, "--format", "json"},
	} {
		if r := cli(t, nil, args...); r.code != 0 {
			t.Fatalf("%v exited %d", args, r.code)
		}
	}
	dry := cli(t, nil, "export", rel2.bundle, "--base", whole1, "--output", filepath.Join(dir, "dry.tgz"), "--dry-run", "--format", "json")
	if dry.code != 0 {
		t.Fatalf("export --dry-run exited %d", dry.code)
	}
	if _, err := os.Stat(filepath.Join(dir, "dry.tgz")); err == nil {
		t.Error("export --dry-run wrote the archive")
	}
	var plan struct {
		Written []struct{ Digest string }
		LeftOut []struct{ Digest, Base string }
		Sizes   struct{ Written, LeftOut int64 }
	}
	if err := json.Unmarshal([]byte(dry.stdout), &plan); err != nil {
		t.Fatalf("--dry-run --format json: %v", err)
	}
	// The new content: each changed image's new layer, config and manifest.
	var fresh int64
	freshBlobs := map[string]bool{}
	for _, k := range changed {
		img := rel2.images[k]
		for _, b := range img.Blobs {
			if !strings.Contains(fmt.Sprint(rel1.images), b.Digest.String()) {
				fresh += b.Size
				freshBlobs[b.Digest.String()] = true
			}
		}
		fresh += img.Root.Size
		freshBlobs[img.Root.Digest.String()] = true
	}
	if len(plan.Written) != len(freshBlobs) {
		t.Errorf("dry run would write %d blobs and manifests, want the %d new ones", len(plan.Written), len(freshBlobs))
	}
	for _, w := range plan.Written {
		if !freshBlobs[w.Digest] {
			t.Errorf("dry run would write %s, which release 1 holds", w.Digest)
		}
	}
	if plan.Sizes.Written != fresh || len(plan.LeftOut) == 0 || plan.LeftOut[0].Base != "app-1.tgz" {
		t.Errorf("dry run sizes %+v, left out %d; want %d written, the rest left out of app-1.tgz", plan.Sizes, len(plan.LeftOut), fresh)
	}
	st1, _ := os.Stat(whole2)
	std, _ := os.Stat(delta)
	t.Logf("release 2 whole %d bytes, delta %d bytes, new content %d bytes", st1.Size(), std.Size(), fresh)
	if over := std.Size() - fresh; over > 300<<10 || over < 0 {
		t.Errorf("delta is %d bytes: %d over the %d bytes of new content, want at most 300 KiB", std.Size(), over, fresh)
	}
	split := filepath.Join(dir, "split", "app-2-delta.tgz")
	os.Mkdir(filepath.Dir(split), 0o755)
	if r := cli(t, nil, "export", rel2.bundle, "--base", whole1, "--output", split, "--split-size", "256KiB"); r.code != 0 {
		t.Fatalf("split delta export exited %d", r.code)
	}
	parts, _ := filepath.Glob(split + ".*")
	sort.Strings(parts)
	var joined []byte
	for _, p := range parts {
		data, _ := os.ReadFile(p)
		if len(data) > 256<<10 {
			t.Errorf("%s is %d bytes, more than 256KiB", p, len(data))
		}
		joined = append(joined, data...)
	}
	if want, _ := os.ReadFile(delta); len(parts) < 2 || !bytes.Equal(joined, want) {
		t.Fatalf("the %d parts of the split delta joined differ from the delta", len(parts))
	}
	// The same delta as a plain tar, written in place: the tar the
	// gzipped one holds.
	deltaTar := filepath.Join(dir, "app-2-delta.tar")
	if r := cli(t, nil, "export", rel2.bundle, "--base", whole1, "--output", deltaTar); r.code != 0 {
		t.Fatalf("delta export to a tar exited %d", r.code)
	}
	if got, want := readFile(t, deltaTar), gunzip(t, readFile(t, delta)); !bytes.Equal(got, want) {
		t.Fatalf("the delta written in place (%d bytes) is not the tar of the gzipped one (%d bytes)", len(got), len(want))
	}
	src.Close() // the air gap

	prefix := func(r *registrytest.Registry) string { return r.Host + "/inside" }
	t.Run("alone into an empty registry", func(t *testing.T) {
		dst := registrytest.Start(t, registrytest.Options{})
		mapping := filepath.Join(t.TempDir(), "mapping.json")
		r := cli(t, nil, "fixup", delta, "--repository-prefix", prefix(dst), "--relocation-mapping", mapping)
		if r.code != 1 {
			t.Errorf("fixup of the delta alone exited %d, want 1", r.code)
		}
		for _, want := range []string{"relocate app-1.tgz first", digest.FromBytes(base).String(), rel2.images["db"].Root.Digest.String()} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr does not say %q", want)
			}
		}
		if _, err := os.Stat(mapping); err == nil {
			t.Error("the refused fixup wrote a relocation mapping")
		}
		if repos := catalog(t, dst); len(repos) != 0 {
			t.Errorf("the registry holds %v after the refused fixup, want nothing", repos)
		}
	})

	for _, tc := range []struct{ name, archive string }{{"after release 1", delta}, {"split, after release 1", parts[0]}, {"written in place, after release 1", deltaTar}} {
		t.Run(tc.name, func(t *testing.T) {
			dst := registrytest.Start(t, registrytest.Options{})
			tmp := t.TempDir()
			// Through a counting proxy, whose address names the registry
			// for both relocations.
			proxy := registrytest.NewProxy(dst, registrytest.ProxyOptions{})
			defer proxy.Close()
			pfx := proxy.Host + "/inside"
			if r := cli(t, nil, "fixup", whole1, "--repository-prefix", pfx, "--relocation-mapping", filepath.Join(tmp, "m1.json")); r.code != 0 {
				t.Fatalf("fixup of release 1 exited %d", r.code)
			}
			before1 := proxy.Counts()
			mapping, out := filepath.Join(tmp, "m2.json"), filepath.Join(tmp, "bundle-2.json")
			if r := cli(t, nil, "fixup", tc.archive, "--repository-prefix", pfx, "--relocation-mapping", mapping, "--output-bundle", out); r.code != 0 {
				t.Fatalf("fixup of the delta exited %d", r.code)
			}
			counts := proxy.Counts()
			for k, v := range before1 {
				counts[k] -= v
			}
			t.Logf("delta relocation: %v", counts)
			if counts["POST mount"] < 1 {
				t.Errorf("no mount: the layer release 1 had only in vendor/db reached vendor/web another way (%v)", counts)
			}
			if r := cli(t, nil, "verify", rel2.bundle, "--relocation-mapping", mapping); r.code != 0 {
				t.Errorf("verify of release 2 exited %d", r.code)
			}
			// Every blob of release 2 in its target repository, from the
			// registry itself.
			var m map[string]string
			readJSON(t, mapping, &m)
			dc := dst.Client()
			for k, img := range rel2.images {
				to := strings.Replace(m[img.Ref(src.Host)], proxy.Host, dst.Host, 1)
				named, err := reference.ParseNormalizedNamed(to)
				if err != nil {
					t.Fatalf("%s: mapping %q: %v", k, to, err)
				}
				repo := reference.Path(named)
				if d, err := dc.HeadManifest(context.Background(), repo, img.Root.Digest.String()); err != nil || d.Digest != img.Root.Digest {
					t.Errorf("%s: root not in %s: %v", k, repo, err)
				}
				for _, b := range img.Blobs {
					if ok, err := dc.BlobExists(context.Background(), repo, b.Digest); !ok {
						t.Errorf("%s: blob %s not in %s: %v", k, b.Digest, repo, err)
					}
				}
			}
			// A rerun: one request per image.
			before := len(proxy.Requests())
			if r := cli(t, nil, "fixup", tc.archive, "--repository-prefix", pfx, "--relocation-mapping", mapping); r.code != 0 {
				t.Fatalf("rerun exited %d", r.code)
			}
			if got := proxy.Requests()[before:]; len(got) != len(rel2.images) {
				t.Errorf("rerun: %d requests, want %d (one per image):\n%s", len(got), len(rel2.images), strings.Join(got, "\n"))
			}
		})
	}
}
