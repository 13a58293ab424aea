//! Reloading under a running instance: its config file (and the certificate
//! files it names) changed on disk, remotes added, removed and changed,
//! certificates rotated, a broken file kept out until it is repaired, and
//! streams in flight left alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thanos_fanout::app::{self, ReloadFrom, Running};
use thanos_fanout::config::{Config, ConfigSource, TlsConfig};
use thanos_fanout::demo::synthetic::Capabilities;
use thanos_fanout::proto::thanos::{SeriesRequest, series_response};
use thanos_fanout::upstream::Endpoint;

use crate::common::*;

/// Long enough for a reload on loopback, with room for a busy machine.
const WITHIN: Duration = Duration::from_secs(15);

/// A config file in its own directory, rewritten as the test goes.
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(config: &Config) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        let file = Self { _dir: dir, path };
        file.write(config);
        file
    }

    fn write(&self, config: &Config) {
        self.write_text(&serde_yaml::to_string(config).expect("yaml"));
    }

    fn write_text(&self, text: &str) {
        std::fs::write(&self.path, text).expect("write config");
    }
}

/// `remotes` checked for changes every 100 ms.
fn reloading(remotes: Vec<thanos_fanout::config::RemoteConfig>) -> Config {
    let mut config = config(remotes);
    config.reload.interval = Duration::from_millis(100);
    config
}

/// Starts the service from `file` as the binary does, and waits until ready.
async fn start_from(file: &ConfigFile, sighup: bool) -> Running {
    let source = ConfigSource::Layered {
        file: Some(file.path.clone()),
        overrides: Default::default(),
    };
    let config = source.load().expect("valid config");
    let running = app::start_with(config, ReloadFrom { source, sighup })
        .await
        .expect("fanout starts");
    tokio::time::timeout(Duration::from_secs(10), running.ready.wait())
        .await
        .expect("ready in time");
    running
}

fn metrics_text(running: &Running) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &running.registry).expect("encode");
    text
}

fn names(running: &Running) -> Vec<String> {
    running
        .upstreams
        .remotes()
        .iter()
        .map(|r| r.name.to_string())
        .collect()
}

fn endpoint_of(running: &Running, remote: &str) -> Arc<Endpoint> {
    running
        .upstreams
        .endpoints()
        .into_iter()
        .find(|e| &*e.remote == remote)
        .expect("endpoint of the remote")
}

/// Clusters answering `{__name__="up"}`, sorted, and the warnings.
async fn clusters(running: &Running) -> (Vec<String>, Vec<String>) {
    let mut client = client(running).await;
    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("series");
    let mut clusters = answer.label_values("cluster");
    clusters.sort();
    (clusters, answer.warnings)
}

/// Polls Series until `{__name__="up"}` comes from exactly `want`, without
/// warnings.
async fn wait_for_clusters(running: &Running, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let (got, warnings) = clusters(running).await;
        if got == want && warnings.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wanted clusters {want:?}, got {got:?} with warnings {warnings:?}; reloads: {:?}",
            *running.reloads.borrow()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_metric(running: &Running, line: &str) {
    eventually(line, WITHIN, || {
        metrics_text(running)
            .lines()
            .any(|l| l == line || l.starts_with(&format!("{line} ")))
    })
    .await;
}

#[tokio::test]
async fn added_and_removed_remotes_follow_the_file() {
    let a = up_remote("a", None).await;
    let b = up_remote("b", None).await;
    let c = up_remote("c", None).await;
    let file = ConfigFile::new(&reloading(vec![
        remote("a", a.addr, None),
        remote("b", b.addr, None),
    ]));
    let running = start_from(&file, false).await;
    wait_for_clusters(&running, &["a", "b"]).await;
    let kept = endpoint_of(&running, "a");
    assert!(metrics_text(&running).contains(r#"remote="b""#));

    file.write(&reloading(vec![
        remote("a", a.addr, None),
        remote("c", c.addr, None),
    ]));
    wait_for_clusters(&running, &["a", "c"]).await;
    assert_eq!(names(&running), ["a", "c"]);

    // a did not change: same endpoint, same connection.
    assert!(Arc::ptr_eq(&kept, &endpoint_of(&running, "a")));
    assert_eq!(
        a.script
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // b is gone, and so are its metrics.
    let metrics = metrics_text(&running);
    assert!(!metrics.contains(r#"remote="b""#), "{metrics}");
    assert!(
        metrics.contains(r#"thanos_fanout_remote_endpoint_up{remote="c","#),
        "{metrics}"
    );
    wait_for_metric(&running, "thanos_fanout_config_last_reload_successful 1").await;
    assert!(
        metrics.contains(r#"thanos_fanout_config_reloads_total{result="success"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"thanos_fanout_config_reloads_total{result="failure"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_remote_with_another_target_keeps_its_connections() {
    let a1 = up_remote("a", None).await;
    // A second endpoint of a, told apart by its series.
    let a2 = start_remote(
        dataset(
            &[("cluster", "a")],
            vec![series(
                &[("__name__", "up"), ("instance", "2")],
                samples(0, MINUTE, |_| 1.0),
            )],
        ),
        Capabilities::default(),
        None,
    )
    .await;
    let mut config = reloading(vec![remote("a", a1.addr, None)]);
    let file = ConfigFile::new(&config);
    let running = start_from(&file, false).await;
    wait_for_clusters(&running, &["a"]).await;
    let first = endpoint_of(&running, "a");

    config.remotes[0].targets.push(a2.addr.to_string());
    config.discovery.stale_after = Duration::from_secs(60);
    file.write(&config);
    wait_for_clusters(&running, &["a", "a"]).await;

    // The remote was not rebuilt: its first endpoint and connection stay,
    // and it reports its new targets.
    assert_eq!(
        running.upstreams.remotes()[0].config().targets,
        config.remotes[0].targets
    );
    let endpoints = running.upstreams.endpoints();
    assert_eq!(endpoints.len(), 2);
    assert!(endpoints.iter().any(|e| Arc::ptr_eq(e, &first)));
    assert_eq!(
        a1.script
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

/// The CA, client certificate and key files a config names, as a
/// certificate manager would keep them: same paths, new contents.
struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    fn new(pki: &Pki) -> Self {
        let files = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        files.rotate_to(pki);
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn rotate_to(&self, pki: &Pki) {
        for (from, to) in [
            (&pki.ca_file, "ca.pem"),
            (&pki.client_cert, "client.pem"),
            (&pki.client_key, "client-key.pem"),
        ] {
            std::fs::copy(from, self.path(to)).expect("copy");
        }
    }

    fn config(&self, server_name: &str) -> TlsConfig {
        TlsConfig {
            ca_file: Some(self.path("ca.pem")),
            cert_file: Some(self.path("client.pem")),
            key_file: Some(self.path("client-key.pem")),
            server_name: Some(server_name.to_owned()),
            insecure_skip_verify: false,
        }
    }
}

/// Starts remote `cluster` on `addr` (again) with a certificate from `pki`,
/// requiring client certificates from `pki`.
async fn tls_remote_on(addr: std::net::SocketAddr, cluster: &str, pki: &Pki) -> RemoteHandle {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the same address again");
    start_remote_on(
        listener,
        dataset(
            &[("cluster", cluster)],
            vec![series(&[("__name__", "up")], samples(0, MINUTE, |_| 1.0))],
        ),
        Capabilities::default(),
        Some(pki.server(&["a.remote.test"])),
    )
}

#[tokio::test]
async fn rotated_ca_and_client_certificate_are_used() {
    let old = Pki::new();
    let tls = TlsFiles::new(&old);
    let mut a = up_remote("a", Some(old.server(&["a.remote.test"]))).await;
    let addr = a.addr;
    let b = up_remote("b", None).await;
    let file = ConfigFile::new(&reloading(vec![
        remote("a", addr, Some(tls.config("a.remote.test"))),
        remote("b", b.addr, None),
    ]));
    let running = start_from(&file, false).await;
    wait_for_clusters(&running, &["a", "b"]).await;

    // The remote moves to a new CA: its certificate is from it, and it
    // takes only client certificates from it. Ours are still the old ones.
    let new = Pki::new();
    a.stop().await;
    let _a = tls_remote_on(addr, "a", &new).await;
    eventually("a to be refused", WITHIN, || {
        endpoint_of(&running, "a").queryable().is_none()
    })
    .await;
    let (got, warnings) = clusters(&running).await;
    assert_eq!(got, ["b"]);
    assert!(
        warnings.iter().any(|w| w.contains("remote a")),
        "{warnings:?}"
    );

    // The files are rotated in place; the config file does not change.
    tls.rotate_to(&new);
    wait_for_clusters(&running, &["a", "b"]).await;
    wait_for_metric(&running, "thanos_fanout_config_last_reload_successful 1").await;
    assert_eq!(
        b.script
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "b's certificates did not change, nor its connection"
    );
}

#[tokio::test]
async fn a_broken_config_is_rejected_until_repaired() {
    let pki = Pki::new();
    let a = up_remote("a", None).await;
    let b = up_remote("b", Some(pki.server(&["b.remote.test"]))).await;
    let tls = TlsFiles::new(&pki);
    let good = reloading(vec![
        remote("a", a.addr, None),
        remote("b", b.addr, Some(tls.config("b.remote.test"))),
    ]);
    let file = ConfigFile::new(&good);
    let running = start_from(&file, false).await;
    wait_for_clusters(&running, &["a", "b"]).await;
    wait_for_metric(&running, "thanos_fanout_config_last_reload_successful 1").await;

    // A typo: rejected, named, and the running config stays.
    let text = serde_yaml::to_string(&good).expect("yaml");
    file.write_text(&text.replacen("connect_timeout:", "conect_timeout:", 1));
    wait_for_metric(&running, "thanos_fanout_config_last_reload_successful 0").await;
    let error = running
        .reloads
        .borrow()
        .last_error
        .clone()
        .expect("an error");
    assert!(error.contains("conect_timeout"), "{error}");
    wait_for_clusters(&running, &["a", "b"]).await;
    assert!(
        metrics_text(&running).contains(r#"thanos_fanout_config_reloads_total{result="failure"}"#)
    );

    file.write(&good);
    wait_for_metric(&running, "thanos_fanout_config_last_reload_successful 1").await;
    assert_eq!(running.reloads.borrow().last_error, None);
    wait_for_clusters(&running, &["a", "b"]).await;

    // A CA file that is not there yet: rejected, naming it, until it is.
    let mut moved = good.clone();
    let later = tls.path("later-ca.pem");
    if let Some(t) = moved.remotes[1].tls.as_mut() {
        t.ca_file = Some(later.clone());
    }
    file.write(&moved);
    wait_for_metric(&running, "thanos_fanout_config_last_reload_successful 0").await;
    let error = running
        .reloads
        .borrow()
        .last_error
        .clone()
        .expect("an error");
    assert!(
        error.contains("remote b") && error.contains("later-ca.pem"),
        "{error}"
    );
    wait_for_clusters(&running, &["a", "b"]).await;
    std::fs::write(&later, pki.ca.cert_pem()).expect("write CA");
    wait_for_metric(&running, "thanos_fanout_config_last_reload_successful 1").await;
    wait_for_clusters(&running, &["a", "b"]).await;
}

/// `n` series `{__name__="s", i="<i>"}` of cluster `cluster`.
async fn dripping_remote(cluster: &str, n: usize) -> RemoteHandle {
    let series = (0..n)
        .map(|i| {
            series(
                &[("__name__", "s"), ("i", &format!("{i:03}"))],
                samples(0, MINUTE, |_| 1.0),
            )
        })
        .collect();
    let remote = start_remote(
        dataset(&[("cluster", cluster)], series),
        Capabilities::default(),
        None,
    )
    .await;
    remote
        .script
        .set(SeriesScript::Drip(Duration::from_millis(150)));
    remote
}

#[tokio::test]
async fn streams_in_flight_finish_across_a_reload() {
    // 6 s of streaming, for a reload that takes well under a second.
    const SERIES: usize = 40;
    let a = dripping_remote("a", SERIES).await;
    let b = dripping_remote("b", SERIES).await;
    let c = up_remote("c", None).await;
    let file = ConfigFile::new(&reloading(vec![
        remote("a", a.addr, None),
        remote("b", b.addr, None),
    ]));
    let running = start_from(&file, false).await;
    let kept = endpoint_of(&running, "a");

    // One stream from a, which stays, one from b, which is removed.
    let streams = ["a", "b"].map(|cluster| {
        let addr = running.grpc_addr;
        tokio::spawn(async move {
            let mut client = thanos_fanout::proto::thanos::store_client::StoreClient::connect(
                format!("http://{addr}"),
            )
            .await
            .expect("connect");
            let req = SeriesRequest {
                matchers: vec![eq("__name__", "s"), eq("cluster", cluster)],
                ..request(Vec::new())
            };
            let mut stream = client.series(req).await.expect("series").into_inner();
            let (mut series, mut warnings) = (0, Vec::new());
            while let Some(frame) = stream.message().await.expect("the stream goes on") {
                match frame.result {
                    Some(series_response::Result::Series(_)) => series += 1,
                    Some(series_response::Result::Warning(w)) => warnings.push(w),
                    _ => {}
                }
            }
            (series, warnings)
        })
    });
    eventually("both streams to start", WITHIN, || {
        a.script
            .frames_sent
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
            && b.script
                .frames_sent
                .load(std::sync::atomic::Ordering::SeqCst)
                > 0
    })
    .await;

    file.write(&reloading(vec![
        remote("a", a.addr, None),
        remote("c", c.addr, None),
    ]));
    eventually("b removed and c added", WITHIN, || {
        names(&running) == ["a", "c"]
    })
    .await;
    let sent = a
        .script
        .frames_sent
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent < SERIES, "the reload came after the stream ended");

    for (cluster, stream) in ["a", "b"].into_iter().zip(streams) {
        let (series, warnings) = stream.await.expect("stream task");
        assert_eq!(series, SERIES, "series from {cluster}");
        assert!(warnings.is_empty(), "{cluster}: {warnings:?}");
    }
    assert_eq!(
        a.script.cancelled.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert_eq!(
        b.script.cancelled.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert!(Arc::ptr_eq(&kept, &endpoint_of(&running, "a")));
}

#[tokio::test]
async fn sighup_reloads_at_once() {
    let a = up_remote("a", None).await;
    let b = up_remote("b", None).await;
    let mut config = config(vec![remote("a", a.addr, None)]);
    // Only a signal can make it reload within the test.
    config.reload.interval = Duration::from_secs(3600);
    let file = ConfigFile::new(&config);
    let running = start_from(&file, true).await;
    wait_for_clusters(&running, &["a"]).await;

    config.remotes.push(remote("b", b.addr, None));
    file.write(&config);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(names(&running), ["a"], "reloaded without a signal");

    send_sighup();
    wait_for_clusters(&running, &["a", "b"]).await;
    assert_eq!(running.reloads.borrow().attempts, 1);
}

/// Sends SIGHUP to this process (the service listens for it, so the
/// process stays).
fn send_sighup() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP failed");
}

#[tokio::test]
async fn a_rebuilt_remote_keeps_its_endpoints_while_dns_is_down() {
    let pki = Pki::new();
    let tls = TlsFiles::new(&pki);
    let a = up_remote("a", Some(pki.server(&["a.remote.test"]))).await;
    let mut dns = crate::dns_server::TestDns::start().await;
    dns.set_ips("a.remote.test", &[a.addr.ip()], 1);
    let mut config = reloading(vec![remote("a", a.addr, Some(tls.config("a.remote.test")))]);
    config.remotes[0].targets = vec![format!("dns+a.remote.test:{}", a.addr.port())];
    config.discovery.nameservers = vec![dns.addr.to_string()];
    config.discovery.refresh_interval = Duration::from_secs(1);
    let file = ConfigFile::new(&config);
    let running = start_from(&file, false).await;
    wait_for_clusters(&running, &["a"]).await;
    let before = endpoint_of(&running, "a");

    // No DNS server at all, then a change that rebuilds the remote: its
    // discovery and last good answer carry over.
    dns.stop().await;
    // A failed lookup: the resolver's cache has nothing left either.
    eventually("a failed lookup", WITHIN, || {
        metrics_text(&running)
            .contains(r#"thanos_fanout_discovery_lookups_total{remote="a",result="Failed"}"#)
    })
    .await;
    config.remotes[0].timeout = Duration::from_secs(20);
    file.write(&config);
    eventually("the reload", WITHIN, || {
        running.reloads.borrow().attempts == 1
    })
    .await;
    assert_eq!(running.reloads.borrow().last_error, None);
    assert!(
        !Arc::ptr_eq(&before, &endpoint_of(&running, "a")),
        "the remote was rebuilt"
    );
    wait_for_clusters(&running, &["a"]).await;
}
