//! The status page (`GET /`) and its JSON (`GET /status.json`), read over
//! HTTP from a running aggregator with healthy and failing remotes.

use std::time::Duration;

use serde_json::Value;
use thanos_fanout::app;
use thanos_fanout::demo::certs::Authority;
use thanos_fanout::demo::tls_server::server_config;

use crate::common::*;

/// Status code, content type and body of `GET path`.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let (status, response) = crate::info::http_get(addr, path).await;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a header and a body");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

async fn status_json(running: &app::Running) -> Value {
    let (status, content_type, body) = get(running.http_addr, "/status.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/json");
    serde_json::from_str(&body).expect("valid JSON")
}

async fn page(running: &app::Running) -> String {
    let (status, content_type, body) = get(running.http_addr, "/").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/html; charset=utf-8");
    body
}

fn remote_in<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["remotes"]
        .as_array()
        .expect("remotes")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("remote {name} in {status:#}"))
}

/// A loopback address that refuses connections.
async fn refusing_address() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test]
async fn failing_remotes_come_first_with_their_errors_in_full() {
    let pki = Pki::new();
    let healthy = up_remote("a", Some(pki.server(&["a.remote.test"]))).await;
    // Another CA signed this remote's certificate.
    let strangers = Authority::new("another CA").expect("CA");
    let pem = strangers.server(&["c.remote.test"]).expect("server cert");
    let wrong_ca = up_remote(
        "c",
        Some(server_config(&pem.cert, &pem.key, None).expect("server config")),
    )
    .await;
    let refused = refusing_address().await;
    let running = start_fanout(config(vec![
        remote(
            "healthy",
            healthy.addr,
            Some(pki.client_tls("a.remote.test")),
        ),
        remote("refused", refused, Some(pki.client_tls("b.remote.test"))),
        remote(
            "wrong-ca",
            wrong_ca.addr,
            Some(pki.client_tls("c.remote.test")),
        ),
    ]))
    .await;
    let mut client = client(&running).await;
    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("series");
    assert_eq!(answer.series.len(), 1);

    let status = status_json(&running).await;
    assert_eq!(status["ready"], true);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        status["config"]["http_listen"],
        running.http_addr.to_string()
    );
    assert_eq!(status["summary"]["remotes"], 3);
    assert_eq!(status["summary"]["remotes_down"], 2);
    assert_eq!(status["summary"]["remotes_healthy"], 1);
    let order: Vec<&str> = status["remotes"]
        .as_array()
        .expect("remotes")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(order, ["refused", "wrong-ca", "healthy"]);

    let ok = remote_in(&status, "healthy");
    assert_eq!(ok["health"], "healthy");
    assert_eq!(ok["endpoints_healthy"], 1);
    assert_eq!(ok["label_sets"], serde_json::json!([{"cluster": "a"}]));
    assert_eq!(ok["apis"], serde_json::json!(["store"]));
    assert_eq!(ok["time_range"]["min_time"], 0);
    assert_eq!(ok["time_range"]["min"], "1970-01-01T00:00:00Z");
    assert_eq!(ok["last_error"], Value::Null);
    let endpoint = &ok["endpoints"][0];
    assert_eq!(endpoint["address"], healthy.addr.to_string());
    assert_eq!(endpoint["health"], "healthy");
    assert_eq!(endpoint["info"]["component"], "sidecar");
    assert!(
        endpoint["last_info_success"]["age_seconds"]
            .as_f64()
            .expect("age")
            < 10.0
    );
    assert!(endpoint["info_latency_seconds"].as_f64().is_some());
    let cert = &ok["tls"]["client_certificate"];
    assert_eq!(cert["subject"], "CN=thanos-fanout");
    assert_eq!(cert["validity"], "valid");
    // rcgen's default validity ends in 4096.
    assert!(
        cert["not_after_text"]
            .as_str()
            .expect("date")
            .starts_with("4096-01-01"),
        "{cert}"
    );
    let series = ok["calls"]["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .find(|m| m["method"] == "Series")
        .expect("Series");
    assert_eq!(series["total"]["success"], 1);
    assert_eq!(series["recent"]["success"], 1);
    assert_eq!(series["total"]["error_ratio"], 0.0);
    assert!(series["recent"]["mean_duration_seconds"].as_f64().is_some());

    let down = remote_in(&status, "refused");
    assert_eq!(down["health"], "down");
    assert_eq!(down["endpoints_healthy"], 0);
    assert_eq!(down["last_error"]["source"], "info");
    let refused_error = down["last_error"]["message"].as_str().expect("message");
    assert!(
        refused_error.to_lowercase().contains("refused"),
        "{refused_error}"
    );
    assert_eq!(down["endpoints"][0]["health"], "down");
    assert_eq!(down["endpoints"][0]["info"], Value::Null);
    assert_eq!(down["endpoints"][0]["last_info_success"], Value::Null);
    let tls_error = remote_in(&status, "wrong-ca")["last_error"]["message"]
        .as_str()
        .expect("message");
    assert!(
        tls_error.contains("unknown authority (check tls.ca_file)"),
        "{tls_error}"
    );

    let html = page(&running).await;
    assert!(
        html.contains("2 of 3 remotes need attention"),
        "verdict missing"
    );
    // Failing remotes first, in the overview and in the sections.
    let at = |needle: &str| {
        html.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not on the page"))
    };
    assert!(at("<strong>refused</strong>") < at("<strong>healthy</strong>"));
    assert!(at("<span>wrong-ca</span>") < at("<span>healthy</span>"));
    assert!(html.contains("<span class=\"badge down\">down</span>"));
    assert!(html.contains("<span class=\"badge healthy\">healthy</span>"));
    // The errors in full (escaped, as every value is; a single quote needs
    // no escaping where every attribute value is double-quoted).
    for error in [refused_error, tls_error] {
        let escaped = error
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;");
        assert!(html.contains(&escaped), "{error} not in full on the page");
    }
    assert!(html.contains("<code class=\"labels\">{cluster=&quot;a&quot;}</code>"));
    assert!(html.contains(&healthy.addr.to_string()));
    assert!(html.contains("CN=thanos-fanout"));
    assert!(html.contains("4096-01-01"));
    // Self-contained: no scripts, nothing fetched from elsewhere.
    assert!(!html.contains("<script"));
    assert!(!html.contains("src=") && !html.contains("<link"));
}

#[tokio::test]
async fn every_value_is_escaped() {
    let name = r#"<img src=x onerror="alert(1)">&'"#;
    let running = start_fanout(config(vec![remote(name, refusing_address().await, None)])).await;
    let html = page(&running).await;
    assert!(!html.contains("<img"), "unescaped name on the page");
    // maud double-quotes every attribute value, so a single quote cannot end
    // one and is left as it is.
    assert!(html.contains("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;'"));
    let status = status_json(&running).await;
    assert_eq!(status["remotes"][0]["name"], name);
    assert_eq!(status["remotes"][0]["tls"], Value::Null);
}

#[tokio::test]
async fn failed_calls_warn_about_a_remote_that_answers_info() {
    let r = up_remote("a", None).await;
    let running = start_fanout(config(vec![remote("flaky", r.addr, None)])).await;
    r.script.set(SeriesScript::Fail(
        tonic::Code::Internal,
        "disk <on> fire".into(),
    ));
    let mut client = client(&running).await;
    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("a warning, not a failure");
    assert_eq!(answer.warnings.len(), 1);

    let status = status_json(&running).await;
    let flaky = remote_in(&status, "flaky");
    assert_eq!(flaky["health"], "healthy");
    let warnings = flaky["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = warnings[0].as_str().expect("text");
    assert!(
        warning.starts_with("1 of 1 calls failed in the last")
            && warning.contains("disk <on> fire"),
        "{warning}"
    );
    assert_eq!(flaky["last_error"]["source"], "call");
    assert_eq!(flaky["last_error"]["method"], "Series");
    assert_eq!(flaky["calls"]["recent"]["error"], 1);
    assert_eq!(flaky["calls"]["recent"]["error_ratio"], 1.0);
    let failed = &flaky["endpoints"][0]["last_failed_call"];
    assert_eq!(failed["method"], "Series");
    assert!(
        failed["error"]
            .as_str()
            .expect("error")
            .contains("disk <on> fire")
    );

    let html = page(&running).await;
    assert!(html.contains("1 of 1 remotes need attention"));
    assert!(html.contains("<tr class=\"warning\">"));
    assert!(html.contains("<span class=\"badge warning\">warning</span>"));
    assert!(html.contains("disk &lt;on&gt; fire"));
}

#[tokio::test]
async fn an_expired_client_certificate_is_called_out() {
    let pki = Pki::new();
    let r = up_remote("a", Some(pki.server(&["a.remote.test"]))).await;
    // A client certificate that expired yesterday.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["thanos-fanout".to_owned()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "expired client");
    let now = std::time::SystemTime::now();
    params.not_before = (now - Duration::from_secs(30 * 86_400)).into();
    params.not_after = (now - Duration::from_secs(86_400)).into();
    let cert = params.self_signed(&key).expect("cert");
    let cert_file = pki.dir.path().join("expired.pem");
    let key_file = pki.dir.path().join("expired-key.pem");
    std::fs::write(&cert_file, cert.pem()).expect("write");
    std::fs::write(&key_file, key.serialize_pem()).expect("write");
    let mut tls = pki.client_tls("a.remote.test");
    tls.cert_file = Some(cert_file);
    tls.key_file = Some(key_file);
    let running = start_fanout(config(vec![remote("old-cert", r.addr, Some(tls))])).await;

    let status = status_json(&running).await;
    let old = remote_in(&status, "old-cert");
    let cert = &old["tls"]["client_certificate"];
    assert_eq!(cert["validity"], "expired");
    assert_eq!(cert["subject"], "CN=expired client");
    assert!(cert["expires_in_seconds"].as_i64().expect("seconds") < 0);
    let warnings = old["warnings"].as_array().expect("warnings");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.starts_with("client certificate expired"))),
        "{warnings:?}"
    );
    // The remote does not know the certificate's issuer either.
    assert_eq!(old["health"], "down");

    let html = page(&running).await;
    assert!(html.contains("client certificate expired"));
    assert!(html.contains("expired 1d ago"));
}

#[tokio::test]
async fn a_remote_without_endpoints_is_down_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("nothing.json");
    std::fs::write(&file, "[]").expect("write");
    let r = up_remote("a", None).await;
    let mut empty = remote("empty", r.addr, None);
    empty.targets.clear();
    empty.file_sd = vec![file.clone()];
    let running = start_fanout(config(vec![remote("a", r.addr, None), empty])).await;

    let status = status_json(&running).await;
    let empty = remote_in(&status, "empty");
    assert_eq!(empty["health"], "down");
    assert_eq!(empty["endpoints_total"], 0);
    assert_eq!(empty["last_error"]["source"], "discovery");
    let message = empty["last_error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("no endpoints") && message.contains(&file.display().to_string()),
        "{message}"
    );
    assert_eq!(status["remotes"][0]["name"], "empty");
    let html = page(&running).await;
    assert!(html.contains("None discovered."));
}

#[tokio::test]
async fn refresh_is_opt_in() {
    let r = up_remote("a", None).await;
    let running = start_fanout(config(vec![remote("a", r.addr, None)])).await;
    let html = page(&running).await;
    assert!(html.contains("All 1 remotes are healthy."));
    assert!(!html.contains("http-equiv=\"refresh\""));
    let (_, _, html) = get(running.http_addr, "/?refresh=15").await;
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"15\">"));
    // The probes and metrics are still there.
    assert_eq!(get(running.http_addr, "/-/ready").await.0, 200);
    assert_eq!(get(running.http_addr, "/metrics").await.0, 200);
}
