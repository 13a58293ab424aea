package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

// StartQuerier starts an extra thanos query with extra flags (its HTTP and
// gRPC addresses on free ports) and waits for its /-/ready. Its log is
// Logs("query-"+name). stop sends SIGTERM and waits.
func (t *Topology) StartQuerier(name string, extra ...string) (httpBase string, stop func(), err error) {
	procName := "query-" + name
	httpAddr, grpcAddr := t.ports.addr(), t.ports.addr()
	args := append([]string{"query",
		"--http-address=" + httpAddr,
		"--grpc-address=" + grpcAddr,
		"--query.replica-label=replica",
		"--log.level=info", "--grpc-grace-period=1s", "--http-grace-period=1s",
	}, extra...)
	p := t.newProcess(procName, t.Bins.Thanos, args, httpOK("http://"+httpAddr+"/-/ready"))
	if err := p.start(); err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.waitReady(ctx); err != nil {
		_ = p.stop(5 * time.Second)
		return "", nil, err
	}
	return "http://" + httpAddr, func() { _ = p.stop(stopGrace) }, nil
}

// TestQuerierOverMutualTLS: thanos-fanout's gRPC port with mutual TLS, a
// stock querier connecting with --grpc-client-tls-* gets the same answers
// as the plaintext querier; one without a client certificate, or with one
// from a CA thanos-fanout does not trust, gets no store.
func TestQuerierOverMutualTLS(t *testing.T) {
	c := topo.Certs
	cert, key := topo.ServerCert("A", "fanout.test")
	tls := fmt.Sprintf("grpc:\n  tls: {cert_file: %q, key_file: %q, client_ca_file: %q}\n", cert, key, c.CAClient)
	config := strings.Replace(topo.FanoutConfig, "grpc:\n", tls, 1)
	grpcAddr, _, stopFanout, err := topo.StartFanout("mtls", config)
	if err != nil {
		t.Fatalf("start fanout: %v", err)
	}
	defer stopFanout()

	clientTLS := func(cert, key string) []string {
		flags := []string{"--endpoint=" + grpcAddr, "--grpc-client-tls-secure",
			"--grpc-client-tls-ca=" + c.CAA, "--grpc-client-server-name=fanout.test"}
		if cert != "" {
			flags = append(flags, "--grpc-client-tls-cert="+cert, "--grpc-client-tls-key="+key)
		}
		return flags
	}
	good, stopGood, err := topo.StartQuerier("mtls-good", clientTLS(c.ClientCert, c.ClientKey)...)
	if err != nil {
		t.Fatalf("start querier: %v", err)
	}
	defer stopGood()
	noCert, stopNoCert, err := topo.StartQuerier("mtls-nocert", clientTLS("", "")...)
	if err != nil {
		t.Fatalf("start querier: %v", err)
	}
	defer stopNoCert()
	evil, stopEvil, err := topo.StartQuerier("mtls-evil", clientTLS(c.EvilClientCert, c.EvilClientKey)...)
	if err != nil {
		t.Fatalf("start querier: %v", err)
	}
	defer stopEvil()

	// The querier with a certificate finds thanos-fanout healthy and answers
	// like the plaintext one.
	query := `sum by (cluster) (http_requests_total)`
	at := ts(topo.MaxT - 60_000)
	want := apiGet(t, topo.QueryUnderTest, "/api/v1/query", url.Values{"query": {query}, "time": {at}})
	deadline := time.Now().Add(time.Minute)
	for {
		stores := storesPage(t, good)
		healthy := len(stores) == 1 && stores[0].LastError == nil && len(stores[0].LabelSets) > 0
		if healthy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the querier with a client certificate never got thanos-fanout as a healthy store: %+v\n%s", stores, topo.Logs("query-mtls-good"))
		}
		time.Sleep(time.Second)
	}
	got := apiGet(t, good, "/api/v1/query", url.Values{"query": {query}, "time": {at}})
	if got.Status != "success" || !sameJSON(t, got.Data, want.Data) {
		t.Errorf("over mutual TLS: %s %s\nplaintext: %s", got.Status, got.Data, want.Data)
	}

	// The others never get a healthy store, and no data.
	for name, base := range map[string]string{"no client certificate": noCert, "a certificate from another CA": evil} {
		for _, s := range storesPage(t, base) {
			if s.LastError == nil && len(s.LabelSets) > 0 {
				t.Errorf("querier with %s has thanos-fanout as a healthy store: %+v", name, s)
			}
		}
		resp := apiGet(t, base, "/api/v1/query", url.Values{"query": {query}, "time": {at}})
		if strings.Contains(string(resp.Data), `"cluster"`) {
			t.Errorf("querier with %s got data: %s", name, resp.Data)
		}
	}
}

// sameJSON compares two JSON documents by value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("json: %v", err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("json: %v", err)
	}
	return reflect.DeepEqual(x, y)
}
