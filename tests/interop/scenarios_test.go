package interop

// Scenarios: a stock Thanos querier through thanos-fanout must answer like a
// querier connected to the same remotes directly, and thanos-fanout's own
// StoreAPI must behave as Thanos' clients expect.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// apiGet returns a querier's API answer whatever its status; only a
// transport or decoding failure ends the test.
func apiGet(t *testing.T, base, path string, params url.Values) APIResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := APIGet(ctx, base, path, params)
	if r == nil {
		t.Fatalf("%v", err)
	}
	return *r
}

// isSortable tells result and name lists (objects, strings), whose order the
// API does not promise, from value pairs, whose order is meaningful.
func isSortable(x []any) bool {
	for _, e := range x {
		switch e.(type) {
		case map[string]any, string:
		default:
			return false
		}
	}
	return true
}

// sortDeep sorts every order-free list so equal answers compare equal.
func sortDeep(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = sortDeep(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = sortDeep(e)
		}
		if isSortable(x) {
			sort.SliceStable(x, func(i, j int) bool {
				a, _ := json.Marshal(x[i])
				b, _ := json.Marshal(x[j])
				return string(a) < string(b)
			})
		}
		return x
	default:
		return v
	}
}

func compareAPI(t *testing.T, what, path string, params url.Values) {
	t.Helper()
	compareAPIOn(t, topo.QueryUnderTest, what, path, params)
}

// compareAPIOn compares the answer of the querier at base, which reaches the
// remotes through thanos-fanout, with the reference querier's.
func compareAPIOn(t *testing.T, base, what, path string, params url.Values) {
	t.Helper()
	got := apiGet(t, base, path, params)
	want := apiGet(t, topo.QueryReference, path, params)
	if got.Status != "success" || want.Status != "success" {
		t.Fatalf("%s: status under test %q (%s), reference %q (%s)", what, got.Status, got.Error, want.Status, want.Error)
	}
	if len(got.Warnings) > 0 || len(want.Warnings) > 0 {
		t.Errorf("%s: unexpected warnings\n  under test: %v\n  reference:  %v", what, got.Warnings, want.Warnings)
	}
	var g, w any
	if err := json.Unmarshal(got.Data, &g); err != nil {
		t.Fatalf("%s: decode: %v", what, err)
	}
	if err := json.Unmarshal(want.Data, &w); err != nil {
		t.Fatalf("%s: decode: %v", what, err)
	}
	g, w = sortDeep(g), sortDeep(w)
	if !reflect.DeepEqual(g, w) {
		gs, _ := json.MarshalIndent(g, "", " ")
		ws, _ := json.MarshalIndent(w, "", " ")
		t.Errorf("%s: answers differ\n%s\n--- through thanos-fanout (%d bytes)\n%s\n--- direct (%d bytes)\n%s",
			what, sideBySide(string(gs), string(ws)), len(gs), truncate(string(gs)), len(ws), truncate(string(ws)))
		return
	}
	if isEmptyResult(g) {
		t.Errorf("%s: both answers are empty; the query tests nothing", what)
	}
}

func isEmptyResult(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		r, ok := x["result"]
		if !ok {
			return false
		}
		list, ok := r.([]any)
		return ok && len(list) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

// sideBySide shows the first differing lines of two answers, with context,
// through thanos-fanout on the left and direct on the right.
func sideBySide(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	first := 0
	for first < len(g) && first < len(w) && g[first] == w[first] {
		first++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "first difference at line %d (left: through thanos-fanout, right: direct)\n", first+1)
	line := func(lines []string, i int) string {
		if i < len(lines) {
			return lines[i]
		}
		return "<end>"
	}
	for i := max(0, first-3); i < first+12 && (i < len(g) || i < len(w)); i++ {
		mark := " "
		if line(g, i) != line(w, i) {
			mark = "|"
		}
		fmt.Fprintf(&b, "%5d %-60.60s %s %.60s\n", i+1, line(g, i), mark, line(w, i))
	}
	return b.String()
}

func truncate(s string) string {
	const max = 4000
	if len(s) <= max {
		return s
	}
	return s[:max] + "\n... (truncated)"
}

func ts(ms int64) string { return formatSeconds(ms) }

// The PromQL battery: selectors by name and by external label, negative and
// regex matchers, counters over resets, aggregations, subqueries, histograms.
var queries = []string{
	`up`,
	`up{cluster="b"}`,
	`up{cluster=~"a|c"}`,
	`up{cluster!="a"}`,
	`up{instance=~"i-[0-4]"}`,
	`up{instance!~"i-[0-4]",cluster!~"b"}`,
	`{__name__="up", job="api"}`,
	`http_requests_total`,
	`http_requests_total{code="500"}`,
	`http_requests_total{method="GET",cluster="a"}`,
	`rate(http_requests_total[5m])`,
	`irate(http_requests_total[5m])`,
	`increase(http_requests_total[1h])`,
	`resets(http_requests_total[6h])`,
	`sum by (cluster) (rate(http_requests_total[5m]))`,
	`sum by (cluster, code) (increase(http_requests_total[30m]))`,
	`sum(http_requests_total)`,
	`topk(3, rate(http_requests_total[5m]))`,
	`bottomk(2, temperature_celsius)`,
	`count(up)`,
	`count by (cluster) (up)`,
	`count(load_series)`,
	`count by (cluster) (load_series)`,
	`sum(load_series{shard=~"0000.*"})`,
	`count(count by (shard) (load_series))`,
	`absent(nonexistent_metric)`,
	`absent(up{cluster="zzz"})`,
	`max_over_time(temperature_celsius[1h])`,
	`avg_over_time(temperature_celsius[30m])`,
	`min_over_time(temperature_celsius[10m:1m])`,
	`max_over_time(rate(http_requests_total[5m])[30m:5m])`,
	`histogram_quantile(0.9, sum by (le, cluster) (rate(request_duration_seconds_bucket[5m])))`,
	`rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])`,
	`only_b_metric`,
	`only_c_metric`,
	`{__name__=~"only_.*"}`,
	`temperature_celsius offset 1h`,
	`delta(temperature_celsius[1h])`,
	`deriv(temperature_celsius[30m])`,
	`label_replace(up, "where", "$1", "cluster", "(.*)")`,
	`up{cluster="b"} and on(instance) up{cluster="a"}`,
	`quantile(0.5, temperature_celsius)`,
	`stddev by (cluster) (temperature_celsius)`,
	`group by (cluster) (up)`,
	`count_values("value", up)`,
}

func TestQueryBattery(t *testing.T) {
	if len(queries) < 40 {
		t.Fatalf("the battery needs at least 40 queries, has %d", len(queries))
	}
	instant := topo.MaxT - 60_000
	// The same battery from a querier that compresses every call with
	// Thanos's snappy encoding.
	for _, via := range []struct{ prefix, base string }{
		{"", topo.QueryUnderTest},
		{"snappy/", topo.QuerySnappy},
	} {
		for _, q := range queries {
			t.Run(via.prefix+"instant/"+q, func(t *testing.T) {
				compareAPIOn(t, via.base, "query "+q, "/api/v1/query", url.Values{"query": {q}, "time": {ts(instant)}})
			})
			t.Run(via.prefix+"range/"+q, func(t *testing.T) {
				compareAPIOn(t, via.base, "query_range "+q, "/api/v1/query_range", url.Values{
					"query": {q},
					"start": {ts(topo.MinT + 3600_000)},
					"end":   {ts(topo.MaxT)},
					"step":  {"300"},
				})
			})
		}
	}
}

func TestSeriesAndLabelsAPIs(t *testing.T) {
	window := url.Values{"start": {ts(topo.MinT)}, "end": {ts(topo.MaxT)}}
	with := func(extra url.Values) url.Values {
		v := url.Values{}
		for k, vs := range window {
			v[k] = vs
		}
		for k, vs := range extra {
			v[k] = vs
		}
		return v
	}
	for _, dedup := range []string{"true", "false"} {
		t.Run("dedup="+dedup, func(t *testing.T) {
			compareAPI(t, "series up", "/api/v1/series", with(url.Values{"match[]": {"up"}, "dedup": {dedup}}))
			compareAPI(t, "series cluster b", "/api/v1/series", with(url.Values{"match[]": {`{cluster="b",__name__=~"http_.*"}`}, "dedup": {dedup}}))
			compareAPI(t, "series many", "/api/v1/series", with(url.Values{"match[]": {`load_series{shard=~"00[0-4].*"}`}, "dedup": {dedup}}))
			compareAPI(t, "labels", "/api/v1/labels", with(url.Values{"dedup": {dedup}}))
			compareAPI(t, "labels matched", "/api/v1/labels", with(url.Values{"match[]": {`up{cluster="a"}`}, "dedup": {dedup}}))
			compareAPI(t, "cluster values", "/api/v1/label/cluster/values", with(url.Values{"dedup": {dedup}}))
			compareAPI(t, "name values", "/api/v1/label/__name__/values", with(url.Values{"dedup": {dedup}}))
			compareAPI(t, "instance values for b", "/api/v1/label/instance/values", with(url.Values{"match[]": {`up{cluster="b"}`}, "dedup": {dedup}}))
		})
	}
}

// storesPage lists the stores a querier sees, whatever component they are filed under.
type storeEntry struct {
	Name      string              `json:"name"`
	LastError *string             `json:"lastError"`
	LabelSets []map[string]string `json:"labelSets"`
}

func storesPage(t *testing.T, base string) []storeEntry {
	t.Helper()
	resp := apiGet(t, base, "/api/v1/stores", nil)
	var groups map[string][]storeEntry
	if err := json.Unmarshal(resp.Data, &groups); err != nil {
		t.Fatalf("stores: %v", err)
	}
	var out []storeEntry
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

func TestStoresPageShowsOneHealthyStoreWithAllClusters(t *testing.T) {
	stores := storesPage(t, topo.QueryUnderTest)
	if len(stores) != 1 {
		t.Fatalf("want thanos-fanout as the only store, got %+v", stores)
	}
	s := stores[0]
	if s.Name != topo.FanoutGRPC || s.LastError != nil {
		t.Fatalf("store %q lastError %v, want %q healthy", s.Name, s.LastError, topo.FanoutGRPC)
	}
	clusters := map[string]bool{}
	for _, ls := range s.LabelSets {
		clusters[ls["cluster"]] = true
	}
	for _, c := range []string{"a", "b", "c"} {
		if !clusters[c] {
			t.Errorf("label sets %v lack cluster %q", s.LabelSets, c)
		}
	}
}

// seriesCalls reads thanos-fanout's successful Series calls per remote.
func seriesCalls(t *testing.T, base string) map[string]float64 {
	t.Helper()
	body, err := httpGet(context.Background(), base+"/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	re := regexp.MustCompile(`(?m)^thanos_fanout_remote_calls_total\{remote="([^"]+)",method="Series",outcome="Success"\} (\S+)$`)
	out := map[string]float64{}
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		out[m[1]] = v
	}
	return out
}

func TestPruningReachesOnlyTheMatchingCluster(t *testing.T) {
	before := seriesCalls(t, topo.FanoutHTTP)
	resp := apiGet(t, topo.QueryUnderTest, "/api/v1/query", url.Values{
		"query": {`http_requests_total{cluster="b"}`},
		"time":  {ts(topo.MaxT - 60_000)},
	})
	if resp.Status != "success" {
		t.Fatalf("query failed: %s", resp.Error)
	}
	after := seriesCalls(t, topo.FanoutHTTP)
	if after["b"] <= before["b"] {
		t.Errorf("cluster b was not called: before %v after %v", before, after)
	}
	for _, c := range []string{"a", "c"} {
		if after[c] != before[c] {
			t.Errorf("cluster %s was called for a cluster=\"b\" query: before %v after %v", c, before, after)
		}
	}
}

func TestPartialResponseWhenClusterBIsDown(t *testing.T) {
	if err := topo.StopCluster("b"); err != nil {
		t.Fatalf("stop b: %v", err)
	}
	restarted := false
	defer func() {
		if !restarted {
			_ = topo.StartCluster("b")
		}
	}()
	q := url.Values{"query": {`count by (cluster) (up)`}, "time": {ts(topo.MaxT - 60_000)}}

	q.Set("partial_response", "true")
	resp := apiGet(t, topo.QueryUnderTest, "/api/v1/query", q)
	if resp.Status != "success" {
		t.Fatalf("partial_response=true failed: %s", resp.Error)
	}
	data := string(resp.Data)
	if !strings.Contains(data, `"cluster":"a"`) || !strings.Contains(data, `"cluster":"c"`) || strings.Contains(data, `"cluster":"b"`) {
		t.Errorf("want a and c without b, got %s", data)
	}
	if !mentions(resp.Warnings, "remote b") {
		t.Errorf("no warning names remote b: %v", resp.Warnings)
	}

	q.Set("partial_response", "false")
	resp = apiGet(t, topo.QueryUnderTest, "/api/v1/query", q)
	if resp.Status == "success" {
		t.Errorf("partial_response=false succeeded with b down: %s", resp.Data)
	} else if !strings.Contains(resp.Error, "remote b") {
		t.Errorf("error does not name remote b: %s", resp.Error)
	}

	downClusterStaysVisible(t)

	if err := topo.StartCluster("b"); err != nil {
		t.Fatalf("start b: %v", err)
	}
	restarted = true
	q.Set("partial_response", "false")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp = apiGet(t, topo.QueryUnderTest, "/api/v1/query", q)
		if resp.Status == "success" && strings.Contains(string(resp.Data), `"cluster":"b"`) && len(resp.Warnings) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b did not come back without a restart of thanos-fanout: %s %s %v", resp.Error, resp.Data, resp.Warnings)
		}
		time.Sleep(time.Second)
	}
	// The reference querier re-checks a store that was down on its own
	// schedule; the scenarios after this one compare against it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := topo.waitSameAnswer(ctx, `count by (cluster) (up)`); err != nil {
		t.Fatalf("after b came back: %v", err)
	}
}

// downClusterStaysVisible checks, with cluster b down, that a query for b
// alone is not answered with an empty success: thanos-fanout keeps b's label
// set in its Info, so the querier (which prunes stores by label sets) still
// sends it the query, and the answer warns about b or, under ABORT, fails.
func downClusterStaysVisible(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		up, total, err := FanoutEndpointsUp(ctx, topo.FanoutHTTP)
		if err == nil && total == 4 && up == 3 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("thanos-fanout did not see b down: %d of %d endpoints up, %v", up, total, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Long enough for the querier to have asked thanos-fanout for Info again
	// since b went down (it does so every 5 s).
	time.Sleep(12 * time.Second)
	if s := storesPage(t, topo.QueryUnderTest); len(s) != 1 || !hasCluster(s[0].LabelSets, "b") {
		t.Errorf("the querier no longer sees cluster b's label set: %+v", s)
	}
	q := url.Values{"query": {`up{cluster="b"}`}, "time": {ts(topo.MaxT - 60_000)}}
	q.Set("partial_response", "true")
	resp := apiGet(t, topo.QueryUnderTest, "/api/v1/query", q)
	if resp.Status != "success" || !mentions(resp.Warnings, "remote b") {
		t.Errorf("a query for b alone while b is down: status %s %s, warnings %v; want success with a warning naming remote b",
			resp.Status, resp.Error, resp.Warnings)
	}
	q.Set("partial_response", "false")
	resp = apiGet(t, topo.QueryUnderTest, "/api/v1/query", q)
	if resp.Status == "success" || !strings.Contains(resp.Error, "remote b") {
		t.Errorf("a query for b alone under ABORT while b is down: status %s %s %s; want an error naming remote b",
			resp.Status, resp.Error, resp.Data)
	}
}

func hasCluster(sets []map[string]string, cluster string) bool {
	for _, ls := range sets {
		if ls["cluster"] == cluster {
			return true
		}
	}
	return false
}

func mentions(list []string, s string) bool {
	for _, w := range list {
		if strings.Contains(w, s) {
			return true
		}
	}
	return false
}

// firstBytes accepts one connection and returns what the client sent first.
func firstBytes(t *testing.T) (addr string, got <-chan []byte) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ch := make(chan []byte, 1)
	go func() {
		defer l.Close()
		c, err := l.Accept()
		if err != nil {
			ch <- nil
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 64)
		n, _ := io.ReadAtLeast(c, buf, 5)
		ch <- buf[:n]
	}()
	return l.Addr().String(), ch
}

func TestSecurityRefusesWrongCertificatesAndNeverSpeaksPlaintext(t *testing.T) {
	c := topo.Certs
	raw, sent := firstBytes(t)
	config := fmt.Sprintf(`
info: {interval: 1s, timeout: 5s}
remotes:
  - name: wrong-ca
    targets: ["%s"]
    tls: {ca_file: %q, cert_file: %q, key_file: %q, server_name: a.remote.test}
  - name: wrong-name
    targets: ["%s"]
    tls: {ca_file: %q, cert_file: %q, key_file: %q, server_name: b.remote.test}
  - name: tls-to-raw
    targets: ["%s"]
    tls: {ca_file: %q, cert_file: %q, key_file: %q, server_name: a.remote.test}
`, topo.SidecarA0GRPC, c.CAB, c.ClientCert, c.ClientKey,
		topo.SidecarA0GRPC, c.CAA, c.ClientCert, c.ClientKey,
		raw, c.CAA, c.ClientCert, c.ClientKey)
	grpcAddr, _, stop, err := topo.StartFanout("security", config)
	if err != nil {
		t.Fatalf("start fanout: %v", err)
	}
	defer stop()

	select {
	case b := <-sent:
		if len(b) < 3 || b[0] != 0x16 || b[1] != 0x03 {
			t.Errorf("first bytes to a TLS remote are not a TLS handshake: %q", b)
		}
		if strings.HasPrefix(string(b), "PRI * HTTP/2") {
			t.Errorf("plaintext HTTP/2 sent to a TLS remote")
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("thanos-fanout never connected to the TLS remote")
	}

	conn := dial(t, grpcAddr)
	res := collectSeries(t, conn, &storepb.SeriesRequest{
		MinTime:  topo.MinT,
		MaxTime:  topo.MaxT,
		Matchers: []storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "up"}},
	})
	if len(res.series) != 0 {
		t.Errorf("got %d series through refused remotes", len(res.series))
	}
	if !mentions(res.warnings, "wrong-ca") || !mentions(res.warnings, "unknown authority") {
		t.Errorf("no warning says wrong-ca's certificate is from an unknown authority: %v", res.warnings)
	}
	if !mentions(res.warnings, "wrong-name") || !mentions(res.warnings, "not valid for the name") {
		t.Errorf("no warning says wrong-name's certificate is for another name: %v", res.warnings)
	}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

type seriesResult struct {
	series   []storepb.Series
	warnings []string
	batches  []int
	singles  int
}

func collectSeries(t *testing.T, conn *grpc.ClientConn, req *storepb.SeriesRequest) seriesResult {
	t.Helper()
	res, err := trySeries(conn, req)
	if err != nil {
		t.Fatalf("series: %v", err)
	}
	return res
}

func trySeries(conn *grpc.ClientConn, req *storepb.SeriesRequest) (seriesResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := storepb.NewStoreClient(conn).Series(ctx, req, grpc.ForceCodec(ownedCodec{}))
	if err != nil {
		return seriesResult{}, err
	}
	var res seriesResult
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			return res, nil
		}
		if err != nil {
			return res, err
		}
		switch {
		case r.GetSeries() != nil:
			res.singles++
			res.series = append(res.series, *r.GetSeries())
		case r.GetBatch() != nil:
			res.batches = append(res.batches, len(r.GetBatch().Series))
			for _, s := range r.GetBatch().Series {
				res.series = append(res.series, *s)
			}
		case r.GetWarning() != "":
			res.warnings = append(res.warnings, r.GetWarning())
		}
	}
}

// ownedCodec decodes each message from a copy the test owns: Thanos' ZLabel
// strings point into the bytes they were decoded from, and gRPC recycles its
// receive buffers as soon as a message is handed over.
type ownedCodec struct{}

func (ownedCodec) Name() string { return "proto" }

func (ownedCodec) Marshal(v any) ([]byte, error) {
	return v.(interface{ Marshal() ([]byte, error) }).Marshal()
}

func (ownedCodec) Unmarshal(data []byte, v any) error {
	return v.(interface{ Unmarshal([]byte) error }).Unmarshal(append([]byte(nil), data...))
}

func labelValue(s storepb.Series, name string) string {
	for _, l := range s.Labels {
		if l.Name == name {
			return l.Value
		}
	}
	return ""
}

func labelsKey(s storepb.Series) string {
	var b strings.Builder
	for _, l := range s.Labels {
		b.WriteString(l.Name + "\xff" + l.Value + "\xff")
	}
	return b.String()
}

func upMatchers(extra ...storepb.LabelMatcher) []storepb.LabelMatcher {
	return append([]storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "up"}}, extra...)
}

func TestDirectStoreAPI(t *testing.T) {
	conn := dial(t, topo.FanoutGRPC)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("info", func(t *testing.T) {
		info, err := infopb.NewInfoClient(conn).Info(ctx, &infopb.InfoRequest{})
		if err != nil {
			t.Fatalf("info: %v", err)
		}
		if info.ComponentType != "query" || info.Store == nil {
			t.Fatalf("component %q store %v", info.ComponentType, info.Store)
		}
		if !info.Store.SupportsSharding || !info.Store.SupportsWithoutReplicaLabels {
			t.Errorf("capabilities not advertised: %+v", info.Store)
		}
		if info.Store.MinTime > topo.MinT || info.Store.MaxTime < topo.MaxT || info.Store.MinTime == 0 && info.Store.MaxTime == 0 {
			t.Errorf("time range %d..%d does not cover the data %d..%d", info.Store.MinTime, info.Store.MaxTime, topo.MinT, topo.MaxT)
		}
		sets := map[string]bool{}
		for _, ls := range info.LabelSets {
			sets[ls.PromLabels().String()] = true
		}
		for _, want := range []string{`{cluster="a", replica="0"}`, `{cluster="a", replica="1"}`, `{cluster="b"}`, `{cluster="c"}`} {
			if !sets[want] {
				t.Errorf("label sets %v lack %s", sets, want)
			}
		}
		// The sidecars offer the Rules, Targets, Metadata, Exemplars and
		// Status APIs, so thanos-fanout advertises them; no remote offers
		// the Query API.
		if info.Rules == nil || info.Targets == nil || info.MetricMetadata == nil || info.Exemplars == nil || info.Status == nil {
			t.Errorf("does not advertise an API the sidecars offer: rules %v, targets %v, metadata %v, exemplars %v, status %v",
				info.Rules, info.Targets, info.MetricMetadata, info.Exemplars, info.Status)
		}
		if info.Query != nil {
			t.Errorf("advertises the Query API, which no remote offers: %+v", info.Query)
		}
	})

	t.Run("without_replica_labels", func(t *testing.T) {
		res := collectSeries(t, conn, &storepb.SeriesRequest{
			MinTime: topo.MinT, MaxTime: topo.MaxT,
			Matchers:             upMatchers(storepb.LabelMatcher{Type: storepb.LabelMatcher_EQ, Name: "cluster", Value: "a"}),
			WithoutReplicaLabels: []string{"replica"},
		})
		if len(res.series) != 10 {
			t.Fatalf("want the 10 up series of cluster a once each, got %d", len(res.series))
		}
		for i, s := range res.series {
			if labelValue(s, "replica") != "" {
				t.Errorf("replica label kept: %v", s.Labels)
			}
			if i > 0 && labelsKey(res.series[i-1]) >= labelsKey(s) {
				t.Errorf("not sorted after removal: %v then %v", res.series[i-1].Labels, s.Labels)
			}
			if len(s.Chunks) == 0 {
				t.Errorf("series without chunks: %v", s.Labels)
			}
		}
	})

	t.Run("limit", func(t *testing.T) {
		res := collectSeries(t, conn, &storepb.SeriesRequest{MinTime: topo.MinT, MaxTime: topo.MaxT, Matchers: upMatchers(), Limit: 5})
		if len(res.series) != 5 {
			t.Errorf("limit 5 returned %d series", len(res.series))
		}
	})

	t.Run("response_batch_size", func(t *testing.T) {
		res := collectSeries(t, conn, &storepb.SeriesRequest{
			MinTime: topo.MinT, MaxTime: topo.MaxT,
			Matchers:          []storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "load_series"}},
			ResponseBatchSize: 64,
			SkipChunks:        true,
		})
		if res.singles != 0 || len(res.batches) < 2 {
			t.Fatalf("want batch frames only, got %d single frames and batches %v", res.singles, res.batches)
		}
		for i, n := range res.batches[:len(res.batches)-1] {
			if n != 64 {
				t.Errorf("batch %d has %d series, want 64", i, n)
			}
		}
		if len(res.warnings) > 0 {
			t.Errorf("warnings: %v", res.warnings)
		}
		for i := 1; i < len(res.series); i++ {
			if labelpb.ZLabelsToPromLabels(res.series[i-1].Labels).String() >= labelpb.ZLabelsToPromLabels(res.series[i].Labels).String() && labels.Compare(labelpb.ZLabelsToPromLabels(res.series[i-1].Labels), labelpb.ZLabelsToPromLabels(res.series[i].Labels)) >= 0 {
				t.Fatalf("batched output not sorted at %d: %v then %v", i, res.series[i-1].Labels, res.series[i].Labels)
			}
		}
	})

	t.Run("shard_info", func(t *testing.T) {
		// With chunks: a sidecar applies shard_info only on its chunk path
		// (the querier never shards label-only /api/v1/series requests).
		all := collectSeries(t, conn, &storepb.SeriesRequest{MinTime: topo.MinT, MaxTime: topo.MaxT, Matchers: upMatchers(), WithoutReplicaLabels: []string{"replica"}})
		seen := map[string]int{}
		for i := int64(0); i < 3; i++ {
			res := collectSeries(t, conn, &storepb.SeriesRequest{
				MinTime: topo.MinT, MaxTime: topo.MaxT, Matchers: upMatchers(),
				WithoutReplicaLabels: []string{"replica"},
				ShardInfo:            &storepb.ShardInfo{ShardIndex: i, TotalShards: 3, By: true, Labels: []string{"instance"}},
			})
			for _, s := range res.series {
				seen[labelsKey(s)]++
			}
		}
		if len(seen) != len(all.series) {
			t.Errorf("shards cover %d series, unsharded %d", len(seen), len(all.series))
		}
		for k, n := range seen {
			if n != 1 {
				t.Errorf("series %q in %d shards", k, n)
			}
		}
	})

	t.Run("skip_chunks", func(t *testing.T) {
		res := collectSeries(t, conn, &storepb.SeriesRequest{MinTime: topo.MinT, MaxTime: topo.MaxT, Matchers: upMatchers(), SkipChunks: true})
		if len(res.series) == 0 {
			t.Fatal("no series")
		}
		for _, s := range res.series {
			if len(s.Chunks) != 0 {
				t.Fatalf("chunks despite skip_chunks: %v", s.Labels)
			}
		}
	})

	t.Run("labels", func(t *testing.T) {
		store := storepb.NewStoreClient(conn)
		names, err := store.LabelNames(ctx, &storepb.LabelNamesRequest{Start: topo.MinT, End: topo.MaxT, Limit: 3})
		if err != nil {
			t.Fatalf("label names: %v", err)
		}
		if len(names.Names) != 3 || !sort.StringsAreSorted(names.Names) {
			t.Errorf("label names with limit 3: %v", names.Names)
		}
		values, err := store.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "cluster", Start: topo.MinT, End: topo.MaxT})
		if err != nil {
			t.Fatalf("label values: %v", err)
		}
		if !reflect.DeepEqual(values.Values, []string{"a", "b", "c"}) {
			t.Errorf("cluster values %v", values.Values)
		}
		limited, err := store.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "cluster", Start: topo.MinT, End: topo.MaxT, Limit: 2})
		if err != nil {
			t.Fatalf("label values with limit: %v", err)
		}
		if !reflect.DeepEqual(limited.Values, []string{"a", "b"}) {
			t.Errorf("cluster values with limit 2: %v", limited.Values)
		}
	})

	t.Run("invalid", func(t *testing.T) {
		_, err := trySeries(conn, &storepb.SeriesRequest{MinTime: topo.MinT, MaxTime: topo.MaxT,
			Matchers: []storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "job", Value: "(unclosed"}}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("bad regex: %v", err)
		}
		_, err = storepb.NewStoreClient(conn).LabelValues(ctx, &storepb.LabelValuesRequest{Start: topo.MinT, End: topo.MaxT})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("empty label name: %v", err)
		}
	})
}
