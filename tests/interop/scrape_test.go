package interop

// What the Prometheus servers of the topology evaluate and scrape, for the
// Rules, Targets, Metadata, Exemplars and Status APIs (apis_test.go):
//
//   - a rules file per cluster (a0 and a1 share cluster a's file, as replicas
//     do) with a recording rule, an alert that fires at once, one that stays
//     pending and one that never fires, evaluated every second;
//   - every second, Prometheus itself (only a few of its metrics are kept, so
//     that the TSDB statistics are not at the mercy of whatever Prometheus
//     exports) and ScrapeTarget, an OpenMetrics endpoint served by the test
//     process with exemplars at fixed timestamps;
//   - a target dropped by relabelling, so that droppedTargets is not empty.
//
// None of the scraped or recorded series has the name of a generated series
// (data_test.go), and all their samples are later than the generated data, so
// the PromQL battery, which queries at fixed past times, sees none of them.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	// ScrapeInterval is the scrape and rule evaluation interval of every
	// Prometheus.
	ScrapeInterval = time.Second

	// ScrapeJob is the job name of ScrapeTarget in every Prometheus.
	ScrapeJob = "fanout-interop"

	// NumLoadFamilies is the number of fanout_interop_load_NN gauge
	// families ScrapeTarget exposes; family k (1-based) has
	// LoadFamilySeries(k) series. Their series counts are distinct and larger
	// than those of any other metric name or label pair of a head (except the
	// job and instance pairs of ScrapeTarget, which hold them all), so the
	// top-10 lists of /api/v1/status/tsdb by metric name and by label pair
	// have no tie at their cut-off: Prometheus keeps whichever tied entries
	// it meets first, which would differ from one call to the next. (The
	// list by label name has no cut-off at 10: the heads have fewer label
	// names.)
	NumLoadFamilies = 12

	// Names of the alerting rules of every cluster's rules file.
	AlertFiring  = "FanoutInteropAlwaysFiring"
	AlertPending = "FanoutInteropPending"
	AlertNever   = "FanoutInteropNeverFiring"
	// RecordingRule is the recording rule of every cluster's rules file.
	RecordingRule = "fanout_interop:one"
	// RuleGroup is the name of the group in every cluster's rules file.
	RuleGroup = "fanout_interop"
)

// LoadFamilySeries is the number of series of fanout_interop_load_<k>.
func LoadFamilySeries(k int) int { return 20 + 2*k }

// selfMetricsKept are the metrics a Prometheus keeps from scraping itself.
const selfMetricsKept = "prometheus_config_last_reload_successful|prometheus_tsdb_head_series|process_start_time_seconds"

// Exemplar is one exemplar ScrapeTarget exposes for a cluster.
type Exemplar struct {
	Metric  string // series name
	Path    string // value of the series' "path" label ("" if none)
	TraceID string // value of the exemplar's trace_id label
	Value   float64
	Time    time.Time // fixed: the same exemplar on every scrape
}

// ScrapeTarget serves /metrics/<cluster> in OpenMetrics text format for
// clusters a and b: counters with exemplars at fixed timestamps (a new
// timestamp on every scrape would store a new exemplar each second, and two
// queriers asked a moment apart would not see the same ones), a counter with
// a unit, and the fanout_interop_load_NN gauge families.
type ScrapeTarget struct {
	Addr string // "127.0.0.1:PORT"
	// ExemplarBase is the time of the oldest exemplar, a whole second a few
	// minutes before the topology started; every exemplar is at most a few
	// seconds later.
	ExemplarBase time.Time

	srv *http.Server
}

// startScrapeTarget listens on addr and serves until Close.
func startScrapeTarget(addr string, now time.Time) (*ScrapeTarget, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("scrape target: %w", err)
	}
	s := &ScrapeTarget{Addr: addr, ExemplarBase: now.Add(-3 * time.Minute).Truncate(time.Second)}
	mux := http.NewServeMux()
	for _, cluster := range []string{"a", "b"} {
		body := s.exposition(cluster)
		mux.HandleFunc("/metrics/"+cluster, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
			_, _ = w.Write([]byte(body))
		})
	}
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logf("scrape target: %v", err)
		}
	}()
	return s, nil
}

// Close stops serving.
func (s *ScrapeTarget) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// Exemplars are the exemplars exposed for a cluster ("a" or "b"), each on its
// own series; the trace IDs start with the cluster's name.
func (s *ScrapeTarget) Exemplars(cluster string) []Exemplar {
	at := func(sec int) time.Time { return s.ExemplarBase.Add(time.Duration(sec) * time.Second) }
	return []Exemplar{
		{"fanout_interop_requests_total", "/api", cluster + "-api-1", 1, at(0)},
		{"fanout_interop_requests_total", "/ui", cluster + "-ui-1", 1, at(1)},
		{"fanout_interop_served_bytes_total", "", cluster + "-bytes-1", 512, at(2)},
	}
}

// RequestsHelp is the HELP text of fanout_interop_requests for a cluster; it
// differs between the clusters, so the metadata of that metric has two
// entries once merged.
func RequestsHelp(cluster string) string {
	return "Requests served by the interop target of cluster " + cluster + "."
}

func (s *ScrapeTarget) exposition(cluster string) string {
	ex := map[string]Exemplar{}
	for _, e := range s.Exemplars(cluster) {
		ex[e.Metric+e.Path] = e
	}
	sample := func(b *strings.Builder, metric, labels string, value float64, e Exemplar) {
		fmt.Fprintf(b, "%s%s %s # {trace_id=%q} %s %s\n", metric, labels, formatFloat(value),
			e.TraceID, formatFloat(e.Value), formatFloat(float64(e.Time.UnixMilli())/1000))
	}
	var b strings.Builder
	b.WriteString("# HELP fanout_interop_requests " + RequestsHelp(cluster) + "\n")
	b.WriteString("# TYPE fanout_interop_requests counter\n")
	sample(&b, "fanout_interop_requests_total", `{path="/api"}`, 17, ex["fanout_interop_requests_total/api"])
	sample(&b, "fanout_interop_requests_total", `{path="/ui"}`, 5, ex["fanout_interop_requests_total/ui"])
	b.WriteString("# HELP fanout_interop_served_bytes Bytes served by the interop target.\n")
	b.WriteString("# TYPE fanout_interop_served_bytes counter\n")
	b.WriteString("# UNIT fanout_interop_served_bytes bytes\n")
	sample(&b, "fanout_interop_served_bytes_total", "", 1024, ex["fanout_interop_served_bytes_total"])
	for k := 1; k <= NumLoadFamilies; k++ {
		name := fmt.Sprintf("fanout_interop_load_%02d", k)
		fmt.Fprintf(&b, "# HELP %s Load family %d of the interop target.\n# TYPE %s gauge\n", name, k, name)
		for i := range LoadFamilySeries(k) {
			fmt.Fprintf(&b, "%s{item=\"%02d.%02d\"} %d\n", name, k, i, i)
		}
	}
	b.WriteString("# EOF\n")
	return b.String()
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// prometheusConfig is the configuration of a Prometheus of cluster a or b.
// selfAddr is its own listen address, rulesFile its cluster's rules file.
func prometheusConfig(cluster, externalLabels, selfAddr, targetAddr, rulesFile string) string {
	q := strconv.Quote
	return fmt.Sprintf(`global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[1]s
  external_labels:
    %[2]s
rule_files:
  - %[3]s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: [%[4]s]
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: %[5]s
        action: keep
  - job_name: %[6]s
    metrics_path: /metrics/%[7]s
    static_configs:
      - targets: [%[8]s]
      # Never scraped: dropped by the relabelling below.
      - targets: ["127.0.0.1:9"]
        labels:
          fanout_interop_drop: "yes"
    relabel_configs:
      - source_labels: [fanout_interop_drop]
        regex: "yes"
        action: drop
`, ScrapeInterval, externalLabels, q(rulesFile), q(selfAddr), q(selfMetricsKept), ScrapeJob, cluster, q(targetAddr))
}

// rulesFile is the rules file of a cluster: the same rules everywhere, with
// the cluster's name in an annotation (from the external labels).
func rulesFile(dir, cluster string) (path, content string) {
	return filepath.Join(dir, "rules-"+cluster+".yml"), fmt.Sprintf(`groups:
  - name: %[1]s
    interval: %[2]s
    rules:
      - record: %[3]s
        expr: vector(1)
        labels:
          source: interop
      - alert: %[4]s
        expr: vector(1)
        for: 0s
        labels:
          severity: none
        annotations:
          summary: "Always firing, in cluster {{ $externalLabels.cluster }}."
      - alert: %[5]s
        expr: vector(1)
        for: 1h
        labels:
          severity: none
        annotations:
          summary: Pending for an hour.
      - alert: %[6]s
        expr: vector(0) > 1
        labels:
          severity: page
`, RuleGroup, ScrapeInterval, RecordingRule, AlertFiring, AlertPending, AlertNever)
}
