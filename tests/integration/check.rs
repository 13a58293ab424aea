//! `thanos-fanout check` against real servers on loopback: a healthy TLS
//! StoreAPI, and one real server for each way an endpoint goes wrong (wrong
//! CA, wrong name, an IP without server_name, no client certificate, an
//! expired certificate, a plaintext gRPC server, HTTP servers that are not
//! gRPC, names that do not resolve, a closed port). Each asserts the key
//! sentences of the diagnosis, the JSON fields and, through the binary, the
//! exit code.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;

use thanos_fanout::check::{self, EndpointReport, Report, Stage};
use thanos_fanout::config::{Config, RemoteConfig, TlsConfig};
use thanos_fanout::demo::certs::Authority;
use thanos_fanout::demo::tls_server::server_config;

use crate::common::*;
use crate::dns_server::TestDns;

const BIN: &str = env!("CARGO_BIN_EXE_thanos-fanout");

/// Runs the check on these remotes.
async fn run(remotes: Vec<RemoteConfig>) -> Report {
    let config = config(remotes).validate(None).expect("valid config");
    check::run(&config, None).await
}

/// The one endpoint of a one-remote report, with its human block.
async fn only(remote: RemoteConfig) -> (EndpointReport, String) {
    let report = run(vec![remote]).await;
    assert_eq!(report.endpoints.len(), 1, "{report:#?}");
    let text = check::human(&report);
    (report.endpoints[0].clone(), text)
}

fn assert_failed(e: &EndpointReport, stage: Stage, problem: &str, fix: &str) {
    assert!(!e.ok, "{e:#?}");
    assert_eq!(e.failed_at, Some(stage), "{e:#?}");
    let got = e.problem.as_deref().unwrap_or_default();
    assert!(got.contains(problem), "problem {got:?} lacks {problem:?}");
    let got = e.fix.as_deref().unwrap_or_default();
    assert!(got.contains(fix), "fix {got:?} lacks {fix:?}");
}

/// A TLS remote with a certificate for `a.remote.test` that requires
/// client certificates from the test CA.
async fn tls_remote(pki: &Pki) -> RemoteHandle {
    up_remote("a", Some(pki.server(&["a.remote.test"]))).await
}

#[tokio::test]
async fn healthy_endpoint_reports_every_step() {
    let pki = Pki::new();
    let r = tls_remote(&pki).await;
    let (e, text) = only(remote("a", r.addr, Some(pki.client_tls("a.remote.test")))).await;
    assert!(e.ok, "{text}");
    assert_eq!(e.failed_at, None);
    assert_eq!(e.problem, None);
    assert_eq!(e.address, Some(r.addr.to_string()));
    let tls = e.tls.as_ref().expect("tls settings");
    assert_eq!(tls.server_name, "a.remote.test");
    assert_eq!(tls.server_name_from, "tls.server_name");
    assert_eq!(e.authority.as_deref(), Some("a.remote.test"));
    let cert = e.server_certificate.as_ref().expect("certificate");
    assert_eq!(cert.subject, "CN=a.remote.test");
    assert_eq!(cert.issuer, "CN=test CA");
    assert_eq!(cert.dns_names, ["a.remote.test"]);
    assert!(cert.ip_addresses.is_empty());
    let handshake = e.handshake.as_ref().expect("handshake");
    assert!(handshake.ok);
    assert_eq!(handshake.verified, Some(true));
    assert_eq!(handshake.version.as_deref(), Some("TLSv1.3"));
    assert_eq!(handshake.alpn.as_deref(), Some("h2"));
    assert!(handshake.client_certificate_requested && handshake.client_certificate_sent);
    let info = e.info.as_ref().expect("info");
    assert_eq!(info.component_type, "sidecar");
    assert_eq!(info.label_sets, [r#"{cluster="a"}"#]);
    assert_eq!((info.min_time, info.max_time), (Some(0), Some(MINUTE)));
    assert_eq!(info.apis, ["store"]);
    assert!(e.latency_ms.total.is_some() && e.latency_ms.tls.is_some());
    assert!(e.latency_ms.info.is_some() && e.latency_ms.tcp.is_some());
    for line in [
        &format!("a {}: ok", r.addr),
        "  sni:            a.remote.test (from tls.server_name)",
        "  :authority:     a.remote.test",
        "  certificate:    CN=a.remote.test",
        "  dns names:      a.remote.test",
        "  issuer:         CN=test CA",
        "  handshake:      ok, certificate verified",
        "  tls version:    TLSv1.3",
        "  alpn:           h2",
        "  info:           ok, component sidecar",
        "  label sets:     {cluster=\"a\"}",
        "  time range:     1970-01-01T00:00:00Z to 1970-01-01T00:01:00Z",
        "  apis:           store",
        "1 endpoint: 1 ok, 0 failed",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    assert!(!text.contains("problem:"), "{text}");
}

#[tokio::test]
async fn wrong_ca_names_the_issuer_and_the_ca_file() {
    let pki = Pki::new();
    let other = Authority::new("someone else").expect("CA");
    let pem = other.server(&["a.remote.test"]).expect("cert");
    let tls = server_config(&pem.cert, &pem.key, Some(&pki.ca.cert_pem())).expect("tls");
    let r = up_remote("a", Some(tls)).await;
    let (e, text) = only(remote("a", r.addr, Some(pki.client_tls("a.remote.test")))).await;
    let ca_file = pki.ca_file.display().to_string();
    assert_failed(
        &e,
        Stage::Tls,
        &format!(
            "the server's certificate is signed by CN=someone else, which is not in tls.ca_file ({ca_file}, which holds CN=test CA)"
        ),
        "put the CA certificate of CN=someone else into tls.ca_file",
    );
    // The certificate is reported although it failed verification.
    let cert = e.server_certificate.as_ref().expect("certificate");
    assert_eq!(cert.issuer, "CN=someone else");
    assert_eq!(e.handshake.as_ref().and_then(|h| h.verified), Some(false));
    assert!(text.contains("  issuer:         CN=someone else"), "{text}");
    assert!(
        text.contains("  handshake:      failed, certificate rejected"),
        "{text}"
    );
    assert!(
        e.error
            .as_deref()
            .unwrap_or_default()
            .contains("unknown authority"),
        "{e:#?}"
    );

    // With verification off the same server passes, and the report says so.
    let mut insecure = pki.client_tls("a.remote.test");
    insecure.insecure_skip_verify = true;
    let (e, text) = only(remote("a", r.addr, Some(insecure))).await;
    assert!(e.ok, "{text}");
    assert_eq!(e.handshake.as_ref().and_then(|h| h.verified), None);
    assert!(
        text.contains("  handshake:      ok, certificate not verified (tls.insecure_skip_verify)"),
        "{text}"
    );
    assert!(
        e.notes
            .iter()
            .any(|n| n.contains("tls.insecure_skip_verify: true")),
        "{e:#?}"
    );
}

#[tokio::test]
async fn wrong_server_name_lists_the_certificate_names() {
    let pki = Pki::new();
    let r = tls_remote(&pki).await;
    let (e, _) = only(remote("a", r.addr, Some(pki.client_tls("b.remote.test")))).await;
    assert_failed(
        &e,
        Stage::Tls,
        "the certificate is not valid for b.remote.test (tls.server_name): it is for a.remote.test",
        "set tls.server_name: a.remote.test",
    );
}

#[tokio::test]
async fn ip_target_without_server_name_suggests_one() {
    let pki = Pki::new();
    let r = tls_remote(&pki).await;
    let mut tls = pki.client_tls("unused");
    tls.server_name = None;
    let (e, text) = only(remote("a", r.addr, Some(tls))).await;
    assert_failed(
        &e,
        Stage::Tls,
        "the certificate has no IP SANs and none of its DNS names (a.remote.test) match 127.0.0.1",
        "set tls.server_name: a.remote.test",
    );
    assert_eq!(
        e.tls.as_ref().map(|t| t.server_name_from),
        Some("target IP")
    );
    assert!(
        text.contains("  fix:            set tls.server_name: a.remote.test\n"),
        "{text}"
    );
    assert!(text.contains("  ip addresses:   none"), "{text}");
}

fn without_client_certificate(mut tls: TlsConfig) -> TlsConfig {
    tls.cert_file = None;
    tls.key_file = None;
    tls
}

#[tokio::test]
async fn missing_client_certificate_is_named() {
    let pki = Pki::new();
    // TLS 1.3: the server refuses us after the client's side of the
    // handshake is done, with alert certificate_required.
    let r = tls_remote(&pki).await;
    let tls = without_client_certificate(pki.client_tls("a.remote.test"));
    let (e, text) = only(remote("a", r.addr, Some(tls.clone()))).await;
    assert_failed(
        &e,
        Stage::Tls,
        "the server requires a client certificate, and none is configured",
        "set tls.cert_file and tls.key_file",
    );
    let handshake = e.handshake.as_ref().expect("handshake");
    assert!(handshake.client_certificate_requested && !handshake.client_certificate_sent);
    assert!(!handshake.ok);
    assert!(
        text.contains("  client cert:    asked for, none configured"),
        "{text}"
    );

    // TLS 1.2: the server rejects the empty certificate inside the handshake.
    let pem = pki.ca.server(&["a.remote.test"]).expect("cert");
    let r12 = up_remote("a", Some(tls12_requiring_client_certs(&pki, &pem))).await;
    let (e, _) = only(remote("a", r12.addr, Some(tls))).await;
    assert_failed(
        &e,
        Stage::Tls,
        "the server requires a client certificate, and none is configured",
        "set tls.cert_file and tls.key_file",
    );
    assert_eq!(
        e.handshake.as_ref().and_then(|h| h.version.clone()),
        None,
        "the TLS 1.2 handshake itself failed"
    );
}

#[tokio::test]
async fn untrusted_client_certificate_is_named() {
    let pki = Pki::new();
    let r = tls_remote(&pki).await;
    let stranger = Authority::new("stranger CA").expect("CA");
    let (cert, key) = stranger
        .client("intruder")
        .expect("cert")
        .write(pki.dir.path(), "intruder")
        .expect("write");
    let mut tls = pki.client_tls("a.remote.test");
    tls.cert_file = Some(cert);
    tls.key_file = Some(key);
    let (e, _) = only(remote("a", r.addr, Some(tls))).await;
    assert_failed(
        &e,
        Stage::Tls,
        "the server rejected our client certificate (CN=intruder, issued by CN=stranger CA)",
        "use a client certificate (tls.cert_file, tls.key_file) signed by a CA the remote trusts",
    );
}

#[tokio::test]
async fn grpc_server_without_info_is_named() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let (e, _) = only(remote("a", addr, None)).await;
    assert_failed(
        &e,
        Stage::Info,
        "the server speaks gRPC but has no thanos.info.Info service",
        "Thanos v0.23 or newer",
    );
}

/// Like the test servers' config, limited to TLS 1.2.
fn tls12_requiring_client_certs(
    pki: &Pki,
    pem: &thanos_fanout::demo::certs::Pem,
) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let certs = |text: &str| {
        rustls::pki_types::CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificates")
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(&pki.ca.cert_pem()) {
        roots.add(ca).expect("CA");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("verifier");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).expect("key");
    let mut config =
        rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&pem.cert), key)
            .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn expired_certificate_says_when() {
    let pki = Pki::new();
    let pem = pki
        .ca
        .server_valid(&["a.remote.test"], (2020, 1, 1), (2021, 1, 1))
        .expect("cert");
    let tls = server_config(&pem.cert, &pem.key, Some(&pki.ca.cert_pem())).expect("tls");
    let r = up_remote("a", Some(tls)).await;
    let (e, text) = only(remote("a", r.addr, Some(pki.client_tls("a.remote.test")))).await;
    assert_failed(
        &e,
        Stage::Tls,
        "the server's certificate expired on 2021-01-01T00:00:00Z (",
        "renew the server's certificate",
    );
    assert_eq!(
        e.server_certificate.as_ref().map(|c| c.not_after.as_str()),
        Some("2021-01-01T00:00:00Z")
    );
    assert!(
        text.contains("  valid:          2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z (expired "),
        "{text}"
    );
}

#[tokio::test]
async fn plaintext_server_is_recognised() {
    let pki = Pki::new();
    let plain = up_remote("a", None).await;
    let (e, _) = only(remote(
        "a",
        plain.addr,
        Some(pki.client_tls("a.remote.test")),
    ))
    .await;
    assert_failed(
        &e,
        Stage::Tls,
        "the server does not speak TLS, it is a plaintext server",
        "remove the remote's tls section",
    );
    assert!(
        e.problem
            .as_deref()
            .unwrap_or_default()
            .contains("plaintext HTTP/2 (h2c)"),
        "{e:#?}"
    );
    assert!(e.server_certificate.is_none());
    // Nothing reached its StoreAPI: no plaintext fallback.
    assert_eq!(plain.script.series_calls(), 0);

    // The other way round: no tls section for a TLS remote.
    let r = tls_remote(&pki).await;
    let (e, _) = only(remote("a", r.addr, None)).await;
    assert_failed(
        &e,
        Stage::Connect,
        "the server expects TLS, and this remote has no tls section",
        "add a tls section",
    );
}

#[tokio::test]
async fn http_servers_are_not_grpc() {
    let pki = Pki::new();
    let tls = || Some(pki.client_tls("a.remote.test"));
    // HTTPS with HTTP/2 answering 404 with a page, as a web server or an
    // ingress without a route.
    let web = web_server(&pki, Some(&[b"h2", b"http/1.1"]), 404).await;
    let (e, _) = only(remote("a", web, tls())).await;
    assert_failed(
        &e,
        Stage::Info,
        "this is an HTTP server, not a gRPC StoreAPI: it answered Info with an HTML page (404 Not Found)",
        "check the target's port",
    );
    assert_eq!(e.handshake.as_ref().map(|h| h.ok), Some(true));

    // HTTPS that only speaks HTTP/1.1: refuses ALPN h2.
    let web = web_server(&pki, Some(&[b"http/1.1"]), 404).await;
    let (e, _) = only(remote("a", web, tls())).await;
    assert_failed(
        &e,
        Stage::Tls,
        "the server does not speak HTTP/2 (it refused ALPN h2): this is an HTTP server, not a gRPC StoreAPI",
        "check the target's port",
    );

    // HTTPS that negotiates no ALPN at all.
    let web = web_server(&pki, Some(&[]), 404).await;
    let (e, _) = only(remote("a", web, tls())).await;
    assert_failed(
        &e,
        Stage::Tls,
        "did not agree to HTTP/2 (ALPN h2): this is an HTTP server, not a gRPC StoreAPI",
        "check the target's port",
    );

    // Plaintext HTTP (h2c and HTTP/1) answering 404 without a gRPC status.
    let web = web_server(&pki, None, 404).await;
    let (e, _) = only(remote("a", web, None)).await;
    assert_failed(
        &e,
        Stage::Info,
        "this is an HTTP server, not a gRPC StoreAPI",
        "check the target's port",
    );

    // Plaintext HTTP/1 only.
    let web = http1_only().await;
    let (e, _) = only(remote("a", web, None)).await;
    assert_failed(
        &e,
        Stage::Info,
        "this is an HTTP/1 server, not a gRPC StoreAPI",
        "check the target's port",
    );
    assert!(
        e.problem
            .as_deref()
            .unwrap_or_default()
            .contains("HTTP/1.1 400 Bad Request"),
        "{e:#?}"
    );
    let (e, _) = only(remote("a", web, tls())).await;
    assert_failed(
        &e,
        Stage::Tls,
        "the server does not speak TLS, and it is an HTTP/1 server, not a gRPC StoreAPI",
        "check the target's port",
    );
}

#[tokio::test]
async fn discovery_names_and_closed_ports() {
    let pki = Pki::new();
    let r = tls_remote(&pki).await;
    let dns = TestDns::start().await;
    let localhost = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    dns.set_ips("a.remote.test", &localhost, 30);
    dns.set_srv(
        "_grpc._tcp.a.remote.test",
        &[("a.remote.test", r.addr.port())],
        30,
    );
    // SRV discovery: verified by the SRV target's name, no server_name set.
    let mut tls = pki.client_tls("unused");
    tls.server_name = None;
    let mut srv = remote("srv", r.addr, Some(tls));
    srv.targets = vec!["dnssrv+_grpc._tcp.a.remote.test".into()];
    let mut missing = remote("missing", r.addr, None);
    missing.targets = vec!["dns+gone.remote.test:10901".into()];
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let refused = remote("refused", closed, None);
    let mut cfg = config(vec![srv, missing, refused]);
    cfg.discovery.nameservers = vec![dns.addr.to_string()];
    let report = check::run(&cfg.validate(None).expect("valid config"), None).await;
    let text = check::human(&report);
    assert_eq!(report.endpoints.len(), 3, "{text}");

    let srv = &report.endpoints[0];
    assert!(srv.ok, "{text}");
    assert_eq!(
        srv.target.as_deref(),
        Some("dnssrv+_grpc._tcp.a.remote.test")
    );
    assert_eq!(srv.address, Some(r.addr.to_string()));
    assert_eq!(
        srv.tls
            .as_ref()
            .map(|t| (t.server_name.as_str(), t.server_name_from)),
        Some(("a.remote.test", "target host"))
    );
    assert!(srv.latency_ms.dns.is_some());

    assert_failed(
        &report.endpoints[1],
        Stage::Dns,
        "the name gone.remote.test does not resolve",
        "check the target's spelling",
    );
    assert_failed(
        &report.endpoints[2],
        Stage::Connect,
        &format!("nothing accepts connections on {closed} (connection refused)"),
        "check the port in the target",
    );
    assert!(text.ends_with("3 endpoints: 1 ok, 2 failed\n"), "{text}");
}

#[tokio::test]
async fn config_problems_are_reported_per_remote() {
    let pki = Pki::new();
    let r = tls_remote(&pki).await;
    let dir = pki.dir.path();
    // A remote found through a file_sd file.
    let listed = dir.join("listed.yaml");
    std::fs::write(&listed, format!("- targets: [\"{}\"]\n", r.addr)).expect("write");
    let mut from_file = remote("from-file", r.addr, Some(pki.client_tls("a.remote.test")));
    from_file.targets.clear();
    from_file.file_sd = vec![listed.clone()];
    // One whose file lists nothing, and one that cannot be parsed.
    let empty = dir.join("empty.yaml");
    std::fs::write(&empty, "[]\n").expect("write");
    let broken = dir.join("broken.yaml");
    std::fs::write(&broken, "- targets: [\"no-port\"]\n").expect("write");
    let mut files = remote("files", r.addr, None);
    files.targets.clear();
    files.file_sd = vec![empty.clone(), broken.clone()];
    // A CA file that is not there: the service would not start.
    let mut tls = pki.client_tls("a.remote.test");
    tls.ca_file = Some(dir.join("missing-ca.pem"));
    let missing_ca = remote("missing-ca", r.addr, Some(tls));

    let report = run(vec![from_file, files, missing_ca]).await;
    let text = check::human(&report);
    assert_eq!(report.summary.endpoints, 4, "{text}");
    assert_eq!(report.summary.failed, 3, "{text}");
    let find = |remote: &str, stage: Stage| {
        report
            .endpoints
            .iter()
            .find(|e| e.remote == remote && e.failed_at == Some(stage))
            .unwrap_or_else(|| panic!("{remote} failing at {stage:?} in\n{text}"))
    };
    let ok = report.endpoints.iter().find(|e| e.ok).expect("one ok");
    assert_eq!(ok.remote, "from-file");
    assert_eq!(
        ok.target.as_deref(),
        Some(format!("{} (from {})", r.addr, listed.display()).as_str())
    );
    assert!(
        find("files", Stage::Config)
            .problem
            .as_deref()
            .unwrap_or_default()
            .contains(&format!(
                "the file_sd file {} lists no targets",
                empty.display()
            )),
        "{text}"
    );
    assert!(
        report
            .endpoints
            .iter()
            .any(|e| e.remote == "files"
                && e.problem.as_deref().unwrap_or_default().contains("no-port")),
        "{text}"
    );
    let ca = find("missing-ca", Stage::Config);
    assert!(
        ca.problem
            .as_deref()
            .unwrap_or_default()
            .contains("missing-ca.pem"),
        "{text}"
    );
    assert!(text.contains("missing-ca: FAILED (config)\n"), "{text}");
}

/// Writes `config` to a file and runs the binary's check on it.
fn run_binary(config: &Config, args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, serde_yaml::to_string(config).expect("yaml")).expect("write");
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .expect("run check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn binary_exit_code_and_json() {
    let pki = Pki::new();
    let a = tls_remote(&pki).await;
    let b = tls_remote(&pki).await;
    let plain = up_remote("p", None).await;
    let healthy = vec![
        remote("a", a.addr, Some(pki.client_tls("a.remote.test"))),
        remote("b", b.addr, Some(pki.client_tls("a.remote.test"))),
    ];
    let mut all = healthy.clone();
    all.push(remote(
        "c",
        plain.addr,
        Some(pki.client_tls("a.remote.test")),
    ));

    let cfg = config(healthy);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run_binary(&cfg, &[]))
        .await
        .expect("join");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.ends_with("2 endpoints: 2 ok, 0 failed\n"),
        "{stdout}"
    );

    let cfg = config(all);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run_binary(&cfg, &[]))
        .await
        .expect("join");
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.ends_with("3 endpoints: 2 ok, 1 failed\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("c {}: FAILED (tls)", plain.addr)),
        "{stdout}"
    );
    assert!(
        stdout.contains("  problem:        the server does not speak TLS"),
        "{stdout}"
    );
    assert!(stderr.is_empty(), "only the report is printed: {stderr}");

    let json_cfg = config(vec![
        remote("a", a.addr, Some(pki.client_tls("a.remote.test"))),
        remote("c", plain.addr, Some(pki.client_tls("a.remote.test"))),
    ]);
    let (code, stdout, _) =
        tokio::task::spawn_blocking(move || run_binary(&json_cfg, &["--output", "json"]))
            .await
            .expect("join");
    assert_eq!(code, Some(1), "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(doc["summary"]["endpoints"], 2, "{doc:#}");
    assert_eq!(doc["summary"]["ok"], 1);
    assert_eq!(doc["summary"]["failed"], 1);
    let good = &doc["endpoints"][0];
    assert_eq!(good["remote"], "a");
    assert_eq!(good["ok"], true);
    assert_eq!(good["failed_at"], serde_json::Value::Null);
    assert_eq!(good["address"], a.addr.to_string());
    assert_eq!(good["tls"]["server_name"], "a.remote.test");
    assert_eq!(good["authority"], "a.remote.test");
    assert_eq!(good["server_certificate"]["subject"], "CN=a.remote.test");
    assert_eq!(good["server_certificate"]["dns_names"][0], "a.remote.test");
    assert_eq!(good["server_certificate"]["issuer"], "CN=test CA");
    assert!(good["server_certificate"]["not_after"].is_string());
    assert_eq!(good["handshake"]["version"], "TLSv1.3");
    assert_eq!(good["handshake"]["alpn"], "h2");
    assert_eq!(good["info"]["component_type"], "sidecar");
    assert_eq!(good["info"]["label_sets"][0], r#"{cluster="a"}"#);
    assert_eq!(good["info"]["apis"][0], "store");
    assert!(good["latency_ms"]["total"].is_number());
    let bad = &doc["endpoints"][1];
    assert_eq!(bad["ok"], false);
    assert_eq!(bad["failed_at"], "tls");
    assert!(
        bad["problem"]
            .as_str()
            .is_some_and(|p| p.starts_with("the server does not speak TLS")),
        "{bad:#}"
    );
    assert!(
        bad["fix"].is_string() && bad["error"].is_string(),
        "{bad:#}"
    );

    // An invalid config is exit code 2, before anything is dialled.
    let mut invalid = config(vec![remote("a", a.addr, None)]);
    invalid.remotes[0].targets = vec!["no-port".into()];
    let (code, _, stderr) = tokio::task::spawn_blocking(move || run_binary(&invalid, &[]))
        .await
        .expect("join");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no-port"), "{stderr}");
}

struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A web server (axum: HTTP/1 and HTTP/2) answering every request with
/// `status` and an HTML page; over TLS offering `alpn` when given, with a
/// certificate for `a.remote.test` from the test CA.
async fn web_server(pki: &Pki, alpn: Option<&[&[u8]]>, status: u16) -> SocketAddr {
    let status = axum::http::StatusCode::from_u16(status).expect("status");
    let app = axum::Router::new().fallback(move || async move {
        (
            status,
            [("content-type", "text/html")],
            "<html><body>not here</body></html>",
        )
    });
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    match alpn {
        Some(alpn) => {
            use rustls::pki_types::pem::PemObject;
            let pem = pki.ca.server(&["a.remote.test"]).expect("cert");
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("certs");
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).expect("key");
            let mut config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server config");
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            let listener = TlsListener {
                tcp,
                acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            };
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        None => {
            tokio::spawn(async move { axum::serve(tcp, app).await });
        }
    }
    addr
}

/// A server that speaks only HTTP/1: answers whatever arrives with a 400.
async fn http1_only() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/html\r\ncontent-length: 11\r\nconnection: close\r\n\r\nbad request")
                    .await;
            });
        }
    });
    addr
}
