package interop

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thanos-io/thanos/pkg/store/storepb"
)

// errorIngressConfig is an nginx with TLS (b.remote.test) on two ports:
// badGateway passes gRPC to an address where nothing listens (nginx
// answers 502 with its HTML page); unavailable answers 503 to everything.
func errorIngressConfig(dir, badGateway, unavailable, deadUpstream string, c CertPaths) string {
	tmp := func(name string) string { return filepath.Join(dir, "tmp", name) }
	return fmt.Sprintf(`worker_processes 1;
pid %s;
error_log stderr info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %s;
    proxy_temp_path %s;
    fastcgi_temp_path %s;
    uwsgi_temp_path %s;
    scgi_temp_path %s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate %s;
    ssl_certificate_key %s;
    server {
        listen %s ssl http2;
        location / { grpc_pass grpc://%s; }
    }
    server {
        listen %s ssl http2;
        location / { return 503; }
    }
}
`, filepath.Join(dir, "nginx.pid"), tmp("client_body"), tmp("proxy"), tmp("fastcgi"), tmp("uwsgi"), tmp("scgi"),
		c.ServerBCert, c.ServerBKey, badGateway, deadUpstream, unavailable)
}

// TestIngressErrorPagesAreNamed: remotes behind a real nginx that answers
// 502 (no healthy backend) and 503 pages in HTML: the warnings name each
// remote and say the ingress answered with an HTTP error page, and the
// healthy remote's data arrives.
func TestIngressErrorPagesAreNamed(t *testing.T) {
	c := topo.Certs
	dir := filepath.Join(topo.Dir, "nginx-errors")
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	badGateway, unavailable, dead := topo.ports.addr(), topo.ports.addr(), topo.ports.addr()
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(errorIngressConfig(dir, badGateway, unavailable, dead, c)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := topo.newProcess("nginx-errors", topo.Bins.Nginx, []string{"-p", dir + "/", "-c", conf, "-e", "stderr", "-g", "daemon off;"},
		h2TLSReady(unavailable, "b.remote.test", c.CAB, c.ClientCert, c.ClientKey))
	if err := p.start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.waitReady(ctx); err != nil {
		t.Fatalf("nginx not ready: %v\n%s", err, topo.Logs("nginx-errors"))
	}
	defer func() { _ = p.stop(5 * time.Second) }()

	tls := fmt.Sprintf("{ca_file: %q, cert_file: %q, key_file: %q, server_name: b.remote.test}", c.CAB, c.ClientCert, c.ClientKey)
	config := fmt.Sprintf(`
info: {interval: 1s, timeout: 5s}
remotes:
  - name: a
    targets: [%q]
    tls: {ca_file: %q, cert_file: %q, key_file: %q, server_name: a.remote.test}
  - name: gateway-502
    targets: [%q]
    tls: %s
  - name: gateway-503
    targets: [%q]
    tls: %s
`, topo.SidecarA0GRPC, c.CAA, c.ClientCert, c.ClientKey, badGateway, tls, unavailable, tls)
	grpcAddr, _, stop, err := topo.StartFanout("ingress-errors", config)
	if err != nil {
		t.Fatalf("start fanout: %v", err)
	}
	defer stop()

	res := collectSeries(t, dial(t, grpcAddr), &storepb.SeriesRequest{
		MinTime:  topo.MinT,
		MaxTime:  topo.MaxT,
		Matchers: upMatchers(),
	})
	fromA := 0
	for _, s := range res.series {
		if labelValue(s, "cluster") == "a" {
			fromA++
		}
	}
	if fromA == 0 {
		t.Errorf("no series from the healthy remote a; warnings %v", res.warnings)
	}
	for remote, status := range map[string]string{"gateway-502": "502", "gateway-503": "503"} {
		found := ""
		for _, w := range res.warnings {
			if strings.HasPrefix(w, "remote "+remote+" ") {
				found = w
			}
		}
		if found == "" {
			t.Errorf("no warning names %s: %v", remote, res.warnings)
			continue
		}
		if !strings.Contains(found, status) || !strings.Contains(found, "HTML") {
			t.Errorf("the warning for %s does not say HTTP %s from an HTML error page: %s", remote, status, found)
		}
	}
}

// recyclingIngressConfig is an nginx with TLS (b.remote.test) in front of a
// plaintext gRPC upstream that closes each HTTP/2 connection after
// maxRequests requests (keepalive_requests, 1000 by default here and in
// ingress-nginx): a GOAWAY that races the calls opened meanwhile.
func recyclingIngressConfig(dir, listen, upstream string, maxRequests int, c CertPaths) string {
	tmp := func(name string) string { return filepath.Join(dir, "tmp", name) }
	return fmt.Sprintf(`worker_processes 1;
pid %s;
error_log stderr info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %s;
    proxy_temp_path %s;
    fastcgi_temp_path %s;
    uwsgi_temp_path %s;
    scgi_temp_path %s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate %s;
    ssl_certificate_key %s;
    keepalive_requests %d;
    server {
        listen %s ssl http2;
        location / { grpc_pass grpc://%s; }
    }
}
`, filepath.Join(dir, "nginx.pid"), tmp("client_body"), tmp("proxy"), tmp("fastcgi"), tmp("uwsgi"), tmp("scgi"),
		c.ServerBCert, c.ServerBKey, maxRequests, listen, upstream)
}

// TestIngressClosingConnectionsLosesNoCall: an ingress that closes each
// connection after a few requests (GOAWAY) turns away the calls opened on it
// after the GOAWAY, unread; thanos-fanout sends them again, so concurrent
// Series calls all get remote b's data without a warning.
func TestIngressClosingConnectionsLosesNoCall(t *testing.T) {
	c := topo.Certs
	dir := filepath.Join(topo.Dir, "nginx-recycling")
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	var sidecarB string
	for _, a := range topo.proc("sidecar-b").args {
		if v, ok := strings.CutPrefix(a, "--grpc-address="); ok {
			sidecarB = v
		}
	}
	listen := topo.ports.addr()
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(recyclingIngressConfig(dir, listen, sidecarB, 4, c)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := topo.newProcess("nginx-recycling", topo.Bins.Nginx, []string{"-p", dir + "/", "-c", conf, "-e", "stderr", "-g", "daemon off;"},
		h2TLSReady(listen, "b.remote.test", c.CAB, c.ClientCert, c.ClientKey))
	if err := p.start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.waitReady(ctx); err != nil {
		t.Fatalf("nginx not ready: %v\n%s", err, topo.Logs("nginx-recycling"))
	}
	defer func() { _ = p.stop(5 * time.Second) }()

	config := fmt.Sprintf(`
info: {interval: 1h, timeout: 5s}
remotes:
  - name: b
    targets: [%q]
    tls: {ca_file: %q, cert_file: %q, key_file: %q, server_name: b.remote.test}
    authority: b.remote.test
`, listen, c.CAB, c.ClientCert, c.ClientKey)
	grpcAddr, _, stop, err := topo.StartFanout("ingress-recycling", config)
	if err != nil {
		t.Fatalf("start fanout: %v", err)
	}
	defer stop()

	conn := dial(t, grpcAddr)
	const clients, rounds = 8, 50
	var (
		mu       sync.Mutex
		problems []string
		wg       sync.WaitGroup
	)
	for range clients {
		wg.Go(func() {
			for range rounds {
				res, err := trySeries(conn, &storepb.SeriesRequest{MinTime: topo.MinT, MaxTime: topo.MaxT, Matchers: upMatchers()})
				mu.Lock()
				switch {
				case err != nil:
					problems = append(problems, err.Error())
				case len(res.warnings) > 0:
					problems = append(problems, strings.Join(res.warnings, "; "))
				case len(res.series) == 0:
					problems = append(problems, "no series")
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(problems) > 0 {
		t.Errorf("%d of %d calls through an ingress closing connections after 4 requests went wrong, e.g. %s",
			len(problems), clients*rounds, problems[0])
	}
}
