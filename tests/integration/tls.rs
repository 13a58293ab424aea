//! TLS towards remotes: per-remote CA and client certificate, name-based
//! verification while dialling an IP, and failures that say what is wrong.

use std::time::Duration;

use thanos_fanout::app::Running;
use thanos_fanout::demo::certs::Authority;
use thanos_fanout::demo::synthetic::Capabilities;

use crate::common::*;

async fn one_remote(tls: std::sync::Arc<rustls::ServerConfig>) -> RemoteHandle {
    up_remote("a", Some(tls)).await
}

/// The aggregator in front of one remote `a` with this TLS config.
async fn fanout_to(addr: std::net::SocketAddr, tls: thanos_fanout::config::TlsConfig) -> Running {
    start_fanout(config(vec![remote("a", addr, Some(tls))])).await
}

/// The single endpoint's last Info error.
async fn last_error(running: &Running) -> Option<String> {
    let endpoint = running
        .upstreams
        .endpoints()
        .into_iter()
        .next()
        .expect("one endpoint");
    endpoint.state().last_error.clone()
}

#[tokio::test]
async fn ip_target_verifies_the_server_name_not_the_ip() {
    let pki = Pki::new();
    // The certificate carries a DNS name only, no IP SAN; we dial 127.0.0.1.
    let r = one_remote(pki.server(&["thanos-a.remote.test"])).await;
    let running = fanout_to(r.addr, pki.client_tls("thanos-a.remote.test")).await;
    assert_eq!(last_error(&running).await, None);
    let mut client = client(&running).await;
    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("series");
    assert_eq!(answer.series.len(), 1);
    assert!(answer.warnings.is_empty());

    // Without server_name the IP is verified, and the certificate has no IP SAN.
    let mut tls = pki.client_tls("unused");
    tls.server_name = None;
    let running = fanout_to(r.addr, tls).await;
    let error = last_error(&running).await.expect("fails");
    assert!(error.contains("not valid for the name"), "{error}");
}

#[tokio::test]
async fn wrong_ca_says_unknown_authority() {
    let pki = Pki::new();
    let other = Authority::new("someone else").expect("CA");
    let pem = other.server(&["a.remote.test"]).expect("cert");
    let tls = thanos_fanout::demo::tls_server::server_config(
        &pem.cert,
        &pem.key,
        Some(&pki.ca.cert_pem()),
    )
    .expect("tls");
    let r = one_remote(tls).await;
    let running = fanout_to(r.addr, pki.client_tls("a.remote.test")).await;
    let error = last_error(&running).await.expect("fails");
    assert!(
        error.contains("unknown authority") && error.contains("tls.ca_file"),
        "{error}"
    );
    // A remote that fails Info is not queried: no data, no call.
    let mut client = client(&running).await;
    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("series");
    assert!(answer.series.is_empty());
    assert_eq!(r.script.series_calls(), 0);
    // The query says which remote is missing and why.
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    assert!(
        answer.warnings[0].contains("remote a") && answer.warnings[0].contains("unknown authority"),
        "{}",
        answer.warnings[0]
    );
}

#[tokio::test]
async fn wrong_server_name_says_so() {
    let pki = Pki::new();
    let r = one_remote(pki.server(&["a.remote.test"])).await;
    let running = fanout_to(r.addr, pki.client_tls("b.remote.test")).await;
    let error = last_error(&running).await.expect("fails");
    assert!(
        error.contains("not valid for the name") && error.contains("tls.server_name"),
        "{error}"
    );
}

#[tokio::test]
async fn missing_client_certificate_says_so() {
    let pki = Pki::new();
    let r = one_remote(pki.server(&["a.remote.test"])).await;
    let mut tls = pki.client_tls("a.remote.test");
    tls.cert_file = None;
    tls.key_file = None;
    let running = fanout_to(r.addr, tls).await;
    let error = last_error(&running).await.expect("fails");
    assert!(error.contains("requires a client certificate"), "{error}");
}

#[tokio::test]
async fn client_certificate_from_an_untrusted_ca_is_reported() {
    let pki = Pki::new();
    let r = one_remote(pki.server(&["a.remote.test"])).await;
    let stranger = Authority::new("stranger").expect("CA");
    let (cert, key) = stranger
        .client("intruder")
        .expect("cert")
        .write(pki.dir.path(), "intruder")
        .expect("write");
    let mut tls = pki.client_tls("a.remote.test");
    tls.cert_file = Some(cert);
    tls.key_file = Some(key);
    let running = fanout_to(r.addr, tls).await;
    let error = last_error(&running).await.expect("fails");
    assert!(error.contains("rejected our client certificate"), "{error}");
}

#[tokio::test]
async fn plaintext_remote_is_not_spoken_to_in_tls_and_recovers_when_fixed() {
    // A TLS config towards a plaintext server fails the handshake; it never
    // falls back to plaintext.
    let pki = Pki::new();
    let data = dataset(
        &[("cluster", "a")],
        vec![series(&[("__name__", "up")], samples(0, MINUTE, |_| 1.0))],
    );
    let r = start_remote(data, Capabilities::default(), None).await;
    let running = fanout_to(r.addr, pki.client_tls("a.remote.test")).await;
    let error = last_error(&running).await.expect("fails");
    assert!(error.contains("TLS handshake"), "{error}");
    assert_eq!(r.script.series_calls(), 0);
    drop(running);

    // An endpoint whose Info fails comes back by itself when it answers again.
    let r = up_remote("a", None).await;
    r.script
        .info_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let running = start_fanout(config(vec![remote("a", r.addr, None)])).await;
    let endpoint = running
        .upstreams
        .endpoints()
        .into_iter()
        .next()
        .expect("endpoint");
    assert!(endpoint.queryable().is_none());
    r.script
        .info_fails
        .store(false, std::sync::atomic::Ordering::SeqCst);
    eventually("endpoint healthy again", Duration::from_secs(3), || {
        endpoint.queryable().is_some()
    })
    .await;
}

#[tokio::test]
async fn authority_follows_config_then_server_name_then_target() {
    let pki = Pki::new();
    let r = one_remote(pki.server(&["a.remote.test"])).await;
    let mut explicit = remote("a", r.addr, Some(pki.client_tls("a.remote.test")));
    explicit.authority = Some("ingress.example.com:443".into());
    let running = start_fanout(config(vec![explicit])).await;
    drop(running);
    let running = fanout_to(r.addr, pki.client_tls("a.remote.test")).await;
    drop(running);
    let plain = up_remote("p", None).await;
    let running = start_fanout(config(vec![remote("p", plain.addr, None)])).await;
    drop(running);
    let seen = r.script.authorities.lock().expect("lock").clone();
    assert_eq!(
        seen.first().map(String::as_str),
        Some("ingress.example.com:443")
    );
    assert_eq!(seen.last().map(String::as_str), Some("a.remote.test"));
    let seen = plain.script.authorities.lock().expect("lock").clone();
    assert_eq!(seen.first(), Some(&plain.addr.to_string()));
}

#[tokio::test]
async fn connections_are_reused_across_requests() {
    let pki = Pki::new();
    let r = one_remote(pki.server(&["a.remote.test"])).await;
    let running = fanout_to(r.addr, pki.client_tls("a.remote.test")).await;
    let mut client = client(&running).await;
    for _ in 0..5 {
        call_series(&mut client, request(vec![eq("__name__", "up")]))
            .await
            .expect("series");
    }
    assert_eq!(r.script.series_calls(), 5);
    assert_eq!(
        r.script
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

/// A server that asks for a client certificate without requiring one (nginx
/// `ssl_verify_client optional`, Envoy `require_client_certificate: false`).
fn asks_without_requiring(pki: &Pki, name: &str) -> std::sync::Arc<rustls::ServerConfig> {
    thanos_fanout::tls::install_crypto_provider();
    let pem = pki.ca.server(&[name]).expect("server cert");
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
    let verifier = rustls::server::WebPkiClientVerifier::builder(std::sync::Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .expect("verifier");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).expect("key");
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&pem.cert), key)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    std::sync::Arc::new(config)
}

#[tokio::test]
async fn optional_client_certificate_is_not_needed() {
    let pki = Pki::new();
    let r = one_remote(asks_without_requiring(&pki, "a.remote.test")).await;
    let mut tls = pki.client_tls("a.remote.test");
    tls.cert_file = None;
    tls.key_file = None;
    let running = fanout_to(r.addr, tls).await;
    assert_eq!(last_error(&running).await, None);
    let mut client = client(&running).await;
    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("series");
    assert_eq!(answer.label_values("cluster"), ["a"]);
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);

    // Should such a remote refuse us later (nginx answers 400 once
    // `ssl_verify_client` turns `on`), the error says it asked.
    r.script
        .info_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    eventually("Info fails", Duration::from_secs(5), || {
        running.upstreams.endpoints()[0].queryable().is_none()
    })
    .await;
    let error = last_error(&running).await.expect("fails");
    assert!(
        error.contains("asked for a client certificate and none is configured"),
        "{error}"
    );
}

#[tokio::test]
async fn compression_towards_a_remote_is_used() {
    use thanos_fanout::config::Compression;
    for (compression, name) in [
        (Compression::Snappy, "snappy"),
        (Compression::Gzip, "gzip"),
        (Compression::Zstd, "zstd"),
        (Compression::None, ""),
    ] {
        let pki = Pki::new();
        let r = one_remote(pki.server(&["a.remote.test"])).await;
        let mut cfg = remote("a", r.addr, Some(pki.client_tls("a.remote.test")));
        cfg.compression = compression;
        let running = start_fanout(config(vec![cfg])).await;
        let mut client = client(&running).await;
        let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
            .await
            .expect("series");
        assert_eq!(answer.label_values("cluster"), ["a"], "{name}");
        assert!(answer.warnings.is_empty(), "{name}: {:?}", answer.warnings);
        let seen = r.script.encodings.lock().expect("lock").clone();
        assert!(
            !seen.is_empty() && seen.iter().all(|e| e == name),
            "{name}: requests were encoded {seen:?}"
        );
    }
}

/// The value of the metric line that starts with `series` (name and labels).
async fn metric(running: &Running, series: &str) -> Option<f64> {
    let (_, body) = crate::info::http_get(running.http_addr, "/metrics").await;
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

fn server_config(
    pem: &thanos_fanout::demo::certs::Pem,
    pki: &Pki,
) -> std::sync::Arc<rustls::ServerConfig> {
    thanos_fanout::demo::tls_server::server_config(&pem.cert, &pem.key, Some(&pki.ca.cert_pem()))
        .expect("server config")
}

#[tokio::test]
async fn handshake_failures_are_counted_by_reason() {
    let pki = Pki::new();
    let stranger = Authority::new("stranger").expect("CA");
    let foreign = up_remote(
        "foreign",
        Some(server_config(
            &stranger.server(&["r.test"]).expect("cert"),
            &pki,
        )),
    )
    .await;
    let misnamed = up_remote("misnamed", Some(pki.server(&["other.test"]))).await;
    let expired = up_remote(
        "expired",
        Some(server_config(
            &pki.ca
                .server_valid(&["r.test"], (2020, 1, 1), (2021, 1, 1))
                .expect("cert"),
            &pki,
        )),
    )
    .await;
    let plaintext = up_remote("plaintext", None).await;
    // With TLS 1.3 this rejection comes after our side of the handshake.
    let rejecting = up_remote("rejecting", Some(pki.server(&["r.test"]))).await;
    let (cert, key) = stranger
        .client("intruder")
        .expect("cert")
        .write(pki.dir.path(), "intruder")
        .expect("write");
    let mut intruder = pki.client_tls("r.test");
    intruder.cert_file = Some(cert);
    intruder.key_file = Some(key);
    let healthy = up_remote("healthy", Some(pki.server(&["r.test"]))).await;

    let running = start_fanout(config(vec![
        remote("foreign", foreign.addr, Some(pki.client_tls("r.test"))),
        remote("misnamed", misnamed.addr, Some(pki.client_tls("r.test"))),
        remote("expired", expired.addr, Some(pki.client_tls("r.test"))),
        remote("plaintext", plaintext.addr, Some(pki.client_tls("r.test"))),
        remote("rejecting", rejecting.addr, Some(intruder)),
        remote("healthy", healthy.addr, Some(pki.client_tls("r.test"))),
    ]))
    .await;
    for (remote, addr, reason) in [
        ("foreign", foreign.addr, "unknown_authority"),
        ("misnamed", misnamed.addr, "name_mismatch"),
        ("expired", expired.addr, "expired"),
        ("plaintext", plaintext.addr, "not_tls"),
        ("rejecting", rejecting.addr, "client_certificate_rejected"),
    ] {
        let series = format!(
            r#"thanos_fanout_remote_tls_handshake_failures_total{{remote="{remote}",endpoint="{addr}",reason="{reason}"}}"#
        );
        let count = metric(&running, &series).await;
        assert!(count.is_some_and(|n| n >= 1.0), "{series}: {count:?}");
    }
    let (_, body) = crate::info::http_get(running.http_addr, "/metrics").await;
    assert!(
        !body.contains(r#"thanos_fanout_remote_tls_handshake_failures_total{remote="healthy""#),
        "{body}"
    );
    // Each failing remote is counted under its one reason only.
    let failures = body
        .lines()
        .filter(|l| l.starts_with("thanos_fanout_remote_tls_handshake_failures_total{"))
        .count();
    assert_eq!(failures, 5, "{body}");
}

#[tokio::test]
async fn certificate_expiry_is_exported_for_client_and_server_certificates() {
    let pki = Pki::new();
    // 2040-01-01T00:00:00Z
    const NOT_AFTER: f64 = 2_208_988_800.0;
    let pem = pki
        .ca
        .server_valid(&["a.remote.test"], (2020, 1, 1), (2040, 1, 1))
        .expect("cert");
    let r = up_remote("a", Some(server_config(&pem, &pki))).await;
    let plain = up_remote("b", None).await;
    let running = start_fanout(config(vec![
        remote("a", r.addr, Some(pki.client_tls("a.remote.test"))),
        remote("b", plain.addr, None),
    ]))
    .await;

    let server = format!(
        r#"thanos_fanout_remote_server_certificate_expiry_timestamp_seconds{{remote="a",endpoint="{}"}}"#,
        r.addr
    );
    assert_eq!(metric(&running, &server).await, Some(NOT_AFTER));

    let client_pem = std::fs::read(&pki.client_cert).expect("read client cert");
    let (_, client_pem) = x509_parser::pem::parse_x509_pem(&client_pem).expect("pem");
    let client_not_after = client_pem
        .parse_x509()
        .expect("x509")
        .validity()
        .not_after
        .timestamp();
    assert_eq!(
        metric(
            &running,
            r#"thanos_fanout_remote_client_certificate_expiry_timestamp_seconds{remote="a"}"#
        )
        .await,
        Some(client_not_after as f64)
    );
    // A plaintext remote has neither.
    let (_, body) = crate::info::http_get(running.http_addr, "/metrics").await;
    assert!(
        !body.contains(r#"certificate_expiry_timestamp_seconds{remote="b""#),
        "{body}"
    );
}
