package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
)

// compareResult is everything one comparison run measured (the JSON file).
type compareResult struct {
	Mode     compareMode       `json:"mode"`
	Started  time.Time         `json:"started"`
	Seconds  float64           `json:"seconds"`
	Machine  map[string]string `json:"machine"`
	Versions map[string]string `json:"versions"`
	Metrics  []benchMetric     `json:"metrics"`
	// SamplesPerSeries over DataSpan, one every SampleInterval.
	SamplesPerSeries int           `json:"samples_per_series"`
	Rows             []*compareRow `json:"rows"`
	Latency          []*latencyRow `json:"latency"`
	Mismatches       []string      `json:"mismatches,omitempty"`
	// Baseline is the short commit id thanos-fanout's baseline build
	// (setup fanout-base) was built at: "" without one, "?" when
	// FANOUT_BASELINE_BIN came without COMPARE_BASELINE_REV.
	Baseline string `json:"baseline,omitempty"`
	// Profiled names the setups whose middle hop ran under perf record while
	// the workloads ran, over ProfiledRemotes remotes (scripts/compare --perf).
	Profiled        []string `json:"profiled,omitempty"`
	ProfiledRemotes int      `json:"profiled_remotes,omitempty"`
	ProfiledWith    string   `json:"profiled_with,omitempty"`
}

// setups are the result's setups in table order.
func (res *compareResult) setups() []string { return setupOrder(res.Baseline != "") }

// compareRow is one workload on one remote count and metric, run through
// every setup.
type compareRow struct {
	// Group: headline, series (series per query scaling) or remotes.
	Group    string `json:"group"`
	Workload string `json:"workload"`
	Metric   string `json:"metric"`
	Remotes  int    `json:"remotes"`
	// Series the workload's answer is made of (from the warm-up run).
	Series int `json:"series"`
	// Items per run: queries for throughput rows, series for StoreAPI rows.
	Items int                     `json:"items"`
	Cells map[string]*compareCell `json:"cells"`
}

// compareCell is one setup's measurements of a row.
type compareCell struct {
	Seconds []float64 `json:"seconds"` // per run
	// The middle hop's CPU seconds per run and its peak RSS (VmHWM, reset
	// before every run) over all runs; absent for direct.
	HopCPU        []float64 `json:"hop_cpu_seconds,omitempty"`
	HopPeakRSSMiB float64   `json:"hop_peak_rss_mib,omitempty"`
	Answer        string    `json:"-"`
}

// latencyRow is one small call, sequentially, through each middle hop and
// straight to one store.
type latencyRow struct {
	Call    string `json:"call"`
	Remotes int    `json:"remotes"`
	// Milliseconds per call, by setup; "direct" is the call straight to the
	// first store (TLS), the others go through the setup's middle hop.
	Millis map[string][]float64 `json:"millis"`
}

// work runs once against a setup and returns a canonical answer (compared
// across setups), the series it is made of and the items it counts.
type work func(ctx context.Context, s *compareSetup) (answer string, series, items int, err error)

// measure runs every workload of the mode.
func (l *compareLab) measure() (*compareResult, error) {
	m := l.mode
	res := &compareResult{
		Mode: m, Started: time.Now().UTC(), Machine: machineInfo(), Versions: l.versions(),
		Metrics: l.metrics, SamplesPerSeries: l.data.Steps, Baseline: l.baselineRev,
	}
	end := l.data.Timestamp(l.data.Steps - 1)
	start := l.data.Timestamp(0)
	main := metricName(m.MainSize)
	smallest := l.metrics[0].Name
	ctx := context.Background()

	type job struct {
		group, workload, metric string
		k, runs                 int
		w                       work
	}
	var jobs []job
	add := func(group, workload, metric string, k int, w work) {
		runs := m.Runs
		for _, bm := range l.metrics {
			if bm.Name == metric && bm.Total >= 1_000_000 {
				runs = m.BigRuns
			}
		}
		jobs = append(jobs, job{group, workload, metric, k, runs, w})
	}
	// Headline: every workload on the main metric and remote count.
	add("headline", "PromQL instant count()", main, m.Remotes, instantCount(main, end))
	add("headline", "PromQL range sum by (namespace) (avg_over_time()), 2 h, step 60 s", main, m.Remotes, rangeRate(main, end))
	add("headline", "/api/v1/series, 6 h", main, m.Remotes, seriesAPI(main, start, end))
	add("headline", "/api/v1/labels, 6 h", main, m.Remotes, labelsAPI(start, end))
	add("headline", "StoreAPI Series, 6 h, with chunks", main, m.Remotes, storeSeries(main, start, end))
	add("headline", fmt.Sprintf("PromQL instant count(), %d clients", m.Clients), smallest, m.Remotes,
		concurrentCount(smallest, end, m.Clients, m.QueriesPerClient))
	// Series per query.
	for _, bm := range l.metrics {
		if bm.Name == main {
			continue // the headline rows have it
		}
		add("series", "PromQL instant count()", bm.Name, m.Remotes, instantCount(bm.Name, end))
		add("series", "StoreAPI Series, 6 h, with chunks", bm.Name, m.Remotes, storeSeries(bm.Name, start, end))
	}
	// Remotes, smallest metric.
	for _, k := range m.RemoteScale {
		add("remotes", "PromQL instant count()", smallest, k, instantCount(smallest, end))
		add("remotes", "StoreAPI Series, 6 h, with chunks", smallest, k, storeSeries(smallest, start, end))
	}

	for _, j := range jobs {
		step := time.Now()
		row := &compareRow{Group: j.group, Workload: j.workload, Metric: j.metric, Remotes: j.k, Cells: map[string]*compareCell{}}
		if err := l.runRow(ctx, row, l.setups[j.k], j.runs, j.w, res); err != nil {
			return nil, err
		}
		res.Rows = append(res.Rows, row)
		logf("%-8s %-55s %-11s %2d remotes: %s (%s)", j.group, j.workload, j.metric, j.k, describeRow(row), since(step))
	}

	// Added latency of small calls, on the fewest remotes.
	k := slices.Min(m.RemoteScale)
	step := time.Now()
	lat, err := l.latency(ctx, k, smallest, start, end)
	if err != nil {
		return nil, err
	}
	res.Latency = lat
	logf("added latency over %d remote(s): %s", k, since(step))
	return res, nil
}

// runRow runs w once per setup to warm up and compare answers, then runs
// times per setup, the setups' order rotating from run to run, one setup at
// a time.
func (l *compareLab) runRow(ctx context.Context, row *compareRow, setups []*compareSetup, runs int, w work, res *compareResult) error {
	for _, s := range setups {
		answer, series, items, err := w(ctx, s)
		if err != nil {
			return fmt.Errorf("%s %s through %s over %d remotes: %w", row.Workload, row.Metric, s.Name, s.K, err)
		}
		row.Cells[s.Name] = &compareCell{Answer: answer}
		row.Series, row.Items = series, items
	}
	base := row.Cells[setupDirect].Answer
	for _, s := range setups[1:] {
		if got := row.Cells[s.Name].Answer; got != base {
			res.Mismatches = append(res.Mismatches, fmt.Sprintf("%s %s over %d remotes: %s answered %s; direct %s",
				row.Workload, row.Metric, row.Remotes, s.Name, abbreviate(got), abbreviate(base)))
		}
	}
	if strings.HasPrefix(base, "0 ") || base == "" {
		res.Mismatches = append(res.Mismatches, fmt.Sprintf("%s %s: empty answer %q", row.Workload, row.Metric, abbreviate(base)))
	}
	for run := range runs {
		for i := range setups {
			s := setups[(run+i)%len(setups)]
			cell := row.Cells[s.Name]
			var before procStat
			if s.hop != nil {
				resetPeakRSS(s.hop)
				before = readProcStat(s.hop)
			}
			t0 := time.Now()
			if _, _, _, err := w(ctx, s); err != nil {
				return fmt.Errorf("%s %s through %s over %d remotes: %w", row.Workload, row.Metric, s.Name, s.K, err)
			}
			cell.Seconds = append(cell.Seconds, time.Since(t0).Seconds())
			if s.hop != nil {
				after := readProcStat(s.hop)
				cell.HopCPU = append(cell.HopCPU, after.cpu-before.cpu)
				cell.HopPeakRSSMiB = max(cell.HopPeakRSSMiB, float64(after.peakKiB)/1024)
			}
		}
	}
	return nil
}

func abbreviate(s string) string {
	if len(s) > 200 {
		return s[:200] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return s
}

func describeRow(row *compareRow) string {
	var parts []string
	for _, name := range setupOrder(true) {
		if c := row.Cells[name]; c != nil && len(c.Seconds) > 0 {
			parts = append(parts, fmt.Sprintf("%s %.3fs", name, quantile(c.Seconds, 0.5)))
		}
	}
	return strings.Join(parts, ", ")
}

// ---------------------------------------------------------------------------
// Workloads.

// queryClient is the HTTP client of every PromQL and HTTP API workload.
var queryClient = &http.Client{
	Timeout:   15 * time.Minute,
	Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
}

// apiCall GETs a querier API path and returns the data of a successful
// answer without warnings.
func apiCall(ctx context.Context, base, path string, params url.Values) (json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path+"?"+params.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := queryClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r APIResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%s: %s: %.300s", path, resp.Status, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s: %s", path, r.ErrorType, r.Error)
	}
	if len(r.Warnings) > 0 {
		return nil, fmt.Errorf("%s: warnings: %v", path, r.Warnings)
	}
	return r.Data, nil
}

type promResult struct {
	Result []struct {
		Metric map[string]string `json:"metric"`
		Value  []any             `json:"value"`
		Values [][]any           `json:"values"`
	} `json:"result"`
}

func instantCount(metric string, ts int64) work {
	return func(ctx context.Context, s *compareSetup) (string, int, int, error) {
		data, err := apiCall(ctx, s.Query, "/api/v1/query", url.Values{"query": {"count(" + metric + ")"}, "time": {formatSeconds(ts)}})
		if err != nil {
			return "", 0, 0, err
		}
		var r promResult
		if err := json.Unmarshal(data, &r); err != nil || len(r.Result) != 1 || len(r.Result[0].Value) != 2 {
			return "", 0, 0, fmt.Errorf("count: unexpected answer %.300s", data)
		}
		v, _ := r.Result[0].Value[1].(string)
		n, _ := strconv.Atoi(v)
		return v + " series", n, 1, nil
	}
}

func rangeRate(metric string, end int64) work {
	return func(ctx context.Context, s *compareSetup) (string, int, int, error) {
		data, err := apiCall(ctx, s.Query, "/api/v1/query_range", url.Values{
			"query": {"sum by (namespace) (avg_over_time(" + metric + "[5m]))"},
			"start": {formatSeconds(end - 2*time.Hour.Milliseconds())}, "end": {formatSeconds(end)}, "step": {"60"},
		})
		if err != nil {
			return "", 0, 0, err
		}
		var r promResult
		if err := json.Unmarshal(data, &r); err != nil {
			return "", 0, 0, err
		}
		// Values rounded to 9 digits: sums may add up in another order.
		lines := make([]string, 0, len(r.Result))
		points := 0
		for _, series := range r.Result {
			var b strings.Builder
			b.WriteString(series.Metric["namespace"])
			for _, p := range series.Values {
				f, _ := strconv.ParseFloat(fmt.Sprint(p[1]), 64)
				fmt.Fprintf(&b, " %v=%.9g", p[0], f)
				points++
			}
			lines = append(lines, b.String())
		}
		slices.Sort(lines)
		return fmt.Sprintf("%d series, %d points, %x", len(lines), points, hashString(strings.Join(lines, "\n"))), 0, 1, nil
	}
}

func seriesAPI(metric string, start, end int64) work {
	return func(ctx context.Context, s *compareSetup) (string, int, int, error) {
		data, err := apiCall(ctx, s.Query, "/api/v1/series", url.Values{
			"match[]": {metric}, "start": {formatSeconds(start)}, "end": {formatSeconds(end)},
		})
		if err != nil {
			return "", 0, 0, err
		}
		var sets []map[string]string
		if err := json.Unmarshal(data, &sets); err != nil {
			return "", 0, 0, err
		}
		keys := make([]string, len(sets))
		for i, set := range sets {
			var b strings.Builder
			for _, k := range slices.Sorted(maps.Keys(set)) {
				b.WriteString(k + "=" + set[k] + ",")
			}
			keys[i] = b.String()
		}
		slices.Sort(keys)
		return fmt.Sprintf("%d series, %x", len(keys), hashString(strings.Join(keys, "\n"))), len(keys), 1, nil
	}
}

func labelsAPI(start, end int64) work {
	return func(ctx context.Context, s *compareSetup) (string, int, int, error) {
		data, err := apiCall(ctx, s.Query, "/api/v1/labels", url.Values{"start": {formatSeconds(start)}, "end": {formatSeconds(end)}})
		if err != nil {
			return "", 0, 0, err
		}
		var names []string
		if err := json.Unmarshal(data, &names); err != nil {
			return "", 0, 0, err
		}
		slices.Sort(names)
		return strings.Join(names, ","), 0, 1, nil
	}
}

// concurrentCount has clients query count(metric) perClient times each at
// once; items are the queries.
func concurrentCount(metric string, ts int64, clients, perClient int) work {
	one := instantCount(metric, ts)
	return func(ctx context.Context, s *compareSetup) (string, int, int, error) {
		answers := make([]string, clients)
		errs := make([]error, clients)
		var series int
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				for range perClient {
					a, n, _, err := one(ctx, s)
					if err != nil {
						errs[c] = err
						return
					}
					if answers[c] != "" && answers[c] != a {
						errs[c] = fmt.Errorf("answers changed: %s, then %s", answers[c], a)
						return
					}
					answers[c] = a
					if c == 0 {
						series = n
					}
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return "", 0, 0, err
			}
		}
		for _, a := range answers[1:] {
			if a != answers[0] {
				return "", 0, 0, fmt.Errorf("clients got different answers: %s, %s", answers[0], a)
			}
		}
		return answers[0], series, clients * perClient, nil
	}
}

// storeSeries reads every series of metric with its chunks from the setup's
// StoreAPI targets at once (for direct, each store over TLS; for HAProxy,
// each frontend) and counts them; items are the series.
func storeSeries(metric string, start, end int64) work {
	req := &storepb.SeriesRequest{
		MinTime: start, MaxTime: end,
		Matchers: []storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: metric}},
	}
	return func(ctx context.Context, s *compareSetup) (string, int, int, error) {
		type count struct {
			series, chunks int
			err            error
		}
		counts := make([]count, len(s.targets))
		var wg sync.WaitGroup
		for i, t := range s.targets {
			wg.Go(func() {
				counts[i].series, counts[i].chunks, counts[i].err = countSeries(ctx, t, req)
			})
		}
		wg.Wait()
		var series, chunks int
		for _, c := range counts {
			if c.err != nil {
				return "", 0, 0, c.err
			}
			series += c.series
			chunks += c.chunks
		}
		return fmt.Sprintf("%d series, %d chunks", series, chunks), series, series, nil
	}
}

// countSeries reads one Series stream to its end.
func countSeries(ctx context.Context, t *grpcTarget, req *storepb.SeriesRequest) (series, chunks int, err error) {
	conn, err := t.dial()
	if err != nil {
		return 0, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	stream, err := storepb.NewStoreClient(conn).Series(ctx, req, grpc.ForceCodec(borrowedCodec{}))
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", t.addr, err)
	}
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			return series, chunks, nil
		}
		if err != nil {
			return series, chunks, fmt.Errorf("%s: %w", t.addr, err)
		}
		switch {
		case r.GetSeries() != nil:
			series++
			chunks += len(r.GetSeries().Chunks)
		case r.GetBatch() != nil:
			for _, s := range r.GetBatch().Series {
				series++
				chunks += len(s.Chunks)
			}
		case r.GetWarning() != "":
			return series, chunks, fmt.Errorf("%s: warning: %s", t.addr, r.GetWarning())
		}
	}
}

// borrowedCodec decodes in place: the series are counted and dropped before
// gRPC reuses the buffer they point into.
type borrowedCodec struct{}

func (borrowedCodec) Name() string { return "proto" }

func (borrowedCodec) Marshal(v any) ([]byte, error) {
	return v.(interface{ Marshal() ([]byte, error) }).Marshal()
}

func (borrowedCodec) Unmarshal(data []byte, v any) error {
	return v.(interface{ Unmarshal([]byte) error }).Unmarshal(data)
}

// latency times Info, LabelNames and a one-series Series call, one at a
// time: straight to the first store, and through each middle hop over k
// remotes (HAProxy: its first frontend).
func (l *compareLab) latency(ctx context.Context, k int, metric string, start, end int64) ([]*latencyRow, error) {
	setups := l.setups[k]
	first := l.remotes[0]
	oneSeries := &storepb.SeriesRequest{
		MinTime: start, MaxTime: end,
		Matchers: []storepb.LabelMatcher{
			{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: metric},
			{Type: storepb.LabelMatcher_EQ, Name: "pod", Value: "pod-0000001"},
			{Type: storepb.LabelMatcher_EQ, Name: "cluster", Value: first.Name},
		},
	}
	calls := []struct {
		name string
		call func(ctx context.Context, conn *grpc.ClientConn) error
	}{
		{"Info", func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := infopb.NewInfoClient(conn).Info(ctx, &infopb.InfoRequest{})
			return err
		}},
		{"LabelNames", func(ctx context.Context, conn *grpc.ClientConn) error {
			r, err := storepb.NewStoreClient(conn).LabelNames(ctx, &storepb.LabelNamesRequest{Start: start, End: end})
			if err == nil && len(r.Names) == 0 {
				err = fmt.Errorf("no label names")
			}
			return err
		}},
		{"Series, one series", func(ctx context.Context, conn *grpc.ClientConn) error {
			stream, err := storepb.NewStoreClient(conn).Series(ctx, oneSeries, grpc.ForceCodec(borrowedCodec{}))
			if err != nil {
				return err
			}
			n := 0
			for {
				r, err := stream.Recv()
				if err == io.EOF {
					break
				}
				if err != nil {
					return err
				}
				if r.GetSeries() != nil {
					n++
				}
			}
			if n != 1 {
				return fmt.Errorf("%d series, want 1", n)
			}
			return nil
		}},
	}
	// Where each setup's calls go: direct to the first store, the others to
	// their hop (HAProxy: the first store's frontend).
	targets := map[string]*grpcTarget{}
	for _, s := range setups {
		targets[s.Name] = s.targets[0]
	}

	var rows []*latencyRow
	rounds := max(1, l.mode.Runs)
	perRound := (l.mode.LatencyCalls + rounds - 1) / rounds
	for _, c := range calls {
		row := &latencyRow{Call: c.name, Remotes: k, Millis: map[string][]float64{}}
		for _, s := range setups {
			conn, err := targets[s.Name].dial()
			if err != nil {
				return nil, err
			}
			for range 20 { // warm up
				if err := c.call(ctx, conn); err != nil {
					return nil, fmt.Errorf("%s through %s: %w", c.name, s.Name, err)
				}
			}
		}
		for round := range rounds {
			for i := range setups {
				s := setups[(round+i)%len(setups)]
				conn, _ := targets[s.Name].dial()
				for range perRound {
					t0 := time.Now()
					if err := c.call(ctx, conn); err != nil {
						return nil, fmt.Errorf("%s through %s: %w", c.name, s.Name, err)
					}
					row.Millis[s.Name] = append(row.Millis[s.Name], float64(time.Since(t0).Microseconds())/1000)
				}
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// ---------------------------------------------------------------------------
// The middle hop's resources, from /proc.

type procStat struct {
	cpu     float64 // user+system seconds
	peakKiB int64   // VmHWM
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

func pidOf(p *process) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// resetPeakRSS sets the process's VmHWM back to its current RSS.
func resetPeakRSS(p *process) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pidOf(p)), []byte("5"), 0)
}

func readProcStat(p *process) procStat {
	pid := pidOf(p)
	var st procStat
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name (which may hold spaces): state is
		// field 3, utime 14, stime 15.
		s := string(raw)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 12 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				stime, _ := strconv.ParseFloat(f[12], 64)
				st.cpu = (ut + stime) / clockTicks
			}
		}
	}
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					st.peakKiB, _ = strconv.ParseInt(f[0], 10, 64)
				}
			}
		}
	}
	return st
}

// ---------------------------------------------------------------------------
// Environment.

func machineInfo() map[string]string {
	m := map[string]string{"nproc": strconv.Itoa(runtime.NumCPU()), "os": runtime.GOOS + "/" + runtime.GOARCH}
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(rest)
				if kib, err := strconv.ParseFloat(f[0], 64); err == nil {
					m["memory"] = fmt.Sprintf("%.0f GiB", kib/(1<<20))
				}
			}
		}
	}
	return m
}

func (l *compareLab) versions() map[string]string {
	first := func(out []byte) string {
		s := strings.TrimSpace(string(out))
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[:i]
		}
		return s
	}
	v := map[string]string{}
	if out, err := exec.Command(l.bins.Thanos, "--version").CombinedOutput(); err == nil {
		v["thanos"] = first(out)
	}
	if out, err := exec.Command(l.haproxy, "-v").CombinedOutput(); err == nil {
		v["haproxy"] = first(out)
	}
	if out, err := exec.Command(l.bins.Fanout, "--version").CombinedOutput(); err == nil {
		v["thanos-fanout"] = first(out)
	}
	if rev := os.Getenv("COMPARE_FANOUT_REV"); rev != "" {
		v["thanos-fanout"] += " (" + rev + ")"
	}
	if l.baseline != "" {
		v["thanos-fanout-base"] = "?"
		if out, err := exec.Command(l.baseline, "--version").CombinedOutput(); err == nil {
			v["thanos-fanout-base"] = first(out)
		}
		v["thanos-fanout-base"] += " (" + l.baselineRev + ")"
	}
	v["go"] = runtime.Version()
	return v
}

// ---------------------------------------------------------------------------
// Small helpers.

// quantile of xs (linear interpolation between closest ranks).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

// hashString is FNV-1a, enough to compare long answers.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
