package interop

// The Rules, Targets, Metadata, Exemplars and Status APIs: a querier that
// reaches the remotes through thanos-fanout (as one store endpoint) must
// answer /api/v1/rules, /alerts, /targets, /metadata, /query_exemplars and
// /status/tsdb like the reference querier, which connects to every sidecar
// directly. What the Prometheus servers evaluate and scrape for these APIs is
// set up in scrape_test.go.
//
// Every case first checks that the reference answer holds what the topology
// defines (so that two empty answers cannot pass), then compares the
// normalised answers of both queriers, polling until they agree: rules are
// evaluated and targets scraped every second, so what a querier shows moves
// between two calls. Normalising replaces what legitimately differs between
// two calls (evaluation and scrape times and durations, an alert's activeAt,
// which differs between the replicas the querier deduplicates, the head's
// max time) with placeholders, and sorts the lists whose order the API does
// not promise.
//
// INTEROP_APIS_SELF_CHECK=1 compares the reference querier with itself
// instead, to check that the normalisation is stable: each answer with one
// given selfCheckDelay earlier, without polling.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// apisReadyTimeout bounds the wait, from the first API test on, until
	// the reference querier shows every rule evaluated, every target
	// scraped and the exemplars stored.
	apisReadyTimeout = 90 * time.Second
	// firstDiffWait is how long the first comparison may take to agree once
	// the reference answer is complete (thanos-fanout asks its remotes for
	// Info every 2 s, a querier asks thanos-fanout every 5 s); later
	// comparisons get laterDiffWait.
	firstDiffWait = 15 * time.Second
	laterDiffWait = 5 * time.Second
	// selfCheckDelay separates the two answers compared in a self check.
	selfCheckDelay = 3 * time.Second
)

var selfCheck = os.Getenv("INTEROP_APIS_SELF_CHECK") != ""

// apiCase is one request whose answer is compared between two queriers.
type apiCase struct {
	name   string // subtest name
	path   string
	params url.Values
	// check validates the reference answer's data before it is compared.
	// Until it passes, the reference is taken as not ready yet.
	check func(data json.RawMessage) error
	// volatile lists the keys whose values change from one call to the
	// next; normalise replaces them wherever they occur.
	volatile map[string]placeholder
	// ordered: the answer's lists are in a meaningful order and are
	// compared as they are (otherwise every list of objects or strings is
	// sorted first).
	ordered bool
}

// placeholder turns a volatile value into a stable one, after checking that
// it is plausible (a placeholder would otherwise hide a broken value).
type placeholder func(v any) any

// timestamp replaces an RFC 3339 time after the topology started with
// "<time>"; a zero time (never evaluated or scraped) stays as it is.
func timestamp(v any) any {
	s, ok := v.(string)
	if !ok {
		return v
	}
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || ts.IsZero() || ts.Before(startTime.Add(-time.Minute)) || ts.After(time.Now().Add(time.Minute)) {
		return v
	}
	return "<time>"
}

// duration replaces a positive number of seconds below a minute with
// "<duration>".
func duration(v any) any {
	f, ok := v.(float64)
	if !ok || f <= 0 || f >= 60 {
		return v
	}
	return "<duration>"
}

// millis replaces a millisecond timestamp after the topology started with
// "<ms>".
func millis(v any) any {
	f, ok := v.(float64)
	if !ok || int64(f) < startTime.Add(-time.Minute).UnixMilli() || int64(f) > time.Now().Add(time.Minute).UnixMilli() {
		return v
	}
	return "<ms>"
}

// normalise rewrites volatile keys in place, at any depth.
func normalise(v any, volatile map[string]placeholder) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if p, ok := volatile[k]; ok {
				x[k] = p(e)
			} else {
				x[k] = normalise(e, volatile)
			}
		}
	case []any:
		for i, e := range x {
			x[i] = normalise(e, volatile)
		}
	}
	return v
}

// canonical is an answer as compared: the normalised data and the warnings
// (none expected), as indented JSON with sorted keys.
func (c apiCase) canonical(r *APIResponse) (string, error) {
	var data any
	if err := json.Unmarshal(r.Data, &data); err != nil {
		return "", fmt.Errorf("decoding data: %w", err)
	}
	data = normalise(data, c.volatile)
	if !c.ordered {
		data = sortDeep(data)
	}
	warnings := slices.Clone(r.Warnings)
	slices.Sort(warnings)
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // placeholders read "<time>", not "\u003ctime\u003e"
	enc.SetIndent("", " ")
	err := enc.Encode(map[string]any{"data": data, "warnings": warnings})
	return b.String(), err
}

// querierUnderTest is a querier that reaches the remotes through
// thanos-fanout.
type querierUnderTest struct{ name, base string }

func queriersUnderTest() []querierUnderTest {
	if selfCheck {
		return []querierUnderTest{{"self", topo.QueryReference}}
	}
	return []querierUnderTest{
		{"fanout", topo.QueryUnderTest},
		// Every call from this one is snappy-compressed.
		{"snappy", topo.QuerySnappy},
	}
}

var (
	apisStartOnce sync.Once
	apisStart     time.Time
	// firstComparison gives the first comparison of the run its long wait.
	firstComparison sync.Once
)

// runAPICases runs every case against every querier under test, each as a
// subtest named <querier>/<case>.
func runAPICases(t *testing.T, cases []apiCase) {
	apisStartOnce.Do(func() { apisStart = time.Now() })
	for _, q := range queriersUnderTest() {
		for _, c := range cases {
			t.Run(q.name+"/"+c.name, func(t *testing.T) { compareNormalised(t, q.base, c) })
		}
	}
}

// compareNormalised waits until the reference answer passes the case's
// check, then until the answer of the querier at base, normalised, equals a
// reference answer fetched just before or just after it. On failure it shows
// the first differing lines and both answers.
func compareNormalised(t *testing.T, base string, c apiCase) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	get := func(base string) (string, *APIResponse, error) {
		r, err := APIGet(ctx, base, c.path, c.params)
		if err != nil {
			return "", r, err
		}
		s, err := c.canonical(r)
		return s, r, err
	}

	// The first API test waits for the topology; later ones only for data
	// that moves.
	readyBy := apisStart.Add(apisReadyTimeout)
	if soon := time.Now().Add(laterDiffWait); readyBy.Before(soon) {
		readyBy = soon
	}
	var diffBy time.Time
	var problem string   // why the last attempt failed
	var got, want string // the last differing answers
	stable, differed := true, false
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			now := time.Now()
			if diffBy.IsZero() && now.After(readyBy) || !diffBy.IsZero() && now.After(diffBy) {
				break
			}
			time.Sleep(pollInterval)
		}
		ref1, r, err := get(topo.QueryReference)
		if err == nil && len(r.Warnings) > 0 {
			err = fmt.Errorf("warnings: %v", r.Warnings)
		}
		if err == nil {
			err = c.check(r.Data)
		}
		if err != nil {
			problem = fmt.Sprintf("the reference answer is not as the topology defines it: %v", err)
			continue
		}
		if diffBy.IsZero() {
			wait := laterDiffWait
			firstComparison.Do(func() { wait = firstDiffWait })
			if selfCheck {
				wait = 0
				time.Sleep(selfCheckDelay)
			}
			diffBy = time.Now().Add(wait)
		}
		g, _, err := get(base)
		if err != nil {
			problem = fmt.Sprintf("the querier under test failed: %v", err)
			differed = false
			continue
		}
		ref2, _, err := get(topo.QueryReference)
		if err != nil {
			problem = fmt.Sprintf("the reference querier failed: %v", err)
			continue
		}
		if selfCheck {
			// Only the answer selfCheckDelay older counts.
			ref2 = ref1
		}
		if g == ref1 || g == ref2 {
			if attempt > 0 {
				t.Logf("agreed after %d attempts", attempt+1)
			}
			return
		}
		got, want, stable, differed = g, ref2, ref1 == ref2, true
		problem = "the answers differ"
	}
	if !differed {
		t.Fatalf("%s %s: %s", c.path, c.params.Encode(), problem)
	}
	note := "the reference answered the same just before and just after"
	switch {
	case selfCheck:
		note = fmt.Sprintf("self check: the reference's answer changed within %s; the normalisation misses something", selfCheckDelay)
	case !stable:
		note = "the reference itself changed between two calls around it: the normalisation misses something, or the data was still moving"
	}
	t.Errorf("%s %s: normalised answers differ (%s)\n%s\n--- through thanos-fanout (%d bytes)\n%s\n--- direct (%d bytes)\n%s",
		c.path, c.params.Encode(), note, sideBySide(got, want), len(got), truncate(got), len(want), truncate(want))
}

// decode unmarshals an answer's data into v.
func decode(data json.RawMessage, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decoding %.200s: %w", data, err)
	}
	return nil
}

// sameLines compares a summary of an answer, one line per item, with what
// is expected, whatever the order.
func sameLines(got, want []string) error {
	slices.Sort(got)
	slices.Sort(want)
	if slices.Equal(got, want) {
		return nil
	}
	return fmt.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
}

// ---------------------------------------------------------------------------
// /api/v1/rules and /api/v1/alerts.

var rulesVolatile = map[string]placeholder{
	"lastEvaluation": timestamp,
	"evaluationTime": duration,
	// When the alert became active, which differs between the replicas a
	// querier deduplicates (it keeps the most recently evaluated one).
	"activeAt": timestamp,
}

// ruleSummary is what the rule checks look at in /api/v1/rules.
type ruleSummary struct {
	Groups []struct {
		Name  string `json:"name"`
		File  string `json:"file"`
		Rules []struct {
			Name           string            `json:"name"`
			Type           string            `json:"type"`
			State          string            `json:"state"`
			Health         string            `json:"health"`
			LastEvaluation time.Time         `json:"lastEvaluation"`
			Labels         map[string]string `json:"labels"`
			Alerts         []struct {
				State string `json:"state"`
			} `json:"alerts"`
		} `json:"rules"`
	} `json:"groups"`
}

// ruleLine summarises one rule of a cluster's group as evaluated.
func ruleLine(cluster, typ, name, state string, alerts ...string) string {
	return fmt.Sprintf("cluster=%s file=rules-%s.yml group=%s %s %s state=%s health=ok evaluated alerts=%v",
		cluster, cluster, RuleGroup, typ, name, state, alerts)
}

// wantRules are the rules of clusters a and b (a0 and a1 deduplicated) that
// keep(cluster, type, name) selects.
func wantRules(keep func(cluster, typ, name string) bool) []string {
	var out []string
	for _, c := range []string{"a", "b"} {
		for _, r := range []struct {
			typ, name, state string
			alerts           []string
		}{
			{"alerting", AlertFiring, "firing", []string{"firing"}},
			{"alerting", AlertPending, "pending", []string{"pending"}},
			{"alerting", AlertNever, "inactive", nil},
			{"recording", RecordingRule, "", nil},
		} {
			if keep(c, r.typ, r.name) {
				out = append(out, ruleLine(c, r.typ, r.name, r.state, r.alerts...))
			}
		}
	}
	return out
}

func checkRules(keep func(cluster, typ, name string) bool) func(json.RawMessage) error {
	want := wantRules(keep)
	return func(data json.RawMessage) error {
		var s ruleSummary
		if err := decode(data, &s); err != nil {
			return err
		}
		var got []string
		for _, g := range s.Groups {
			for _, r := range g.Rules {
				evaluated := "evaluated"
				if r.LastEvaluation.IsZero() {
					evaluated = "never-evaluated"
				}
				alerts := []string{}
				for _, a := range r.Alerts {
					alerts = append(alerts, a.State)
				}
				if len(alerts) == 0 {
					alerts = nil
				}
				line := fmt.Sprintf("cluster=%s file=%s group=%s %s %s state=%s health=%s %s alerts=%v",
					r.Labels["cluster"], filepath.Base(g.File), g.Name, r.Type, r.Name, r.State, r.Health, evaluated, alerts)
				got = append(got, line)
			}
		}
		return sameLines(got, slices.Clone(want))
	}
}

// TestRulesAPI compares /api/v1/rules: every rule of clusters a and b once
// (a0 and a1 deduplicated by the replica label), evaluated, with the firing
// and pending alerts, and the filters by type, rule name, rule group and
// file, and by label matchers (which see the external labels the sidecars
// add to every rule).
func TestRulesAPI(t *testing.T) {
	all := func(string, string, string) bool { return true }
	fileA, _ := rulesFile(topo.Dir, "a")
	runAPICases(t, []apiCase{
		{name: "all", path: "/api/v1/rules", check: checkRules(all), volatile: rulesVolatile},
		{
			name: "type=alert", path: "/api/v1/rules", params: url.Values{"type": {"alert"}},
			check:    checkRules(func(_, typ, _ string) bool { return typ == "alerting" }),
			volatile: rulesVolatile,
		},
		{
			name: "type=record", path: "/api/v1/rules", params: url.Values{"type": {"record"}},
			check:    checkRules(func(_, typ, _ string) bool { return typ == "recording" }),
			volatile: rulesVolatile,
		},
		{
			name: "rule_name", path: "/api/v1/rules", params: url.Values{"rule_name[]": {AlertFiring, RecordingRule}},
			check:    checkRules(func(_, _, name string) bool { return name == AlertFiring || name == RecordingRule }),
			volatile: rulesVolatile,
		},
		{
			name: "rule_group+file", path: "/api/v1/rules", params: url.Values{"rule_group[]": {RuleGroup}, "file[]": {fileA}},
			check:    checkRules(func(cluster, _, _ string) bool { return cluster == "a" }),
			volatile: rulesVolatile,
		},
		{
			name: "match=cluster_b", path: "/api/v1/rules", params: url.Values{"match[]": {`{cluster="b"}`}},
			check:    checkRules(func(cluster, _, _ string) bool { return cluster == "b" }),
			volatile: rulesVolatile,
		},
	})
}

// TestAlertsAPI compares /api/v1/alerts: the firing and the pending alert of
// each of clusters a and b (alert labels carry no external labels; the
// annotation names the cluster).
func TestAlertsAPI(t *testing.T) {
	check := func(data json.RawMessage) error {
		var s struct {
			Alerts []struct {
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
				State       string            `json:"state"`
				ActiveAt    time.Time         `json:"activeAt"`
			} `json:"alerts"`
		}
		if err := decode(data, &s); err != nil {
			return err
		}
		var got []string
		for _, a := range s.Alerts {
			if a.ActiveAt.IsZero() {
				return fmt.Errorf("alert %v has no activeAt", a.Labels)
			}
			got = append(got, fmt.Sprintf("%s %s %q", a.Labels["alertname"], a.State, a.Annotations["summary"]))
		}
		return sameLines(got, []string{
			fmt.Sprintf("%s firing %q", AlertFiring, "Always firing, in cluster a."),
			fmt.Sprintf("%s firing %q", AlertFiring, "Always firing, in cluster b."),
			fmt.Sprintf("%s pending %q", AlertPending, "Pending for an hour."),
			fmt.Sprintf("%s pending %q", AlertPending, "Pending for an hour."),
		})
	}
	runAPICases(t, []apiCase{{name: "all", path: "/api/v1/alerts", check: check, volatile: rulesVolatile}})
}

// ---------------------------------------------------------------------------
// /api/v1/targets.

var targetsVolatile = map[string]placeholder{
	"lastScrape":         timestamp,
	"lastScrapeDuration": duration,
}

// checkTargets wants every active target up, and the dropped targets.
func checkTargets(active, dropped bool) func(json.RawMessage) error {
	var want []string
	if active {
		want = append(want,
			// Prometheus a0 and a1 scrape themselves: two targets.
			"active cluster=a job=prometheus up", "active cluster=a job=prometheus up",
			"active cluster=b job=prometheus up",
			// The same target for both replicas of a: deduplicated.
			"active cluster=a job="+ScrapeJob+" up",
			"active cluster=b job="+ScrapeJob+" up")
	}
	if dropped {
		want = append(want, "dropped cluster=a job="+ScrapeJob, "dropped cluster=b job="+ScrapeJob)
	}
	return func(data json.RawMessage) error {
		var s struct {
			Active []struct {
				Labels map[string]string `json:"labels"`
				Health string            `json:"health"`
			} `json:"activeTargets"`
			Dropped []struct {
				DiscoveredLabels map[string]string `json:"discoveredLabels"`
			} `json:"droppedTargets"`
		}
		if err := decode(data, &s); err != nil {
			return err
		}
		var got []string
		for _, a := range s.Active {
			got = append(got, fmt.Sprintf("active cluster=%s job=%s %s", a.Labels["cluster"], a.Labels["job"], a.Health))
		}
		for _, d := range s.Dropped {
			got = append(got, fmt.Sprintf("dropped cluster=%s job=%s", d.DiscoveredLabels["cluster"], d.DiscoveredLabels["job"]))
		}
		return sameLines(got, slices.Clone(want))
	}
}

// TestTargetsAPI compares /api/v1/targets, all and by state: each
// Prometheus's own target, the target of the test process once per cluster
// (replicas deduplicated), all up, and the target dropped by relabelling.
func TestTargetsAPI(t *testing.T) {
	runAPICases(t, []apiCase{
		{name: "all", path: "/api/v1/targets", check: checkTargets(true, true), volatile: targetsVolatile},
		{name: "state=active", path: "/api/v1/targets", params: url.Values{"state": {"active"}}, check: checkTargets(true, false), volatile: targetsVolatile},
		{name: "state=dropped", path: "/api/v1/targets", params: url.Values{"state": {"dropped"}}, check: checkTargets(false, true), volatile: targetsVolatile},
	})
}

// ---------------------------------------------------------------------------
// /api/v1/metadata.

type metricMeta struct {
	Type string `json:"type"`
	Help string `json:"help"`
	Unit string `json:"unit"`
}

// wantMetadata is the metadata of the test process's target that checks
// look for.
func wantMetadata() map[string][]metricMeta {
	return map[string][]metricMeta{
		// One entry per cluster: the help texts differ.
		"fanout_interop_requests": {
			{Type: "counter", Help: RequestsHelp("a")},
			{Type: "counter", Help: RequestsHelp("b")},
		},
		"fanout_interop_served_bytes": {{Type: "counter", Help: "Bytes served by the interop target.", Unit: "bytes"}},
	}
}

func sortedMetas(m []metricMeta) []metricMeta {
	m = slices.Clone(m)
	slices.SortFunc(m, func(a, b metricMeta) int { return strings.Compare(a.Type+a.Help+a.Unit, b.Type+b.Help+b.Unit) })
	return m
}

// checkMetadata wants exactly the metrics in only (if any), or else at least
// minMetrics metrics including those of wantMetadata.
func checkMetadata(minMetrics int, only ...string) func(json.RawMessage) error {
	return func(data json.RawMessage) error {
		var got map[string][]metricMeta
		if err := decode(data, &got); err != nil {
			return err
		}
		want := wantMetadata()
		names := slices.Sorted(maps.Keys(got))
		if len(only) > 0 && !slices.Equal(names, only) {
			return fmt.Errorf("metrics %v, want %v", names, only)
		}
		if len(got) < minMetrics {
			return fmt.Errorf("%d metrics, want at least %d: %v", len(got), minMetrics, names)
		}
		for name, metas := range want {
			if len(only) > 0 && !slices.Contains(only, name) {
				continue
			}
			if !slices.Equal(sortedMetas(got[name]), sortedMetas(metas)) {
				return fmt.Errorf("%s: metadata %+v, want %+v", name, got[name], metas)
			}
		}
		return nil
	}
}

// TestMetadataAPI compares /api/v1/metadata: everything the Prometheus
// servers scrape (their own metrics and the test process's, merged across
// clusters), one metric, and one metric with a limit. A limit alone picks
// whichever metrics Prometheus walks first, so that case is checked for its
// shape instead (metadataLimitOne).
func TestMetadataAPI(t *testing.T) {
	runAPICases(t, []apiCase{
		// Prometheus exports well over 20 metric families; scrape_test.go
		// keeps only a few of them as series, but metadata covers all.
		{name: "all", path: "/api/v1/metadata", check: checkMetadata(20)},
		{
			name: "metric", path: "/api/v1/metadata", params: url.Values{"metric": {"fanout_interop_requests"}},
			check: checkMetadata(1, "fanout_interop_requests"),
		},
		{
			name: "metric+limit=1", path: "/api/v1/metadata", params: url.Values{"metric": {"fanout_interop_served_bytes"}, "limit": {"1"}},
			check: checkMetadata(1, "fanout_interop_served_bytes"),
		},
	})
	for _, q := range queriersUnderTest() {
		t.Run(q.name+"/limit=1", func(t *testing.T) { metadataLimitOne(t, q.base) })
	}
}

// metadataLimitOne checks that limit=1 gives one metric, with metadata the
// unlimited answer has for it, through either querier.
func metadataLimitOne(t *testing.T, base string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full, err := APIGet(ctx, topo.QueryReference, "/api/v1/metadata", nil)
	if err != nil {
		t.Fatal(err)
	}
	var all map[string][]metricMeta
	if err := decode(full.Data, &all); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct{ name, base string }{{"reference", topo.QueryReference}, {"under test", base}} {
		r, err := APIGet(ctx, q.base, "/api/v1/metadata", url.Values{"limit": {"1"}})
		if err != nil {
			t.Fatalf("%s: %v", q.name, err)
		}
		var got map[string][]metricMeta
		if err := decode(r.Data, &got); err != nil {
			t.Fatalf("%s: %v", q.name, err)
		}
		if len(got) != 1 || len(r.Warnings) > 0 {
			t.Errorf("%s: limit=1 gave %d metrics (warnings %v): %s", q.name, len(got), r.Warnings, r.Data)
			continue
		}
		for name, metas := range got {
			for _, m := range metas {
				if !slices.Contains(all[name], m) {
					t.Errorf("%s: limit=1 gave %s %+v, which the unlimited answer has not: %+v", q.name, name, m, all[name])
				}
			}
			if len(metas) == 0 {
				t.Errorf("%s: limit=1 gave %s without metadata", q.name, name)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// /api/v1/query_exemplars.

// checkExemplars wants exactly the exemplars of ScrapeTarget that keep
// selects, each on its series with the cluster's external label (and no
// replica label).
func checkExemplars(keep func(cluster string, e Exemplar) bool) func(json.RawMessage) error {
	var want []string
	line := func(cluster, metric, path, traceID, value, ts string) string {
		return fmt.Sprintf("cluster=%s %s path=%q trace_id=%s value=%s ts=%s", cluster, metric, path, traceID, value, ts)
	}
	for _, c := range []string{"a", "b"} {
		for _, e := range topo.Scrape.Exemplars(c) {
			if keep(c, e) {
				want = append(want, line(c, e.Metric, e.Path, e.TraceID, formatFloat(e.Value),
					formatFloat(float64(e.Time.UnixMilli())/1000)))
			}
		}
	}
	return func(data json.RawMessage) error {
		if len(want) == 0 {
			return errors.New("the case selects no exemplar")
		}
		var s []struct {
			SeriesLabels map[string]string `json:"seriesLabels"`
			Exemplars    []struct {
				Labels    map[string]string `json:"labels"`
				Value     string            `json:"value"`
				Timestamp float64           `json:"timestamp"`
			} `json:"exemplars"`
		}
		if err := decode(data, &s); err != nil {
			return err
		}
		var got []string
		for _, series := range s {
			if r, ok := series.SeriesLabels["replica"]; ok {
				return fmt.Errorf("series %v keeps replica label %q", series.SeriesLabels, r)
			}
			for _, e := range series.Exemplars {
				got = append(got, line(series.SeriesLabels["cluster"], series.SeriesLabels["__name__"], series.SeriesLabels["path"],
					e.Labels["trace_id"], e.Value, formatFloat(e.Timestamp)))
			}
		}
		return sameLines(got, slices.Clone(want))
	}
}

// TestExemplarsAPI compares /api/v1/query_exemplars: across clusters, for
// cluster a alone by its external label (which the reference querier strips
// before asking a sidecar, and which the querier under test leaves for
// thanos-fanout, a "query" component, to route by), by a regex on the
// external label, with two selectors for different clusters, and within a
// time window that holds only some of the exemplars.
func TestExemplarsAPI(t *testing.T) {
	base := topo.Scrape.ExemplarBase
	sec := func(d time.Duration) string { return formatSeconds(base.Add(d).UnixMilli()) }
	runAPICases(t, []apiCase{
		{
			name: "all_clusters", path: "/api/v1/query_exemplars", params: url.Values{"query": {"fanout_interop_requests_total"}},
			check: checkExemplars(func(_ string, e Exemplar) bool { return e.Metric == "fanout_interop_requests_total" }),
		},
		{
			name: "cluster_a", path: "/api/v1/query_exemplars", params: url.Values{"query": {`fanout_interop_requests_total{cluster="a"}`}},
			check: checkExemplars(func(c string, e Exemplar) bool { return c == "a" && e.Metric == "fanout_interop_requests_total" }),
		},
		{
			name: "cluster_regex_b", path: "/api/v1/query_exemplars", params: url.Values{"query": {`{__name__=~"fanout_interop_.*_total",cluster=~"b|z"}`}},
			check: checkExemplars(func(c string, _ Exemplar) bool { return c == "b" }),
		},
		{
			name: "two_selectors", path: "/api/v1/query_exemplars",
			params: url.Values{"query": {`fanout_interop_requests_total{cluster="a",path="/ui"} + fanout_interop_served_bytes_total{cluster="b"}`}},
			check: checkExemplars(func(c string, e Exemplar) bool {
				return c == "a" && e.Path == "/ui" || c == "b" && e.Metric == "fanout_interop_served_bytes_total"
			}),
		},
		{
			name: "time_window", path: "/api/v1/query_exemplars",
			params: url.Values{"query": {`{__name__=~"fanout_interop_.*_total"}`}, "start": {sec(500 * time.Millisecond)}, "end": {sec(2500 * time.Millisecond)}},
			check:  checkExemplars(func(_ string, e Exemplar) bool { return !e.Time.Before(base.Add(time.Second)) }),
		},
	})
}

// ---------------------------------------------------------------------------
// /api/v1/status/tsdb.

var tsdbVolatile = map[string]placeholder{
	// The newest sample in the heads: a scrape a second ago.
	"maxTime": millis,
}

// checkTSDBStatus wants the head statistics of prometheuses Prometheus
// servers summed (a querier does not deduplicate replicas here), and top
// lists of length limit (10 by default) headed by the largest load family.
func checkTSDBStatus(prometheuses, limit int) func(json.RawMessage) error {
	minSeries := 0
	for k := 1; k <= NumLoadFamilies; k++ {
		minSeries += LoadFamilySeries(k)
	}
	minSeries *= prometheuses
	top := fmt.Sprintf("fanout_interop_load_%02d=%d", NumLoadFamilies, prometheuses*LoadFamilySeries(NumLoadFamilies))
	return func(data json.RawMessage) error {
		type stat struct {
			Name  string `json:"name"`
			Value uint64 `json:"value"`
		}
		var s struct {
			Head struct {
				NumSeries uint64 `json:"numSeries"`
				MinTime   int64  `json:"minTime"`
				MaxTime   int64  `json:"maxTime"`
			} `json:"headStats"`
			ByMetric []stat `json:"seriesCountByMetricName"`
			ByPair   []stat `json:"seriesCountByLabelValuePair"`
		}
		if err := decode(data, &s); err != nil {
			return err
		}
		if s.Head.NumSeries < uint64(minSeries) || s.Head.MinTime <= 0 || s.Head.MaxTime < s.Head.MinTime {
			return fmt.Errorf("head %+v, want at least %d series and a time range", s.Head, minSeries)
		}
		if len(s.ByMetric) != limit || len(s.ByPair) != limit {
			return fmt.Errorf("%d metric names and %d label pairs, want %d each", len(s.ByMetric), len(s.ByPair), limit)
		}
		if got := s.ByMetric[0].Name + "=" + strconv.FormatUint(s.ByMetric[0].Value, 10); got != top {
			return fmt.Errorf("top metric %s, want %s", got, top)
		}
		return nil
	}
}

// TestTSDBStatusAPI compares /api/v1/status/tsdb: the statistics of every
// Prometheus head summed, with a limit, and for the Prometheus servers whose
// external labels match (match[], a Thanos extension).
func TestTSDBStatusAPI(t *testing.T) {
	runAPICases(t, []apiCase{
		{name: "all", path: "/api/v1/status/tsdb", check: checkTSDBStatus(3, 10), volatile: tsdbVolatile, ordered: true},
		// 2: in the list by label name (values per name) only "item" and
		// "__name__" stand apart; the names below tie, and Prometheus keeps
		// whichever tied entries it meets first. The default 10 holds every
		// label name of the heads (scrape_test.go).
		{name: "limit=2", path: "/api/v1/status/tsdb", params: url.Values{"limit": {"2"}}, check: checkTSDBStatus(3, 2), volatile: tsdbVolatile, ordered: true},
		{name: "match=cluster_b", path: "/api/v1/status/tsdb", params: url.Values{"match[]": {`{cluster="b"}`}}, check: checkTSDBStatus(1, 10), volatile: tsdbVolatile, ordered: true},
		{name: "match=cluster_a", path: "/api/v1/status/tsdb", params: url.Values{"match[]": {`{cluster="a"}`}}, check: checkTSDBStatus(2, 10), volatile: tsdbVolatile, ordered: true},
	})
}
