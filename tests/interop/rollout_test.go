package interop

// Rollout: thanos-fanout as two replicas under a querier's steady load, with
// the replicas restarted one after the other (SIGTERM, as a rolling update
// does), their configs reloaded (SIGHUP) and one of them killed (SIGKILL),
// for each way of registering the replicas in a stock querier:
//
//   - service: --endpoint=<ClusterIP Service>; a TCP relay stands in for
//     kube-proxy (one backend per new connection, picked at random among the
//     ready endpoints).
//   - endpoint-group: --endpoint-group=dnssrv+<headless Service>; the
//     querier's gRPC round-robin across the pods DNS names.
//   - dnssrv: --endpoint=dnssrv+<headless Service>; every pod its own store.
//
// An endpoints controller plays Kubernetes: it probes each replica's
// /-/ready every second (failureThreshold 3), takes a replica out of the
// relay and out of DNS 2 s after its SIGTERM (as endpoint updates propagate)
// or after three failed probes, and puts it back after one passing probe. A
// restarted replica is a new pod: it comes back on new ports, so a querier
// that follows DNS must look it up again.
//
// Every answer is compared with the reference querier's and counted as ok,
// failed (an HTTP or API error), empty or partial (a warning, or data that
// differs). Series calls are counted where they arrive, on the sidecars and
// the store gateway, so the calls per remote endpoint per query show how
// often a query asks each remote.
//
// By default only the recommended registration runs, with the restarts and
// the reload, and must give no bad answer and one Series call per remote
// endpoint per query. FANOUT_ROLLOUT=full runs every registration and the
// kill as well, and prints the table for BENCHMARKS.md. The DNS-based
// registrations run their querier in a private mount namespace whose
// /etc/resolv.conf names a DNS server the test runs on port 53 (needs root).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// rolloutShutdownDelay and rolloutGracePeriod are the replicas'
	// grpc.shutdown_delay and grpc.grace_period.
	rolloutShutdownDelay = "3s"
	rolloutGracePeriod   = "10s"
	// endpointsLag is how long after SIGTERM a replica leaves the
	// endpoints (relay and DNS).
	endpointsLag = 2 * time.Second
	// probePeriod and probeFailureThreshold are the readiness probe's.
	probePeriod           = time.Second
	probeFailureThreshold = 3
	// rolloutClients is how many clients query at once.
	rolloutClients = 4
	// rolloutQueryTimeout bounds one query of the load.
	rolloutQueryTimeout = 30 * time.Second
	// rolloutRecovery bounds the wait after a phase for the querier to see
	// its stores healthy again.
	rolloutRecovery = 90 * time.Second
	// rolloutDNSAddr is where the queriers' DNS server listens (port 53:
	// resolv.conf takes no port).
	rolloutDNSAddr = "127.0.0.153:53"
	// rolloutSRVName is the headless Service's SRV name.
	rolloutSRVName = "_grpc._tcp.fanout.remote.test"
	// recommendedRegistration is the registration the README recommends.
	recommendedRegistration = "service"
)

// registration is one way of registering the replicas in a querier.
type registration struct {
	name string
	// args are the querier's endpoint flags, given the relay's address.
	args func(relay string) []string
	// dns: the querier needs the test's DNS server.
	dns bool
	// stores is how many healthy stores the querier should see.
	stores int
}

var registrations = []registration{
	{"service", func(relay string) []string { return []string{"--endpoint=" + relay} }, false, 1},
	{"endpoint-group", func(string) []string { return []string{"--endpoint-group=dnssrv+" + rolloutSRVName} }, true, 1},
	{"dnssrv", func(string) []string { return []string{"--endpoint=dnssrv+" + rolloutSRVName} }, true, 2},
}

// rolloutQuery is one query of the load; each has a single selector over
// every cluster, so a query makes one Series call on each remote endpoint.
type rolloutQuery struct {
	path   string
	params url.Values
}

func rolloutQueries() []rolloutQuery {
	instant := func(q string) rolloutQuery {
		return rolloutQuery{"/api/v1/query", url.Values{"query": {q}, "time": {ts(topo.MaxT - 60_000)}}}
	}
	ranged := func(q string) rolloutQuery {
		return rolloutQuery{"/api/v1/query_range", url.Values{
			"query": {q}, "start": {ts(topo.MinT)}, "end": {ts(topo.MaxT)}, "step": {"300"},
		}}
	}
	return []rolloutQuery{
		instant(`count by (cluster) (up)`),
		ranged(`max by (cluster) (temperature_celsius)`),
		instant(`sum by (cluster, code) (http_requests_total)`),
		ranged(`sum by (cluster) (request_duration_seconds_count)`),
	}
}

// answerClass is how one answer compares with the reference.
type answerClass int

const (
	answerOK answerClass = iota
	answerFailed
	answerEmpty
	answerPartial
)

func (c answerClass) String() string {
	return [...]string{"ok", "failed", "empty", "partial"}[c]
}

// rolloutAnswer is one query of the load.
type rolloutAnswer struct {
	start, end time.Time
	class      answerClass
	detail     string
}

// phaseResult counts a phase's answers.
type phaseResult struct {
	name           string
	start, end     time.Time
	counts         [4]int
	event          time.Time // the phase's start; the SIGKILL for the kill phase
	badFrom, badTo time.Duration
	examples       []string
	calls          map[string]float64 // remote endpoint -> Series calls received, at the end
	callsPerQuery  map[string]float64 // remote endpoint -> Series calls per answer in the phase
}

func (p *phaseResult) bad() int {
	return p.counts[answerFailed] + p.counts[answerEmpty] + p.counts[answerPartial]
}

func (p *phaseResult) total() int {
	return p.counts[0] + p.counts[1] + p.counts[2] + p.counts[3]
}

// registrationResult is one registration's run.
type registrationResult struct {
	reg           registration
	phases        []*phaseResult
	queries       int
	calls         map[string]float64 // remote endpoint -> Series calls it received
	callsPerQuery map[string]float64 // remote endpoint -> Series calls per query
	killedBackend string
	relayConns    map[string]int
}

func TestRolloutUnderLoad(t *testing.T) {
	full := os.Getenv("FANOUT_ROLLOUT") == "full"
	regs := registrations
	if !full {
		regs = []registration{registrationNamed(recommendedRegistration)}
	}
	queries := rolloutQueries()
	want := make([]json.RawMessage, len(queries))
	for i, q := range queries {
		resp := apiGet(t, topo.QueryReference, q.path, q.params)
		var v any
		if resp.Status != "success" || len(resp.Warnings) > 0 || json.Unmarshal(resp.Data, &v) != nil || isEmptyResult(v) {
			t.Fatalf("reference querier: %s: %s %s %v %.200s", q.params.Get("query"), resp.Status, resp.Error, resp.Warnings, resp.Data)
		}
		want[i] = resp.Data
	}

	var dnsSrv *DNSServer
	if full {
		var err error
		dnsSrv, err = startDNSServerAt(rolloutDNSAddr)
		if err != nil {
			t.Logf("the registrations through the headless Service need a DNS server on %s and are skipped: %v", rolloutDNSAddr, err)
		} else {
			defer dnsSrv.Close()
		}
	}

	var results []*registrationResult
	for _, reg := range regs {
		ok := t.Run(reg.name, func(t *testing.T) {
			if reg.dns && dnsSrv == nil {
				t.Skip("no DNS server for the headless Service")
			}
			r := runRollout(t, reg, full, dnsSrv, queries, want)
			results = append(results, r)
			if reg.name != recommendedRegistration {
				return
			}
			for _, p := range r.phases {
				if p.name == "kill" {
					continue
				}
				if p.bad() > 0 {
					t.Errorf("%s: %d of %d answers bad (failed %d, empty %d, partial %d), e.g.\n  %s",
						p.name, p.bad(), p.total(), p.counts[answerFailed], p.counts[answerEmpty], p.counts[answerPartial],
						strings.Join(p.examples, "\n  "))
				}
			}
			if !full {
				for ep, n := range r.calls {
					if n != float64(r.queries) {
						t.Errorf("remote endpoint %s: %g Series calls for %d queries, want one per query (each remote asked once)", ep, n, r.queries)
					}
				}
			}
			for _, p := range r.phases {
				if p.name == "kill" && p.bad() > 0 && p.badTo > 10*time.Second {
					t.Errorf("kill: bad answers until %s after SIGKILL; want the surviving replica within seconds", p.badTo.Round(100*time.Millisecond))
				}
			}
		})
		if !ok && !full {
			break
		}
	}
	t.Logf("rollout results (shutdown_delay %s, grace_period %s, endpoints lag %s, probe every %s, failureThreshold %d):\n%s",
		rolloutShutdownDelay, rolloutGracePeriod, endpointsLag, probePeriod, probeFailureThreshold, rolloutTable(results))
}

func registrationNamed(name string) registration {
	for _, r := range registrations {
		if r.name == name {
			return r
		}
	}
	panic("no registration " + name)
}

// rolloutTable renders the results as a Markdown table.
func rolloutTable(results []*registrationResult) string {
	var b strings.Builder
	b.WriteString("| registration | phase | answers | failed | empty | partial | bad answers from, to (s after the phase began; kill: after SIGKILL) | Series calls per answer on each remote endpoint |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | --- | --- |\n")
	for _, r := range results {
		for _, p := range r.phases {
			window := "-"
			if p.bad() > 0 {
				window = fmt.Sprintf("%.1f, %.1f", p.badFrom.Seconds(), p.badTo.Seconds())
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %s | %s |\n", r.reg.name, p.name, p.total(),
				p.counts[answerFailed], p.counts[answerEmpty], p.counts[answerPartial], window, describeCalls(p.callsPerQuery))
		}
	}
	for _, r := range results {
		fmt.Fprintf(&b, "\n%s: %d answers, Series calls per answer in all %s", r.reg.name, r.queries, describeCalls(r.callsPerQuery))
		if r.killedBackend != "" {
			fmt.Fprintf(&b, "; killed %s; relay connections per backend %v", r.killedBackend, r.relayConns)
		}
	}
	return b.String()
}

// describeCalls renders calls per answer on a0, a1, b and c: one number
// when they agree to two decimals.
func describeCalls(perQuery map[string]float64) string {
	var parts []string
	for _, ep := range []string{"a0", "a1", "b", "c"} {
		parts = append(parts, fmt.Sprintf("%.2f", perQuery[ep]))
	}
	if len(slices.Compact(slices.Clone(parts))) == 1 {
		return parts[0]
	}
	return strings.Join(parts, " / ")
}

// runRollout runs the load and the phases for one registration.
func runRollout(t *testing.T, reg registration, full bool, dnsSrv *DNSServer, queries []rolloutQuery, want []json.RawMessage) *registrationResult {
	res := &registrationResult{reg: reg}
	relay, err := startRelay(topo.ports.addr())
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	defer relay.Close()
	ctl := &endpointsCtl{t: t, reg: reg.name, relay: relay, dns: dnsSrv}
	defer ctl.stopAll()
	for range 2 {
		if _, err := ctl.startPod(); err != nil {
			t.Fatalf("%v", err)
		}
	}
	ctlCtx, ctlCancel := context.WithCancel(context.Background())
	defer ctlCancel()
	go ctl.run(ctlCtx)
	if err := ctl.waitEndpoints(2, time.Minute); err != nil {
		t.Fatalf("%v", err)
	}

	querier, base, err := startRolloutQuerier(reg, relay.Addr())
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer func() { _ = querier.stop(stopGrace) }()
	if err := waitQuerierStores(base, reg.stores, readyTimeout); err != nil {
		t.Fatalf("%s: %v\n%s", reg.name, err, topo.Logs(querier.name))
	}
	logf("rollout %s: querier sees %d healthy store(s)", reg.name, reg.stores)

	before, err := remoteSeriesStarted()
	if err != nil {
		t.Fatalf("%v", err)
	}

	// The load.
	var (
		mu      sync.Mutex
		answers []rolloutAnswer
		logged  int
		wg      sync.WaitGroup
	)
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	for c := range rolloutClients {
		wg.Go(func() {
			for k := 0; loadCtx.Err() == nil; k++ {
				variant := (2*c + k) % (2 * len(queries))
				qi, partial := variant/2, variant%2 == 0
				q := queries[qi]
				params := url.Values{"partial_response": {strconv.FormatBool(partial)}}
				for key, v := range q.params {
					params[key] = v
				}
				start := time.Now()
				qctx, cancel := context.WithTimeout(context.Background(), rolloutQueryTimeout)
				resp, err := APIGet(qctx, base, q.path, params)
				cancel()
				a := rolloutAnswer{start: start, end: time.Now()}
				a.class, a.detail = classifyAnswer(resp, err, want[qi])
				if a.class != answerOK {
					a.detail = fmt.Sprintf("%s partial_response=%t at %s: %s: %.400s", q.params.Get("query"), partial,
						start.Format("15:04:05.000"), a.class, a.detail)
				}
				mu.Lock()
				answers = append(answers, a)
				if a.class != answerOK {
					if logged++; logged <= 20 {
						logf("rollout %s: %s", reg.name, a.detail)
					}
				}
				mu.Unlock()
			}
		})
	}

	var marks []*phaseResult
	phase := func(name string, run func() error) {
		p := &phaseResult{name: name, start: time.Now()}
		logf("rollout %s: phase %s", reg.name, name)
		if err := run(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		// The phase lasts until the querier sees its stores healthy again
		// and answers well again (every answer of the last 2 s ok), and a
		// few seconds at least after the last action.
		time.Sleep(3 * time.Second)
		if err := waitQuerierStores(base, reg.stores, rolloutRecovery); err != nil {
			t.Errorf("%s: after the phase: %v", name, err)
		}
		recovered := func() bool {
			mu.Lock()
			defer mu.Unlock()
			recent, since := 0, time.Now().Add(-2*time.Second)
			for _, a := range slices.Backward(answers) {
				if a.end.Before(since) {
					break
				}
				if a.class != answerOK {
					return false
				}
				recent++
			}
			return recent >= rolloutClients
		}
		for deadline := time.Now().Add(rolloutRecovery); !recovered(); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%s: answers still bad %s after the phase", name, rolloutRecovery)
				break
			}
		}
		p.end = time.Now()
		p.event = p.start
		if kill := ctl.lastKill(); kill.After(p.start) {
			p.event = kill
		}
		calls, err := remoteSeriesStarted()
		if err != nil {
			t.Fatalf("%v", err)
		}
		p.calls = calls
		marks = append(marks, p)
	}

	phase("steady", func() error { time.Sleep(3 * time.Second); return nil })
	phase("restart", func() error {
		for _, pod := range ctl.livePods() {
			if err := ctl.terminate(pod); err != nil {
				return err
			}
			if _, err := ctl.startPod(); err != nil {
				return err
			}
			if err := ctl.waitEndpoints(2, time.Minute); err != nil {
				return err
			}
		}
		return nil
	})
	phase("reload", func() error { return ctl.reloadAll() })
	if full {
		phase("kill", func() error {
			victim := ctl.podWithMostConns()
			res.killedBackend = victim.name
			if err := ctl.kill(victim); err != nil {
				return err
			}
			if err := ctl.waitEndpoints(1, time.Minute); err != nil {
				return err
			}
			if _, err := ctl.startPod(); err != nil {
				return err
			}
			return ctl.waitEndpoints(2, time.Minute)
		})
	}
	stopLoad()
	wg.Wait()

	after, err := remoteSeriesStarted()
	if err != nil {
		t.Fatalf("%v", err)
	}
	res.queries = len(answers)
	res.calls, res.callsPerQuery = map[string]float64{}, map[string]float64{}
	for ep := range after {
		res.calls[ep] = after[ep] - before[ep]
		res.callsPerQuery[ep] = res.calls[ep] / float64(max(res.queries, 1))
	}
	res.relayConns = relay.connCounts()
	logf("rollout %s: relay connections per backend: %v", reg.name, res.relayConns)

	// An answer belongs to the phase it came back in: a call in flight
	// when a replica goes fails then.
	prev := before
	for i, p := range marks {
		if i > 0 {
			p.start = marks[i-1].end
		}
		for _, a := range answers {
			if a.end.Before(p.start) || !a.end.Before(p.end) {
				continue
			}
			p.counts[a.class]++
			if a.class == answerOK {
				continue
			}
			if len(p.examples) < 5 {
				p.examples = append(p.examples, a.detail)
			}
			from, to := a.start.Sub(p.event), a.end.Sub(p.event)
			if p.bad() == 1 || from < p.badFrom {
				p.badFrom = from
			}
			p.badTo = max(p.badTo, to)
		}
		p.callsPerQuery = map[string]float64{}
		for ep := range p.calls {
			p.callsPerQuery[ep] = (p.calls[ep] - prev[ep]) / float64(max(p.total(), 1))
		}
		prev = p.calls
		logf("rollout %s: %s: %d answers, failed %d, empty %d, partial %d", reg.name, p.name, p.total(),
			p.counts[answerFailed], p.counts[answerEmpty], p.counts[answerPartial])
	}
	res.phases = marks
	if t.Failed() {
		t.Logf("endpoint changes:\n  %s", strings.Join(ctl.history(), "\n  "))
		t.Logf("last lines of the querier's log:\n%s", topo.Logs(querier.name))
	}
	return res
}

// classifyAnswer compares an answer with the reference's data.
func classifyAnswer(resp *APIResponse, err error, want json.RawMessage) (answerClass, string) {
	if err != nil {
		return answerFailed, err.Error()
	}
	if len(resp.Warnings) > 0 {
		return answerPartial, strings.Join(resp.Warnings, "; ")
	}
	var v any
	if json.Unmarshal(resp.Data, &v) == nil && isEmptyResult(v) {
		return answerEmpty, "no series"
	}
	if err := sameData(resp.Data, want); err != nil {
		return answerPartial, err.Error()
	}
	return answerOK, ""
}

// ---------------------------------------------------------------------------
// Replicas and the endpoints controller.

// rolloutPod is one thanos-fanout replica: one process run on its own ports.
type rolloutPod struct {
	name               string
	proc               *process
	grpcAddr, httpAddr string
	cfgPath            string
	host               string // its DNS name

	// Guarded by endpointsCtl.mu.
	termAt time.Time
	ready  bool
	fails  int
	gone   bool
}

// endpointsCtl plays the Kubernetes endpoints controller and kubelet
// readiness probes for the replicas of one registration.
type endpointsCtl struct {
	t     *testing.T
	reg   string
	relay *tcpRelay
	dns   *DNSServer

	mu       sync.Mutex
	pods     []*rolloutPod
	current  []string
	changes  []string
	killedAt time.Time
}

func (c *endpointsCtl) startPod() (*rolloutPod, error) {
	c.mu.Lock()
	n := len(c.pods)
	c.mu.Unlock()
	name := fmt.Sprintf("rollout-%s-%d", c.reg, n)
	pod := &rolloutPod{
		name: name, grpcAddr: topo.ports.addr(), httpAddr: topo.ports.addr(),
		cfgPath: filepath.Join(topo.Dir, name+".yaml"),
		host:    fmt.Sprintf("pod-%d.%s.fanout.remote.test", n, c.reg),
	}
	if err := os.WriteFile(pod.cfgPath, []byte(rolloutFanoutConfig("2s")), 0o644); err != nil {
		return nil, fmt.Errorf("%s: writing config: %w", name, err)
	}
	pod.proc = topo.newProcess(name, topo.Bins.Fanout, []string{
		"--config", pod.cfgPath, "--grpc-address", pod.grpcAddr, "--http-address", pod.httpAddr,
	}, httpOK("http://"+pod.httpAddr+"/-/ready"))
	if c.dns != nil {
		c.dns.SetA(pod.host, "127.0.0.1")
	}
	if err := pod.proc.start(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.pods = append(c.pods, pod)
	c.mu.Unlock()
	logf("rollout %s: started %s on %s", c.reg, name, pod.grpcAddr)
	return pod, nil
}

// rolloutFanoutConfig is the suite's thanos-fanout config with the
// shutdown settings of a rolling update; infoInterval varies for reloads.
func rolloutFanoutConfig(infoInterval string) string {
	cfg := strings.Replace(topo.FanoutConfig, "  shutdown_delay: 0s\n",
		"  shutdown_delay: "+rolloutShutdownDelay+"\n  grace_period: "+rolloutGracePeriod+"\n", 1)
	return strings.Replace(cfg, "  interval: 2s\n", "  interval: "+infoInterval+"\n", 1)
}

// run probes every pod each probePeriod and keeps the endpoints current.
func (c *endpointsCtl) run(ctx context.Context) {
	for {
		c.mu.Lock()
		pods := slices.Clone(c.pods)
		c.mu.Unlock()
		var wg sync.WaitGroup
		for _, pod := range pods {
			wg.Go(func() {
				pctx, cancel := context.WithTimeout(ctx, probePeriod)
				_, err := httpGet(pctx, "http://"+pod.httpAddr+"/-/ready")
				cancel()
				c.mu.Lock()
				if err == nil {
					pod.fails, pod.ready = 0, true
				} else if pod.fails++; pod.fails >= probeFailureThreshold {
					pod.ready = false
				}
				c.mu.Unlock()
			})
		}
		wg.Wait()
		c.sync()
		select {
		case <-ctx.Done():
			return
		case <-time.After(probePeriod):
		}
	}
}

// sync recomputes the endpoints and pushes a change to the relay and DNS.
func (c *endpointsCtl) sync() {
	c.mu.Lock()
	defer c.mu.Unlock()
	var addrs []string
	var srvs []SRVTarget
	for _, pod := range c.pods {
		leaving := !pod.termAt.IsZero() && time.Since(pod.termAt) >= endpointsLag
		if pod.gone || leaving || !pod.ready {
			continue
		}
		addrs = append(addrs, pod.grpcAddr)
		_, port, _ := net.SplitHostPort(pod.grpcAddr)
		p, _ := strconv.Atoi(port)
		srvs = append(srvs, SRVTarget{Target: pod.host, Port: uint16(p)})
	}
	if slices.Equal(addrs, c.current) {
		return
	}
	c.current = addrs
	c.relay.setBackends(addrs)
	if c.dns != nil {
		c.dns.SetSRV(rolloutSRVName, srvs...)
	}
	msg := fmt.Sprintf("%s endpoints %v", time.Now().Format("15:04:05.000"), addrs)
	c.changes = append(c.changes, msg)
	logf("rollout %s: %s", c.reg, msg)
}

func (c *endpointsCtl) history() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.changes)
}

// waitEndpoints waits until the endpoints have n replicas.
func (c *endpointsCtl) waitEndpoints(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		got := len(c.current)
		c.mu.Unlock()
		if got == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("endpoints: %d replicas after %s, want %d", got, timeout, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// livePods are the pods not stopped yet.
func (c *endpointsCtl) livePods() []*rolloutPod {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*rolloutPod
	for _, pod := range c.pods {
		if !pod.gone && pod.termAt.IsZero() {
			out = append(out, pod)
		}
	}
	return out
}

// terminate sends SIGTERM, takes the pod out of the endpoints endpointsLag
// later, and waits for it to exit.
func (c *endpointsCtl) terminate(pod *rolloutPod) error {
	c.mu.Lock()
	pod.termAt = time.Now()
	c.mu.Unlock()
	time.AfterFunc(endpointsLag, c.sync)
	logf("rollout %s: SIGTERM %s", c.reg, pod.name)
	err := pod.proc.stop(stopGrace)
	c.mu.Lock()
	pod.gone = true
	c.mu.Unlock()
	if err == nil {
		err = exitedCleanly(pod.proc)
	}
	return err
}

// exitedCleanly tells whether a process ended with status 0 (the process
// helper records that as an error, as the suite's processes never end).
func exitedCleanly(p *process) error {
	if err := p.exitErr(); err != nil && err.Error() != "exited with status 0" {
		return fmt.Errorf("%s after SIGTERM: %w\n%s", p.name, err, tailFile(p.logPath, 20))
	}
	return nil
}

// kill sends SIGKILL; the probes take the pod out of the endpoints.
func (c *endpointsCtl) kill(pod *rolloutPod) error {
	pod.proc.mu.Lock()
	cmd, exited := pod.proc.cmd, pod.proc.exited
	pod.proc.mu.Unlock()
	c.mu.Lock()
	c.killedAt = time.Now()
	c.mu.Unlock()
	logf("rollout %s: SIGKILL %s", c.reg, pod.name)
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing %s: %w", pod.name, err)
	}
	<-exited
	c.mu.Lock()
	pod.termAt = time.Now().Add(time.Hour) // not a graceful leave
	c.mu.Unlock()
	return nil
}

func (c *endpointsCtl) lastKill() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.killedAt
}

// podWithMostConns is the live pod with most relay connections open (the
// one a querier registered through the relay uses), or the first.
func (c *endpointsCtl) podWithMostConns() *rolloutPod {
	open := c.relay.openConns()
	pods := c.livePods()
	best := pods[0]
	for _, pod := range pods {
		if open[pod.grpcAddr] > open[best.grpcAddr] {
			best = pod
		}
	}
	return best
}

// reloadAll changes a harmless setting in every live pod's config, sends
// SIGHUP, and checks that each reloaded.
func (c *endpointsCtl) reloadAll() error {
	pods := c.livePods()
	before := make([]float64, len(pods))
	for i, pod := range pods {
		v, err := metricValue("http://"+pod.httpAddr, `thanos_fanout_config_reloads_total{result="success"}`)
		if err != nil {
			return err
		}
		before[i] = v
		if err := os.WriteFile(pod.cfgPath, []byte(rolloutFanoutConfig("3s")), 0o644); err != nil {
			return err
		}
	}
	for _, pod := range pods {
		pod.proc.mu.Lock()
		pid := pod.proc.cmd.Process.Pid
		pod.proc.mu.Unlock()
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			return fmt.Errorf("SIGHUP %s: %w", pod.name, err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for i, pod := range pods {
		for {
			v, err := metricValue("http://"+pod.httpAddr, `thanos_fanout_config_reloads_total{result="success"}`)
			if err == nil && v > before[i] {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: no successful reload after SIGHUP (%v)\n%s", pod.name, err, topo.Logs(pod.name))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	logf("rollout %s: reloaded %d replicas", c.reg, len(pods))
	return nil
}

func (c *endpointsCtl) stopAll() {
	c.mu.Lock()
	pods := slices.Clone(c.pods)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, pod := range pods {
		wg.Go(func() {
			// Two SIGTERMs: the second skips the shutdown delay.
			pod.proc.mu.Lock()
			if pod.proc.cmd != nil && !isClosed(pod.proc.exited) {
				_ = syscall.Kill(pod.proc.cmd.Process.Pid, syscall.SIGTERM)
			}
			pod.proc.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			_ = pod.proc.stop(stopGrace)
		})
	}
	wg.Wait()
}

// metricValue reads one sample (name with labels, as exposed) from /metrics.
func metricValue(base, sample string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, err := httpGet(ctx, base+"/metrics")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			return strconv.ParseFloat(strings.Fields(rest)[0], 64)
		}
	}
	return 0, fmt.Errorf("%s/metrics: no %s", base, sample)
}

// ---------------------------------------------------------------------------
// The querier.

func startRolloutQuerier(reg registration, relay string) (*process, string, error) {
	httpAddr, grpcAddr := topo.ports.addr(), topo.ports.addr()
	args := append([]string{"query",
		"--http-address=" + httpAddr,
		"--grpc-address=" + grpcAddr,
		"--query.replica-label=replica",
		"--log.level=info", "--grpc-grace-period=1s", "--http-grace-period=1s",
	}, reg.args(relay)...)
	path := topo.Bins.Thanos
	if reg.dns {
		// Thanos reads /etc/resolv.conf (port 53 only): the querier gets
		// its own, naming the test's DNS server, in a private mount
		// namespace.
		resolv := filepath.Join(topo.Dir, "rollout-resolv.conf")
		host, _, _ := net.SplitHostPort(rolloutDNSAddr)
		if err := os.WriteFile(resolv, []byte("nameserver "+host+"\noptions timeout:1 attempts:2\n"), 0o644); err != nil {
			return nil, "", err
		}
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			return nil, "", fmt.Errorf("the %s registration needs unshare: %w", reg.name, err)
		}
		args = append([]string{"-m", "/bin/sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, resolv, path}, args...)
		path = unshare
	}
	p := topo.newProcess("rollout-query-"+reg.name, path, args, httpOK("http://"+httpAddr+"/-/ready"))
	if err := p.start(); err != nil {
		return nil, "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.waitReady(ctx); err != nil {
		_ = p.stop(5 * time.Second)
		return nil, "", err
	}
	return p, "http://" + httpAddr, nil
}

// waitQuerierStores waits until the querier has n healthy stores, each with
// the label sets of all four remote endpoints.
func waitQuerierStores(base string, n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	want := []string{"cluster=a,replica=0", "cluster=a,replica=1", "cluster=b", "cluster=c"}
	var last string
	err := poll(ctx, func() (bool, error) {
		stores, err := Stores(ctx, base)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = describeStores(stores)
		healthy := 0
		for _, list := range stores {
			for _, s := range list {
				if s.LastError == nil && slices.Equal(formatLabelSets(s.LabelSets), want) {
					healthy++
				}
			}
		}
		return healthy == n, nil
	})
	if err != nil {
		return fmt.Errorf("querier: waiting for %d healthy stores (last: %s): %w", n, last, err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Series calls where they arrive.

var seriesStartedRE = regexp.MustCompile(`(?m)^grpc_server_started_total\{[^}]*grpc_method="Series"[^}]*\} (\S+)$`)

// remoteSeriesStarted counts the Series calls each remote endpoint (a0, a1,
// b, c) has received, from its own /metrics.
func remoteSeriesStarted() (map[string]float64, error) {
	out := map[string]float64{}
	for ep, proc := range map[string]string{"a0": "sidecar-a0", "a1": "sidecar-a1", "b": "sidecar-b", "c": "store-c"} {
		var httpAddr string
		for _, a := range topo.proc(proc).args {
			if v, ok := strings.CutPrefix(a, "--http-address="); ok {
				httpAddr = v
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		body, err := httpGet(ctx, "http://"+httpAddr+"/metrics")
		cancel()
		if err != nil {
			return nil, err
		}
		found := false
		for _, m := range seriesStartedRE.FindAllStringSubmatch(string(body), -1) {
			v, err := strconv.ParseFloat(m[1], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", proc, m[0], err)
			}
			out[ep] += v
			found = true
		}
		if !found {
			return nil, fmt.Errorf("%s: no grpc_server_started_total for Series in its /metrics", proc)
		}
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// The relay: kube-proxy for a ClusterIP Service.

// tcpRelay forwards each new connection to one backend picked at random
// among the current ones, and keeps it there for the connection's life. With
// no backend, or a backend that refuses, the connection is closed.
type tcpRelay struct {
	ln net.Listener

	mu       sync.Mutex
	backends []string
	open     map[string]int
	total    map[string]int
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

func startRelay(addr string) (*tcpRelay, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	r := &tcpRelay{ln: ln, open: map[string]int{}, total: map[string]int{}, conns: map[net.Conn]struct{}{}}
	r.wg.Go(r.serve)
	return r, nil
}

func (r *tcpRelay) Addr() string { return r.ln.Addr().String() }

func (r *tcpRelay) setBackends(addrs []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.backends = slices.Clone(addrs)
}

func (r *tcpRelay) openConns() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.open)
}

func (r *tcpRelay) connCounts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.total)
}

func (r *tcpRelay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Go(func() { r.handle(c) })
	}
}

func (r *tcpRelay) handle(client net.Conn) {
	r.mu.Lock()
	if len(r.backends) == 0 {
		r.mu.Unlock()
		client.Close()
		return
	}
	backend := r.backends[rand.IntN(len(r.backends))]
	r.conns[client] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.conns, client)
		r.mu.Unlock()
		client.Close()
	}()
	upstream, err := net.DialTimeout("tcp", backend, 2*time.Second)
	if err != nil {
		return
	}
	defer upstream.Close()
	r.mu.Lock()
	r.open[backend]++
	r.total[backend]++
	r.conns[upstream] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.open[backend]--
		delete(r.conns, upstream)
		r.mu.Unlock()
	}()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(upstream, client)
	go pipe(client, upstream)
	<-done
	// Either side gone: the whole connection goes, as with a TCP proxy
	// whose backend closed or reset.
	client.Close()
	upstream.Close()
	<-done
}

// Close stops accepting and closes every connection.
func (r *tcpRelay) Close() {
	r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// ---------------------------------------------------------------------------
// A DNS server on a fixed address.

// startDNSServerAt starts a DNSServer (as startDNSServer) on addr.
func startDNSServerAt(addr string) (*DNSServer, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dns: listening on TCP %s: %w", addr, err)
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("dns: listening on UDP %s: %w", addr, err)
	}
	return newDNSServerOn(l, pc), nil
}
