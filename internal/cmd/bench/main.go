// Command bench measures cnab-relocate against `crane copy` in a loop, in one
// run, on two local registries (Debian's docker-registry on 127.0.0.1).
//
// It seeds a bundle's images in a source registry (default: 12 images, 3 of
// them multi-arch with 2 platforms, 400 MiB of distinct blobs, 480 MiB
// counting the shared base layer once per image), puts a counting proxy
// (registrytest.NewProxy) in front of the source and of each target,
// and runs every tool through the proxies:
//
//   - cnab-relocate cold: into an empty target registry;
//   - cnab-relocate warm: the same command again (everything is there);
//   - cnab-relocate same-registry: source and target on one registry, where
//     every blob can be mounted and none uploaded;
//   - cnab-relocate export (once) and thick cold: the bundle exported to a
//     thick archive, then the archive relocated into an empty registry,
//     its TMPDIR watched for the peak temporary disk;
//   - crane copy, once per image with the same one-to-one target names
//     (relocator.OneToOne), cold, warm and same-registry: the baseline.
//
// Each run measures both tools back to back (every other run starts with
// crane); -runs repeats and the report takes the median, and for the ratio
// of wall times the median of the per-run ratios. For each case it prints
// wall time, bytes uploaded, blob uploads, mounts, requests (manifests,
// blobs, uploads, mounts: not the /v2/ pings, which are counted apart),
// peak RSS of the client (VmHWM), and CPU time of the client, the
// registries and the proxies (which other load on the machine disturbs less
// than wall time), then the ratios, whether the performance targets are
// met, and the requests by kind. The output is a markdown report on stdout;
// progress goes to stderr. It is a measurement: it exits 0 whatever the
// numbers, and non-zero only when something failed.
//
// crane is -crane, else .tmp/bin/crane, installed there with `go install
// github.com/google/go-containerregistry/cmd/crane@v0.22.1` when missing.
// -big adds a check of memory: one image with a 1 GiB layer, whose copy
// should keep cnab-relocate's peak RSS under 100 MiB. -latency delays every
// request, as a remote registry would; -storage puts the registries' data
// elsewhere (/dev/shm takes the disk out); -no-crane measures cnab-relocate
// alone (for sweeps of -jobs).
//
// `make bench` runs it with -bin bin/cnab-relocate.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/cnabio/cnab-relocate/internal/testkit/registrytest"
)

// craneVersion is the crane the bench installs when -crane is not given.
const craneVersion = "v0.22.1"

type config struct {
	bin       string
	crane     string
	images    int
	uniqueMiB int
	sharedMiB int
	multiarch int
	jobs      int
	craneJobs int
	runs      int
	big       bool
	bigMiB    int
	requests  string
	storage   string
	noCrane   bool
	latency   time.Duration
	keep      bool
	compare   string
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == floorExportArg {
		// The export floor client, run by the bench as a process of its own.
		if err := floorExportMain(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "bench: export floor:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 3 && os.Args[1] == floorArg {
		// The floor client, run by the bench as a process of its own.
		if err := floorMain(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "bench: floor:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	flag.StringVar(&cfg.bin, "bin", "bin/cnab-relocate", "the cnab-relocate binary")
	flag.StringVar(&cfg.crane, "crane", "", "the crane binary (default .tmp/bin/crane, installed with go install when missing)")
	flag.IntVar(&cfg.images, "images", 12, "images in the bundle")
	flag.IntVar(&cfg.uniqueMiB, "unique-mib", 400, "MiB of distinct blobs in the bundle")
	flag.IntVar(&cfg.sharedMiB, "shared-mib", 80, "MiB that the shared base layer adds when counted once per image")
	flag.IntVar(&cfg.multiarch, "multiarch", 3, "images with two platforms (an OCI index or a Docker manifest list)")
	flag.IntVar(&cfg.jobs, "jobs", 0, "cnab-relocate --jobs (0: its default)")
	flag.IntVar(&cfg.craneJobs, "crane-jobs", 0, "crane copy --jobs (0: its default, GOMAXPROCS)")
	flag.IntVar(&cfg.runs, "runs", 3, "repeat every case this many times and report the median")
	flag.BoolVar(&cfg.big, "big", false, "also relocate one image with a -big-mib layer and report peak memory (needs ~3x that on disk)")
	flag.IntVar(&cfg.bigMiB, "big-mib", 1024, "size of the -big layer in MiB")
	flag.StringVar(&cfg.requests, "requests", "", "write every request the proxies saw, per case and run, to files in `DIR`")
	flag.StringVar(&cfg.storage, "storage", "", "keep the registries' data and the work directory under `DIR` (default $TMPDIR; /dev/shm takes the disk out of the measurement)")
	flag.DurationVar(&cfg.latency, "latency", 0, "delay every request by this much (in each counting proxy, before it counts and forwards), as a remote registry's round trip would")
	flag.BoolVar(&cfg.noCrane, "no-crane", false, "measure cnab-relocate only (for sweeps of -jobs, say)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work directory (bundle, mappings)")
	flag.StringVar(&cfg.compare, "compare", "", "also relocate cold with this other cnab-relocate `BINARY` in every run, right before or after -bin (alternating), and report the two against each other: an A/B within one run")
	flag.Parse()
	if cfg.runs < 1 {
		fmt.Fprintln(os.Stderr, "bench: -runs must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// Case names, in the order of the report.
const (
	cnabCold  = "cnab-relocate cold"
	cnabWarm  = "cnab-relocate warm (rerun)"
	cnabSame  = "cnab-relocate same-registry"
	craneCold = "crane copy loop cold"
	craneWarm = "crane copy loop warm (rerun)"
	craneSame = "crane copy loop same-registry"
	cnabBig   = "cnab-relocate, one 1 GiB-layer image"
	craneBig  = "crane copy, one 1 GiB-layer image"
	// The thick bundle: export the bundle to an archive (once), then
	// fixup of the archive into an empty registry (each run).
	cnabExport = "cnab-relocate export (archive)"
	cnabThick  = "cnab-relocate thick cold (archive)"
	// Only some platforms (issue 21): the bundle with --platform
	// linux/amd64 into a fresh registry (distribution 2.8, which refuses
	// sparse indexes: --platform-index rewrite), right after the full
	// cold case of the same run.
	cnabPlatform = "cnab-relocate cold, --platform linux/amd64"
	// The floor: the plainest registry-to-registry copy (floorCopy), cold,
	// with 4 and 8 transfers at once.
	floor4 = "floor cold, 4 at once"
	floor8 = "floor cold, 8 at once"
	// -compare: another cnab-relocate binary, cold, next to -bin's.
	cmpCold = "-compare cold"
	// Export (issue 22), each run: the export floor (floorExport) with 4
	// and 8 at once, then export to a plain tar, the same split in parts,
	// and the same as a delta against a base that shares nothing with it
	// (so that it writes the same bytes), in an order that turns from run
	// to run, each archive checked and removed before the next; every
	// other run the floor last.
	floorExp4   = "floor export, 4 at once"
	floorExp8   = "floor export, 8 at once"
	cnabExpTar  = "cnab-relocate export (.tar)"
	cnabExpPart = "cnab-relocate export (.tar, --split-size " + splitSize + ")"
	cnabExpBase = "cnab-relocate export (.tar, --base)"
)

// splitSize is the bench's --split-size: a few parts of the archive.
const splitSize = "64MiB"

var order = []string{cnabCold, cnabWarm, cnabSame, cnabExport, cnabThick, cnabPlatform, floor4, floor8, cmpCold, cnabExpTar, cnabExpPart, cnabExpBase, floorExp4, floorExp8, craneCold, craneWarm, craneSame, cnabBig, craneBig}

type results struct {
	cfg      config
	sc       *scenario
	crane    string // version
	seeding  time.Duration
	cases    map[string][]measure
	bigBytes int64
	// archiveBytes is the size of the exported thick bundle.
	archiveBytes int64
	// tarBytes is the size of the plain-tar export, and floorTarBytes the
	// export floor's tar.
	tarBytes, floorTarBytes int64
	total                   time.Duration
}

func run(ctx context.Context, cfg config) error {
	began := time.Now()
	var err error
	if cfg.bin, err = filepath.Abs(cfg.bin); err != nil {
		return err
	}
	if _, err := os.Stat(cfg.bin); err != nil {
		return fmt.Errorf("cnab-relocate binary: %w (run make build)", err)
	}
	specs, err := layout(cfg.images, cfg.uniqueMiB, cfg.sharedMiB, cfg.multiarch)
	if err != nil {
		return err
	}
	if !cfg.noCrane {
		if cfg.crane, err = findCrane(ctx, cfg.crane); err != nil {
			return err
		}
	}
	if cfg.storage != "" {
		// registrytest makes each registry's directory with os.MkdirTemp("").
		if err := os.Setenv("TMPDIR", cfg.storage); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "cnab-relocate-bench-")
	if err != nil {
		return err
	}
	if cfg.keep {
		logf("work directory %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	dockerConfig := filepath.Join(dir, "docker-config")
	if err := os.MkdirAll(dockerConfig, 0o700); err != nil {
		return err
	}
	environ := env(dockerConfig)
	res := &results{cfg: cfg, cases: map[string][]measure{}}
	if cfg.noCrane {
		res.crane = "(not run)"
	} else if out, err := exec.CommandContext(ctx, cfg.crane, "version").Output(); err == nil {
		res.crane = strings.TrimSpace(string(out))
	}

	srcReg, err := start(ctx)
	if err != nil {
		return err
	}
	src := newEndpoint(srcReg, cfg.latency)
	defer src.Close()

	logf("seeding %d images (%d MiB of distinct blobs) in the source registry %s (tools use %s)", cfg.images, cfg.uniqueMiB, srcReg.Host, src.host)
	t0 := time.Now()
	sc, err := seed(ctx, srcReg, src.host, specs, dir)
	if err != nil {
		return err
	}
	res.sc, res.seeding = sc, time.Since(t0)
	logf("seeded in %.1fs: %d blobs, %.1f MiB unique, %.1f MiB counted per image", res.seeding.Seconds(), sc.uniqueBlobs, float64(sc.uniqueBytes)/mib, float64(sc.perImageBytes)/mib)

	record := func(name string, r int, m measure) {
		res.cases[name] = append(res.cases[name], m)
		logf("run %d: %-32s %6.2fs  %7.1f MiB uploaded  %3d requests  %d pings", r+1, name, m.wall.Seconds(), float64(m.uploaded)/mib, m.requests(), m.pings())
		if cfg.requests != "" {
			if err := dumpRequests(cfg.requests, name, r, m); err != nil {
				logf("writing requests: %v", err)
			}
		}
	}

	for r := range cfg.runs {
		// bin into a fresh registry, once per case name (cold, then warm):
		// the mapping it writes and every target tag are checked.
		relocateCases := func(bin, mappingName string, names ...string) func() error {
			return func() error {
				return withTarget(ctx, cfg.latency, func(tgt *endpoint) error {
					prefix := tgt.host + "/bench"
					tgts, err := targets(prefix, sc.refs)
					if err != nil {
						return err
					}
					mapping := filepath.Join(dir, fmt.Sprintf("%s-%d.json", mappingName, r))
					for _, name := range names {
						m, err := observe(src, tgt, func() (measure, error) {
							return relocate(ctx, environ, bin, sc.bundlePath, prefix, mapping, cfg.jobs, "")
						})
						if err != nil {
							return fmt.Errorf("%s: %w", name, err)
						}
						record(name, r, m)
					}
					if err := checkMapping(mapping, sc.refs, tgts); err != nil {
						return err
					}
					return checkTargets(ctx, tgt.reg, tgts, sc.images)
				})
			}
		}
		full := relocateCases(cfg.bin, "mapping", cnabCold, cnabWarm)
		// Then the same bundle with only linux/amd64: its indexes are
		// rewritten, so the target's digests are checked by the report
		// (no image failed), not against the source's.
		platformCase := func() error {
			return withTarget(ctx, cfg.latency, func(tgt *endpoint) error {
				m, err := observe(src, tgt, func() (measure, error) {
					return relocate(ctx, environ, cfg.bin, sc.bundlePath, tgt.host+"/bench", filepath.Join(dir, fmt.Sprintf("platform-%d.json", r)), cfg.jobs, "",
						"--platform", "linux/amd64", "--platform-index", "rewrite")
				})
				if err != nil {
					return fmt.Errorf("%s: %w", cnabPlatform, err)
				}
				record(cnabPlatform, r, m)
				return nil
			})
		}
		cnabCases := func() error {
			if err := full(); err != nil {
				return err
			}
			return platformCase()
		}
		craneCases := func() error {
			// crane copy in a loop into a fresh registry, then again.
			return withTarget(ctx, cfg.latency, func(tgt *endpoint) error {
				tgts, err := targets(tgt.host+"/bench", sc.refs)
				if err != nil {
					return err
				}
				for _, name := range []string{craneCold, craneWarm} {
					m, err := observe(src, tgt, func() (measure, error) {
						return craneLoop(ctx, environ, cfg.crane, sc.refs, tgts, cfg.craneJobs)
					})
					if err != nil {
						return fmt.Errorf("%s: %w", name, err)
					}
					record(name, r, m)
				}
				return checkTargets(ctx, tgt.reg, tgts, sc.images)
			})
		}
		// Source and target on one registry: new repositories under a
		// prefix of the source registry, every blob a mount.
		cnabSameCase := func() error {
			prefix := fmt.Sprintf("%s/same-%d", src.host, r)
			m, err := observe(src, nil, func() (measure, error) {
				return relocate(ctx, environ, cfg.bin, sc.bundlePath, prefix, filepath.Join(dir, fmt.Sprintf("same-%d.json", r)), cfg.jobs, "")
			})
			if err != nil {
				return fmt.Errorf("%s: %w", cnabSame, err)
			}
			record(cnabSame, r, m)
			return nil
		}
		craneSameCase := func() error {
			tgts, err := targets(fmt.Sprintf("%s/crane-same-%d", src.host, r), sc.refs)
			if err != nil {
				return err
			}
			m, err := observe(src, nil, func() (measure, error) {
				return craneLoop(ctx, environ, cfg.crane, sc.refs, tgts, cfg.craneJobs)
			})
			if err != nil {
				return fmt.Errorf("%s: %w", craneSame, err)
			}
			record(craneSame, r, m)
			return nil
		}
		// The thick bundle: the archive is made once; each run relocates
		// it into a fresh registry, right after the thin cold case, whose
		// wall time it is compared with. Its temporary disk is watched.
		archive := filepath.Join(dir, "bench.tgz")
		thickCase := func() error {
			if r == 0 {
				m, err := observe(src, nil, func() (measure, error) {
					return export(ctx, environ, cfg.bin, sc.bundlePath, archive, cfg.jobs)
				})
				if err != nil {
					return fmt.Errorf("%s: %w", cnabExport, err)
				}
				record(cnabExport, r, m)
				if st, err := os.Stat(archive); err == nil {
					res.archiveBytes = st.Size()
				}
			}
			return withTarget(ctx, cfg.latency, func(tgt *endpoint) error {
				prefix := tgt.host + "/bench"
				tgts, err := targets(prefix, sc.refs)
				if err != nil {
					return err
				}
				mapping := filepath.Join(dir, fmt.Sprintf("thick-%d.json", r))
				tmp := filepath.Join(dir, fmt.Sprintf("tmp-%d", r))
				if err := os.Mkdir(tmp, 0o755); err != nil {
					return err
				}
				m, err := observe(src, tgt, func() (measure, error) {
					return relocate(ctx, withTMPDIR(environ, tmp), cfg.bin, archive, prefix, mapping, cfg.jobs, tmp)
				})
				if err != nil {
					return fmt.Errorf("%s: %w", cnabThick, err)
				}
				record(cnabThick, r, m)
				if err := checkMapping(mapping, sc.refs, tgts); err != nil {
					return err
				}
				return checkTargets(ctx, tgt.reg, tgts, sc.images)
			})
		}
		// The floor, cold, into fresh registries, with 4 and 8 at once.
		floorCase := func() error {
			for _, c := range []struct {
				name string
				jobs int
			}{{floor4, 4}, {floor8, 8}} {
				err := withTarget(ctx, cfg.latency, func(tgt *endpoint) error {
					tgts, err := targets(tgt.host+"/bench", sc.refs)
					if err != nil {
						return err
					}
					m, err := observe(src, tgt, func() (measure, error) {
						return floor(ctx, environ, dir, sc, tgts, c.jobs)
					})
					if err != nil {
						return fmt.Errorf("%s: %w", c.name, err)
					}
					record(c.name, r, m)
					return checkTargets(ctx, tgt.reg, tgts, sc.images)
				})
				if err != nil {
					return err
				}
			}
			return nil
		}
		exportCases := func() error { return exportRun(ctx, cfg, environ, dir, sc, src, r, res, record) }
		// -compare's binary, cold, into a fresh registry.
		compareCase := relocateCases(cfg.compare, "compare", cmpCold)
		if cfg.compare != "" {
			// Right next to -bin's cold case, every other run first.
			bin := cnabCases
			cnabCases = func() error {
				first, second := bin, compareCase
				if r%2 == 1 {
					first, second = compareCase, bin
				}
				if err := first(); err != nil {
					return err
				}
				return second()
			}
		}
		// Every other run starts with crane, so that neither tool always
		// goes first after seeding or after the other.
		steps := []func() error{cnabCases, floorCase, thickCase, craneCases, cnabSameCase, craneSameCase, exportCases}
		if r%2 == 1 {
			steps = []func() error{craneCases, floorCase, cnabCases, thickCase, craneSameCase, cnabSameCase, exportCases}
		}
		if cfg.noCrane {
			steps = []func() error{cnabCases, floorCase, thickCase, cnabSameCase, exportCases}
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
	}

	if cfg.big {
		if err := bigCheck(ctx, cfg, environ, dir, src, res, record); err != nil {
			return err
		}
	}
	res.total = time.Since(began)
	printReport(os.Stdout, res)
	return nil
}

// bigCheck relocates one image with a single big layer, with cnab-relocate
// and with crane, each into a fresh registry, to measure peak memory.
func bigCheck(ctx context.Context, cfg config, environ []string, dir string, src *endpoint, res *results, record func(string, int, measure)) error {
	logf("seeding one image with a %d MiB layer", cfg.bigMiB)
	img, err := src.reg.Client().PushImage(ctx, registrytest.ImageSpec{Repo: "vendor/big", Tag: "1.0", Layers: []int{cfg.bigMiB * mib}, Seed: 99})
	if err != nil {
		return fmt.Errorf("seeding the big image: %w", err)
	}
	runtime.GC()
	debug.FreeOSMemory() // the layer was generated in memory
	for _, b := range img.Blobs {
		res.bigBytes += b.Size
	}
	refs := []string{img.Ref(src.host)}
	bundle := filepath.Join(dir, "big.json")
	if err := writeBundle(bundle, "big", refs, []registrytest.Image{img}); err != nil {
		return err
	}
	names := []string{cnabBig, craneBig}
	if cfg.noCrane {
		names = names[:1]
	}
	for _, name := range names {
		if err := withTarget(ctx, cfg.latency, func(tgt *endpoint) error {
			prefix := tgt.host + "/big"
			tgts, err := targets(prefix, refs)
			if err != nil {
				return err
			}
			m, err := observe(src, tgt, func() (measure, error) {
				if name == craneBig {
					return craneLoop(ctx, environ, cfg.crane, refs, tgts, cfg.craneJobs)
				}
				return relocate(ctx, environ, cfg.bin, bundle, prefix, filepath.Join(dir, "big-mapping.json"), cfg.jobs, "")
			})
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			record(name, 0, m)
			return checkTargets(ctx, tgt.reg, tgts, []registrytest.Image{img})
		}); err != nil {
			return err
		}
	}
	return nil
}

// start starts a registry process.
func start(ctx context.Context) (*registrytest.Registry, error) {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := registrytest.StartProcess(sctx, registrytest.Options{})
	if err != nil {
		return nil, fmt.Errorf("%w (run make deps)", err)
	}
	return r, nil
}

// withTarget runs f with a fresh target registry behind a counting proxy,
// and removes both afterwards.
func withTarget(ctx context.Context, latency time.Duration, f func(*endpoint) error) error {
	reg, err := start(ctx)
	if err != nil {
		return err
	}
	tgt := newEndpoint(reg, latency)
	defer tgt.Close()
	return f(tgt)
}

// findCrane returns the crane binary: path if given, else .tmp/bin/crane,
// installed there when missing.
func findCrane(ctx context.Context, path string) (string, error) {
	if path != "" {
		if lp, err := exec.LookPath(path); err == nil {
			return filepath.Abs(lp)
		}
		return "", fmt.Errorf("-crane %s: not an executable", path)
	}
	gobin, err := filepath.Abs(filepath.Join(".tmp", "bin"))
	if err != nil {
		return "", err
	}
	crane := filepath.Join(gobin, "crane")
	if fi, err := os.Stat(crane); err == nil && fi.Mode()&0o111 != 0 {
		return crane, nil
	}
	logf("installing crane %s into %s", craneVersion, gobin)
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/google/go-containerregistry/cmd/crane@"+craneVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+gobin)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("installing crane: %w", err)
	}
	return crane, nil
}

// dumpRequests writes the requests each proxy saw during one case.
func dumpRequests(dir, name string, r int, m measure) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	slug := strings.NewReplacer(" ", "-", "(", "", ")", "", ",", "").Replace(name)
	var b strings.Builder
	for _, l := range m.srcReqs {
		b.WriteString("source " + l + "\n")
	}
	for _, l := range m.tgtReqs {
		b.WriteString("target " + l + "\n")
	}
	return os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-run%d.txt", slug, r+1)), []byte(b.String()), 0o644)
}

// median returns the run of a case with the median wall time (the lower
// middle for an even count).
func median(ms []measure) measure {
	s := slices.Clone(ms)
	slices.SortFunc(s, func(a, b measure) int { return int(a.wall - b.wall) })
	return s[(len(s)-1)/2]
}
