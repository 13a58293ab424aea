package interop

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

var setupTitles = map[string]string{
	setupDirect:  "direct",
	setupHAProxy: "HAProxy",
	setupStacked: "stacked querier",
	setupFanout:  "thanos-fanout",
}

// title is a setup's column title: the baseline build's names its revision.
func (res *compareResult) title(name string) string {
	if name == setupFanoutBase {
		return "thanos-fanout @" + res.Baseline
	}
	return setupTitles[name]
}

func (res *compareResult) titles(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = res.title(n)
	}
	return out
}

func writeCompareJSON(path string, res *compareResult) error {
	out, err := json.MarshalIndent(res, "", " ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(out, '\n'), 0o644)
}

// renderCompare is the Markdown section of BENCHMARKS.md.
func renderCompare(res *compareResult) string {
	m := res.Mode
	setupNames := res.setups()
	hopNames := setupNames[1:]
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	p("## Side by side: direct, HAProxy, a stacked querier, thanos-fanout (`scripts/compare`)\n\n")
	cmd := "scripts/compare"
	if m.Name != "full" {
		cmd += " --" + m.Name
	}
	if res.Baseline != "" {
		cmd += " --baseline " + res.Baseline
	}
	if len(res.Profiled) > 0 {
		cmd += " --perf"
	}
	versions := res.Versions["thanos-fanout"]
	if res.Baseline != "" {
		versions += "; baseline " + res.Versions["thanos-fanout-base"]
	}
	p("Written by `%s` (mode %s) on %s, %.0f minutes in all. Machine: %s CPUs (%s), %s. %s; %s; %s.\n\n",
		cmd, m.Name, res.Started.Format("2006-01-02"), res.Seconds/60,
		res.Machine["nproc"], res.Machine["cpu"], res.Machine["memory"],
		res.Versions["thanos"], res.Versions["haproxy"], versions)
	if m.Name != "full" {
		p("**These are %s-mode numbers** (%d runs per cell, fewer scaling rows); `scripts/compare` without options runs the full set.\n\n", m.Name, m.Runs)
	}
	p("Every remote is a `thanos store` over a filesystem bucket with its own CA, a server certificate for `rNN.remote.test` only (no IP SAN) and mutual TLS, dialled by 127.0.0.1 with that server name; each announces `cluster=\"rNN\"`. ")
	p("Every setup has its own front `thanos query`, which the PromQL and HTTP API workloads call: ")
	p("**direct**, per-endpoint TLS to every store (`--endpoint.sd-config-file`); ")
	p("**HAProxy**, one plaintext h2 frontend per remote originating TLS (CA, SNI, client certificate) and the querier with one `--endpoint` per frontend; ")
	p("it runs with `http-reuse never` and `max-reuse 0`, so one TLS connection to the store per gRPC call: with its default reuse, HAProxy 2.6 multiplexes concurrent Series streams onto one connection to the store and resets it mid-answer under a few concurrent queries (querier: `unexpected EOF`); ")
	p("**stacked querier**, an inner querier with per-endpoint TLS and the front one with `--endpoint` to it; ")
	p("**thanos-fanout** (release build), one remote per store, the front querier with `--endpoint` to it. ")
	p("StoreAPI rows are a Go client reading the middle hop (direct: each store itself over TLS, at once; HAProxy: each frontend, at once) and counting the series and chunks. ")
	p("Everything runs on this one machine, so every process shares its %s CPUs.\n\n", res.Machine["nproc"])
	if res.Baseline != "" {
		p("**%s** is the baseline: thanos-fanout built at commit %s (release), with the same configuration as thanos-fanout, its own process and its own front querier, measured in the same rotation. ", res.title(setupFanoutBase), res.Baseline)
		p("Its ratio, like every other, is to direct; compare the two thanos-fanout columns with each other, within this run (the last table sets them side by side).\n\n")
	}
	if len(res.Profiled) > 0 {
		p("**Profiled run:** %s over %d remotes ran under `%s` while the workloads ran, which costs them CPU: their rows at %d remotes are slower than without it (the two builds alike). Profiles: [benchmarks/profiles/](benchmarks/profiles/).\n\n",
			strings.Join(res.titles(res.Profiled), " and "), res.ProfiledRemotes, res.ProfiledWith, res.ProfiledRemotes)
	}
	p("Data: 6 h, one sample every %s (%d per series, half counters, half gauges; labels `job`, `namespace` (20 values), `pod`, `container`). ", SampleInterval, res.SamplesPerSeries)
	var mdesc []string
	for _, bm := range res.Metrics {
		mdesc = append(mdesc, fmt.Sprintf("`%s` %s series per remote", bm.Name, thousands(bm.PerRemote)))
	}
	p("Metrics: %s, so with %d remotes a query of `bench_Nk` reads N thousand series.\n\n", strings.Join(mdesc, ", "), m.Remotes)
	p("Each setup is measured alone, the order of setups rotating from run to run, after one warm-up run per setup whose answers are compared (all agreed")
	if len(res.Mismatches) > 0 {
		p(" **except**: %s", strings.Join(res.Mismatches, "; "))
	}
	p("). Cells: median / p90 of %d runs (%d for a million series), and the median's ratio to direct.\n\n", m.Runs, m.BigRuns)

	// Headline.
	var headline []*compareRow
	for _, r := range res.Rows {
		if r.Group == "headline" {
			headline = append(headline, r)
		}
	}
	p("### %d remotes, `%s`\n\n", m.Remotes, metricName(m.MainSize))
	p("| workload | series | %s |\n", strings.Join(res.titles(setupNames), " | "))
	p("| --- | ---: |%s\n", strings.Repeat(" ---: |", len(setupNames)))
	for _, r := range headline {
		series := "—"
		if r.Series > 0 {
			series = thousands(r.Series)
		}
		p("| %s%s | %s |", r.Workload, metricNote(r, m), series)
		for _, name := range setupNames {
			p(" %s |", timeCell(r, name))
		}
		p("\n")
	}
	p("\nThroughput (median run):\n\n")
	p("| workload | unit | %s |\n", strings.Join(res.titles(setupNames), " | "))
	p("| --- | --- |%s\n", strings.Repeat(" ---: |", len(setupNames)))
	for _, r := range res.Rows {
		unit := ""
		switch {
		case strings.HasPrefix(r.Workload, "StoreAPI"):
			unit = "series/s"
		case strings.Contains(r.Workload, "clients"):
			unit = "queries/s"
		default:
			continue
		}
		p("| %s, `%s`, %d remotes | %s |", r.Workload, r.Metric, r.Remotes, unit)
		for _, name := range setupNames {
			c := r.Cells[name]
			p(" %s |", thousands(int(float64(r.Items)/quantile(c.Seconds, 0.5)+0.5)))
		}
		p("\n")
	}

	// Middle hop.
	p("\n### The middle hop: peak RSS and CPU\n\n")
	p("Peak RSS is VmHWM (reset before every run) over all runs, in MiB; CPU is user+system seconds of the middle hop per run (median). Direct has no middle hop. Rows are in the order they ran; the reset lowers VmHWM only to the current RSS, so memory a hop keeps after an earlier row (the million-series rows) shows in the rows after it.\n\n")
	p("| workload | remotes |")
	for _, n := range hopNames {
		p(" %s MiB | %s CPU s |", res.title(n), res.title(n))
	}
	p("\n| --- | ---: |%s\n", strings.Repeat(" ---: | ---: |", len(hopNames)))
	for _, r := range res.Rows {
		p("| %s, `%s` | %d |", r.Workload, r.Metric, r.Remotes)
		for _, n := range hopNames {
			c := r.Cells[n]
			p(" %.0f | %.2f |", c.HopPeakRSSMiB, quantile(c.HopCPU, 0.5))
		}
		p("\n")
	}

	// Scaling.
	scaling := func(title, key string, rows []*compareRow, label func(*compareRow) string) {
		if len(rows) == 0 {
			return
		}
		p("\n### %s\n\n", title)
		p("| %s | workload | %s |\n", key, strings.Join(res.titles(setupNames), " | "))
		p("| ---: | --- |%s\n", strings.Repeat(" ---: |", len(setupNames)))
		for _, r := range rows {
			p("| %s | %s |", label(r), r.Workload)
			for _, name := range setupNames {
				p(" %s |", timeCell(r, name))
			}
			p("\n")
		}
	}
	var bySeries, byRemotes []*compareRow
	for _, bm := range res.Metrics {
		for _, r := range res.Rows {
			if r.Metric == bm.Name && r.Remotes == m.Remotes && (r.Group == "series" ||
				(r.Group == "headline" && (r.Workload == "PromQL instant count()" || strings.HasPrefix(r.Workload, "StoreAPI")))) {
				bySeries = append(bySeries, r)
			}
		}
	}
	for _, r := range res.Rows {
		if r.Group == "remotes" {
			byRemotes = append(byRemotes, r)
		}
	}
	if len(res.Metrics) > 1 {
		scaling(fmt.Sprintf("Series per query (%d remotes)", m.Remotes), "series", bySeries, func(r *compareRow) string { return thousands(r.Series) })
	}
	if len(m.RemoteScale) > 1 {
		scaling(fmt.Sprintf("Remotes (`%s`, %s series per remote)", res.Metrics[0].Name, thousands(res.Metrics[0].PerRemote)),
			"remotes", byRemotes, func(r *compareRow) string { return fmt.Sprint(r.Remotes) })
	}

	// Latency.
	if len(res.Latency) > 0 {
		k := res.Latency[0].Remotes
		n := len(res.Latency[0].Millis[setupDirect])
		p("\n### Added latency of small calls (%d remote%s behind the hop)\n\n", k, map[bool]string{true: "", false: "s"}[k == 1])
		p("%d sequential calls of each kind per setup (after 20 to warm up), from a Go client: direct is the call straight to the first store over TLS; the others go through the middle hop, in plaintext (HAProxy: the first store's frontend). The Series call selects one series of `%s` (`cluster=\"r00\"`, one `pod`). Milliseconds, p50 / p99, and the p50 added to direct's.\n\n",
			n, res.Metrics[0].Name)
		p("| call | %s |\n", strings.Join(res.titles(setupNames), " | "))
		p("| --- |%s\n", strings.Repeat(" ---: |", len(setupNames)))
		for _, r := range res.Latency {
			base := quantile(r.Millis[setupDirect], 0.5)
			p("| %s |", r.Call)
			for _, name := range setupNames {
				xs := r.Millis[name]
				p(" %.2f / %.2f", quantile(xs, 0.5), quantile(xs, 0.99))
				if name != setupDirect {
					p(" (%+.2f)", quantile(xs, 0.5)-base)
				}
				p(" |")
			}
			p("\n")
		}
	}
	if res.Baseline != "" {
		renderBaseline(p, res)
	}
	p("\nRaw results (every run): [benchmarks/compare.json](benchmarks/compare.json).\n")
	return b.String()
}

// renderBaseline sets thanos-fanout beside its baseline build, row by row:
// the ratios of their medians (below 1: this build does better).
func renderBaseline(p func(string, ...any), res *compareResult) {
	base := res.title(setupFanoutBase)
	p("\n### thanos-fanout against %s\n\n", base)
	p("This build, %s, over the baseline, %s, from the rows above: time is the ratio of the median runs, CPU the ratio of the median middle-hop CPU seconds (both, where one is under 0.05 s), below 1 where this build does better; peak RSS in MiB. The added latency rows give both builds' p50 over direct's, and the ratio of their p50s. ", res.Versions["thanos-fanout"], res.Versions["thanos-fanout-base"])
	p("Differences of a few per cent are within this machine's noise.\n\n")
	p("| workload | remotes | time | CPU | peak RSS MiB, this / baseline |\n")
	p("| --- | ---: | ---: | ---: | ---: |\n")
	ratio := func(a, b float64) string {
		if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
			return "—"
		}
		return fmt.Sprintf("×%.2f", a/b)
	}
	// CPU seconds come in clock ticks of 10 ms: below a few ticks a ratio
	// says little, so both values are shown instead.
	cpu := func(a, b float64) string {
		if a < 0.05 || b < 0.05 {
			return fmt.Sprintf("%.2f / %.2f s", a, b)
		}
		return ratio(a, b)
	}
	for _, r := range res.Rows {
		c, cb := r.Cells[setupFanout], r.Cells[setupFanoutBase]
		if c == nil || cb == nil {
			continue
		}
		p("| %s, `%s` | %d | %s | %s | %.0f / %.0f |\n", r.Workload, r.Metric, r.Remotes,
			ratio(quantile(c.Seconds, 0.5), quantile(cb.Seconds, 0.5)),
			cpu(quantile(c.HopCPU, 0.5), quantile(cb.HopCPU, 0.5)),
			c.HopPeakRSSMiB, cb.HopPeakRSSMiB)
	}
	for _, r := range res.Latency {
		xs, bs := r.Millis[setupFanout], r.Millis[setupFanoutBase]
		if len(xs) == 0 || len(bs) == 0 {
			continue
		}
		p("| %s, added latency p50 %.2f / %.2f ms | %d | %s | | |\n", r.Call,
			quantile(xs, 0.5)-quantile(r.Millis[setupDirect], 0.5), quantile(bs, 0.5)-quantile(r.Millis[setupDirect], 0.5),
			r.Remotes, ratio(quantile(xs, 0.5), quantile(bs, 0.5)))
	}
}

func metricNote(r *compareRow, m compareMode) string {
	if r.Metric != metricName(m.MainSize) {
		return fmt.Sprintf(", `%s`", r.Metric)
	}
	return ""
}

// timeCell is "median / p90" and, except for direct, the median's ratio to
// direct's.
func timeCell(r *compareRow, name string) string {
	c := r.Cells[name]
	if c == nil || len(c.Seconds) == 0 {
		return "—"
	}
	med, p90 := quantile(c.Seconds, 0.5), quantile(c.Seconds, 0.9)
	s := fmtDuration(med) + " / " + fmtDuration(p90)
	if name != setupDirect {
		s += fmt.Sprintf(" (×%.2f)", med/quantile(r.Cells[setupDirect].Seconds, 0.5))
	}
	return s
}

// fmtDuration prints seconds as "1.23 s" or "45.6 ms".
func fmtDuration(sec float64) string {
	switch {
	case sec >= 10:
		return fmt.Sprintf("%.1f s", sec)
	case sec >= 1:
		return fmt.Sprintf("%.2f s", sec)
	default:
		return fmt.Sprintf("%.0f ms", sec*1000)
	}
}

// thousands prints n with comma separators.
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
