package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// printReport writes the markdown report.
func printReport(w io.Writer, res *results) {
	cfg, sc := res.cfg, res.sc
	jobs := "8 (default)"
	if cfg.jobs > 0 {
		jobs = fmt.Sprint(cfg.jobs)
	}
	craneJobs := fmt.Sprintf("%d (default: GOMAXPROCS)", runtime.NumCPU())
	if cfg.craneJobs > 0 {
		craneJobs = fmt.Sprint(cfg.craneJobs)
	}
	craneText := fmt.Sprintf("crane %s, --jobs %s, one `crane copy` per image in sequence", orDash(res.crane), craneJobs)
	if cfg.noCrane {
		craneText = "crane not run (-no-crane)"
	}
	fmt.Fprintf(w, "## cnab-relocate vs crane copy\n\n")
	fmt.Fprintf(w, "Scenario: %d images (%d multi-arch with 2 platforms: %d platforms, %d manifests and indexes), "+
		"%d distinct blobs, %s unique, %s counting shared layers once per image. "+
		"Two local registries (docker-registry, plain HTTP on 127.0.0.1), each behind a counting proxy; every tool goes through the proxies. "+
		"Registry storage under %s; %s. "+
		"cnab-relocate --jobs %s; %s. "+
		"%d CPUs; median of %d run(s); seeding took %.1fs, the whole bench %.0fs.\n\n",
		cfg.images, cfg.multiarch, sc.platforms, sc.manifests, sc.uniqueBlobs, mibs(sc.uniqueBytes), mibs(sc.perImageBytes),
		os.TempDir(), latencyText(cfg), jobs, craneText, runtime.NumCPU(), cfg.runs, res.seeding.Seconds(), res.total.Seconds())

	fmt.Fprintln(w, "| case | wall s | images/s | MiB/s | MiB uploaded | blob uploads | mounts | requests | /v2/ pings | peak RSS MiB | client CPU s | machine CPU s |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, name := range order {
		ms := res.cases[name]
		if len(ms) == 0 {
			continue
		}
		m := median(ms)
		n, bytes := cfg.images, sc.uniqueBytes
		if name == cnabBig || name == craneBig {
			n, bytes = 1, res.bigBytes
		}
		wall := fmt.Sprintf("%.2f", m.wall.Seconds())
		if len(ms) > 1 {
			var all []string
			for _, x := range ms {
				all = append(all, fmt.Sprintf("%.2f", x.wall.Seconds()))
			}
			wall += " (" + strings.Join(all, ", ") + ")"
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %.0f | %.1f | %d | %d | %d | %d | %.0f | %.1f | %.1f |\n",
			label(name, cfg), wall, float64(n)/m.wall.Seconds(), float64(bytes)/mib/m.wall.Seconds(),
			float64(m.uploaded)/mib, m.uploads(), m.mounts(), m.requests(), m.pings(), float64(m.rss)/mib, m.cpu.Seconds(), (m.cpu + m.serverCPU).Seconds())
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "MiB/s is the bundle's unique bytes over wall time (how fast the bundle is relocated, not what crossed the wire). "+
		"Requests are manifest, blob, upload and mount requests on both proxies; /v2/ pings are counted apart. "+
		"Mounts are successful cross-repository mounts (POST ?mount= minus those that fell back to an upload).")
	fmt.Fprintln(w)

	get := func(name string) *measure {
		if ms := res.cases[name]; len(ms) > 0 {
			m := median(ms)
			return &m
		}
		return nil
	}
	cold, warm, same := get(cnabCold), get(cnabWarm), get(cnabSame)
	cCold, cWarm, cSame := get(craneCold), get(craneWarm), get(craneSame)
	if cCold != nil {
		fmt.Fprintln(w, "Ratios, cnab-relocate / crane (wall: median of the per-run ratios, each run measuring both tools back to back):")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| case | wall | machine CPU | bytes uploaded | requests |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
		for _, p := range []struct {
			name string
			a, b string
		}{{"cold", cnabCold, craneCold}, {"warm", cnabWarm, craneWarm}, {"same-registry", cnabSame, craneSame}} {
			a, b := get(p.a), get(p.b)
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", p.name,
				fmt.Sprintf("%.2f×", pairedRatio(res.cases[p.a], res.cases[p.b])),
				ratio((a.cpu+a.serverCPU).Seconds(), (b.cpu+b.serverCPU).Seconds()),
				ratio(float64(a.uploaded), float64(b.uploaded)), ratio(float64(a.requests()), float64(b.requests())))
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "Targets (issue 7):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | measured | met |")
	fmt.Fprintln(w, "|---|---|---|")
	if cCold != nil {
		r := pairedRatio(res.cases[cnabCold], res.cases[craneCold])
		fmt.Fprintf(w, "| cold wall time ≤ 0.8× crane loop | %.2fs vs %.2fs (medians); %.2f× | %s |\n", cold.wall.Seconds(), cCold.wall.Seconds(), r, yes(r <= 0.8))
	} else {
		fmt.Fprintf(w, "| cold wall time ≤ 0.8× crane loop | not run (-no-crane) | – |\n")
	}
	fmt.Fprintf(w, "| cold bytes uploaded = unique bytes | %d vs %d (%s) | %s |\n", cold.uploaded, sc.uniqueBytes, diff(cold.uploaded, sc.uniqueBytes), yes(cold.uploaded == sc.uniqueBytes))
	fmt.Fprintf(w, "| warm requests ≤ %d (one per image; pings apart) | %d requests + %d pings | %s |\n", cfg.images, warm.requests(), warm.pings(), yes(warm.requests() <= cfg.images))
	fmt.Fprintf(w, "| same-registry uploads 0 bytes, every blob mounted | %d bytes, %d uploads, %d mounts of %d blob placements | %s |\n",
		same.uploaded, same.uploads(), same.mounts(), sc.blobPlacements, yes(same.uploaded == 0 && same.uploads() == 0 && same.mounts() == sc.blobPlacements))
	if big := get(cnabBig); big != nil {
		craneRSS := "crane not run"
		if cb := get(craneBig); cb != nil {
			craneRSS = fmt.Sprintf("crane: %.1f MiB", float64(cb.rss)/mib)
		}
		fmt.Fprintf(w, "| peak RSS < 100 MiB copying a %s layer | %.1f MiB (%s) | %s |\n", sizeName(cfg.bigMiB), float64(big.rss)/mib, craneRSS, yes(big.rss < 100*mib))
	} else {
		fmt.Fprintf(w, "| peak RSS < 100 MiB copying a 1 GiB layer | not run (-big) | – |\n")
	}
	craneRSS := ""
	if cCold != nil {
		craneRSS = fmt.Sprintf(" (crane: %.1f MiB)", float64(cCold.rss)/mib)
	}
	fmt.Fprintf(w, "| (peak RSS of the cold run, for reference) | %.1f MiB%s | |\n", float64(cold.rss)/mib, craneRSS)
	_, _ = cWarm, cSame
	fmt.Fprintln(w)

	if f4, f8 := res.cases[floor4], res.cases[floor8]; len(f4) > 0 && len(f8) > 0 {
		// Per run, the floor is the better of 4 and 8 at once.
		var best []measure
		for i := range min(len(f4), len(f8)) {
			if f4[i].wall <= f8[i].wall {
				best = append(best, f4[i])
			} else {
				best = append(best, f8[i])
			}
		}
		fl := median(best)
		fmt.Fprintln(w, "The floor (issues 14 and 23): the plainest registry-to-registry copy — for each unique blob a POST, a GET from the source streamed into one monolithic PUT, N at a time; a mount into each other repository; every manifest PUT as fetched — no hashing, no checks, no retries; per run the better of N = 4 and 8:")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| target | measured | met |")
		fmt.Fprintln(w, "|---|---|---|")
		r := pairedRatio(res.cases[cnabCold], best)
		limit, why := floorLimit(cfg.latency, len(sc.images))
		fmt.Fprintf(w, "| cold wall ≤ %.2f× the floor%s | %.2fs vs %.2fs (medians; floor 4: %.2fs, 8: %.2fs); %.2f× (per-run: %s) | %s |\n",
			limit, why, cold.wall.Seconds(), fl.wall.Seconds(), median(f4).wall.Seconds(), median(f8).wall.Seconds(), r, perRun(res.cases[cnabCold], best), yes(r <= limit))
		ct, ft := cold.tgt, fl.tgt
		tr := func(c map[string]int) int {
			n := 0
			for k, v := range c {
				if !strings.HasSuffix(k, " ping") {
					n += v
				}
			}
			return n
		}
		fmt.Fprintf(w, "| target requests ≤ 1.25× the floor's | %d vs %d; %s | %s |\n", tr(ct), tr(ft), ratio(float64(tr(ct)), float64(tr(ft))), yes(float64(tr(ct)) <= 1.25*float64(tr(ft))))
		fmt.Fprintf(w, "| bytes uploaded = unique bytes | %d vs %d (floor %d) | %s |\n", cold.uploaded, sc.uniqueBytes, fl.uploaded, yes(cold.uploaded == sc.uniqueBytes))
		cpuText, cpuOK := cpuLimit(len(sc.images), sc.uniqueBytes, cold.cpu, fl.cpu)
		fmt.Fprintf(w, "%s %s |\n", cpuText, yes(cpuOK))
		fmt.Fprintf(w, "| (target requests by kind) | cnab-relocate: %s; floor: %s | |\n", kinds(ct), kinds(ft))
		fmt.Fprintln(w)
	}

	if cmp := get(cmpCold); cmp != nil {
		fmt.Fprintf(w, "A/B (-compare): %s against %s, cold, each run into a fresh registry right after the other (alternating which goes first):\n", cfg.bin, cfg.compare)
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| | -bin | -compare | -bin / -compare |")
		fmt.Fprintln(w, "|---|---:|---:|---|")
		fmt.Fprintf(w, "| wall s (median) | %.2f | %.2f | %.2f× (per run: %s) |\n", cold.wall.Seconds(), cmp.wall.Seconds(),
			pairedRatio(res.cases[cnabCold], res.cases[cmpCold]), perRun(res.cases[cnabCold], res.cases[cmpCold]))
		fmt.Fprintf(w, "| client CPU s (median run) | %.2f | %.2f | |\n", cold.cpu.Seconds(), cmp.cpu.Seconds())
		fmt.Fprintf(w, "| requests | %d | %d | |\n", cold.requests(), cmp.requests())
		fmt.Fprintf(w, "| MiB uploaded | %.1f | %.1f | |\n", float64(cold.uploaded)/mib, float64(cmp.uploaded)/mib)
		fmt.Fprintln(w)
	}

	printExport(w, res)

	if pl := get(cnabPlatform); pl != nil && cold != nil {
		fmt.Fprintln(w, "Only some platforms (issue 21): the bundle with `--platform linux/amd64 --platform-index rewrite` into an empty distribution 2.8 (which refuses sparse indexes), right after the full cold relocation of the same run:")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| | full | --platform linux/amd64 | ratio |")
		fmt.Fprintln(w, "|---|---|---|---|")
		r := pairedRatio(res.cases[cnabPlatform], res.cases[cnabCold])
		fmt.Fprintf(w, "| wall s (medians; ratio: median of per-run ratios %s) | %.2f | %.2f | %.2f× |\n", perRun(res.cases[cnabPlatform], res.cases[cnabCold]), cold.wall.Seconds(), pl.wall.Seconds(), r)
		fmt.Fprintf(w, "| MiB uploaded | %.1f | %.1f | %.2f× |\n", float64(cold.uploaded)/mib, float64(pl.uploaded)/mib, float64(pl.uploaded)/float64(max(cold.uploaded, 1)))
		fmt.Fprintf(w, "| requests | %d | %d | |\n", cold.requests(), pl.requests())
		fmt.Fprintf(w, "| client CPU s | %.2f | %.2f | |\n", cold.cpu.Seconds(), pl.cpu.Seconds())
		fmt.Fprintln(w)
	}

	if thick := get(cnabThick); thick != nil {
		fmt.Fprintln(w, "Thick bundle (issue 16): the bundle exported once to an archive, then each run `fixup ARCHIVE` into an empty registry, right after the thin cold case of the same run:")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| target | measured | met |")
		fmt.Fprintln(w, "|---|---|---|")
		r := pairedRatio(res.cases[cnabThick], res.cases[cnabCold])
		fmt.Fprintf(w, "| fixup ARCHIVE ≤ 1.1× the thin relocation | %.2fs vs %.2fs (medians); %.2f× (per-run ratios: %s) | %s |\n",
			thick.wall.Seconds(), cold.wall.Seconds(), r, perRun(res.cases[cnabThick], res.cases[cnabCold]), yes(r <= 1.1))
		var peak int64
		for _, m := range res.cases[cnabThick] {
			peak = max(peak, m.tmpPeak)
		}
		fmt.Fprintf(w, "| peak temporary disk < 64 MiB (TMPDIR polled every 10 ms) | %s at most over %d run(s); the archive is %s | %s |\n",
			mibs(peak), len(res.cases[cnabThick]), mibs(res.archiveBytes), yes(peak < 64*mib))
		fmt.Fprintf(w, "| bytes uploaded = unique bytes | %d vs %d (%s) | %s |\n", thick.uploaded, sc.uniqueBytes, diff(thick.uploaded, sc.uniqueBytes), yes(thick.uploaded == sc.uniqueBytes))
		fmt.Fprintf(w, "| (peak RSS, for reference) | %.1f MiB (thin: %.1f MiB) | |\n", float64(thick.rss)/mib, float64(cold.rss)/mib)
		if ex := get(cnabExport); ex != nil {
			fmt.Fprintf(w, "| (export of the archive, once, for reference) | %.2fs, %.1f MiB peak RSS | |\n", ex.wall.Seconds(), float64(ex.rss)/mib)
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "Where the CPU goes (median run; seconds of user + system time):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| case | client | source registry | target registry | proxies (bench process) | total | total / wall |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, name := range order {
		m := get(name)
		if m == nil {
			continue
		}
		tgt := fmt.Sprintf("%.2f", m.tgtCPU.Seconds())
		if name == cnabSame || name == craneSame {
			tgt = "(the source)"
		}
		total := m.cpu + m.serverCPU
		fmt.Fprintf(w, "| %s | %.2f | %.2f | %s | %.2f | %.2f | %.2f |\n", label(name, cfg), m.cpu.Seconds(), m.srcCPU.Seconds(), tgt,
			m.proxyCPU.Seconds(), total.Seconds(), total.Seconds()/m.wall.Seconds())
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "Requests by kind (median run):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| case | source proxy | target proxy |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, name := range order {
		m := get(name)
		if m == nil {
			continue
		}
		tgt := kinds(m.tgt)
		if name == cnabSame || name == craneSame {
			tgt = "(same registry: all on the source proxy)"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", label(name, cfg), kinds(m.src), tgt)
	}
	if cfg.requests != "" {
		fmt.Fprintf(w, "\nEvery request, per case and run: %s/\n", cfg.requests)
	}
}

// pairedRatio is the median over runs of a's wall time over b's in the same
// run: other load on the machine hits both tools of a run alike, so this
// is steadier than the ratio of the medians.
// perRun lists the per-run wall-time ratios of a to b.
func perRun(a, b []measure) string {
	var out []string
	for i := range min(len(a), len(b)) {
		out = append(out, fmt.Sprintf("%.2f", a[i].wall.Seconds()/b[i].wall.Seconds()))
	}
	return strings.Join(out, ", ")
}

func pairedRatio(a, b []measure) float64 {
	var rs []float64
	for i := range min(len(a), len(b)) {
		rs = append(rs, a[i].wall.Seconds()/b[i].wall.Seconds())
	}
	if len(rs) == 0 {
		return 0
	}
	slices.Sort(rs)
	return rs[(len(rs)-1)/2]
}

func latencyText(cfg config) string {
	if cfg.latency <= 0 {
		return "no added latency"
	}
	return fmt.Sprintf("every request delayed %s (-latency)", cfg.latency)
}

func label(name string, cfg config) string {
	return strings.Replace(name, "1 GiB", sizeName(cfg.bigMiB), 1)
}

func sizeName(m int) string {
	if m%1024 == 0 {
		return fmt.Sprintf("%d GiB", m/1024)
	}
	return fmt.Sprintf("%d MiB", m)
}

func mibs(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/mib) }

func ratio(a, b float64) string {
	if b == 0 {
		if a == 0 {
			return "= (0 / 0)"
		}
		return "– (crane 0)"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func diff(a, b int64) string {
	if a == b {
		return "equal"
	}
	return fmt.Sprintf("%+d bytes, %+.1f%%", a-b, 100*float64(a-b)/float64(b))
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func orDash(s string) string {
	if s == "" {
		return "(unknown version)"
	}
	return s
}

// floorLimit is the bound on the cold wall time against the floor for a
// scenario, and what makes it that (issue 23's decision: every byte stays
// hashed by this tool, which costs 5-10% on a CPU-bound 2-core machine when
// the bytes dominate): 1.2× with added latency (a remote registry), 1.05×
// for bundles of dozens of images and more (requests dominate), else 1.10×.
func floorLimit(latency time.Duration, images int) (float64, string) {
	switch {
	case latency > 0:
		return 1.2, fmt.Sprintf(" (%v added to every request)", latency)
	case images >= manyImages:
		return 1.05, fmt.Sprintf(" (%d images)", images)
	}
	return 1.10, " (every byte hashed by the client)"
}

// manyImages is where requests, not bytes, dominate a relocation.
const manyImages = 50

// cpuLimit is the bound on the client's CPU: at a few large images, 0.6 s
// per 400 MiB of unique bytes (what hashing and copying them costs); at
// many images, 1.5× the floor client's CPU, since per-request work
// dominates there and no client is below the floor's.
func cpuLimit(images int, uniqueBytes int64, cold, floor time.Duration) (text string, ok bool) {
	per400 := func(d time.Duration) float64 { return d.Seconds() / (float64(uniqueBytes) / (400 * mib)) }
	if images >= manyImages {
		return fmt.Sprintf("| client CPU ≤ 1.5× the floor client's | %.2f s vs %.2f s; %s |", cold.Seconds(), floor.Seconds(), ratio(cold.Seconds(), floor.Seconds())),
			cold.Seconds() <= 1.5*floor.Seconds()
	}
	return fmt.Sprintf("| client CPU ≤ 0.6 s per 400 MiB | %.2f s per 400 MiB (floor %.2f s) |", per400(cold), per400(floor)), per400(cold) <= 0.6
}

// printExport reports the export cases (issue 22): the plain-tar export
// against the export floor (per run the better of 4 and 8 at once), and the
// split and delta exports against the plain one of the same run.
func printExport(w io.Writer, res *results) {
	f4, f8, ex := res.cases[floorExp4], res.cases[floorExp8], res.cases[cnabExpTar]
	if len(f4) == 0 || len(f8) == 0 || len(ex) == 0 {
		return
	}
	var best []measure
	for i := range min(len(f4), len(f8)) {
		best = append(best, f4[i])
		if f8[i].wall < f4[i].wall {
			best[i] = f8[i]
		}
	}
	fl, tar := median(best), median(ex)
	fmt.Fprintf(w, "Export (issue 22): registry to archive, each run. The export floor GETs every unique blob and manifest once, N at a time, straight into its place in one tar laid out up front, then syncs it: no hashing, no checks, nothing written twice (%s). "+
		"cnab-relocate exports the bundle to a plain tar (%s), the same split in parts of %s, and the same as a delta against a small base that shares nothing with it (so it writes the same bytes, plus its record), in an order that turns from run to run, each archive checked (the parts joined are the plain tar) and removed before the next is written; every other run the floor goes first. Client CPU includes hashing every byte fetched (and, for the split archive, every part written):\n",
		mibs(res.floorTarBytes), mibs(res.tarBytes), splitSize)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| case | wall s (median; runs) | client CPU s | peak RSS MiB | source requests |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|")
	row := func(name string, ms []measure) {
		m := median(ms)
		var all []string
		for _, x := range ms {
			all = append(all, fmt.Sprintf("%.2f", x.wall.Seconds()))
		}
		n := 0
		for _, v := range m.src {
			n += v
		}
		fmt.Fprintf(w, "| %s | %.2f (%s) | %.2f | %.0f | %d |\n", name, m.wall.Seconds(), strings.Join(all, ", "), m.cpu.Seconds(), float64(m.rss)/mib, n)
	}
	row("export floor (better of 4 and 8 at once)", best)
	for _, name := range []string{cnabExpTar, cnabExpPart, cnabExpBase} {
		if len(res.cases[name]) > 0 {
			row(name, res.cases[name])
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | measured | met |")
	fmt.Fprintln(w, "|---|---|---|")
	r := pairedRatio(ex, best)
	fmt.Fprintf(w, "| export ≤ 1.15× the export floor | %.2fs vs %.2fs (medians); %.2f× (per run: %s) | %s |\n", tar.wall.Seconds(), fl.wall.Seconds(), r, perRun(ex, best), yes(r <= 1.15))
	for _, name := range []string{cnabExpPart, cnabExpBase} {
		if ms := res.cases[name]; len(ms) > 0 {
			r := pairedRatio(ms, ex)
			fmt.Fprintf(w, "| %s ≤ 1.05× the plain export | %.2f× (per run: %s) | %s |\n", name, r, perRun(ms, ex), yes(r <= 1.05))
		}
	}
	fmt.Fprintln(w)
}
