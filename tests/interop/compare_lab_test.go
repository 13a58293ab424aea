package interop

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Setup names; "direct" is the baseline of every ratio. fanoutBase is
// thanos-fanout built at another revision (FANOUT_BASELINE_BIN), there only
// when one is given.
const (
	setupDirect     = "direct"
	setupHAProxy    = "haproxy"
	setupStacked    = "stacked"
	setupFanout     = "fanout"
	setupFanoutBase = "fanout-base"
)

// setupOrder is the setups in table order: the baseline build, if any,
// right after thanos-fanout.
func setupOrder(baseline bool) []string {
	names := []string{setupDirect, setupHAProxy, setupStacked, setupFanout}
	if baseline {
		names = append(names, setupFanoutBase)
	}
	return names
}

// compareLab is the comparison's topology: the remote stores, and four
// setups (five with a baseline build) in front of the first K of them for
// every K of the mode.
type compareLab struct {
	mode    compareMode
	topo    *Topology // process management, ports and work dir only
	bins    Binaries
	haproxy string
	// baseline is thanos-fanout built at baselineRev (a short commit id);
	// empty without one.
	baseline, baselineRev string

	pki     *pki
	certs   CertPaths
	data    Dataset
	metrics []benchMetric
	remotes []*benchRemote
	// setups[K] are the setups over remotes[:K], in setupOrder.
	setups map[int][]*compareSetup
	// clientPEM is the client certificate and key in one file (HAProxy's crt).
	clientPEM string
}

// benchMetric is one generated metric: Total series over the main remotes,
// PerRemote on each.
type benchMetric struct {
	Name      string `json:"name"`
	Total     int    `json:"total"`
	PerRemote int    `json:"per_remote"`
}

// benchRemote is one remote: a thanos store gateway with its own CA and a
// server certificate for Name+".remote.test" only, dialled by IP.
type benchRemote struct {
	Name       string // r00, r01, ...
	GRPC, HTTP string
	ServerName string
	CA         string
	proc       *process
}

// compareSetup is one way of reaching K remotes.
type compareSetup struct {
	Name  string
	K     int
	Query string   // the front querier's HTTP base
	front *process // the front querier
	hop   *process // the middle hop; nil for direct
	// Where a StoreAPI client reads the K remotes' series: the stores
	// themselves (direct, TLS), HAProxy's frontends, or one middle hop.
	targets []*grpcTarget
}

// grpcTarget is a StoreAPI endpoint and the connection to it.
type grpcTarget struct {
	addr string
	tls  *tls.Config // nil: plaintext
	once sync.Once
	conn *grpc.ClientConn
	err  error
}

func (g *grpcTarget) dial() (*grpc.ClientConn, error) {
	g.once.Do(func() {
		creds := insecure.NewCredentials()
		if g.tls != nil {
			creds = credentials.NewTLS(g.tls)
		}
		g.conn, g.err = grpc.NewClient(g.addr, grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	})
	return g.conn, g.err
}

// metricName names a metric after its series per query: bench_10k.
func metricName(total int) string {
	switch {
	case total >= 1_000_000 && total%1_000_000 == 0:
		return fmt.Sprintf("bench_%dm", total/1_000_000)
	case total >= 1_000 && total%1_000 == 0:
		return fmt.Sprintf("bench_%dk", total/1_000)
	default:
		return fmt.Sprintf("bench_%d", total)
	}
}

// build generates the data and certificates, starts every process and waits
// until every front querier sees all its remotes.
func (l *compareLab) build() error {
	m := l.mode
	dir := l.topo.Dir
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	var err error
	if l.pki, l.certs, err = newPKI(filepath.Join(dir, "certs")); err != nil {
		return err
	}
	l.clientPEM = filepath.Join(dir, "certs", "client-with-key.pem")
	if err := concatFiles(l.clientPEM, l.certs.ClientCert, l.certs.ClientKey); err != nil {
		return err
	}

	for _, size := range m.Sizes {
		l.metrics = append(l.metrics, benchMetric{Name: metricName(size), Total: size, PerRemote: size / m.Remotes})
	}
	maxK := slices.Max(append(slices.Clone(m.RemoteScale), m.Remotes))

	// Two block layouts: every metric for the main remotes; only the
	// smallest for the remotes beyond (the remote-scaling rows query only
	// that one).
	step := time.Now()
	l.data = newDataset(time.Now())
	full := filepath.Join(dir, "blocks-full")
	if err := writeBenchBlock(full, l.data, l.metrics); err != nil {
		return fmt.Errorf("generating blocks: %w", err)
	}
	small := full
	if maxK > m.Remotes && len(l.metrics) > 1 {
		small = filepath.Join(dir, "blocks-small")
		if err := writeBenchBlock(small, l.data, l.metrics[:1]); err != nil {
			return fmt.Errorf("generating blocks: %w", err)
		}
	}
	_, fullBytes, _ := blockStats(full)
	logf("data: %s; per main remote %d series (%s), %.1f MiB of blocks; %d samples per series",
		since(step), l.seriesPerMainRemote(), l.describeMetrics(), mib(fullBytes), l.data.Steps)

	// Remotes.
	step = time.Now()
	for i := range maxK {
		r, err := l.newRemote(i, map[bool]string{true: full, false: small}[i < m.Remotes])
		if err != nil {
			return err
		}
		l.remotes = append(l.remotes, r)
	}
	if err := l.startAll(l.remoteProcs()); err != nil {
		return err
	}
	logf("%d remote stores ready after %s", maxK, since(step))

	// Setups.
	step = time.Now()
	l.setups = map[int][]*compareSetup{}
	for _, k := range l.remoteCounts() {
		setups, err := l.defineSetups(k)
		if err != nil {
			return err
		}
		l.setups[k] = setups
		var procs []*process
		for _, s := range setups {
			if s.hop != nil {
				procs = append(procs, s.hop)
			}
			procs = append(procs, s.front)
		}
		if err := l.startAll(procs); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for _, k := range l.remoteCounts() {
		for _, s := range l.setups[k] {
			if err := l.waitFront(ctx, s); err != nil {
				return err
			}
		}
	}
	logf("setups for %v remotes ready after %s", l.remoteCounts(), since(step))
	return nil
}

// remoteCounts are the K that get setups, ascending.
func (l *compareLab) remoteCounts() []int {
	ks := append(slices.Clone(l.mode.RemoteScale), l.mode.Remotes)
	slices.Sort(ks)
	return slices.Compact(ks)
}

func (l *compareLab) seriesPerMainRemote() int {
	n := 0
	for _, m := range l.metrics {
		n += m.PerRemote
	}
	return n
}

func (l *compareLab) describeMetrics() string {
	var parts []string
	for _, m := range l.metrics {
		parts = append(parts, fmt.Sprintf("%s: %d", m.Name, m.PerRemote))
	}
	return strings.Join(parts, ", ")
}

func (l *compareLab) remoteProcs() []*process {
	var procs []*process
	for _, r := range l.remotes {
		procs = append(procs, r.proc)
	}
	return procs
}

// startAll starts procs and waits until each is ready.
func (l *compareLab) startAll(procs []*process) error {
	for _, p := range procs {
		if err := p.start(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for _, p := range procs {
		if err := p.waitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// writeBenchBlock writes one TSDB block with every metric's series into dir:
// Kubernetes-like labels, one sample per SampleInterval over the dataset's
// span, half of the series counters with uneven increments, half gauges.
func writeBenchBlock(dir string, d Dataset, metrics []benchMetric) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ctx := context.Background()
	// The head must accept the whole span in any order of series: a chunk
	// range of four spans keeps its lower append bound before the start.
	w, err := tsdb.NewBlockWriter(slog.New(slog.DiscardHandler), dir, 4*DataSpan.Milliseconds())
	if err != nil {
		return err
	}
	defer w.Close()
	app := w.Appender(ctx)
	pending := 0
	for _, m := range metrics {
		for i := range m.PerRemote {
			lset := labels.FromStrings(
				"__name__", m.Name,
				"job", "bench",
				"namespace", fmt.Sprintf("ns-%02d", i%20),
				"pod", fmt.Sprintf("pod-%07d", i),
				"container", []string{"app", "sidecar", "init"}[i%3],
			)
			counter := i%2 == 0
			v := float64(i % 1000)
			for step := range d.Steps {
				if counter {
					v += float64((i*7 + step*13) % 11)
				} else {
					v = float64((i*31+step*17)%1000)/8 + float64(i%7)
				}
				if _, err := app.Append(0, lset, d.Timestamp(step), v); err != nil {
					return fmt.Errorf("append %s: %w", lset, err)
				}
			}
			if pending++; pending == 2000 {
				if err := app.Commit(); err != nil {
					return err
				}
				app, pending = w.Appender(ctx), 0
			}
		}
	}
	if err := app.Commit(); err != nil {
		return err
	}
	_, err = w.Flush(ctx)
	return err
}

// newRemote gives remote i its CA, server certificate and bucket (blocks
// hard-linked from src, meta.json with external label cluster=rNN) and
// defines its thanos store process.
func (l *compareLab) newRemote(i int, src string) (*benchRemote, error) {
	name := fmt.Sprintf("r%02d", i)
	r := &benchRemote{Name: name, GRPC: l.topo.ports.addr(), HTTP: l.topo.ports.addr(), ServerName: name + ".remote.test"}
	ca, err := l.pki.newCA(name)
	if err != nil {
		return nil, err
	}
	l.pki.cas[name] = ca
	r.CA = filepath.Join(l.pki.dir, "ca-"+name+".pem")
	if err := writePEM(r.CA, "CERTIFICATE", ca.cert.Raw, 0o644); err != nil {
		return nil, err
	}
	cert, key, err := l.pki.mint(name, "server-"+name, false, r.ServerName)
	if err != nil {
		return nil, err
	}

	base := filepath.Join(l.topo.Dir, "remotes", name)
	bucket := filepath.Join(base, "bucket")
	if err := linkTree(src, bucket); err != nil {
		return nil, err
	}
	if err := addThanosMeta(bucket, map[string]string{"cluster": name}); err != nil {
		return nil, err
	}
	objstore := filepath.Join(base, "objstore.yaml")
	if err := writeFile(objstore, "type: FILESYSTEM\nconfig:\n  directory: "+strconv.Quote(bucket)+"\n"); err != nil {
		return nil, err
	}
	r.proc = l.topo.newProcess("store-"+name, l.bins.Thanos, []string{"store",
		"--objstore.config-file=" + objstore,
		"--data-dir=" + filepath.Join(base, "cache"),
		"--grpc-address=" + r.GRPC,
		"--http-address=" + r.HTTP,
		"--grpc-server-tls-cert=" + cert,
		"--grpc-server-tls-key=" + key,
		"--grpc-server-tls-client-ca=" + l.certs.CAClient,
		"--log.level=warn", "--grpc-grace-period=1s", "--http-grace-period=1s",
	}, httpOK("http://"+r.HTTP+"/-/ready"))
	return r, nil
}

// tlsConfig is how a client reaches remote r directly.
func (l *compareLab) tlsConfig(r *benchRemote) (*tls.Config, error) {
	caPEM, err := os.ReadFile(r.CA)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(l.certs.ClientCert, l.certs.ClientKey)
	if err != nil {
		return nil, err
	}
	return &tls.Config{ServerName: r.ServerName, RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// defineSetups writes the configs of the setups over remotes[:k] and
// defines their processes.
func (l *compareLab) defineSetups(k int) ([]*compareSetup, error) {
	dir := filepath.Join(l.topo.Dir, fmt.Sprintf("k%d", k))
	remotes := l.remotes[:k]
	suffix := fmt.Sprintf("-k%d", k)

	// The per-endpoint TLS of the direct front querier and the inner one.
	sdFile := filepath.Join(dir, "endpoints.yaml")
	if err := writeFile(sdFile, l.endpointsSD(remotes)); err != nil {
		return nil, err
	}
	var direct []*grpcTarget
	for _, r := range remotes {
		cfg, err := l.tlsConfig(r)
		if err != nil {
			return nil, err
		}
		direct = append(direct, &grpcTarget{addr: r.GRPC, tls: cfg})
	}

	var setups []*compareSetup
	front := func(name string, endpointArgs ...string) *compareSetup {
		http, grpcAddr := l.topo.ports.addr(), l.topo.ports.addr()
		s := &compareSetup{Name: name, K: k, Query: "http://" + http}
		s.front = l.topo.newProcess("query-"+name+suffix, l.bins.Thanos,
			append(queryArgs(http, grpcAddr), endpointArgs...), httpOK("http://"+http+"/-/ready"))
		setups = append(setups, s)
		return s
	}

	// 1. direct.
	s := front(setupDirect, "--endpoint.sd-config-file="+sdFile)
	s.targets = direct

	// 2. HAProxy: one plaintext h2 frontend per remote.
	var frontends []string
	for range remotes {
		frontends = append(frontends, l.topo.ports.addr())
	}
	haCfg := filepath.Join(dir, "haproxy.cfg")
	if err := writeFile(haCfg, haproxyConfig(remotes, frontends, l.clientPEM)); err != nil {
		return nil, err
	}
	hop := l.topo.newProcess("haproxy"+suffix, l.haproxy, []string{"-db", "-f", haCfg}, tcpReady(frontends[0]))
	var endpointArgs []string
	var haTargets []*grpcTarget
	for _, f := range frontends {
		endpointArgs = append(endpointArgs, "--endpoint="+f)
		haTargets = append(haTargets, &grpcTarget{addr: f})
	}
	s = front(setupHAProxy, endpointArgs...)
	s.hop, s.targets = hop, haTargets

	// 3. stacked: an inner querier with per-endpoint TLS.
	innerHTTP, innerGRPC := l.topo.ports.addr(), l.topo.ports.addr()
	hop = l.topo.newProcess("query-inner"+suffix, l.bins.Thanos,
		append(queryArgs(innerHTTP, innerGRPC), "--endpoint.sd-config-file="+sdFile), httpOK("http://"+innerHTTP+"/-/ready"))
	s = front(setupStacked, "--endpoint="+innerGRPC)
	s.hop, s.targets = hop, []*grpcTarget{{addr: innerGRPC}}

	// 4. thanos-fanout.
	fanGRPC, fanHTTP := l.topo.ports.addr(), l.topo.ports.addr()
	fanCfg := filepath.Join(dir, "fanout.yaml")
	if err := writeFile(fanCfg, l.fanoutConfig(fanGRPC, fanHTTP, remotes)); err != nil {
		return nil, err
	}
	hop = l.topo.newProcess("fanout"+suffix, l.bins.Fanout, []string{"--config", fanCfg}, httpOK("http://"+fanHTTP+"/-/ready"))
	s = front(setupFanout, "--endpoint="+fanGRPC)
	s.hop, s.targets = hop, []*grpcTarget{{addr: fanGRPC}}

	// 5. thanos-fanout at the baseline revision, configured the same way.
	if l.baseline != "" {
		baseGRPC, baseHTTP := l.topo.ports.addr(), l.topo.ports.addr()
		baseCfg := filepath.Join(dir, "fanout-base.yaml")
		if err := writeFile(baseCfg, l.fanoutConfig(baseGRPC, baseHTTP, remotes)); err != nil {
			return nil, err
		}
		hop = l.topo.newProcess("fanout-base"+suffix, l.baseline, []string{"--config", baseCfg}, httpOK("http://"+baseHTTP+"/-/ready"))
		s = front(setupFanoutBase, "--endpoint="+baseGRPC)
		s.hop, s.targets = hop, []*grpcTarget{{addr: baseGRPC}}
	}
	return setups, nil
}

// queryArgs are the flags every querier of the comparison runs with.
func queryArgs(httpAddr, grpcAddr string) []string {
	return []string{"query",
		"--http-address=" + httpAddr,
		"--grpc-address=" + grpcAddr,
		"--query.timeout=10m",
		"--log.level=warn", "--grpc-grace-period=1s", "--http-grace-period=1s",
	}
}

// endpointsSD is an --endpoint.sd-config-file with per-endpoint TLS (see
// referenceEndpoints).
func (l *compareLab) endpointsSD(remotes []*benchRemote) string {
	var b strings.Builder
	b.WriteString("endpoints:\n")
	for _, r := range remotes {
		fmt.Fprintf(&b, `  - address: %s
    client_config:
      server_name: %s
      tls_config:
        enabled: true
        ca_file: %s
        cert_file: %s
        key_file: %s
`, strconv.Quote(r.GRPC), r.ServerName, strconv.Quote(r.CA), strconv.Quote(l.certs.ClientCert), strconv.Quote(l.certs.ClientKey))
	}
	return b.String()
}

// haproxyConfig has one plaintext HTTP/2 frontend per remote, each with a
// backend that originates TLS with the remote's CA, SNI and client
// certificate.
func haproxyConfig(remotes []*benchRemote, frontends []string, clientPEM string) string {
	var b strings.Builder
	// http-reuse never and max-reuse 0: one backend connection per stream.
	// Otherwise HAProxy 2.6 multiplexes the querier's concurrent Series
	// streams onto one HTTP/2 connection to the store and, under a few
	// concurrent queries, resets that connection mid-answer once a stream
	// has used up its 64 KiB window (log: SD--; querier: "unexpected EOF"
	// or "server closed the stream without sending trailers"); http-reuse
	// never alone still does it.
	b.WriteString(`# TLS origination towards every remote; one frontend per remote.
global
    maxconn 4000
    log stderr format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    http-reuse never
    timeout connect 5s
    timeout client 15m
    timeout server 15m
`)
	for i, r := range remotes {
		fmt.Fprintf(&b, `
frontend %[1]s
    bind %[2]s proto h2
    default_backend %[1]s

backend %[1]s
    server %[1]s %[3]s ssl verify required ca-file %[4]s crt %[5]s sni str(%[6]s) verifyhost %[6]s alpn h2 max-reuse 0
`, r.Name, frontends[i], r.GRPC, r.CA, clientPEM, r.ServerName)
	}
	return b.String()
}

// fanoutConfig is thanos-fanout with one remote per store. The baseline
// build reads it too, so it holds only keys every revision since 23ede13
// accepts (grpc.listen, http.listen, log.level; remotes[] name, targets and
// tls ca_file, cert_file, key_file, server_name): a key added later would
// fail an older baseline's start (deny_unknown_fields).
func (l *compareLab) fanoutConfig(grpcAddr, httpAddr string, remotes []*benchRemote) string {
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, "grpc:\n  listen: %s\n  shutdown_delay: 0s\nhttp:\n  listen: %s\nlog:\n  level: warn\nremotes:\n", q(grpcAddr), q(httpAddr))
	for _, r := range remotes {
		fmt.Fprintf(&b, `  - name: %s
    targets: [%s]
    tls:
      ca_file: %s
      cert_file: %s
      key_file: %s
      server_name: %s
`, r.Name, q(r.GRPC), q(r.CA), q(l.certs.ClientCert), q(l.certs.ClientKey), r.ServerName)
	}
	return b.String()
}

// waitFront waits until a setup's front querier has only healthy stores that
// together announce every one of its K clusters, and answers a count.
func (l *compareLab) waitFront(ctx context.Context, s *compareSetup) error {
	want := map[string]bool{}
	for _, r := range l.remotes[:s.K] {
		want["cluster="+r.Name] = true
	}
	var last string
	err := poll(ctx, func() (bool, error) {
		if err := s.front.exitErr(); err != nil {
			return false, err
		}
		if s.hop != nil {
			if err := s.hop.exitErr(); err != nil {
				return false, err
			}
		}
		stores, err := Stores(ctx, s.Query)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		got := map[string]bool{}
		for _, list := range stores {
			for _, st := range list {
				if st.LastError != nil {
					last = st.Name + ": " + *st.LastError
					return false, nil
				}
				for _, set := range formatLabelSets(st.LabelSets) {
					got[set] = true
				}
			}
		}
		last = fmt.Sprintf("%d of %d clusters", len(got), len(want))
		return maps.Equal(got, want), nil
	})
	if err != nil {
		return fmt.Errorf("%s over %d remotes: waiting for every cluster (last: %s): %w\n%s", s.Name, s.K, last, err,
			tailFile(s.front.logPath, 20))
	}
	return nil
}

// tcpReady passes once addr accepts a TCP connection.
func tcpReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// linkTree hard-links the files under src into dst (directories are made).
func linkTree(src, dst string) error {
	return mirrorTree(src, dst, func(path string, _ os.DirEntry, target string) error {
		return os.Link(path, target)
	})
}

func concatFiles(dst string, srcs ...string) error {
	var out []byte
	for _, s := range srcs {
		b, err := os.ReadFile(s)
		if err != nil {
			return err
		}
		out = append(out, b...)
	}
	return os.WriteFile(dst, out, 0o600)
}
