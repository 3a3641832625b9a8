package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The demo runs on a machine with no registry installed: no docker-registry
// or distribution v3 anywhere it could look (REGISTRY_BIN, REGISTRY_V3_BIN,
// PATH), and it still relocates, verifies and reruns, with its narration in
// order.
func TestDemoNeedsNoInstalledRegistry(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go on PATH, to build cnab-relocate: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "cnab-relocate")
	build := exec.Command(goBin, "build", "-o", bin, "../../../cmd/cnab-relocate")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cnab-relocate: %v\n%s", err, out)
	}

	missing := filepath.Join(t.TempDir(), "not-installed")
	t.Setenv("REGISTRY_BIN", filepath.Join(missing, "docker-registry"))
	t.Setenv("REGISTRY_V3_BIN", filepath.Join(missing, "registry"))
	var path []string
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if !exists(filepath.Join(dir, "docker-registry")) && !exists(filepath.Join(dir, "registry")) {
			path = append(path, dir)
		}
	}
	t.Setenv("PATH", strings.Join(path, string(os.PathListSeparator)))
	if p, err := exec.LookPath("docker-registry"); err == nil {
		t.Fatalf("docker-registry still on PATH at %s", p)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	start := time.Now()
	err = demo(ctx, &out, bin, false)
	t.Logf("demo took %s; output:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("demo: %v", err)
	}

	got := out.String()
	var steps []string
	for _, l := range strings.Split(got, "\n") {
		if s, ok := strings.CutPrefix(l, "== "); ok {
			steps = append(steps, s)
		}
	}
	want := []string{
		"Starting two local registries (go-containerregistry's, in this process, on 127.0.0.1)",
		"Seeding the vendor's images: an installer, a multi-arch web image, a database",
		"Planning (--dry-run: no registry is contacted)",
		"Relocating into the customer's registry",
		"The relocation mapping (CNAB Core 103)",
		"The relocated bundle (only image references changed)",
		"Verifying with HEAD requests (the gate of a promotion job)",
		"Running again: everything is in place, nothing is copied",
	}
	if !slices.Equal(steps, want) {
		t.Errorf("narration steps:\n%s\nwant:\n%s", strings.Join(steps, "\n"), strings.Join(want, "\n"))
	}
	host := `127\.0\.0\.1:\d+`
	for _, re := range []string{
		// the mapping, one-to-one names in the customer's registry
		`"` + host + `/acme/wordpress:6.4": "` + host + `/customer/apps/acme-wordpress-[0-9a-f]{32}:6.4"`,
		`"` + host + `/acme/wordpress-installer:v0.1.4": "` + host + `/customer/apps/acme-wordpress-installer-[0-9a-f]{32}:v0.1.4"`,
		`"` + host + `/acme/mysql@sha256:[0-9a-f]{64}": "` + host + `/customer/apps/acme-mysql-[0-9a-f]{32}@sha256:[0-9a-f]{64}"`,
		`Relocated 3 image\(s\) in [0-9.]+s \(0 already in place\)`,
		`(?m)^Relocated 3 image\(s\) in [0-9.]+s \(3 already in place\): 0 B copied`,
		`(?m)\n\nDemo done\.\n$`,
	} {
		if !regexp.MustCompile(re).MatchString(got) {
			t.Errorf("output does not match %s", re)
		}
	}
	if n := strings.Count(got, "\nok       "); n != 3 {
		t.Errorf("verify printed %d ok lines, want 3", n)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
