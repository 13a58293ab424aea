package interop

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
