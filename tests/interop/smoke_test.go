package interop

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// TestSmoke checks that the topology works: both queriers give the same
// answers, and the answers match the generated data.
func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t.Run("instant", func(t *testing.T) {
		for _, q := range []string{
			"up",
			"count(up)",
			`count by (cluster) ({__name__=~".+"})`,
			"sum by (cluster) (rate(http_requests_total[5m]))",
			"only_b_metric",
			"only_c_metric",
		} {
			ut, ref := bothInstant(ctx, t, q, topo.MaxT)
			if ut != ref {
				t.Errorf("%s differs:\nunder test: %s\nreference:  %s", q, ut, ref)
			}
		}
	})

	t.Run("series per cluster", func(t *testing.T) {
		r, err := InstantQuery(ctx, topo.QueryUnderTest, `count by (cluster) ({__name__=~".+"})`, topo.MaxT)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		for _, s := range decodeVector(t, r) {
			n, err := strconv.Atoi(s.Value[1].(string))
			if err != nil {
				t.Fatalf("count %v: %v", s.Value, err)
			}
			got[s.Metric["cluster"]] = n
		}
		for _, c := range Clusters {
			if got[c] != topo.Data.Series[c] {
				t.Errorf("cluster %s: %d series through thanos-fanout, generated %d", c, got[c], topo.Data.Series[c])
			}
		}
	})

	t.Run("range", func(t *testing.T) {
		q := "sum by (cluster, code) (rate(http_requests_total[5m]))"
		var answers [2]string
		for i, base := range []string{topo.QueryUnderTest, topo.QueryReference} {
			r, err := APIGet(ctx, base, "/api/v1/query_range", url.Values{
				"query": {q},
				"start": {formatSeconds(topo.MinT)},
				"end":   {formatSeconds(topo.MaxT)},
				"step":  {"60"},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Warnings) > 0 {
				t.Errorf("%s: warnings %q", base, r.Warnings)
			}
			answers[i] = string(r.Data)
		}
		if answers[0] != answers[1] {
			t.Errorf("%s differs:\nunder test: %.500s\nreference:  %.500s", q, answers[0], answers[1])
		}
	})

	t.Run("value", func(t *testing.T) {
		// temperature_celsius of cluster c, room r2, at the last sample.
		r, err := InstantQuery(ctx, topo.QueryUnderTest, `temperature_celsius{cluster="c",room="r2"}`, topo.MaxT)
		if err != nil {
			t.Fatal(err)
		}
		v := decodeVector(t, r)
		want := strconv.FormatFloat(TemperatureCelsius("c", 2, topo.Data.Steps-1), 'f', -1, 64)
		if len(v) != 1 || v[0].Value[1] != want {
			t.Errorf("got %v, want one sample %s", v, want)
		}
	})
}

// bothInstant runs an instant query on both queriers and returns their data.
func bothInstant(ctx context.Context, t *testing.T, promql string, tsMillis int64) (underTest, reference string) {
	t.Helper()
	var out [2]string
	for i, base := range []string{topo.QueryUnderTest, topo.QueryReference} {
		r, err := InstantQuery(ctx, base, promql, tsMillis)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Warnings) > 0 {
			t.Errorf("%s %s: warnings %q", base, promql, r.Warnings)
		}
		out[i] = string(r.Data)
	}
	if out[0] == `{"resultType":"vector","result":[]}` {
		t.Errorf("%s: empty result", promql)
	}
	return out[0], out[1]
}

type vectorSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func decodeVector(t *testing.T, r *APIResponse) []vectorSample {
	t.Helper()
	var d struct {
		ResultType string         `json:"resultType"`
		Result     []vectorSample `json:"result"`
	}
	if err := json.Unmarshal(r.Data, &d); err != nil {
		t.Fatalf("decoding %s: %v", r.Data, err)
	}
	if d.ResultType != "vector" {
		t.Fatalf("result type %q, want vector", d.ResultType)
	}
	return d.Result
}
