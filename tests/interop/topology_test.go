// Package interop runs thanos-fanout between real Thanos v0.42.4 queriers,
// sidecars and a store gateway, Debian's Prometheus and nginx, all on
// loopback, and compares a querier that goes through thanos-fanout with a
// reference querier that connects to every remote endpoint directly.
//
// TestMain builds the whole topology once (see Topology) and tears it down
// after the tests. The binaries come from the environment: THANOS_BIN and
// FANOUT_BIN are required, PROMETHEUS_BIN, PROMTOOL_BIN and NGINX_BIN default
// to prometheus, promtool and nginx from PATH. scripts/interop sets them all.
// INTEROP_KEEP_DIR=1 keeps the work directory even when everything passed.
package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// topo is the running topology, set by TestMain before the tests run.
var topo *Topology

const (
	// readyTimeout bounds each phase of waiting during setup (processes
	// ready; then fanout endpoints, querier stores and first query).
	readyTimeout = 3 * time.Minute
	pollInterval = 500 * time.Millisecond
	// stopGrace is how long a process may take to exit after SIGTERM.
	stopGrace = 40 * time.Second
)

// Topology is the running set of processes. All addresses are on 127.0.0.1.
type Topology struct {
	Dir            string // configs, data and logs (kept and printed on failure)
	QueryUnderTest string // "http://127.0.0.1:PORT" of thanos query --endpoint=<thanos-fanout>
	QueryReference string // "http://127.0.0.1:PORT" of thanos query with direct per-endpoint TLS
	QuerySnappy    string // "http://127.0.0.1:PORT" of thanos query --grpc-compression=snappy --endpoint=<thanos-fanout>
	FanoutGRPC     string // "127.0.0.1:PORT" of thanos-fanout's StoreAPI
	FanoutHTTP     string // "http://127.0.0.1:PORT" (/metrics, /-/ready)
	MinT, MaxT     int64  // ms, first and last sample timestamp of the generated data
	Certs          CertPaths

	// TLS endpoints, "127.0.0.1:PORT".
	SidecarA0GRPC, SidecarA1GRPC, NginxB, StoreCGRPC string
	DNSAddr                                          string // in-process DNS server (UDP+TCP)

	// Beyond the agreed API: the DNS server itself (records can be changed),
	// the generated data set, the YAML the main thanos-fanout runs with, and
	// the binaries in use.
	DNS          *DNSServer
	Data         Dataset
	FanoutConfig string
	Bins         Binaries

	// Scrape is the OpenMetrics endpoint every Prometheus scrapes (and the
	// exemplars it exposes); see scrape_test.go.
	Scrape *ScrapeTarget

	pki   *pki
	ports *portSet

	mu    sync.Mutex
	procs map[string]*process
	order []string // names in the order they were first started
}

// Binaries are the absolute paths of the programs under test.
type Binaries struct {
	Thanos, Fanout, Prometheus, Promtool, Nginx string
}

// clusterProcesses lists what StopCluster stops, in stopping order;
// StartCluster starts them in reverse.
var clusterProcesses = map[string][]string{
	"a":  {"sidecar-a0", "prometheus-a0", "sidecar-a1", "prometheus-a1"},
	"a0": {"sidecar-a0", "prometheus-a0"},
	"a1": {"sidecar-a1", "prometheus-a1"},
	"b":  {"nginx-b", "sidecar-b", "prometheus-b"},
	"c":  {"store-c"},
}

// StopCluster stops a cluster's processes with SIGTERM and waits for them to
// exit. "b" stops nginx-b, sidecar-b and prometheus-b; "a" both replicas,
// "a0"/"a1" one replica (sidecar and Prometheus); "c" the store gateway. Their
// ports stay as they are for StartCluster.
func (t *Topology) StopCluster(name string) error {
	names, ok := clusterProcesses[name]
	if !ok {
		return fmt.Errorf("StopCluster: unknown cluster %q", name)
	}
	var errs []error
	for _, n := range names {
		if err := t.proc(n).stop(stopGrace); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// StartCluster starts what StopCluster stopped (or what died), on the same
// ports, in dependency order, and waits until each process is ready.
// Processes of the cluster that still run are left as they are.
func (t *Topology) StartCluster(name string) error {
	names, ok := clusterProcesses[name]
	if !ok {
		return fmt.Errorf("StartCluster: unknown cluster %q", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for _, n := range slices.Backward(names) {
		p := t.proc(n)
		if !p.running() {
			if err := p.start(); err != nil {
				return err
			}
		}
		if err := p.waitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

var fanoutNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// StartFanout starts an extra thanos-fanout with configYAML (its listen
// addresses are overridden with --grpc-address/--http-address on free ports)
// and waits for its /-/ready. Its log is Logs("fanout-"+name). stop sends
// SIGTERM and waits; it is safe to call more than once, and teardown stops the
// process anyway.
func (t *Topology) StartFanout(name, configYAML string) (grpcAddr, httpAddr string, stop func(), err error) {
	if !fanoutNameRE.MatchString(name) {
		return "", "", nil, fmt.Errorf("StartFanout: name %q must match %s", name, fanoutNameRE)
	}
	procName := "fanout-" + name
	t.mu.Lock()
	_, exists := t.procs[procName]
	t.mu.Unlock()
	if exists {
		return "", "", nil, fmt.Errorf("StartFanout: %s was already started once; use another name", procName)
	}
	cfgPath := filepath.Join(t.Dir, procName+".yaml")
	if err := os.WriteFile(cfgPath, []byte(configYAML), 0o644); err != nil {
		return "", "", nil, fmt.Errorf("StartFanout: writing config: %w", err)
	}
	grpcAddr, httpAddr = t.ports.addr(), t.ports.addr()
	p := t.newProcess(procName, t.Bins.Fanout, []string{
		"--config", cfgPath, "--grpc-address", grpcAddr, "--http-address", httpAddr,
	}, httpOK("http://"+httpAddr+"/-/ready"))
	if err := p.start(); err != nil {
		return "", "", nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.waitReady(ctx); err != nil {
		_ = p.stop(5 * time.Second)
		return "", "", nil, err
	}
	return grpcAddr, "http://" + httpAddr, func() { _ = p.stop(stopGrace) }, nil
}

// ServerCert mints a server certificate for dnsNames signed by CA "A", "B",
// "C", "Client" or "Evil" and returns its PEM files. It panics on an unknown
// CA name or an I/O error.
func (t *Topology) ServerCert(ca string, dnsNames ...string) (certFile, keyFile string) {
	certFile, keyFile, err := t.pki.mintServer(ca, dnsNames...)
	if err != nil {
		panic(fmt.Sprintf("ServerCert(%q, %q): %v", ca, dnsNames, err))
	}
	return certFile, keyFile
}

// Logs returns the last lines of a process's log: "prometheus-a0",
// "prometheus-a1", "prometheus-b", "sidecar-a0", "sidecar-a1", "sidecar-b",
// "nginx-b", "store-c", "fanout", "query-under-test", "query-reference",
// "fanout-<name>" (StartFanout) or "promtool-a|b|c".
func (t *Topology) Logs(name string) string {
	return tailFile(filepath.Join(t.Dir, "logs", name+".log"), 60)
}

// FanoutEndpointsUp reads thanos_fanout_remote_endpoint_up from a
// thanos-fanout's /metrics (httpBase as in FanoutHTTP): how many endpoints
// are up and how many there are.
func FanoutEndpointsUp(ctx context.Context, httpBase string) (up, total int, err error) {
	body, err := httpGet(ctx, httpBase+"/metrics")
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "thanos_fanout_remote_endpoint_up{") {
			continue
		}
		total++
		fields := strings.Fields(line[strings.LastIndexByte(line, '}')+1:])
		if len(fields) > 0 {
			if v, err := strconv.ParseFloat(fields[0], 64); err == nil && v == 1 {
				up++
			}
		}
	}
	return up, total, nil
}

// APIResponse is the envelope of the Prometheus/Thanos HTTP API.
type APIResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Infos     []string        `json:"infos"`
}

// APIGet calls GET base+path?params on a querier's HTTP API. An answer with
// status other than "success" is returned together with an error.
func APIGet(ctx context.Context, base, path string, params url.Values) (*APIResponse, error) {
	u := base + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	status, body, err := fetch(ctx, u)
	if err != nil {
		return nil, err
	}
	var r APIResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("GET %s: %s: not an API answer: %w: %.300s", u, status, err, body)
	}
	if r.Status != "success" {
		return &r, fmt.Errorf("GET %s: %s: %s: %s", u, status, r.ErrorType, r.Error)
	}
	return &r, nil
}

// InstantQuery runs an instant query at ts (ms) and returns the envelope.
func InstantQuery(ctx context.Context, base, promql string, tsMillis int64) (*APIResponse, error) {
	return APIGet(ctx, base, "/api/v1/query", url.Values{
		"query": {promql},
		"time":  {formatSeconds(tsMillis)},
	})
}

func formatSeconds(ms int64) string {
	return strconv.FormatFloat(float64(ms)/1000, 'f', 3, 64)
}

// ---------------------------------------------------------------------------
// TestMain: setup and teardown.

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) (code int) {
	if compareOnly() {
		// The comparison (compare_test.go) builds its own topology.
		return m.Run()
	}
	start := time.Now()
	t := &Topology{procs: map[string]*process{}, ports: newPortSet()}
	var err error
	t.Dir, err = os.MkdirTemp(os.Getenv("INTEROP_TMPDIR"), "thanos-fanout-interop-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "interop: creating work dir: %v\n", err)
		return 1
	}
	logf("work dir %s", t.Dir)

	var keep atomic.Bool
	keep.Store(os.Getenv("INTEROP_KEEP_DIR") != "")
	var once sync.Once
	teardown := func(why string) {
		once.Do(func() {
			begin := time.Now()
			t.stopAll()
			if t.DNS != nil {
				_ = t.DNS.Close()
			}
			if t.Scrape != nil {
				_ = t.Scrape.Close()
			}
			logf("teardown (%s) took %s", why, since(begin))
			if keep.Load() {
				logf("work dir kept: %s", t.Dir)
			} else if err := os.RemoveAll(t.Dir); err != nil {
				logf("removing %s: %v", t.Dir, err)
			}
		})
	}
	defer func() {
		if r := recover(); r != nil {
			keep.Store(true)
			teardown("panic")
			panic(r)
		}
	}()

	// Teardown on SIGINT/SIGTERM and shortly before go test's -timeout
	// panics (which would skip every deferred call).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		logf("got %s", s)
		keep.Store(true)
		teardown("signal " + s.String())
		os.Exit(2)
	}()
	if d := testTimeout(); d > 0 {
		margin := min(30*time.Second, d/10)
		time.AfterFunc(d-margin, func() {
			logf("the -timeout of %s is about to expire: stopping every process", d)
			keep.Store(true)
			teardown("timeout")
		})
	}

	if err := t.setup(); err != nil {
		keep.Store(true)
		fmt.Fprintf(os.Stderr, "\ninterop: SETUP FAILED after %s: %v\n", since(start), err)
		t.reportExited()
		teardown("setup failed")
		return 1
	}
	logf("setup took %s", since(start))

	topo = t
	code = m.Run()
	if code != 0 {
		keep.Store(true)
	}
	teardown("tests done")
	return code
}

// testTimeout is go test's -timeout (0: none).
func testTimeout() time.Duration {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return 0
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return 0
	}
	d, _ := g.Get().(time.Duration)
	return d
}

func (t *Topology) setup() error {
	var err error
	if t.Bins, err = findBinaries(); err != nil {
		return err
	}

	step := time.Now()
	logDir := filepath.Join(t.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fmt.Errorf("creating log dir: %w", err)
	}
	if t.pki, t.Certs, err = newPKI(filepath.Join(t.Dir, "certs")); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	logf("certificates: %s", since(step))

	// Addresses.
	ports := t.ports
	pa := processAddrs{
		promA0: ports.addr(), promA1: ports.addr(), promB: ports.addr(),
		sideA0GRPC: ports.addr(), sideA0HTTP: ports.addr(),
		sideA1GRPC: ports.addr(), sideA1HTTP: ports.addr(),
		sideBGRPC: ports.addr(), sideBHTTP: ports.addr(),
		nginxB: ports.addr(), storeCGRPC: ports.addr(), storeCHTTP: ports.addr(),
		fanoutGRPC: ports.addr(), fanoutHTTP: ports.addr(),
		queryUTHTTP: ports.addr(), queryUTGRPC: ports.addr(),
		queryRefHTTP: ports.addr(), queryRefGRPC: ports.addr(),
		querySnappyHTTP: ports.addr(), querySnappyGRPC: ports.addr(),
	}
	t.SidecarA0GRPC, t.SidecarA1GRPC, t.NginxB, t.StoreCGRPC = pa.sideA0GRPC, pa.sideA1GRPC, pa.nginxB, pa.storeCGRPC
	t.FanoutGRPC, t.FanoutHTTP = pa.fanoutGRPC, "http://"+pa.fanoutHTTP
	t.QueryUnderTest, t.QueryReference = "http://"+pa.queryUTHTTP, "http://"+pa.queryRefHTTP
	t.QuerySnappy = "http://" + pa.querySnappyHTTP

	// DNS.
	if t.DNS, err = startDNSServer(); err != nil {
		return err
	}
	t.DNSAddr = t.DNS.Addr
	_, portStr, err := net.SplitHostPort(pa.storeCGRPC)
	if err != nil {
		return fmt.Errorf("port of %s: %w", pa.storeCGRPC, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return fmt.Errorf("port of %s: %w", pa.storeCGRPC, err)
	}
	t.DNS.SetSRV("_grpc._tcp.c.remote.test", SRVTarget{Target: "c.remote.test", Port: uint16(port)})
	t.DNS.SetA("c.remote.test", "127.0.0.1")
	if _, err := t.DNS.lookupSRVForTest("_grpc._tcp.c.remote.test"); err != nil {
		return fmt.Errorf("DNS self-check: %w", err)
	}

	// What the Prometheus servers scrape.
	if t.Scrape, err = startScrapeTarget(ports.addr(), time.Now()); err != nil {
		return err
	}

	// Data.
	step = time.Now()
	dataCtx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dirs := dataDirs{
		scratch: filepath.Join(t.Dir, "openmetrics"),
		a:       []string{filepath.Join(t.Dir, "prometheus-a0", "data"), filepath.Join(t.Dir, "prometheus-a1", "data")},
		b:       filepath.Join(t.Dir, "prometheus-b", "data"),
		c:       filepath.Join(t.Dir, "store-c", "bucket"),
	}
	if t.Data, err = prepareData(dataCtx, t.Bins.Promtool, time.Now(), dirs, logDir); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	t.MinT, t.MaxT = t.Data.Timestamp(0), t.Data.Timestamp(t.Data.Steps-1)
	logf("data: %s; %d samples per series from %s to %s", since(step), t.Data.Steps,
		t.Data.Start.UTC().Format(time.RFC3339), t.Data.End.UTC().Format(time.RFC3339))
	for _, c := range Clusters {
		logf("  cluster %s: %d series, %.1f MiB OpenMetrics, %d blocks, %.1f MiB", c, t.Data.Series[c],
			mib(t.Data.OpenMetricsBytes[c]), t.Data.Blocks[c], mib(t.Data.BlockBytes[c]))
	}

	// Processes.
	if err := t.defineProcesses(pa, dirs); err != nil {
		return err
	}

	// Everything boots at once, except that the sidecars wait for their
	// Prometheus (a sidecar that finds no Prometheus retries only after 30 s).
	// Readiness is checked in dependency order so that the first failure
	// reported is the root cause.
	step = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for _, stage := range [][]string{
		{"prometheus-a0", "prometheus-a1", "prometheus-b", "store-c"},
		{"sidecar-a0", "sidecar-a1", "sidecar-b", "nginx-b", "fanout", "query-under-test", "query-reference", "query-snappy"},
	} {
		for _, name := range stage {
			if err := t.proc(name).start(); err != nil {
				return err
			}
		}
		for _, name := range stage {
			if err := t.proc(name).waitReady(ctx); err != nil {
				return err
			}
			logf("  %-16s ready after %s", name, since(step))
		}
	}

	step = time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := t.waitFanoutEndpoints(ctx, t.FanoutHTTP, 4); err != nil {
		return err
	}
	logf("  fanout: 4 remote endpoints up after %s", since(step))
	if err := t.waitStores(ctx); err != nil {
		return err
	}
	logf("  queriers: stores healthy after %s", since(step))
	if err := t.waitSameAnswer(ctx, "count(up)"); err != nil {
		return err
	}
	logf("  queriers: count(up) agrees after %s", since(step))
	return nil
}

type processAddrs struct {
	promA0, promA1, promB                                string
	sideA0GRPC, sideA0HTTP, sideA1GRPC, sideA1HTTP       string
	sideBGRPC, sideBHTTP                                 string
	nginxB, storeCGRPC, storeCHTTP                       string
	fanoutGRPC, fanoutHTTP                               string
	queryUTHTTP, queryUTGRPC, queryRefHTTP, queryRefGRPC string
	querySnappyHTTP, querySnappyGRPC                     string
}

// defineProcesses writes every config file and registers every process.
func (t *Topology) defineProcesses(a processAddrs, dirs dataDirs) error {
	c := t.Certs
	thanosCommon := []string{"--log.level=info", "--grpc-grace-period=1s", "--http-grace-period=1s"}
	serverTLS := func(cert, key string) []string {
		return []string{"--grpc-server-tls-cert=" + cert, "--grpc-server-tls-key=" + key, "--grpc-server-tls-client-ca=" + c.CAClient}
	}

	// Prometheus a0, a1, b and their sidecars.
	type replica struct {
		name, cluster, promAddr, dataDir, labels string
		grpc, http                               string
		tls                                      []string
	}
	replicas := []replica{
		{"a0", "a", a.promA0, dirs.a[0], "cluster: a\n    replica: \"0\"", a.sideA0GRPC, a.sideA0HTTP, serverTLS(c.ServerACert, c.ServerAKey)},
		{"a1", "a", a.promA1, dirs.a[1], "cluster: a\n    replica: \"1\"", a.sideA1GRPC, a.sideA1HTTP, serverTLS(c.ServerACert, c.ServerAKey)},
		{"b", "b", a.promB, dirs.b, "cluster: b", a.sideBGRPC, a.sideBHTTP, nil},
	}
	// One rules file per cluster, shared by its replicas (so that a querier
	// deduplicates their groups, which it tells apart by file and name).
	for _, cluster := range []string{"a", "b"} {
		path, content := rulesFile(t.Dir, cluster)
		if err := writeFile(path, content); err != nil {
			return err
		}
	}
	for _, r := range replicas {
		cfg := filepath.Join(t.Dir, "prometheus-"+r.name, "prometheus.yml")
		rules, _ := rulesFile(t.Dir, r.cluster)
		if err := writeFile(cfg, prometheusConfig(r.cluster, r.labels, r.promAddr, t.Scrape.Addr, rules)); err != nil {
			return err
		}
		t.newProcess("prometheus-"+r.name, t.Bins.Prometheus, []string{
			"--config.file=" + cfg,
			"--storage.tsdb.path=" + r.dataDir,
			"--storage.tsdb.retention.time=30d",
			"--web.listen-address=" + r.promAddr,
			"--enable-feature=exemplar-storage",
			"--log.level=info",
		}, httpOK("http://"+r.promAddr+"/-/ready"))
		args := append([]string{"sidecar",
			"--prometheus.url=http://" + r.promAddr,
			"--tsdb.path=" + r.dataDir,
			"--grpc-address=" + r.grpc,
			"--http-address=" + r.http,
		}, thanosCommon...)
		t.newProcess("sidecar-"+r.name, t.Bins.Thanos, append(args, r.tls...), httpOK("http://"+r.http+"/-/ready"))
	}

	// nginx in front of sidecar b.
	nginxDir := filepath.Join(t.Dir, "nginx-b")
	nginxConf := filepath.Join(nginxDir, "nginx.conf")
	if err := os.MkdirAll(filepath.Join(nginxDir, "tmp"), 0o755); err != nil {
		return fmt.Errorf("creating nginx temp dir: %w", err)
	}
	if err := writeFile(nginxConf, nginxConfig(nginxDir, a.nginxB, a.sideBGRPC, c)); err != nil {
		return err
	}
	t.newProcess("nginx-b", t.Bins.Nginx, []string{"-p", nginxDir + "/", "-c", nginxConf, "-e", "stderr", "-g", "daemon off;"},
		h2TLSReady(a.nginxB, "b.remote.test", c.CAB, c.ClientCert, c.ClientKey))

	// Store gateway c.
	objstore := filepath.Join(t.Dir, "store-c", "objstore.yaml")
	if err := writeFile(objstore, "type: FILESYSTEM\nconfig:\n  directory: "+strconv.Quote(dirs.c)+"\n"); err != nil {
		return err
	}
	args := append([]string{"store",
		"--objstore.config-file=" + objstore,
		"--data-dir=" + filepath.Join(t.Dir, "store-c", "cache"),
		"--grpc-address=" + a.storeCGRPC,
		"--http-address=" + a.storeCHTTP,
	}, thanosCommon...)
	t.newProcess("store-c", t.Bins.Thanos, append(args, serverTLS(c.ServerCCert, c.ServerCKey)...), httpOK("http://"+a.storeCHTTP+"/-/ready"))

	// thanos-fanout.
	t.FanoutConfig = fanoutConfig(a.fanoutGRPC, a.fanoutHTTP, t.DNSAddr, t.SidecarA0GRPC, t.SidecarA1GRPC, t.NginxB, c)
	fanoutCfg := filepath.Join(t.Dir, "fanout.yaml")
	if err := writeFile(fanoutCfg, t.FanoutConfig); err != nil {
		return err
	}
	t.newProcess("fanout", t.Bins.Fanout, []string{"--config", fanoutCfg}, httpOK(t.FanoutHTTP+"/-/ready"))

	// Queriers.
	queryArgs := func(httpAddr, grpcAddr string) []string {
		return append([]string{"query",
			"--http-address=" + httpAddr,
			"--grpc-address=" + grpcAddr,
			"--query.replica-label=replica",
		}, thanosCommon...)
	}
	t.newProcess("query-under-test", t.Bins.Thanos,
		append(queryArgs(a.queryUTHTTP, a.queryUTGRPC), "--endpoint="+a.fanoutGRPC),
		httpOK("http://"+a.queryUTHTTP+"/-/ready"))
	// Every call from this one is snappy-compressed, Info included.
	t.newProcess("query-snappy", t.Bins.Thanos,
		append(queryArgs(a.querySnappyHTTP, a.querySnappyGRPC), "--endpoint="+a.fanoutGRPC, "--grpc-compression=snappy"),
		httpOK("http://"+a.querySnappyHTTP+"/-/ready"))
	sdFile := filepath.Join(t.Dir, "query-reference-endpoints.yaml")
	if err := writeFile(sdFile, referenceEndpoints(t.SidecarA0GRPC, t.SidecarA1GRPC, t.NginxB, t.StoreCGRPC, c)); err != nil {
		return err
	}
	t.newProcess("query-reference", t.Bins.Thanos,
		append(queryArgs(a.queryRefHTTP, a.queryRefGRPC), "--endpoint.sd-config-file="+sdFile),
		httpOK("http://"+a.queryRefHTTP+"/-/ready"))
	return nil
}

func nginxConfig(dir, listen, upstream string, c CertPaths) string {
	tmp := func(name string) string { return filepath.Join(dir, "tmp", name) }
	return fmt.Sprintf(`# nginx for cluster b: TLS with client certificates, gRPC to sidecar b.
worker_processes 1;
pid %s;
error_log stderr info;

events {
    worker_connections 1024;
}

http {
    access_log off;
    client_body_temp_path %s;
    proxy_temp_path %s;
    fastcgi_temp_path %s;
    uwsgi_temp_path %s;
    scgi_temp_path %s;

    # Protocol versions are negotiated before SNI picks a server, so they are
    # set here: in the b server alone they would not apply (nginx 1.22's
    # default lacks TLSv1.3, which the Thanos querier requires by default).
    ssl_protocols TLSv1.2 TLSv1.3;

    # Any SNI name but b.remote.test (or none) is refused in the handshake.
    server {
        listen %s ssl http2 default_server;
        ssl_reject_handshake on;
    }

    server {
        listen %s ssl http2;
        server_name b.remote.test;

        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_client_certificate %s;
        ssl_verify_client on;

        client_max_body_size 0;

        location / {
            grpc_pass grpc://%s;
            grpc_read_timeout 300s;
            grpc_send_timeout 300s;
        }
    }
}
`, filepath.Join(dir, "nginx.pid"), tmp("client_body"), tmp("proxy"), tmp("fastcgi"), tmp("uwsgi"), tmp("scgi"),
		listen, listen, c.ServerBCert, c.ServerBKey, c.CAClient, upstream)
}

func fanoutConfig(grpcAddr, httpAddr, dnsAddr, a0, a1, nginxB string, c CertPaths) string {
	q := strconv.Quote
	return fmt.Sprintf(`grpc:
  listen: %s
  # Nothing balances load here: stop at once.
  shutdown_delay: 0s
http:
  listen: %s
info:
  interval: 2s
  timeout: 5s
discovery:
  nameservers: [%s]
  refresh_interval: 10s
remotes:
  - name: a
    targets: [%s, %s]
    # Thanos's own snappy encoding, both ways, with real sidecars.
    compression: snappy
    tls:
      ca_file: %s
      cert_file: %s
      key_file: %s
      server_name: a.remote.test
  - name: b
    targets: [%s]
    tls:
      ca_file: %s
      cert_file: %s
      key_file: %s
      server_name: b.remote.test
    authority: b.remote.test
  - name: c
    targets: ["dnssrv+_grpc._tcp.c.remote.test"]
    # A real grpc-go peer reading and answering gzip, in every scenario.
    compression: gzip
    tls:
      ca_file: %s
      cert_file: %s
      key_file: %s
`, q(grpcAddr), q(httpAddr), q(dnsAddr),
		q(a0), q(a1), q(c.CAA), q(c.ClientCert), q(c.ClientKey),
		q(nginxB), q(c.CAB), q(c.ClientCert), q(c.ClientKey),
		q(c.CAC), q(c.ClientCert), q(c.ClientKey))
}

// referenceEndpoints is the --endpoint.sd-config-file of the reference
// querier (cmd/thanos/endpointset.go, EndpointConfig, in v0.42.4).
func referenceEndpoints(a0, a1, nginxB, storeC string, c CertPaths) string {
	var b strings.Builder
	b.WriteString("endpoints:\n")
	for _, e := range []struct{ addr, serverName, ca string }{
		{a0, "a.remote.test", c.CAA},
		{a1, "a.remote.test", c.CAA},
		{nginxB, "b.remote.test", c.CAB},
		{storeC, "c.remote.test", c.CAC},
	} {
		fmt.Fprintf(&b, `  - address: %s
    client_config:
      server_name: %s
      tls_config:
        enabled: true
        ca_file: %s
        cert_file: %s
        key_file: %s
`, strconv.Quote(e.addr), e.serverName, strconv.Quote(e.ca), strconv.Quote(c.ClientCert), strconv.Quote(c.ClientKey))
	}
	return b.String()
}

func findBinaries() (Binaries, error) {
	var b Binaries
	for _, s := range []struct {
		env, fallback string
		dst           *string
	}{
		{"THANOS_BIN", "", &b.Thanos},
		{"FANOUT_BIN", "", &b.Fanout},
		{"PROMETHEUS_BIN", "prometheus", &b.Prometheus},
		{"PROMTOOL_BIN", "promtool", &b.Promtool},
		{"NGINX_BIN", "nginx", &b.Nginx},
	} {
		path := os.Getenv(s.env)
		if path == "" {
			if s.fallback == "" {
				return b, fmt.Errorf("%s is not set (scripts/interop sets every *_BIN variable)", s.env)
			}
			p, err := exec.LookPath(s.fallback)
			if err != nil {
				return b, fmt.Errorf("%s is not set and %s is not in PATH: %w", s.env, s.fallback, err)
			}
			path = p
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return b, fmt.Errorf("%s=%s: %w", s.env, path, err)
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return b, fmt.Errorf("%s=%s is not an executable file (%v)", s.env, abs, err)
		}
		*s.dst = abs
	}
	return b, nil
}

// waitFanoutEndpoints waits until want endpoints of a thanos-fanout are up.
func (t *Topology) waitFanoutEndpoints(ctx context.Context, httpBase string, want int) error {
	var last string
	err := poll(ctx, func() (bool, error) {
		if err := t.proc("fanout").exitErr(); err != nil {
			return false, err
		}
		up, total, err := FanoutEndpointsUp(ctx, httpBase)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = fmt.Sprintf("%d of %d endpoints up", up, total)
		return up == want && total == want, nil
	})
	if err != nil {
		return fmt.Errorf("thanos-fanout: waiting for %d remote endpoints up (last: %s): %w\n%s", want, last, err, t.Logs("fanout"))
	}
	return nil
}

// storeStatus is one entry of a querier's /api/v1/stores.
type storeStatus struct {
	Name      string              `json:"name"`
	LastError *string             `json:"lastError"`
	LabelSets []map[string]string `json:"labelSets"`
	MinTime   int64               `json:"minTime"`
	MaxTime   int64               `json:"maxTime"`
}

// Stores returns a querier's /api/v1/stores by component type.
func Stores(ctx context.Context, base string) (map[string][]storeStatus, error) {
	r, err := APIGet(ctx, base, "/api/v1/stores", nil)
	if err != nil {
		return nil, err
	}
	var out map[string][]storeStatus
	if err := json.Unmarshal(r.Data, &out); err != nil {
		return nil, fmt.Errorf("decoding stores of %s: %w", base, err)
	}
	return out, nil
}

// waitStores waits until the querier under test has exactly thanos-fanout
// healthy, announcing the external label sets of all four remote endpoints
// (a querier prunes by them, and thanos-fanout is ready as soon as its first
// Info round ends, whichever remotes answered), and the reference querier
// exactly the four remote endpoints.
func (t *Topology) waitStores(ctx context.Context) error {
	for _, q := range []struct {
		proc, base string
		want       map[string][]string // store name -> label sets
	}{
		{"query-under-test", t.QueryUnderTest, map[string][]string{
			t.FanoutGRPC: {"cluster=a,replica=0", "cluster=a,replica=1", "cluster=b", "cluster=c"},
		}},
		{"query-snappy", t.QuerySnappy, map[string][]string{
			t.FanoutGRPC: {"cluster=a,replica=0", "cluster=a,replica=1", "cluster=b", "cluster=c"},
		}},
		{"query-reference", t.QueryReference, map[string][]string{
			t.SidecarA0GRPC: {"cluster=a,replica=0"},
			t.SidecarA1GRPC: {"cluster=a,replica=1"},
			t.NginxB:        {"cluster=b"},
			t.StoreCGRPC:    {"cluster=c"},
		}},
	} {
		var desc string
		err := poll(ctx, func() (bool, error) {
			stores, err := Stores(ctx, q.base)
			if err != nil {
				desc = err.Error()
				return false, nil
			}
			got := map[string][]string{}
			desc = describeStores(stores)
			for _, list := range stores {
				for _, s := range list {
					if s.LastError != nil {
						return false, nil
					}
					got[s.Name] = formatLabelSets(s.LabelSets)
				}
			}
			return maps.EqualFunc(got, q.want, slices.Equal), nil
		})
		if err != nil {
			return fmt.Errorf("%s: waiting for stores %v (last: %s): %w\n%s", q.proc, q.want, desc, err, t.Logs(q.proc))
		}
		logf("  %s stores: %s", q.proc, desc)
	}
	return nil
}

// describeStores summarizes a querier's stores in one line.
func describeStores(stores map[string][]storeStatus) string {
	var parts []string
	for typ, list := range stores {
		for _, s := range list {
			state := "healthy"
			if s.LastError != nil {
				state = "error: " + *s.LastError
			}
			parts = append(parts, fmt.Sprintf("%s %s {%s} %s", typ, s.Name, strings.Join(formatLabelSets(s.LabelSets), "} {"), state))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

// formatLabelSets renders label sets as sorted "k=v,k=v" strings.
func formatLabelSets(sets []map[string]string) []string {
	out := make([]string, 0, len(sets))
	for _, set := range sets {
		pairs := make([]string, 0, len(set))
		for _, k := range slices.Sorted(maps.Keys(set)) {
			pairs = append(pairs, k+"="+set[k])
		}
		out = append(out, strings.Join(pairs, ","))
	}
	slices.Sort(out)
	return out
}

// waitSameAnswer waits until promql at MaxT gives the same non-empty result
// on both queriers.
func (t *Topology) waitSameAnswer(ctx context.Context, promql string) error {
	var last string
	err := poll(ctx, func() (bool, error) {
		var results [2]string
		for i, base := range []string{t.QueryUnderTest, t.QueryReference} {
			r, err := InstantQuery(ctx, base, promql, t.MaxT)
			if err != nil {
				last = err.Error()
				return false, nil
			}
			results[i] = string(r.Data)
		}
		last = fmt.Sprintf("under test: %s; reference: %s", results[0], results[1])
		return results[0] == results[1] && !strings.Contains(results[0], `"result":[]`), nil
	})
	if err != nil {
		return fmt.Errorf("queriers: waiting for the same non-empty %s (last: %s): %w", promql, last, err)
	}
	logf("  %s = %s", promql, last)
	return nil
}

// reportExited prints the log tail of every process that has exited.
func (t *Topology) reportExited() {
	t.mu.Lock()
	names := slices.Clone(t.order)
	t.mu.Unlock()
	for _, name := range names {
		if err := t.proc(name).exitErr(); err != nil {
			fmt.Fprintf(os.Stderr, "\n--- %s %v; last lines of %s:\n%s\n", name, err, t.proc(name).logPath, t.Logs(name))
		}
	}
	fmt.Fprintf(os.Stderr, "\ninterop: configs, data and logs are in %s\n", t.Dir)
}

// stopAll stops every process at once.
func (t *Topology) stopAll() {
	t.mu.Lock()
	procs := make([]*process, 0, len(t.procs))
	for _, p := range t.procs {
		procs = append(procs, p)
	}
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() {
			if err := p.stop(15 * time.Second); err != nil {
				logf("%v", err)
			}
		})
	}
	wg.Wait()
}

// ---------------------------------------------------------------------------
// Processes.

// process is one program of the topology; it can be stopped and started
// again with the same arguments. Its stdout and stderr are appended to
// Dir/logs/<name>.log.
type process struct {
	name    string
	path    string
	args    []string
	dir     string
	logPath string
	ready   func(ctx context.Context) error

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the current run has exited
	err    error         // how the last run ended
}

func (t *Topology) newProcess(name, path string, args []string, ready func(context.Context) error) *process {
	p := &process{
		name: name, path: path, args: args, dir: t.Dir,
		logPath: filepath.Join(t.Dir, "logs", name+".log"),
		ready:   ready,
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.procs[name] = p
	t.order = append(t.order, name)
	return p
}

// proc returns a registered process; an unknown name is a bug.
func (t *Topology) proc(name string) *process {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.procs[name]
	if !ok {
		panic("interop: no process " + name)
	}
	return p
}

// spawns carries exec.Cmd.Start calls to one goroutine locked to its OS
// thread for the life of the test binary: Pdeathsig fires when the thread
// that forked a child ends, so the children die with the test binary (a
// go test -timeout panic runs no deferred teardown).
var spawns = make(chan func())

func init() {
	go func() {
		runtime.LockOSThread() // never unlocked
		for f := range spawns {
			f()
		}
	}()
}

func spawn(cmd *exec.Cmd) error {
	done := make(chan error)
	spawns <- func() { done <- cmd.Start() }
	return <-done
}

// startGroupGuard starts a shell that kills process group pgid as soon as
// the returned pipe closes: when the test binary dies in any way (a panic in
// a test or the -timeout alarm runs no teardown, and Pdeathsig reaches only
// direct children, not nginx's workers), or when the caller closes it.
func startGroupGuard(pgid int) (io.Closer, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("group guard pipe: %w", err)
	}
	defer r.Close()
	guard := exec.Command("/bin/sh", "-c", `read -r _; kill -9 "-$1" 2>/dev/null; exit 0`, "interop-guard", strconv.Itoa(pgid))
	guard.Stdin = r
	// Not in the terminal's process group: Ctrl-C must not end the guard
	// before the test binary does.
	guard.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := guard.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("starting group guard: %w", err)
	}
	go guard.Wait() //nolint:errcheck // reaps the guard
	return w, nil
}

func (p *process) start() error {
	if p.running() {
		return fmt.Errorf("%s is already running", p.name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: opening log: %w", p.name, err)
	}
	fmt.Fprintf(logFile, "=== %s interop: starting %s %s\n", time.Now().Format(time.RFC3339Nano), p.path, strings.Join(p.args, " "))
	cmd := exec.Command(p.path, p.args...)
	cmd.Dir = p.dir
	// Inherits FANOUT_BIN on purpose: thanos-fanout must ignore FANOUT_*
	// variables that are not config sections.
	cmd.Env = os.Environ()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own process group, so that it can be killed whole (nginx's workers);
	// SIGKILL when the test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := spawn(cmd); err != nil {
		logFile.Close()
		return fmt.Errorf("starting %s (%s): %w", p.name, p.path, err)
	}
	pid := cmd.Process.Pid
	guard, err := startGroupGuard(pid)
	if err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = cmd.Wait()
		logFile.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.err = cmd, exited, nil
	go func() {
		err := cmd.Wait()
		if err == nil {
			err = errors.New("exited with status 0")
		}
		// Whatever the process left in its group (nginx workers) goes too.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		guard.Close()
		fmt.Fprintf(logFile, "=== %s interop: %s %v\n", time.Now().Format(time.RFC3339Nano), p.name, err)
		logFile.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

// running tells whether the process was started and has not exited.
func (p *process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.exited)
}

// exitErr is how the process ended, or nil while it runs (or never ran).
func (p *process) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || !isClosed(p.exited) {
		return nil
	}
	return p.err
}

// waitReady polls the readiness check until it passes, the process exits or
// ctx ends.
func (p *process) waitReady(ctx context.Context) error {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return fmt.Errorf("%s was never started", p.name)
	}
	var last error
	for {
		select {
		case <-exited:
			return fmt.Errorf("%s %v before it was ready; last lines of %s:\n%s", p.name, p.exitErr(), p.logPath, tailFile(p.logPath, 40))
		default:
		}
		if p.ready == nil {
			return nil
		}
		checkCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = p.ready(checkCtx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready (%v): %w; last lines of %s:\n%s", p.name, last, ctx.Err(), p.logPath, tailFile(p.logPath, 40))
		case <-exited:
		case <-time.After(pollInterval):
		}
	}
}

// stop sends SIGTERM, waits up to grace, then kills the process group; once
// the process has exited, the rest of its group is killed too. A process that
// is not running is left alone.
func (p *process) stop(grace time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	pid := cmd.Process.Pid
	if !isClosed(exited) {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	var err error
	select {
	case <-exited:
	case <-time.After(grace):
		err = fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.name, grace)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
	}
	return err
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// ---------------------------------------------------------------------------
// Readiness checks and helpers.

var httpClient = &http.Client{Timeout: 2 * time.Minute}

// fetch GETs u and returns the status line and the whole body.
func fetch(ctx context.Context, u string) (status string, body []byte, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", nil, fmt.Errorf("GET %s: %w", u, err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		return resp.Status, nil, fmt.Errorf("GET %s: reading body: %w", u, err)
	}
	return resp.Status, body, nil
}

func httpGet(ctx context.Context, u string) ([]byte, error) {
	status, body, err := fetch(ctx, u)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(status, "200") {
		return body, fmt.Errorf("GET %s: %s: %.200s", u, status, body)
	}
	return body, nil
}

func httpOK(u string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := httpGet(ctx, u)
		return err
	}
}

// h2TLSReady checks that addr completes a TLS handshake for serverName with
// the client certificate, negotiates h2 and answers the HTTP/2 preface with a
// frame (with TLS 1.3 a rejected client certificate only shows on reading).
func h2TLSReady(addr, serverName, caFile, certFile, keyFile string) func(context.Context) error {
	return func(ctx context.Context) error {
		caPEM, err := os.ReadFile(caFile)
		if err != nil {
			return fmt.Errorf("reading %s: %w", caFile, err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(caPEM) {
			return fmt.Errorf("no certificate in %s", caFile)
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("loading client certificate: %w", err)
		}
		d := tls.Dialer{Config: &tls.Config{
			ServerName: serverName, RootCAs: roots, Certificates: []tls.Certificate{cert},
			NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12,
		}}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("TLS to %s as %s: %w", addr, serverName, err)
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			return fmt.Errorf("TLS to %s: ALPN %q, want h2", addr, p)
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = tc.SetDeadline(dl)
		}
		// Client preface and an empty SETTINGS frame.
		preface := append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)
		if _, err := tc.Write(preface); err != nil {
			return fmt.Errorf("HTTP/2 preface to %s: %w", addr, err)
		}
		frame := make([]byte, 9)
		if _, err := io.ReadFull(tc, frame); err != nil {
			return fmt.Errorf("HTTP/2 frame from %s: %w", addr, err)
		}
		return nil
	}
}

// poll calls f every pollInterval until it returns true or an error, or ctx
// ends.
func poll(ctx context.Context, f func() (bool, error)) error {
	for {
		ok, err := f()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// portSet hands out distinct free TCP ports on 127.0.0.1 for the processes
// of the topology to bind. They are taken below the kernel's ephemeral range:
// a port from that range, free when looked at, can be the source port of any
// outgoing connection (a scrape, a dial) by the time its process binds it,
// which failed a setup with "address already in use".
type portSet struct {
	mu   sync.Mutex
	used map[int]bool
	next int
	low  int // the ephemeral range's first port; ours stay below
}

// firstListenPort is where handed-out ports start: above the well-known and
// most registered services' ports.
const firstListenPort = 20000

func newPortSet() *portSet {
	low := ephemeralLow()
	// Start somewhere in our range so that suites running at once on one
	// machine rarely probe the same ports.
	start := firstListenPort + int(time.Now().UnixNano()%int64(low-firstListenPort))
	return &portSet{used: map[int]bool{}, next: start, low: low}
}

// ephemeralLow reads the first port of the kernel's ephemeral range
// (Linux's default 32768 when it cannot be read).
func ephemeralLow() int {
	const fallback = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return fallback
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return fallback
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil || low <= firstListenPort+1000 {
		return fallback
	}
	return low
}

// addr returns "127.0.0.1:PORT" with a port below the ephemeral range that
// was free a moment ago and was not handed out before.
func (s *portSet) addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range s.low - firstListenPort {
		port := s.next
		s.next++
		if s.next >= s.low {
			s.next = firstListenPort
		}
		if s.used[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		s.used[port] = true
		return fmt.Sprintf("127.0.0.1:%d", port)
	}
	panic(fmt.Sprintf("interop: no free port in %d-%d", firstListenPort, s.low-1))
}

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// tailFile returns about the last n lines of a file.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const maxBytes = 16 << 10
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(log: %v)", err)
	}
	off := max(st.Size()-maxBytes, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Sprintf("(log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // partial first line
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var startTime = time.Now()

func logf(format string, args ...any) {
	fmt.Printf("interop [%6.1fs] %s\n", time.Since(startTime).Seconds(), fmt.Sprintf(format, args...))
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

func mib(b int64) float64 { return float64(b) / (1 << 20) }
