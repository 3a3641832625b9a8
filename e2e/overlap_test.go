package e2e

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// TestOverlappingJobs: three promotion jobs relocate bundles that share
// images into one target registry at the same time, a few times over:
// every job exits 0 and every image verifies.
func TestOverlappingJobs(t *testing.T) {
	src := registrytest.Start(t, registrytest.Options{})
	dst := registrytest.Start(t, registrytest.Options{})
	f := seed(t, src)
	dir := t.TempDir()
	// Each bundle shares images with the others.
	sets := [][]string{{"inv", "index"}, {"index", "list"}, {"list", "oci", "inv"}}
	var bundles []string
	for i, keys := range sets {
		images := map[string]any{}
		for _, k := range keys[1:] {
			images[k] = map[string]any{"image": f.refs[k]}
		}
		p := filepath.Join(dir, fmt.Sprintf("bundle-%d.json", i))
		writeJSON(t, p, map[string]any{"name": fmt.Sprint("job-", i), "version": "1.0.0",
			"invocationImages": []any{map[string]any{"image": f.refs[keys[0]]}}, "images": images})
		bundles = append(bundles, p)
	}
	for round := range 3 {
		prefix := fmt.Sprintf("%s/round%d", dst.Host, round)
		var wg sync.WaitGroup
		results := make([]result, len(bundles))
		for i, b := range bundles {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = cli(t, nil, "fixup", b, "--repository-prefix", prefix, "--relocation-mapping", filepath.Join(dir, fmt.Sprintf("m-%d-%d.json", round, i)), "--quiet")
			}()
		}
		wg.Wait()
		for i, r := range results {
			if r.code != 0 {
				t.Errorf("round %d: job %d exited %d:\n%s", round, i, r.code, r.stderr)
				continue
			}
			m := filepath.Join(dir, fmt.Sprintf("m-%d-%d.json", round, i))
			checkRelocated(t, f, dst, m, f.refs, sets[i]...)
			if r := cli(t, nil, "verify", bundles[i], "--relocation-mapping", m); r.code != 0 {
				t.Errorf("round %d: verify of job %d exited %d", round, i, r.code)
			}
		}
	}
}
