package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// TestTargetRefusesToStore: a target that refuses to store — too large,
// out of space, failing every blob upload, or refusing to overwrite a tag
// as registries with immutable tags do — fails the run with exit 1 and an
// error naming the registry, the image and the registry's reason, writes
// nothing, and a rerun once the cause is gone completes.
func TestTargetRefusesToStore(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bundle.json")
	writeJSON(t, bundlePath, f.bundle)
	putBlob := func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/")
	}
	putTag := func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") && !strings.Contains(r.URL.Path, "/manifests/sha256:")
	}
	for i, tc := range []struct {
		name   string
		match  func(*http.Request) bool
		fault  registrytest.Fault
		reason string // on stderr
	}{
		{"413 on every blob upload", putBlob, registrytest.Fault{Kind: registrytest.FaultStatus, Status: http.StatusRequestEntityTooLarge, Code: "SIZE_INVALID", Message: "blob too large"}, "413"},
		{"507 on every blob upload", putBlob, registrytest.Fault{Kind: registrytest.FaultStatus, Status: http.StatusInsufficientStorage, Code: "UNKNOWN", Message: "no space left on device"}, "507"},
		{"500 on every blob upload", putBlob, registrytest.Fault{Kind: registrytest.FaultStatus, Status: http.StatusInternalServerError, Code: "UNKNOWN", Message: "storage backend failed"}, "500"},
		{"409 TAG_INVALID on a tag", putTag, registrytest.Fault{Kind: registrytest.FaultStatus, Status: http.StatusConflict, Code: "TAG_INVALID", Message: "tag is immutable"}, "TAG_INVALID"},
		{"400 MANIFEST_INVALID on a tag", putTag, registrytest.Fault{Kind: registrytest.FaultStatus, Status: http.StatusBadRequest, Code: "MANIFEST_INVALID", Message: "cannot overwrite tag"}, "MANIFEST_INVALID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var refusing atomic.Bool
			refusing.Store(true)
			p := registrytest.NewProxy(dst, registrytest.ProxyOptions{Faults: registrytest.FaultOptions{Rules: []registrytest.FaultRule{
				{Match: func(r *http.Request) bool { return refusing.Load() && tc.match(r) }, Fault: tc.fault},
			}}})
			defer p.Close()
			out := t.TempDir()
			args := []string{"fixup", bundlePath, "--repository-prefix", fmt.Sprintf("%s/team%d", p.Host, i), "--relocation-mapping", filepath.Join(out, "m.json"),
				"--output-bundle", filepath.Join(out, "b.json"), "--retries", "1"}
			r := cli(t, nil, args...)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1", r.code)
			}
			for _, want := range []string{"target registry " + p.Host, f.refs["inv"], tc.reason} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
				}
			}
			if got := dirEntries(t, out); len(got) != 0 {
				t.Errorf("written after the refusal: %v", got)
			}
			refusing.Store(false)
			if r := cli(t, nil, args...); r.code != 0 {
				t.Fatalf("rerun once the target accepts: exit %d", r.code)
			}
		})
	}
}
