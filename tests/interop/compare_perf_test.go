package interop

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// perfRecordings are perf record processes attached to the thanos-fanout
// middle hops over the mode's most remotes (scripts/compare --perf). Each
// writes <setup>.perf.data into dir; finish stops them and writes
// dir/profiles.tsv (setup, remotes, title per line), from which
// scripts/compare renders the flame graphs and summaries.
type perfRecordings struct {
	dir     string
	k       int
	command string
	procs   []*process
	setups  []string
	titles  []string
}

// startPerf attaches perf record to the fanout and fanout-base hops over
// the most remotes. COMPARE_PERF_FREQ (default 499) and
// COMPARE_PERF_CALL_GRAPH (default dwarf) set its sampling.
func (l *compareLab) startPerf(dir string) (*perfRecordings, error) {
	perf, err := exec.LookPath(cmp.Or(os.Getenv("PERF_BIN"), "perf"))
	if err != nil {
		return nil, err
	}
	freq := cmp.Or(os.Getenv("COMPARE_PERF_FREQ"), "499")
	callGraph := cmp.Or(os.Getenv("COMPARE_PERF_CALL_GRAPH"), "dwarf")
	k := slices.Max(l.remoteCounts())
	r := &perfRecordings{dir: dir, k: k, command: "perf record -F " + freq + " --call-graph " + callGraph}
	for _, s := range l.setups[k] {
		if s.Name != setupFanout && s.Name != setupFanoutBase {
			continue
		}
		data := filepath.Join(dir, s.Name+".perf.data")
		// No build-id cache: it would copy every binary into ~/.debug.
		p := l.topo.newProcess(fmt.Sprintf("perf-%s-k%d", s.Name, k), perf, []string{"record",
			"-F", freq, "--call-graph", callGraph, "--no-buildid-cache",
			"-o", data, "-p", strconv.Itoa(pidOf(s.hop)),
		}, fileReady(data))
		r.procs = append(r.procs, p)
		r.setups = append(r.setups, s.Name)
		r.titles = append(r.titles, l.hopTitle(s.Name))
	}
	if err := l.startAll(r.procs); err != nil {
		return nil, err
	}
	logf("perf: recording %s over %d remotes (%s)", strings.Join(r.setups, " and "), k, r.command)
	return r, nil
}

// hopTitle names a thanos-fanout setup's build for a profile's title.
func (l *compareLab) hopTitle(setup string) string {
	if setup == setupFanoutBase {
		return "thanos-fanout @" + l.baselineRev
	}
	if rev := os.Getenv("COMPARE_FANOUT_REV"); rev != "" {
		return "thanos-fanout (" + rev + ")"
	}
	return "thanos-fanout"
}

// finish stops the recordings (perf writes its file out on SIGTERM), checks
// that each wrote samples, notes them in res and writes the list for
// scripts/compare.
func (r *perfRecordings) finish(res *compareResult) error {
	step := time.Now()
	var lines []string
	for i, p := range r.procs {
		// Writing out dwarf stacks takes a while after the signal.
		if err := p.stop(5 * time.Minute); err != nil {
			return err
		}
		data := filepath.Join(r.dir, r.setups[i]+".perf.data")
		st, err := os.Stat(data)
		if err != nil {
			return fmt.Errorf("%s: %w; last lines of %s:\n%s", p.name, err, p.logPath, tailFile(p.logPath, 20))
		}
		summary := "no summary from perf"
		for line := range strings.Lines(tailFile(p.logPath, 10)) {
			if strings.Contains(line, "Captured and wrote") {
				summary = strings.TrimSpace(line)
			}
		}
		logf("perf: %s: %.0f MiB; %s", r.setups[i], mib(st.Size()), summary)
		lines = append(lines, fmt.Sprintf("%s\t%d\t%s\n", r.setups[i], r.k, r.titles[i]))
	}
	res.Profiled, res.ProfiledRemotes, res.ProfiledWith = r.setups, r.k, r.command
	logf("perf: stopped after %s", since(step))
	return writeFile(filepath.Join(r.dir, "profiles.tsv"), strings.Join(lines, ""))
}

// fileReady passes once path exists and is not empty (perf record has
// attached and written its header).
func fileReady(path string) func(context.Context) error {
	return func(context.Context) error {
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		if st.Size() == 0 {
			return fmt.Errorf("%s is empty", path)
		}
		return nil
	}
}
