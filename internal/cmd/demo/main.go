// Command demo shows cnab-relocate's main job on a fresh machine: it starts
// two local registries (a vendor's and a customer's), seeds a sample bundle's
// images in the first, relocates the bundle into the second, and shows the
// relocation mapping, the rewritten bundle and a verify run. `make demo` runs it.
//
// The registries are go-containerregistry's (pkg/registry), served by this
// process on 127.0.0.1 random ports, so the demo needs nothing but Go: no
// registry to install, no root.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

func main() {
	bin := flag.String("bin", "bin/cnab-relocate", "the cnab-relocate binary")
	keep := flag.Bool("keep", false, "keep the demo directory")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := demo(ctx, os.Stdout, *bin, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// demo runs the demo, printing its narration and the CLI's output to w.
func demo(ctx context.Context, w io.Writer, bin string, keep bool) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "cnab-relocate-demo-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}

	step := func(s string) { fmt.Fprintf(w, "\n== %s\n", s) }
	run := func(args ...string) error { return runCLI(ctx, w, bin, args...) }
	show := func(path string) error { return showJSON(w, path) }

	step("Starting two local registries (go-containerregistry's, in this process, on 127.0.0.1)")
	vendor := registrytest.StartMemory(false)
	defer vendor.Close()
	customer := registrytest.StartMemory(false)
	defer customer.Close()
	fmt.Fprintf(w, "  vendor registry   %s\n  customer registry %s\n", vendor.Host, customer.Host)

	step("Seeding the vendor's images: an installer, a multi-arch web image, a database")
	c := vendor.Client()
	base := registrytest.RandomBytes(7, 2<<20) // a base layer all three share
	specs := []registrytest.ImageSpec{
		{Repo: "acme/wordpress-installer", Tag: "v0.1.4", Layers: []int{1 << 20, 256 << 10}, SharedLayers: [][]byte{base}, Seed: 1},
		{Repo: "acme/wordpress", Tag: "6.4", Layers: []int{3 << 20}, SharedLayers: [][]byte{base}, Seed: 2, OCI: true, Platforms: []string{"linux/amd64", "linux/arm64"}},
		{Repo: "acme/mysql", Layers: []int{2 << 20}, SharedLayers: [][]byte{base}, Seed: 3},
	}
	var imgs []registrytest.Image
	for _, s := range specs {
		img, err := c.PushImage(ctx, s)
		if err != nil {
			return err
		}
		imgs = append(imgs, img)
		fmt.Fprintf(w, "  %s (%s)\n", img.Ref(vendor.Host), img.Root.MediaType)
	}

	bundle := map[string]any{
		"schemaVersion": "v1.0.0",
		"name":          "wordpress",
		"version":       "0.1.4",
		"description":   "A sample bundle: WordPress and MySQL",
		"invocationImages": []any{map[string]any{
			"imageType": "docker", "image": imgs[0].Ref(vendor.Host),
		}},
		"images": map[string]any{
			"wordpress": map[string]any{"imageType": "oci", "image": imgs[1].Ref(vendor.Host), "contentDigest": imgs[1].Root.Digest.String()},
			"mysql":     map[string]any{"imageType": "docker", "image": imgs[2].Ref(vendor.Host)},
			"vm-disk":   map[string]any{"imageType": "vm", "image": "https://images.example/disk.qcow2"},
		},
		"custom": map[string]any{"io.acme.support": map[string]any{"contact": "support@acme.example"}},
	}
	bundlePath := filepath.Join(dir, "bundle.json")
	data, _ := json.MarshalIndent(bundle, "", "  ")
	if err := os.WriteFile(bundlePath, data, 0o644); err != nil {
		return err
	}
	mapping := filepath.Join(dir, "relocation-mapping.json")
	relocated := filepath.Join(dir, "relocated-bundle.json")
	prefix := customer.Host + "/customer/apps"

	step("Planning (--dry-run: no registry is contacted)")
	if err := run("fixup", bundlePath, "--repository-prefix", prefix, "--dry-run"); err != nil {
		return err
	}
	step("Relocating into the customer's registry")
	if err := run("fixup", bundlePath, "--repository-prefix", prefix,
		"--relocation-mapping", mapping, "--output-bundle", relocated); err != nil {
		return err
	}
	step("The relocation mapping (CNAB Core 103)")
	if err := show(mapping); err != nil {
		return err
	}
	step("The relocated bundle (only image references changed)")
	if err := show(relocated); err != nil {
		return err
	}
	step("Verifying with HEAD requests (the gate of a promotion job)")
	if err := run("verify", bundlePath, "--relocation-mapping", mapping); err != nil {
		return err
	}
	step("Running again: everything is in place, nothing is copied")
	if err := run("fixup", bundlePath, "--repository-prefix", prefix,
		"--relocation-mapping", mapping, "--output-bundle", relocated); err != nil {
		return err
	}
	if keep {
		fmt.Fprintf(w, "\nFiles kept in %s\n", dir)
	}
	fmt.Fprintln(w, "\nDemo done.")
	return nil
}

// runCLI runs the cnab-relocate binary bin with args, its output to w.
func runCLI(ctx context.Context, w io.Writer, bin string, args ...string) error {
	fmt.Fprintf(w, "$ cnab-relocate %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+os.TempDir()+"/cnab-relocate-demo-no-config")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cnab-relocate %s: %w", args[0], err)
	}
	return nil
}

// showJSON prints the JSON file at path to w, indented.
func showJSON(w io.Writer, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	pretty, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(w, string(pretty))
	return nil
}
