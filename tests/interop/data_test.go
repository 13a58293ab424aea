package interop

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// The generated data set. Every cluster (a, b, c) has the same metric names
// with cluster-dependent values, one sample every SampleInterval from
// Dataset.Start to Dataset.End (both included). All values are exact binary
// floats computed from (cluster, series, step), so any expected result can be
// recomputed with the value functions below.
const (
	SampleInterval = 60 * time.Second
	DataSpan       = 6 * time.Hour
	// DataEndLag is how far before "now truncated to the minute" the data ends.
	DataEndLag = 5 * time.Minute

	NumInstances  = 10   // http_requests_total / up: instance="i-0".."i-9"
	NumRooms      = 5    // temperature_celsius: room="r0".."r4"
	NumLoadShards = 9939 // load_series: shard="00000".."09938"
	NumOnlyB      = 3    // only_b_metric{kind="x0".."x2"}, cluster b only
	NumOnlyC      = 2    // only_c_metric{kind="y0".."y1"}, cluster c only
)

// Clusters are the remote clusters of the topology, in order.
var Clusters = []string{"a", "b", "c"}

// HTTPMethods and HTTPCodes are the method and code label values of
// http_requests_total.
var (
	HTTPMethods = []string{"GET", "POST"}
	HTTPCodes   = []string{"200", "500"}
	// HistogramBuckets are the le values of request_duration_seconds_bucket.
	HistogramBuckets = []string{"0.1", "0.5", "1", "+Inf"}
)

// Dataset describes the generated data.
type Dataset struct {
	Start, End time.Time // first and last sample
	Steps      int       // samples per series
	// Series per cluster (before replication: a0 and a1 both hold cluster a's).
	Series map[string]int
	// Bytes of OpenMetrics text and of TSDB blocks per cluster.
	OpenMetricsBytes map[string]int64
	BlockBytes       map[string]int64
	Blocks           map[string]int
}

// Timestamp returns the time of sample number step in milliseconds.
func (d Dataset) Timestamp(step int) int64 {
	return d.Start.Add(time.Duration(step) * SampleInterval).UnixMilli()
}

func newDataset(now time.Time) Dataset {
	end := now.Truncate(time.Minute).Add(-DataEndLag)
	start := end.Add(-DataSpan)
	return Dataset{
		Start:            start,
		End:              end,
		Steps:            int(DataSpan/SampleInterval) + 1,
		Series:           map[string]int{},
		OpenMetricsBytes: map[string]int64{},
		BlockBytes:       map[string]int64{},
		Blocks:           map[string]int{},
	}
}

// ClusterIndex maps "a", "b", "c" to 0, 1, 2.
func ClusterIndex(cluster string) int {
	for i, c := range Clusters {
		if c == cluster {
			return i
		}
	}
	panic(fmt.Sprintf("unknown cluster %q", cluster))
}

// HTTPRequestsTotal is http_requests_total{instance="i-<inst>",
// method=HTTPMethods[method], code=HTTPCodes[code]} at sample step: a counter
// that drops to 0 every counterResetPeriod(cluster) steps, at a
// series-dependent phase.
func HTTPRequestsTotal(cluster string, inst, method, code, step int) float64 {
	ci := ClusterIndex(cluster)
	inc := 1 + (inst+2*method+3*code+ci)%5
	period := CounterResetPeriod(cluster)
	phase := (inst*13 + method*7 + code*3 + ci*5) % period
	return float64(inc * ((step + phase) % period))
}

// CounterResetPeriod is the number of steps between two resets of an
// http_requests_total series of the cluster.
func CounterResetPeriod(cluster string) int {
	return []int{97, 131, 173}[ClusterIndex(cluster)]
}

// TemperatureCelsius is temperature_celsius{room="r<room>"} at sample step.
func TemperatureCelsius(cluster string, room, step int) float64 {
	ci := ClusterIndex(cluster)
	return 20 + 1.5*float64(room) + 0.5*float64(ci) + 0.25*float64((step*7+room*11+ci*3)%24)
}

// Up is up{job="api",instance="i-<inst>"} at sample step: 1, except that
// instance (3+cluster index) is down (0) for steps [60*(ci+1), 60*(ci+1)+15).
func Up(cluster string, inst, step int) float64 {
	ci := ClusterIndex(cluster)
	from := 60 * (ci + 1)
	if inst == (3+ci)%NumInstances && step >= from && step < from+15 {
		return 0
	}
	return 1
}

// HistogramBucket is request_duration_seconds_bucket{le=HistogramBuckets[b]}.
func HistogramBucket(cluster string, b, step int) float64 {
	ci := ClusterIndex(cluster)
	return float64(step * ([]int{2, 5, 8, 10}[b] + ci))
}

// HistogramCount is request_duration_seconds_count (= the +Inf bucket).
func HistogramCount(cluster string, step int) float64 {
	return HistogramBucket(cluster, len(HistogramBuckets)-1, step)
}

// HistogramSum is request_duration_seconds_sum.
func HistogramSum(cluster string, step int) float64 {
	return float64(step) * (3.25 + float64(ClusterIndex(cluster)))
}

// LoadSeries is load_series{shard=<%05d shard>}.
func LoadSeries(cluster string, shard, step int) float64 {
	return float64((shard*31 + step*17 + ClusterIndex(cluster)*1009) % 1000)
}

// OnlyB is only_b_metric{kind="x<kind>"} (cluster b only).
func OnlyB(kind, step int) float64 { return float64(step + 100*kind) }

// OnlyC is only_c_metric{kind="y<kind>"} (cluster c only).
func OnlyC(kind, step int) float64 { return float64(1000 - step + kind) }

// omWriter writes OpenMetrics text with timestamps in seconds.
type omWriter struct {
	w      *bufio.Writer
	series int
	err    error
}

func (o *omWriter) typ(family, kind string) {
	if o.err == nil {
		_, o.err = fmt.Fprintf(o.w, "# TYPE %s %s\n", family, kind)
	}
}

// sample writes one sample; labels is the already formatted {...} part.
func (o *omWriter) sample(name, labels string, v float64, tsMillis int64) {
	if o.err != nil {
		return
	}
	b := o.w.AvailableBuffer()
	b = append(b, name...)
	b = append(b, labels...)
	b = append(b, ' ')
	b = strconv.AppendFloat(b, v, 'f', -1, 64)
	b = append(b, ' ')
	b = strconv.AppendInt(b, tsMillis/1000, 10)
	b = append(b, '\n')
	_, o.err = o.w.Write(b)
}

// seriesSamples writes every step of one series (a Metric's points are
// contiguous and in timestamp order, as OpenMetrics requires).
func (o *omWriter) seriesSamples(d Dataset, name, labels string, value func(step int) float64) {
	o.series++
	for step := 0; step < d.Steps; step++ {
		o.sample(name, labels, value(step), d.Timestamp(step))
	}
}

// writeOpenMetrics writes the cluster's data and returns its series count.
func writeOpenMetrics(w io.Writer, d Dataset, cluster string) (int, error) {
	o := &omWriter{w: bufio.NewWriterSize(w, 1<<20)}

	o.typ("http_requests", "counter")
	for inst := 0; inst < NumInstances; inst++ {
		for m, method := range HTTPMethods {
			for c, code := range HTTPCodes {
				labels := fmt.Sprintf(`{job="api",instance="i-%d",method="%s",code="%s"}`, inst, method, code)
				o.seriesSamples(d, "http_requests_total", labels, func(step int) float64 {
					return HTTPRequestsTotal(cluster, inst, m, c, step)
				})
			}
		}
	}

	o.typ("temperature_celsius", "gauge")
	for room := 0; room < NumRooms; room++ {
		o.seriesSamples(d, "temperature_celsius", fmt.Sprintf(`{room="r%d"}`, room), func(step int) float64 {
			return TemperatureCelsius(cluster, room, step)
		})
	}

	// A histogram MetricPoint is its buckets, count and sum at one timestamp.
	o.typ("request_duration_seconds", "histogram")
	o.series += len(HistogramBuckets) + 2
	for step := 0; step < d.Steps; step++ {
		ts := d.Timestamp(step)
		for b, le := range HistogramBuckets {
			o.sample("request_duration_seconds_bucket", fmt.Sprintf(`{job="api",le="%s"}`, le), HistogramBucket(cluster, b, step), ts)
		}
		o.sample("request_duration_seconds_count", `{job="api"}`, HistogramCount(cluster, step), ts)
		o.sample("request_duration_seconds_sum", `{job="api"}`, HistogramSum(cluster, step), ts)
	}

	o.typ("up", "gauge")
	for inst := 0; inst < NumInstances; inst++ {
		o.seriesSamples(d, "up", fmt.Sprintf(`{job="api",instance="i-%d"}`, inst), func(step int) float64 {
			return Up(cluster, inst, step)
		})
	}

	o.typ("load_series", "gauge")
	for shard := 0; shard < NumLoadShards; shard++ {
		o.seriesSamples(d, "load_series", fmt.Sprintf(`{shard="%05d"}`, shard), func(step int) float64 {
			return LoadSeries(cluster, shard, step)
		})
	}

	switch cluster {
	case "b":
		o.typ("only_b_metric", "gauge")
		for kind := 0; kind < NumOnlyB; kind++ {
			o.seriesSamples(d, "only_b_metric", fmt.Sprintf(`{kind="x%d"}`, kind), func(step int) float64 {
				return OnlyB(kind, step)
			})
		}
	case "c":
		o.typ("only_c_metric", "gauge")
		for kind := 0; kind < NumOnlyC; kind++ {
			o.seriesSamples(d, "only_c_metric", fmt.Sprintf(`{kind="y%d"}`, kind), func(step int) float64 {
				return OnlyC(kind, step)
			})
		}
	}

	if o.err == nil {
		_, o.err = o.w.WriteString("# EOF\n")
	}
	if o.err == nil {
		o.err = o.w.Flush()
	}
	if o.err != nil {
		return 0, fmt.Errorf("writing OpenMetrics of cluster %s: %w", cluster, o.err)
	}
	return o.series, nil
}

// dataDirs says where each cluster's blocks go.
type dataDirs struct {
	scratch string   // OpenMetrics files and promtool logs
	a       []string // Prometheus data dirs of a0 and a1
	b       string   // Prometheus data dir of b
	c       string   // FILESYSTEM bucket of the store gateway
}

// prepareData generates the data set and writes it as TSDB blocks.
func prepareData(ctx context.Context, promtool string, now time.Time, dirs dataDirs, logDir string) (Dataset, error) {
	d := newDataset(now)
	out := map[string]string{"a": dirs.a[0], "b": dirs.b, "c": dirs.c}
	for _, dir := range append([]string{dirs.scratch, dirs.b, dirs.c}, dirs.a...) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return d, fmt.Errorf("creating %s: %w", dir, err)
		}
	}

	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	for _, cluster := range Clusters {
		wg.Go(func() {
			series, omBytes, err := makeBlocks(ctx, promtool, d, cluster, dirs.scratch, out[cluster], filepath.Join(logDir, "promtool-"+cluster+".log"))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			d.Series[cluster] = series
			d.OpenMetricsBytes[cluster] = omBytes
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return d, err
	}

	// Cluster a: the replicas hold identical blocks.
	for _, dst := range dirs.a[1:] {
		if err := copyTree(dirs.a[0], dst); err != nil {
			return d, fmt.Errorf("copying cluster a blocks to %s: %w", dst, err)
		}
	}
	// Cluster c: the store gateway takes a block's external labels from meta.json.
	if err := addThanosMeta(dirs.c, map[string]string{"cluster": "c"}); err != nil {
		return d, err
	}
	for cluster, dir := range out {
		n, size, err := blockStats(dir)
		if err != nil {
			return d, err
		}
		d.Blocks[cluster], d.BlockBytes[cluster] = n, size
	}
	return d, nil
}

// makeBlocks writes cluster's OpenMetrics file, turns it into blocks in
// outDir with promtool and removes the file.
func makeBlocks(ctx context.Context, promtool string, d Dataset, cluster, scratch, outDir, logPath string) (series int, omBytes int64, err error) {
	omPath := filepath.Join(scratch, cluster+".om")
	f, err := os.Create(omPath)
	if err != nil {
		return 0, 0, fmt.Errorf("creating %s: %w", omPath, err)
	}
	series, err = writeOpenMetrics(f, d, cluster)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing %s: %w", omPath, cerr)
	}
	if err != nil {
		return 0, 0, err
	}
	st, err := os.Stat(omPath)
	if err != nil {
		return 0, 0, fmt.Errorf("stat %s: %w", omPath, err)
	}

	logFile, err := os.Create(logPath)
	if err != nil {
		return 0, 0, fmt.Errorf("creating %s: %w", logPath, err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, promtool, "tsdb", "create-blocks-from", "openmetrics", omPath, outDir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("promtool create-blocks-from openmetrics for cluster %s: %w\n%s", cluster, err, tailFile(logPath, 20))
	}
	if err := os.Remove(omPath); err != nil {
		return 0, 0, fmt.Errorf("removing %s: %w", omPath, err)
	}
	return series, st.Size(), nil
}

// addThanosMeta adds a "thanos" section to the meta.json of every block in
// dir, as a sidecar's upload would have.
func addThanosMeta(dir string, extLabels map[string]string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading bucket %s: %w", dir, err)
	}
	n := 0
	for _, e := range entries {
		metaPath := filepath.Join(dir, e.Name(), "meta.json")
		raw, err := os.ReadFile(metaPath)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", metaPath, err)
		}
		var meta map[string]any
		if err := json.Unmarshal(raw, &meta); err != nil {
			return fmt.Errorf("parsing %s: %w", metaPath, err)
		}
		meta["thanos"] = map[string]any{
			"labels":     extLabels,
			"downsample": map[string]any{"resolution": 0},
			"source":     "sidecar",
		}
		out, err := json.MarshalIndent(meta, "", "\t")
		if err != nil {
			return fmt.Errorf("encoding %s: %w", metaPath, err)
		}
		tmp := metaPath + ".tmp"
		if err := os.WriteFile(tmp, append(out, '\n'), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", tmp, err)
		}
		if err := os.Rename(tmp, metaPath); err != nil {
			return fmt.Errorf("replacing %s: %w", metaPath, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("no blocks in %s", dir)
	}
	return nil
}

// blockStats counts the blocks in dir and their total size.
func blockStats(dir string) (blocks int, size int64, err error) {
	err = filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Name() == "meta.json" {
			blocks++
		}
		if e.Type().IsRegular() {
			info, err := e.Info()
			if err != nil {
				return err
			}
			size += info.Size()
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("measuring blocks in %s: %w", dir, err)
	}
	return blocks, size, nil
}

// copyTree copies the regular files and directories under src into dst.
func copyTree(src, dst string) error {
	return mirrorTree(src, dst, func(path string, e os.DirEntry, target string) error {
		if !e.Type().IsRegular() {
			return fmt.Errorf("unexpected non-regular file %s", path)
		}
		return copyFile(path, target)
	})
}

// mirrorTree recreates the directories under src in dst and calls file for
// everything else, with its path under dst.
func mirrorTree(src, dst string, file func(path string, e os.DirEntry, target string) error) error {
	return filepath.WalkDir(src, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		return file(path, e, target)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return out.Close()
}
