package interop

// Load: many clients of the querier under test at once, each streaming a
// large share of load_series from every remote endpoint. thanos-fanout
// carries the Series calls of concurrent queries over shared HTTP/2
// connections to each endpoint, and a merge stops reading one remote's stream
// while it waits on another's: such a stream must not hold up the others.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// loadRounds is how many times each client runs its query.
	loadRounds = 3
	// loadQueryTimeout bounds one query; a healthy one takes seconds, and
	// thanos-fanout gives up on a remote that sends nothing for 30 s (its
	// default timeout).
	loadQueryTimeout = 90 * time.Second
	// referenceTimeout bounds the reference querier's answers.
	referenceTimeout = 60 * time.Second
	// loadTimeout bounds the whole load, whatever stalls.
	loadTimeout = 120 * time.Second
)

// loadClient is one concurrent client: a range query over the whole data set
// and whether the querier deduplicates cluster a's replicas.
type loadClient struct {
	query string
	dedup bool
}

// loadClients select three tenths of the 9939 load_series shards of
// every cluster: several MiB of chunks per endpoint and query, more than an
// HTTP/2 stream window, so a stream whose merge is busy with another endpoint
// really stops and holds its share of the connection's window. With dedup
// the merge alternates between cluster a's two replicas, so calls wait on
// a0 and a1 in turn; the two clients without dedup read a0 before a1 and keep
// the replica label, so their answers show that both endpoints were read. The
// selectors differ so that concurrent streams end at different times.
// load_series is a gauge: rate or increase on it would bring a PromQL info,
// which the querier reports as a warning.
var loadClients = []loadClient{
	{`sum by (cluster) (deriv(load_series{shard=~".*[0-2]"}[5m]))`, true},
	{`avg by (cluster) (avg_over_time(load_series{shard=~".*[3-5]"}[10m]))`, true},
	{`max by (cluster) (max_over_time(load_series{shard=~"0[0-2].*"}[15m]))`, true},
	{`count by (cluster) (load_series{shard=~".*[6-8]"} > 500)`, true},
	{`sum by (cluster) (delta(load_series{shard=~"0[6-8].*"}[30m]))`, true},
	{`count by (cluster, replica) (load_series{shard=~".*[1-3]"} >= 250)`, false},
	{`quantile by (cluster) (0.9, load_series{shard=~".*[357]"})`, true},
	{`sum by (cluster, replica) (min_over_time(load_series{cluster=~"a|b",shard=~".*[7-9]"}[5m]))`, false},
}

// loadResult is one query of one client.
type loadResult struct {
	client, round int
	elapsed       time.Duration
	resp          *APIResponse
	err           error
}

func (c loadClient) params() url.Values {
	return url.Values{
		"query": {c.query},
		"start": {ts(topo.MinT)},
		"end":   {ts(topo.MaxT)},
		"step":  {"60"},
		"dedup": {strconv.FormatBool(c.dedup)},
	}
}

func (c loadClient) String() string {
	return fmt.Sprintf("%s (dedup=%t)", c.query, c.dedup)
}

// stallRE matches the warning of a remote stream cut short by a deadline:
// thanos-fanout's per-remote timeout (no progress within it; older builds
// bounded the whole answer), the caller's deadline, or the gRPC deadline
// under them.
var stallRE = regexp.MustCompile(`no complete answer within|sent nothing for|deadline passed|Timeout expired`)

func TestConcurrentRangeQueriesThroughFanout(t *testing.T) {
	if len(loadClients) < 8 {
		t.Fatalf("the load needs at least 8 clients, has %d", len(loadClients))
	}

	// The reference answers first, so that the load on thanos-fanout is the
	// only load while it runs.
	want := referenceAnswers(t)

	before := remoteSeriesCalls(t, topo.FanoutHTTP)
	results, elapsed := runLoad(t)
	after := remoteSeriesCalls(t, topo.FanoutHTTP)

	var (
		stalls    []string
		durations []time.Duration
	)
	for _, r := range results {
		what := fmt.Sprintf("client %d round %d: %s", r.client, r.round, loadClients[r.client])
		switch {
		case errors.Is(r.err, context.DeadlineExceeded):
			stalls = append(stalls, fmt.Sprintf("%s: %v", what, r.err))
		case r.err != nil:
			t.Errorf("%s: %v", what, r.err)
		case mentionsRE(r.resp.Warnings, stallRE):
			durations = append(durations, r.elapsed)
			stalls = append(stalls, fmt.Sprintf("%s: partial answer after %s, remote streams cut short: %s",
				what, r.elapsed.Round(100*time.Millisecond), strings.Join(r.resp.Warnings, "; ")))
		case len(r.resp.Warnings) > 0:
			durations = append(durations, r.elapsed)
			t.Errorf("%s: warnings through thanos-fanout: %q", what, r.resp.Warnings)
		default:
			durations = append(durations, r.elapsed)
			if err := sameData(r.resp.Data, want[r.client].Data); err != nil {
				t.Errorf("%s: %v", what, err)
			}
		}
	}
	if len(durations) > 0 {
		slices.Sort(durations)
		ms := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
		t.Logf("%d range queries by %d clients (%d rounds each) in %s: %.2f queries/s; per query min %s, median %s, max %s",
			len(durations), len(loadClients), loadRounds, ms(elapsed), float64(len(durations))/elapsed.Seconds(),
			ms(durations[0]), ms(durations[len(durations)/2]), ms(durations[len(durations)-1]))
	}
	if len(stalls) > 0 {
		t.Errorf("thanos-fanout stalled under load: %d of %d queries did not complete in time:\n  %s",
			len(stalls), len(loadClients)*loadRounds, strings.Join(stalls, "\n  "))
		// Streams wedged on thanos-fanout's remote connections would fail
		// the tests that run after this one as well.
		defer restartFanout(t)
	}

	// Every remote was streamed, and none of its Series calls failed or
	// timed out while the load ran.
	t.Logf("remote Series calls during the load: %s", describeCallDeltas(before, after))
	for _, remote := range Clusters {
		if d := after[remote]["Success"] - before[remote]["Success"]; d == 0 {
			t.Errorf("remote %s: no successful Series call during the load", remote)
		}
		for _, outcome := range []string{"Timeout", "Error"} {
			if d := after[remote][outcome] - before[remote][outcome]; d != 0 {
				t.Errorf("remote %s: %g Series calls with outcome %s during the load", remote, d, outcome)
			}
		}
	}

	// The querier still sees thanos-fanout healthy.
	stores := storesPage(t, topo.QueryUnderTest)
	if len(stores) != 1 || stores[0].Name != topo.FanoutGRPC || stores[0].LastError != nil {
		t.Errorf("after the load the querier's stores are %+v, want %s alone and healthy", stores, topo.FanoutGRPC)
	}

	if t.Failed() {
		t.Logf("last lines of the thanos-fanout log:\n%s", topo.Logs("fanout"))
	}
}

func mentionsRE(list []string, re *regexp.Regexp) bool {
	for _, s := range list {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

// referenceAnswers runs every client's query once on the reference querier.
func referenceAnswers(t *testing.T) []*APIResponse {
	t.Helper()
	want := make([]*APIResponse, len(loadClients))
	errs := make([]error, len(loadClients))
	var wg sync.WaitGroup
	for i, c := range loadClients {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), referenceTimeout)
			defer cancel()
			want[i], errs[i] = APIGet(ctx, topo.QueryReference, "/api/v1/query_range", c.params())
		})
	}
	wg.Wait()
	for i, c := range loadClients {
		switch {
		case errs[i] != nil:
			t.Fatalf("reference querier: %s: %v", c, errs[i])
		case len(want[i].Warnings) > 0:
			t.Fatalf("reference querier: %s: warnings %q", c, want[i].Warnings)
		}
		var v any
		if err := json.Unmarshal(want[i].Data, &v); err != nil {
			t.Fatalf("reference querier: %s: decode: %v", c, err)
		}
		if isEmptyResult(v) {
			t.Fatalf("reference querier: %s: empty answer; the query loads nothing", c)
		}
	}
	return want
}

// runLoad runs every client's query loadRounds times, the clients all at
// once, against the querier under test. A client stops at its first failed
// request; a query without an answer in loadQueryTimeout fails with
// context.DeadlineExceeded and names the clients still waiting then.
func runLoad(t *testing.T) (results []loadResult, elapsed time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()

	var (
		mu       sync.Mutex
		inFlight = map[int]time.Time{} // client -> start of its current query
		wg       sync.WaitGroup
	)
	start := time.Now()
	for i, c := range loadClients {
		wg.Go(func() {
			for round := 1; round <= loadRounds; round++ {
				began := time.Now()
				mu.Lock()
				inFlight[i] = began
				mu.Unlock()
				qctx, qcancel := context.WithTimeout(ctx, loadQueryTimeout)
				resp, err := APIGet(qctx, topo.QueryUnderTest, "/api/v1/query_range", c.params())
				qcancel()
				r := loadResult{client: i, round: round, elapsed: time.Since(began), resp: resp, err: err}
				mu.Lock()
				delete(inFlight, i)
				if errors.Is(err, context.DeadlineExceeded) {
					// The request URL in err only repeats the query.
					r.err = fmt.Errorf("no answer after %s (clients still waiting then: %s): %w",
						r.elapsed.Round(time.Second), describeInFlight(inFlight, time.Now()), context.DeadlineExceeded)
				}
				results = append(results, r)
				mu.Unlock()
				// logf, not t.Logf: it shows progress as it happens and
				// cannot panic should the test have ended already.
				if err != nil {
					logf("  load: client %d round %d: %s failed after %s", i, round, c.query, r.elapsed.Round(10*time.Millisecond))
					return
				}
				logf("  load: client %d round %d: %s in %s, %d warnings", i, round, c.query,
					r.elapsed.Round(10*time.Millisecond), len(resp.Warnings))
			}
		})
	}

	// Each query is bounded by its context; this is the last resort should
	// a client not return anyway, so that CI gets a message, not a hang.
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(loadTimeout + 30*time.Second):
		mu.Lock()
		waiting := describeInFlight(inFlight, time.Now())
		mu.Unlock()
		restartFanout(t)
		t.Fatalf("the load did not end within %s; clients still waiting: %s", loadTimeout+30*time.Second, waiting)
	}
	slices.SortFunc(results, func(a, b loadResult) int {
		return cmp.Or(cmp.Compare(a.client, b.client), cmp.Compare(a.round, b.round))
	})
	return results, time.Since(start)
}

// describeInFlight names the clients still waiting and for how long.
func describeInFlight(inFlight map[int]time.Time, now time.Time) string {
	if len(inFlight) == 0 {
		return "none"
	}
	var parts []string
	for _, i := range slices.Sorted(maps.Keys(inFlight)) {
		parts = append(parts, fmt.Sprintf("%d for %s", i, now.Sub(inFlight[i]).Round(time.Second)))
	}
	return strings.Join(parts, ", ")
}

// sameData compares two API data payloads as compareAPI does.
func sameData(got, want json.RawMessage) error {
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		return fmt.Errorf("decoding the answer through thanos-fanout: %w", err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		return fmt.Errorf("decoding the reference answer: %w", err)
	}
	g, w = sortDeep(g), sortDeep(w)
	if reflect.DeepEqual(g, w) {
		return nil
	}
	gs, _ := json.MarshalIndent(g, "", " ")
	ws, _ := json.MarshalIndent(w, "", " ")
	return fmt.Errorf("answers differ\n%s", sideBySide(string(gs), string(ws)))
}

var remoteCallRE = regexp.MustCompile(`(?m)^thanos_fanout_remote_calls_total\{remote="([^"]+)",method="Series",outcome="([^"]+)"\} (\S+)$`)

// remoteSeriesCalls reads thanos-fanout's Series calls by remote and outcome.
func remoteSeriesCalls(t *testing.T, base string) map[string]map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body, err := httpGet(ctx, base+"/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	out := map[string]map[string]float64{}
	for _, m := range remoteCallRE.FindAllStringSubmatch(string(body), -1) {
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("metrics: %q: %v", m[0], err)
		}
		if out[m[1]] == nil {
			out[m[1]] = map[string]float64{}
		}
		out[m[1]][m[2]] = v
	}
	for _, remote := range Clusters {
		if _, ok := out[remote]["Success"]; !ok {
			t.Fatalf("metrics: no thanos_fanout_remote_calls_total for remote %s's Series calls:\n%.2000s", remote, body)
		}
	}
	return out
}

// describeCallDeltas renders the change of every non-zero counter.
func describeCallDeltas(before, after map[string]map[string]float64) string {
	var parts []string
	for _, remote := range slices.Sorted(maps.Keys(after)) {
		for _, outcome := range []string{"Success", "Cancelled", "Timeout", "Error"} {
			if d := after[remote][outcome] - before[remote][outcome]; d != 0 {
				parts = append(parts, fmt.Sprintf("%s %s +%g", remote, outcome, d))
			}
		}
	}
	if len(parts) == 0 {
		return "none finished"
	}
	return strings.Join(parts, ", ")
}

// restartFanout replaces the main thanos-fanout with a fresh process on the
// same ports and waits until the querier under test sees it healthy again.
func restartFanout(t *testing.T) {
	t.Helper()
	t.Logf("restarting thanos-fanout for the tests that follow")
	p := topo.proc("fanout")
	if err := p.stop(10 * time.Second); err != nil {
		t.Logf("%v", err)
	}
	if err := p.start(); err != nil {
		t.Errorf("restarting thanos-fanout: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for _, wait := range []func() error{
		func() error { return p.waitReady(ctx) },
		func() error { return topo.waitFanoutEndpoints(ctx, topo.FanoutHTTP, 4) },
		func() error { return topo.waitStores(ctx) },
	} {
		if err := wait(); err != nil {
			t.Errorf("restarting thanos-fanout: %v", err)
			return
		}
	}
}
