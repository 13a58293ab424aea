//! Set-up shared by the end-to-end benchmarks: plaintext remotes on loopback
//! and the aggregator in front of them.

// Each benchmark uses some of these.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use thanos_fanout::app::{self, Running};
use thanos_fanout::config::{Config, RemoteConfig};
use thanos_fanout::labelset::from_pairs;
use thanos_fanout::proto::thanos::info::info_server::Info;
use thanos_fanout::proto::thanos::info::{InfoResponse, StoreInfo};
use thanos_fanout::proto::thanos::store_server::Store;
use thanos_fanout::proto::thanos::{LabelMatcher, SeriesRequest, ZLabelSet};

/// Serves `store` as a plaintext remote on a free loopback port.
pub async fn serve_remote<S>(store: S) -> SocketAddr
where
    S: Store + Info + Clone,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(thanos_fanout::demo::synthetic::serve(
        thanos_fanout::demo::synthetic::store_routes(store.clone(), store),
        listener,
        None,
        std::future::pending(),
    ));
    addr
}

/// A plaintext remote entry with generous timeouts.
pub fn remote(name: &str, addr: SocketAddr) -> RemoteConfig {
    RemoteConfig {
        name: name.into(),
        targets: vec![addr.to_string()],
        file_sd: Vec::new(),
        timeout: Duration::from_secs(600),
        connect_timeout: Duration::from_secs(5),
        tls: None,
        authority: None,
        compression: Default::default(),
        mode: Default::default(),
        http2: Default::default(),
        circuit_breaker: Default::default(),
        max_concurrent_calls: 256,
        max_message_bytes: thanos_fanout::config::DEFAULT_MAX_MESSAGE_BYTES,
    }
}

/// Starts the aggregator on free loopback ports and waits until it is ready.
pub async fn start_fanout(remotes: Vec<RemoteConfig>) -> Running {
    start_fanout_with(Config::default(), remotes).await
}

/// Like [`start_fanout`], from `config` (its listen addresses and remotes replaced).
pub async fn start_fanout_with(mut config: Config, remotes: Vec<RemoteConfig>) -> Running {
    config.grpc.listen = "127.0.0.1:0".into();
    config.http.listen = "127.0.0.1:0".into();
    config.remotes = remotes;
    let running = app::start(config.validate(None).expect("valid config"))
        .await
        .expect("start");
    running.ready.wait().await;
    running
}

/// Starts a new peak for [`peak_rss_mib`] (Linux: writing 5 to clear_refs).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory of this process (VmHWM) since it started or since
/// [`reset_peak_rss`], in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A Series request over all time for `{__name__="<name>"}`.
pub fn all_of(name: &str) -> SeriesRequest {
    SeriesRequest {
        min_time: i64::MIN,
        max_time: i64::MAX,
        matchers: vec![LabelMatcher {
            r#type: 0,
            name: "__name__".into(),
            value: name.into(),
        }],
        ..Default::default()
    }
}

/// The Info of a sidecar for `cluster` holding data of all time.
pub fn sidecar_info(cluster: &str) -> InfoResponse {
    InfoResponse {
        label_sets: vec![ZLabelSet {
            labels: from_pairs([("cluster", cluster)]),
        }],
        component_type: "sidecar".into(),
        store: Some(StoreInfo {
            min_time: i64::MIN,
            max_time: i64::MAX,
            supports_sharding: true,
            supports_without_replica_labels: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}
