package interop

// The side-by-side comparison (scripts/compare): the same PromQL and StoreAPI
// workloads, on the same data, through four ways of reaching many remote
// Thanos stores over mTLS:
//
//   direct   a querier with per-endpoint TLS to every store
//   haproxy  Debian's HAProxy doing the TLS origination, one plaintext h2
//            frontend per remote, and a querier with one --endpoint each
//   stacked  an inner querier with per-endpoint TLS, and an outer querier
//            with one --endpoint to it
//   fanout   thanos-fanout with one remote per store, and a querier with one
//            --endpoint to it
//
// With FANOUT_BASELINE_BIN, a fifth: fanout-base, the fanout setup with that
// binary (thanos-fanout built at another revision, COMPARE_BASELINE_REV), so
// that a change is measured against its baseline within one run. With
// COMPARE_PERF_DIR, perf record samples the thanos-fanout processes over the
// most remotes while the workloads run (compare_perf_test.go).
//
// Nothing here runs unless FANOUT_COMPARE is set (to full, quick or ci); then
// TestMain builds none of the interop topology and only TestCompare has
// anything to do. See compareModes for what each mode measures.

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// compareOnly tells TestMain to skip the interop topology: the comparison
// builds its own.
func compareOnly() bool { return os.Getenv("FANOUT_COMPARE") != "" }

// compareMode is what one comparison run measures.
type compareMode struct {
	Name string `json:"name"`
	// Remotes behind the setups of the main rows (headline, series scaling,
	// middle hop).
	Remotes int `json:"remotes"`
	// RemoteScale are the remote counts of the remote-scaling rows; each
	// count gets its own four setups. The smallest also serves the added
	// latency rows.
	RemoteScale []int `json:"remote_scale"`
	// Sizes are series per query with Remotes remotes: one metric each, with
	// size/Remotes series per remote. The first is also the metric of the
	// remote-scaling rows and of the throughput rows; MainSize that of the
	// headline rows.
	Sizes    []int `json:"sizes"`
	MainSize int   `json:"main_size"`
	// Runs per workload and setup (median and p90 over them), after one
	// warm-up run whose answers are compared across setups. BigRuns for the
	// sizes of a million series and more.
	Runs, BigRuns int
	// Clients and QueriesPerClient of the concurrent throughput rows.
	Clients          int `json:"clients"`
	QueriesPerClient int `json:"queries_per_client"`
	// LatencyCalls per call kind and setup in the added latency rows.
	LatencyCalls int `json:"latency_calls"`
	// Report: write BENCHMARKS.md's section and the JSON file.
	Report bool `json:"-"`
}

var compareModes = map[string]compareMode{
	// By hand, about 10 minutes on 2 cores.
	"full": {
		Name: "full", Remotes: 8, RemoteScale: []int{1, 8, 64},
		Sizes: []int{10_000, 100_000, 1_000_000}, MainSize: 100_000,
		Runs: 7, BigRuns: 3, Clients: 8, QueriesPerClient: 3, LatencyCalls: 500, Report: true,
	},
	// A few minutes: fewer runs, no million-series or 64-remote rows.
	"quick": {
		Name: "quick", Remotes: 8, RemoteScale: []int{1, 8},
		Sizes: []int{10_000, 100_000}, MainSize: 100_000,
		Runs: 3, BigRuns: 1, Clients: 8, QueriesPerClient: 2, LatencyCalls: 200, Report: true,
	},
	// For CI: every setup once on little data, answers compared; no report.
	"ci": {
		Name: "ci", Remotes: 2, RemoteScale: []int{2},
		Sizes: []int{1_000}, MainSize: 1_000,
		Runs: 1, BigRuns: 1, Clients: 8, QueriesPerClient: 1, LatencyCalls: 20,
	},
}

// TestCompare runs the comparison in the mode FANOUT_COMPARE names. With
// report on, it writes the section between the compare markers of
// COMPARE_BENCHMARKS_MD and the raw results to COMPARE_JSON.
func TestCompare(t *testing.T) {
	name := os.Getenv("FANOUT_COMPARE")
	if name == "" {
		t.Skip("FANOUT_COMPARE is not set (scripts/compare runs this)")
	}
	mode, ok := compareModes[name]
	if !ok {
		t.Fatalf("FANOUT_COMPARE=%q: want full, quick or ci", name)
	}
	if v := os.Getenv("COMPARE_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("COMPARE_RUNS=%q: want a positive number", v)
		}
		mode.Runs, mode.BigRuns = n, min(n, mode.BigRuns)
	}
	start := time.Now()

	var bins Binaries
	var haproxy string
	for _, b := range []struct {
		env, fallback string
		dst           *string
	}{
		{"THANOS_BIN", "", &bins.Thanos},
		{"FANOUT_BIN", "", &bins.Fanout},
		{"HAPROXY_BIN", "haproxy", &haproxy},
	} {
		path := os.Getenv(b.env)
		if path == "" && b.fallback != "" {
			path, _ = exec.LookPath(b.fallback)
		}
		if path == "" {
			t.Fatalf("%s is not set (scripts/compare sets it)", b.env)
		}
		*b.dst = path
	}

	dir, err := os.MkdirTemp(os.Getenv("INTEROP_TMPDIR"), "thanos-fanout-compare-")
	if err != nil {
		t.Fatal(err)
	}
	logf("compare (%s): work dir %s", mode.Name, dir)
	lab := &compareLab{
		mode: mode,
		topo: &Topology{Dir: dir, Bins: bins, procs: map[string]*process{}, ports: newPortSet()},
		bins: bins, haproxy: haproxy,
	}
	if lab.baseline = os.Getenv("FANOUT_BASELINE_BIN"); lab.baseline != "" {
		lab.baselineRev = cmp.Or(os.Getenv("COMPARE_BASELINE_REV"), "?")
		logf("compare: baseline thanos-fanout %s (%s)", lab.baselineRev, lab.baseline)
	}
	t.Cleanup(func() {
		lab.topo.stopAll()
		if t.Failed() || os.Getenv("INTEROP_KEEP_DIR") != "" {
			logf("work dir kept: %s", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			logf("removing %s: %v", dir, err)
		}
	})

	if err := lab.build(); err != nil {
		lab.topo.reportExited()
		t.Fatalf("setting up: %v", err)
	}
	logf("setup took %s", since(start))

	var profiles *perfRecordings
	if perfDir := os.Getenv("COMPARE_PERF_DIR"); perfDir != "" {
		if profiles, err = lab.startPerf(perfDir); err != nil {
			t.Fatalf("perf: %v", err)
		}
	}
	res, err := lab.measure()
	if err != nil {
		t.Fatal(err)
	}
	if profiles != nil {
		if err := profiles.finish(res); err != nil {
			t.Fatalf("perf: %v", err)
		}
	}
	res.Seconds = time.Since(start).Seconds()
	for _, m := range res.Mismatches {
		t.Errorf("different answers: %s", m)
	}
	logf("comparison took %s", since(start))

	md := renderCompare(res)
	fmt.Println(md)
	if !mode.Report {
		return
	}
	if path := os.Getenv("COMPARE_JSON"); path != "" {
		if err := writeCompareJSON(path, res); err != nil {
			t.Fatal(err)
		}
		logf("raw results: %s", path)
	}
	if path := os.Getenv("COMPARE_BENCHMARKS_MD"); path != "" {
		if err := spliceSection(path, md); err != nil {
			t.Fatal(err)
		}
		logf("tables: %s", path)
	}
}

const (
	compareStart = "<!-- compare:start -->"
	compareEnd   = "<!-- compare:end -->"
)

// spliceSection replaces what lies between the compare markers of the file at
// path with md (appending markers and section when there are none).
func spliceSection(path, md string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(raw)
	block := compareStart + "\n" + strings.TrimSpace(md) + "\n" + compareEnd
	i, j := strings.Index(s, compareStart), strings.Index(s, compareEnd)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + block + s[j+len(compareEnd):]
	case i < 0 && j < 0:
		s = strings.TrimRight(s, "\n") + "\n\n" + block + "\n"
	default:
		return fmt.Errorf("%s: the compare markers are out of order", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
