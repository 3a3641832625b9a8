package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// floorExportArg is the first argument that makes the bench binary the
// export floor client.
const floorExportArg = "-floor-export"

// floorExportPlan is what the export floor writes: every unique blob and
// manifest of the bundle, each GET from where the bundle names it, into
// one tar at Out.
type floorExportPlan struct {
	Entries []floorEntry `json:"entries"`
	Out     string       `json:"out"`
	Jobs    int          `json:"jobs"`
}

// floorEntry is one blob or manifest and the repository it is read from.
type floorEntry struct {
	Desc     ocispec.Descriptor `json:"desc"`
	Host     string             `json:"host"`
	Repo     string             `json:"repo"`
	Manifest bool               `json:"manifest"`
}

func floorExportMain(planPath string) error {
	var p floorExportPlan
	if err := readPlan(planPath, &p); err != nil {
		return err
	}
	return floorExport(context.Background(), p)
}

// floorExport is the plainest registry-to-archive export: it lays the
// tar out up front (every entry's header and the offset of its data are
// known from the descriptors), writes the headers, then GETs every entry
// once, Jobs at a time, straight into its place in the file (no hashing,
// no checks, no retries, nothing written twice), and syncs the file, as an
// archive meant for a disk is. It is what the registry, the network and
// the disk cost; an exporter can only add to it.
func floorExport(ctx context.Context, p floorExportPlan) error {
	client := floorClient()
	f, err := os.Create(p.Out)
	if err != nil {
		return err
	}
	defer f.Close()
	// The layout: each entry's header, then its data padded to 512 bytes.
	var headers bytes.Buffer
	tw := tar.NewWriter(&headers)
	offsets := make([]int64, len(p.Entries))
	var off int64
	for i, e := range p.Entries {
		before := headers.Len()
		hdr := &tar.Header{Name: "artifacts/layout/blobs/sha256/" + e.Desc.Digest.Encoded(), Mode: 0o644, Size: e.Desc.Size, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		h := headers.Bytes()[before:]
		if _, err := f.WriteAt(h, off); err != nil {
			return err
		}
		off += int64(len(h))
		offsets[i] = off
		off += (e.Desc.Size + 511) &^ 511
		// The next header goes after this entry's data: tell the writer
		// the data is there without writing it.
		headers.Truncate(before)
		tw = tar.NewWriter(&headers)
	}
	end := off + 1024 // two zero blocks end a tar
	if err := f.Truncate(end); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.Jobs)
	for i, e := range p.Entries {
		g.Go(func() error {
			kind := "/blobs/"
			if e.Manifest {
				kind = "/manifests/"
			}
			req, _ := http.NewRequestWithContext(gctx, http.MethodGet, "http://"+e.Host+"/v2/"+e.Repo+kind+e.Desc.Digest.String(), nil)
			if e.Manifest {
				req.Header.Set("Accept", e.Desc.MediaType)
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET %s: %s", req.URL, resp.Status)
			}
			n, err := io.Copy(io.NewOffsetWriter(f, offsets[i]), resp.Body)
			if err != nil {
				return err
			}
			if n != e.Desc.Size {
				return fmt.Errorf("GET %s: %d bytes, want %d", req.URL, n, e.Desc.Size)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// floorExportRun runs the export floor with jobs into out, as a process of
// its own, measured like the tools.
func floorExportRun(ctx context.Context, environ []string, dir string, sc *scenario, out string, jobs int) (measure, error) {
	self, err := os.Executable()
	if err != nil {
		return measure{}, err
	}
	var entries []floorEntry
	seen := map[string]bool{}
	for i, img := range sc.images {
		n, err := reference.ParseNormalizedNamed(sc.refs[i])
		if err != nil {
			return measure{}, err
		}
		host, repo := reference.Domain(n), reference.Path(n)
		add := func(d ocispec.Descriptor, manifest bool) {
			if !seen[d.Digest.String()] {
				seen[d.Digest.String()] = true
				entries = append(entries, floorEntry{Desc: d, Host: host, Repo: repo, Manifest: manifest})
			}
		}
		add(img.Root, true)
		for _, m := range img.Manifests {
			add(m, true)
		}
		for _, b := range img.Blobs {
			add(b, false)
		}
	}
	plan, err := json.Marshal(floorExportPlan{Entries: entries, Out: out, Jobs: jobs})
	if err != nil {
		return measure{}, err
	}
	path := filepath.Join(dir, "floor-export-plan-"+strconv.Itoa(jobs)+".json")
	if err := os.WriteFile(path, plan, 0o644); err != nil {
		return measure{}, err
	}
	m, _, err := proc(ctx, environ, self, floorExportArg, path)
	m.tmpPeak = -1
	return m, err
}

// exportRun is one run's export cases (see floorExp4): each archive is
// checked, then removed. The split parts must join into the plain tar's
// bytes, and the delta must hold everything the plain tar holds.
func exportRun(ctx context.Context, cfg config, environ []string, dir string, sc *scenario, src *endpoint, r int, res *results, record func(string, int, measure)) error {
	out := filepath.Join(dir, fmt.Sprintf("export-%d", r))
	if err := os.Mkdir(out, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(out)
	base := filepath.Join(dir, "base.tar")
	if r == 0 {
		// The delta's base: a small bundle of its own, exported once.
		img, err := src.reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/base", Tag: "1.0", Layers: []int{1 << 20}, Seed: 77})
		if err != nil {
			return fmt.Errorf("seeding the delta's base: %w", err)
		}
		refs := []string{img.Ref(src.host)}
		bundle := filepath.Join(dir, "base.json")
		if err := writeBundle(bundle, "base", refs, []registrytest.Image{img}); err != nil {
			return err
		}
		if _, err := export(ctx, environ, cfg.bin, bundle, base, cfg.jobs); err != nil {
			return fmt.Errorf("exporting the delta's base: %w", err)
		}
	}
	plain := filepath.Join(out, "plain.tar")
	floorCases := func() error {
		for _, c := range []struct {
			name string
			jobs int
		}{{floorExp4, 4}, {floorExp8, 8}} {
			tarPath := filepath.Join(out, "floor.tar")
			m, err := observe(src, nil, func() (measure, error) { return floorExportRun(ctx, environ, dir, sc, tarPath, c.jobs) })
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			record(c.name, r, m)
			if st, err := os.Stat(tarPath); err == nil {
				res.floorTarBytes = st.Size()
			}
			if err := os.Remove(tarPath); err != nil {
				return err
			}
		}
		return nil
	}
	cnabCases := func() error {
		cases := []struct {
			name, path string
			extra      []string
		}{
			{cnabExpTar, plain, nil},
			{cnabExpPart, filepath.Join(out, "split.tar"), []string{"--split-size", splitSize}},
			{cnabExpBase, filepath.Join(out, "delta.tar"), []string{"--base", base}},
		}
		// Each archive is checked and removed before the next is written,
		// and the order turns from run to run: none always writes beside
		// the others' files or right after the same one.
		k := r % len(cases)
		cases = append(cases[k:], cases[:k]...)
		var plainDigest, splitDigest digest.Digest
		var plainSize, deltaSize int64
		parts := 0
		for _, c := range cases {
			m, err := observe(src, nil, func() (measure, error) {
				return export(ctx, environ, cfg.bin, sc.bundlePath, c.path, cfg.jobs, c.extra...)
			})
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			record(c.name, r, m)
			files := []string{c.path}
			if c.name == cnabExpPart {
				files, _ = filepath.Glob(c.path + ".[0-9][0-9][0-9]")
				parts = len(files)
			}
			d, err := fileDigest(files...)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			var size int64
			for _, f := range files {
				st, err := os.Stat(f)
				if err != nil {
					return err
				}
				size += st.Size()
				if err := os.Remove(f); err != nil {
					return err
				}
			}
			switch c.name {
			case cnabExpTar:
				plainDigest, plainSize = d, size
			case cnabExpPart:
				splitDigest = d
			case cnabExpBase:
				deltaSize = size
			}
		}
		res.tarBytes = plainSize
		if splitDigest != plainDigest || parts < 2 {
			return fmt.Errorf("%s: %d parts whose concatenation is %s, want the plain tar's %s", cnabExpPart, parts, splitDigest, plainDigest)
		}
		if deltaSize < plainSize {
			return fmt.Errorf("%s: the delta against a base with nothing in common (%d bytes) is smaller than the plain tar (%d bytes)", cnabExpBase, deltaSize, plainSize)
		}
		return nil
	}
	steps := []func() error{cnabCases, floorCases}
	if r%2 == 1 {
		steps = []func() error{floorCases, cnabCases}
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// fileDigest is the sha256 of the files' bytes, one after the other.
func fileDigest(paths ...string) (digest.Digest, error) {
	d := digest.Canonical.Digester()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(d.Hash(), f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return d.Digest(), nil
}
