package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/reference"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// verify is the gate of a promotion job: HEAD requests only, exit 0 when
// every image is in place, 1 naming each one that is not.
func TestVerifyHeadOnly(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.NewProxy(dst, registrytest.ProxyOptions{})
	defer proxy.Close()
	f := seed(t, src)
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, f.bundle)
	mapPath := filepath.Join(dir, "mapping.json")
	if r := cli(t, nil, "fixup", bundlePath, "--repository-prefix", proxy.Host+"/promoted", "--relocation-mapping", mapPath); r.code != 0 {
		t.Fatalf("fixup exited %d", r.code)
	}

	proxy.Reset()
	r := cli(t, nil, "verify", bundlePath, "--relocation-mapping", mapPath, "--output", "json")
	if r.code != 0 {
		t.Fatalf("verify exited %d", r.code)
	}
	for kind, n := range proxy.Counts() {
		if !strings.HasPrefix(kind, "HEAD ") && kind != "GET ping" {
			t.Errorf("verify sent %d %q requests; want HEAD only (and the /v2/ ping)", n, kind)
		}
	}
	var rep struct {
		OK     bool `json:"ok"`
		Images []struct {
			Source string `json:"source"`
			OK     bool   `json:"ok"`
		} `json:"images"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || !rep.OK || len(rep.Images) != 4 {
		t.Errorf("verify --output json = %s (%v); want ok with 4 images", r.stdout, err)
	}

	// Remove one relocated image from the target: verify fails naming it.
	var mapping map[string]string
	readJSON(t, mapPath, &mapping)
	gone := f.refs["oci"]
	named, _ := reference.ParseNormalizedNamed(mapping[gone])
	if err := dst.Client().DeleteManifest(context.Background(), reference.Path(named), f.images["oci"].Root.Digest); err != nil {
		t.Fatal(err)
	}
	r = cli(t, nil, "verify", bundlePath, "--relocation-mapping", mapPath)
	if r.code != 1 || !strings.Contains(r.stderr, mapping[gone]) || !strings.Contains(r.stdout, "MISSING") {
		t.Errorf("verify after a deletion: exit %d, stdout %q, stderr %q; want exit 1 naming %s", r.code, r.stdout, r.stderr, mapping[gone])
	}
	if strings.Count(r.stdout, "MISSING") != 1 {
		t.Errorf("verify lists %d missing images, want 1:\n%s", strings.Count(r.stdout, "MISSING"), r.stdout)
	}
}
