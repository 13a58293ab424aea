//! TLS and mutual TLS on our own listeners: the querier-facing gRPC port
//! and the HTTP port; clients without the right certificate are refused,
//! and rotated certificates serve new connections without a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use thanos_fanout::app::Running;
use thanos_fanout::config::{Config, ListenerTls, TlsConfig};
use thanos_fanout::demo::certs::Authority;
use thanos_fanout::proto::thanos::store_client::StoreClient;
use thanos_fanout::tls::ClientTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};

use crate::common::*;

/// thanos-fanout's own certificate for `name`, from `ca`, written into `dir`.
pub(crate) fn listener_cert(ca: &Authority, dir: &Path, name: &str) -> ListenerTls {
    let (cert_file, key_file) = ca
        .server(&[name])
        .expect("cert")
        .write(dir, "listener")
        .expect("write");
    ListenerTls {
        cert_file,
        key_file,
        client_ca_file: None,
        max_handshakes: thanos_fanout::config::DEFAULT_MAX_HANDSHAKES,
    }
}

/// One remote `a`, and thanos-fanout in front of it with `grpc` and `http` TLS.
async fn fanout_with(
    grpc: Option<ListenerTls>,
    http: Option<ListenerTls>,
) -> (RemoteHandle, Running) {
    let r = up_remote("a", None).await;
    let mut cfg: Config = config(vec![remote("a", r.addr, None)]);
    cfg.grpc.tls = grpc;
    cfg.http.tls = http;
    cfg.reload.interval = Duration::from_millis(100);
    (r, start_fanout(cfg).await)
}

/// A gRPC client over TLS, verifying `server_name`, with the client
/// certificate in `tls` (if any).
async fn tls_client(
    running: &Running,
    tls: &TlsConfig,
    server_name: &str,
) -> Result<StoreClient<Channel>, String> {
    tls_client_at(running.grpc_addr, tls, server_name).await
}

/// [`tls_client`] for a listener at `addr`.
pub(crate) async fn tls_client_at(
    addr: std::net::SocketAddr,
    tls: &TlsConfig,
    server_name: &str,
) -> Result<StoreClient<Channel>, String> {
    let client_tls = ClientTls::from_config(tls).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).expect("name");
    let connector = tower::service_fn(move |_: http::Uri| {
        let (client_tls, name) = (client_tls.clone(), name.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let (stream, _) = client_tls
                .connect(name, tcp)
                .await
                .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let channel = Endpoint::from_shared(format!("https://{server_name}"))
        .expect("uri")
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(StoreClient::new(channel))
}

/// Whether a Series call through `client` answers with remote a's data.
pub(crate) async fn answers(client: Result<StoreClient<Channel>, String>) -> Result<(), String> {
    let mut client = client?;
    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .map_err(|e| format!("{e:?}"))?;
    if answer.label_values("cluster") == ["a"] {
        Ok(())
    } else {
        Err(format!("unexpected answer {answer:?}"))
    }
}

#[tokio::test]
async fn mutual_tls_serves_clients_with_a_certificate_and_refuses_the_rest() {
    let pki = Pki::new();
    let mut grpc = listener_cert(&pki.ca, pki.dir.path(), "fanout.test");
    grpc.client_ca_file = Some(pki.ca_file.clone());
    let (_r, running) = fanout_with(Some(grpc), None).await;

    let good = pki.client_tls("fanout.test");
    let mut no_certificate = good.clone();
    no_certificate.cert_file = None;
    no_certificate.key_file = None;
    let stranger = Authority::new("stranger").expect("CA");
    let (cert, key) = stranger
        .client("intruder")
        .expect("cert")
        .write(pki.dir.path(), "intruder")
        .expect("write");
    let mut foreign = good.clone();
    foreign.cert_file = Some(cert);
    foreign.key_file = Some(key);

    // Refused clients and good ones at the same time: the good ones answer.
    let (a, b, c, d, e) = tokio::join!(
        answers(tls_client(&running, &good, "fanout.test").await),
        answers(tls_client(&running, &no_certificate, "fanout.test").await),
        answers(tls_client(&running, &foreign, "fanout.test").await),
        answers(Ok(client(&running).await)),
        answers(tls_client(&running, &good, "fanout.test").await),
    );
    assert_eq!(a, Ok(()));
    assert_eq!(e, Ok(()));
    for (what, refused) in [("no certificate", b), ("another CA", c), ("plaintext", d)] {
        assert!(refused.is_err(), "{what}: {refused:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_handshakes_hold_up_no_one_and_refusals_never_stop_the_listener() {
    let pki = Pki::new();
    let mut grpc = listener_cert(&pki.ca, pki.dir.path(), "fanout.test");
    grpc.client_ca_file = Some(pki.ca_file.clone());
    let (_r, running) = fanout_with(Some(grpc), None).await;
    let addr = running.grpc_addr;

    // Connections that never finish their handshake, opened first: some
    // send nothing, one the start of a ClientHello record that never ends.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let mut half = tokio::net::TcpStream::connect(addr).await.expect("connect");
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write");
    stalled.push(half);

    let good = pki.client_tls("fanout.test");
    let mut anonymous = good.clone();
    anonymous.cert_file = None;
    anonymous.key_file = None;
    // Many clients at once, good and refused mixed, each within a bound far
    // below the handshake timeout: a listener that handshakes in line
    // behind the stalled connections answers none of them in time.
    let mut calls = tokio::task::JoinSet::new();
    for round in 0..8 {
        for (who, tls) in [
            ("verified", good.clone()),
            ("no certificate", anonymous.clone()),
        ] {
            calls.spawn(async move {
                let result = tokio::time::timeout(Duration::from_secs(5), async {
                    answers(tls_client_at(addr, &tls, "fanout.test").await).await
                })
                .await
                .unwrap_or_else(|_| Err("no answer within 5s".into()));
                (who, round, result)
            });
        }
    }
    let mut served = 0;
    while let Some(joined) = calls.join_next().await {
        let (who, round, result) = joined.expect("task");
        if who == "verified" {
            assert_eq!(result, Ok(()), "verified client, round {round}");
            served += 1;
        } else {
            assert!(result.is_err(), "{who} client was served in round {round}");
        }
    }
    assert_eq!(served, 8);
    // Still serving after all the refusals, with the stalled ones open.
    assert_eq!(
        answers(tls_client(&running, &good, "fanout.test").await).await,
        Ok(())
    );
    drop(stalled);
}

#[tokio::test]
async fn a_rotated_listener_certificate_serves_new_connections() {
    let pki = Pki::new();
    let grpc = listener_cert(&pki.ca, pki.dir.path(), "old.fanout.test");
    let (_r, running) = fanout_with(Some(grpc), None).await;
    let tls = pki.client_tls("unused");
    assert_eq!(
        answers(tls_client(&running, &tls, "old.fanout.test").await).await,
        Ok(())
    );
    // A connection opened before the rotation keeps working.
    let mut before = tls_client(&running, &tls, "old.fanout.test")
        .await
        .expect("connected");

    // A broken file is refused; the running certificate stays.
    std::fs::write(pki.dir.path().join("listener.pem"), "not a certificate").expect("break");
    eventually("the reload fails", Duration::from_secs(5), || {
        metric_value(&running, "thanos_fanout_config_last_reload_successful") == Some(0.0)
    })
    .await;
    assert_eq!(
        answers(tls_client(&running, &tls, "old.fanout.test").await).await,
        Ok(())
    );

    listener_cert(&pki.ca, pki.dir.path(), "new.fanout.test");
    eventually("the reload succeeds", Duration::from_secs(5), || {
        metric_value(&running, "thanos_fanout_config_last_reload_successful") == Some(1.0)
    })
    .await;
    assert_eq!(
        answers(tls_client(&running, &tls, "new.fanout.test").await).await,
        Ok(())
    );
    assert!(
        answers(tls_client(&running, &tls, "old.fanout.test").await)
            .await
            .is_err()
    );
    let answer = call_series(&mut before, request(vec![eq("__name__", "up")]))
        .await
        .expect("the old connection");
    assert_eq!(answer.label_values("cluster"), ["a"]);
}

#[tokio::test]
async fn the_http_port_serves_https() {
    let pki = Pki::new();
    let http = listener_cert(&pki.ca, pki.dir.path(), "fanout.test");
    let (_r, running) = fanout_with(None, Some(http)).await;
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(&pki.ca_file).expect("CA");
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("CA cert")).expect("add");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("fanout.test").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    tls.write_all(b"GET /-/ready HTTP/1.1\r\nHost: fanout.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    tls.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Plain HTTP is not answered.
    let mut plain = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .expect("connect");
    plain
        .write_all(b"GET /-/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    // The port answers in TLS, at once: a fatal alert record (content type
    // 21, level 2), then it closes.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "plain HTTP not closed: {read:?} after {answer:?}"
    );
    assert!(
        answer.len() >= 7 && answer[0] == 0x15 && answer[5] == 2,
        "not a TLS alert: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

/// The value of an unlabelled metric, read from the registry.
fn metric_value(running: &Running, name: &str) -> Option<f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &running.registry).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
