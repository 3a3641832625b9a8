package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// floorPlan is what the floor copies: every image from its source
// reference to its target, as the bench's scenario gives them.
type floorPlan struct {
	Images  []registrytest.Image `json:"images"`
	Sources []string             `json:"sources"` // host/repo:tag
	Targets []string             `json:"targets"`
	Jobs    int                  `json:"jobs"`
}

// floorArg is the first argument that makes the bench binary the floor
// client (run as a process of its own, measured like the tools).
const floorArg = "-floor-copy"

// floor runs the floor client on the plan in file planPath.
func floorMain(planPath string) error {
	var p floorPlan
	if err := readPlan(planPath, &p); err != nil {
		return err
	}
	return floorCopy(context.Background(), p)
}

// readPlan decodes a floor client's plan from the file at path.
func readPlan(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// floorClient is the floor clients' HTTP client: no proxy, connections
// kept for every job.
func floorClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
	}}
}

// floorCopy is the plainest possible registry-to-registry copy: no
// hashing, no checks, no retries, no HEADs. For each unique blob it opens
// an upload session in the first target repository that needs it, GETs
// the blob from the source and streams the body straight into one
// monolithic PUT ?digest=, Jobs at a time; then it mounts the blob into
// every other target repository that needs it; then it PUTs every
// manifest as fetched, children before their index, the root under its
// tag. It is what the registries' work and the network cost; a client can
// only add to it.
func floorCopy(ctx context.Context, p floorPlan) error {
	client := floorClient()
	type where struct{ host, repo string }
	parse := func(ref string) (where, string, error) {
		n, err := reference.ParseNormalizedNamed(ref)
		if err != nil {
			return where{}, "", err
		}
		tag := ""
		if t, ok := n.(reference.Tagged); ok {
			tag = t.Tag()
		}
		return where{reference.Domain(n), reference.Path(n)}, tag, nil
	}
	type blobPlan struct {
		desc  ocispec.Descriptor
		from  where
		repos []where
	}
	var order []*blobPlan
	blobs := map[string]*blobPlan{}
	srcs := make([]where, len(p.Images))
	dsts := make([]where, len(p.Images))
	tags := make([]string, len(p.Images))
	for i, img := range p.Images {
		var err error
		if srcs[i], _, err = parse(p.Sources[i]); err != nil {
			return err
		}
		if dsts[i], tags[i], err = parse(p.Targets[i]); err != nil {
			return err
		}
		for _, b := range img.Blobs {
			bp, ok := blobs[b.Digest.String()]
			if !ok {
				bp = &blobPlan{desc: b, from: srcs[i]}
				blobs[b.Digest.String()] = bp
				order = append(order, bp)
			}
			bp.repos = append(bp.repos, dsts[i])
		}
	}
	do := func(req *http.Request, want ...int) (*http.Response, error) {
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		for _, w := range want {
			if resp.StatusCode == w {
				return resp, nil
			}
		}
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %s", req.Method, req.URL, resp.Status)
	}
	api := func(w where, path string) string { return "http://" + w.host + "/v2/" + w.repo + path }

	// Blobs: upload to the first repository, N at a time.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.Jobs)
	for _, bp := range order {
		g.Go(func() error {
			first := bp.repos[0]
			req, _ := http.NewRequestWithContext(gctx, http.MethodPost, api(first, "/blobs/uploads/"), nil)
			resp, err := do(req, http.StatusAccepted)
			if err != nil {
				return err
			}
			resp.Body.Close()
			loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
			if err != nil {
				return err
			}
			q := loc.Query()
			q.Set("digest", bp.desc.Digest.String())
			loc.RawQuery = q.Encode()
			get, _ := http.NewRequestWithContext(gctx, http.MethodGet, api(bp.from, "/blobs/"+bp.desc.Digest.String()), nil)
			body, err := do(get, http.StatusOK)
			if err != nil {
				return err
			}
			defer body.Body.Close()
			put, _ := http.NewRequestWithContext(gctx, http.MethodPut, loc.String(), body.Body)
			put.ContentLength = bp.desc.Size
			put.Header.Set("Content-Type", "application/octet-stream")
			resp, err = do(put, http.StatusCreated)
			if err != nil {
				return err
			}
			resp.Body.Close()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// Mounts into every other repository.
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(p.Jobs)
	for _, bp := range order {
		for _, repo := range bp.repos[1:] {
			if repo == bp.repos[0] {
				continue
			}
			g.Go(func() error {
				u := api(repo, "/blobs/uploads/") + "?" + url.Values{"mount": {bp.desc.Digest.String()}, "from": {bp.repos[0].repo}}.Encode()
				req, _ := http.NewRequestWithContext(gctx, http.MethodPost, u, nil)
				resp, err := do(req, http.StatusCreated)
				if err != nil {
					return err
				}
				resp.Body.Close()
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// Manifests as fetched, children first, the root under its tag.
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(p.Jobs)
	for i, img := range p.Images {
		g.Go(func() error {
			nodes := []ocispec.Descriptor{}
			if len(img.Manifests) > 1 || img.Manifests[0].Digest != img.Root.Digest {
				nodes = append(nodes, img.Manifests...)
			}
			nodes = append(nodes, img.Root)
			for k, d := range nodes {
				get, _ := http.NewRequestWithContext(gctx, http.MethodGet, api(srcs[i], "/manifests/"+d.Digest.String()), nil)
				get.Header.Set("Accept", d.MediaType)
				resp, err := do(get, http.StatusOK)
				if err != nil {
					return err
				}
				data, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					return err
				}
				ref := d.Digest.String()
				if k == len(nodes)-1 && tags[i] != "" {
					ref = tags[i]
				}
				put, _ := http.NewRequestWithContext(gctx, http.MethodPut, api(dsts[i], "/manifests/"+ref), bytes.NewReader(data))
				put.ContentLength = int64(len(data))
				put.Header.Set("Content-Type", d.MediaType)
				presp, err := do(put, http.StatusCreated)
				if err != nil {
					return err
				}
				presp.Body.Close()
			}
			return nil
		})
	}
	return g.Wait()
}

// floor runs the floor client with jobs as a process of its own (the bench
// binary again), so that its time, CPU and memory are measured like the
// tools'.
func floor(ctx context.Context, environ []string, dir string, sc *scenario, tgts []string, jobs int) (measure, error) {
	self, err := os.Executable()
	if err != nil {
		return measure{}, err
	}
	plan, err := json.Marshal(floorPlan{Images: sc.images, Sources: sc.refs, Targets: tgts, Jobs: jobs})
	if err != nil {
		return measure{}, err
	}
	path := dir + "/floor-plan-" + strconv.Itoa(jobs) + ".json"
	if err := os.WriteFile(path, plan, 0o644); err != nil {
		return measure{}, err
	}
	m, _, err := proc(ctx, environ, self, floorArg, path)
	m.tmpPeak = -1
	return m, err
}
