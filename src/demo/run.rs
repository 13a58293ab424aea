//! `thanos-fanout demo`: three synthetic remote clusters on loopback, each
//! serving deterministic series as XOR chunks over mutual TLS with
//! certificates minted at start (DNS names only, dialled by IP), and the
//! aggregator in front of them. It then queries itself like a querier would.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::app::{self, AppError};
use crate::config::{ConfigError, RemoteConfig, TlsConfig, ValidConfig};
use crate::demo::certs::{Authority, Pem};
use crate::demo::synthetic::{self, Capabilities, Dataset, SyntheticStore};
use crate::labelset;
use crate::proto::thanos::exemplars_client::ExemplarsClient;
use crate::proto::thanos::metadata_client::MetadataClient;
use crate::proto::thanos::rules_client::RulesClient;
use crate::proto::thanos::store_client::StoreClient;
use crate::proto::thanos::targets_client::TargetsClient;
use crate::proto::thanos::{
    AlertState, ExemplarsRequest, LabelMatcher, LabelValuesRequest, MetricMetadataRequest,
    RulesRequest, SeriesRequest, TargetsRequest, exemplars_response, label_matcher,
    metric_metadata_response, rule, rules_response, series_response, targets_response,
};

const CLUSTERS: [&str; 3] = ["demo-a", "demo-b", "demo-c"];

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("certificates: {0}")]
    Certs(#[from] rcgen::Error),
    #[error("demo files in {}: {source}", dir.display())]
    Files {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("demo data: {0}")]
    Data(#[from] crate::demo::chunkenc::ChunkError),
    #[error("demo remote TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error("demo config: {0}")]
    Config(#[from] ConfigError),
    #[error("self-check query failed: {0}")]
    Check(String),
}

/// Runs the demo until Ctrl-C, or only the self-check when `once`.
pub async fn run(config: ValidConfig, once: bool) -> Result<(), DemoError> {
    let mut config = config.into_inner();
    crate::tls::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("thanos-fanout-demo-{}", std::process::id()));
    let files = |source| DemoError::Files {
        dir: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(files)?;
    let ca = Authority::new("thanos-fanout demo CA")?;
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).map_err(files)?;
    let (cert_file, key_file) = ca
        .client("thanos-fanout")
        .map(|p| p.write(&dir, "client"))?
        .map_err(files)?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // No load balancer sends connections to the demo: Ctrl-C stops it at once.
    config.grpc.shutdown_delay = std::time::Duration::ZERO;
    config.remotes.clear();
    for cluster in CLUSTERS {
        let name = format!("{cluster}.remote.test");
        let Pem { cert, key } = ca.server(&[&name])?;
        let tls = crate::demo::tls_server::server_config(&cert, &key, Some(&ca.cert_pem()))?;
        let data = Dataset::demo(labelset::from_pairs([("cluster", cluster)]), now)?;
        let store = SyntheticStore::new(data).with_capabilities(Capabilities {
            sidecar_apis: true,
            ..Capabilities::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(files)?;
        let address = listener.local_addr().map_err(files)?;
        tokio::spawn(synthetic::serve(
            synthetic::sidecar_routes(store),
            listener,
            Some(tls),
            std::future::pending(),
        ));
        config.remotes.push(RemoteConfig {
            name: cluster.into(),
            targets: vec![address.to_string()],
            file_sd: Vec::new(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            tls: Some(TlsConfig {
                ca_file: Some(ca_file.clone()),
                cert_file: Some(cert_file.clone()),
                key_file: Some(key_file.clone()),
                server_name: Some(name),
                insecure_skip_verify: false,
            }),
            authority: None,
            compression: Default::default(),
            mode: Default::default(),
            http2: Default::default(),
            circuit_breaker: Default::default(),
            max_concurrent_calls: 256,
            max_message_bytes: crate::config::DEFAULT_MAX_MESSAGE_BYTES,
        });
    }
    // The demo's own remotes go through the same validation as a user's.
    let running = app::start(config.validate(None)?).await?;
    running.ready.wait().await;
    let grpc = running.grpc_addr;
    let endpoint = format!("http://{}", loopback(grpc));
    let summary = self_check(&endpoint).await?;
    let others = other_apis_check(&endpoint).await?;
    println!(
        "\nthanos-fanout demo is running.\n\n\
         remotes: three synthetic clusters over mutual TLS (certificates in {dir})\n{remotes}\n\
         register it in a querier:   thanos query --endpoint={addr}\n\
         status page:                http://{http}/  (and /status.json)\n\
         metrics and probes:         http://{http}/metrics  /-/ready  /-/healthy\n\
         try with grpcurl:           grpcurl -plaintext {addr} thanos.info.Info/Info\n\
         \x20                           grpcurl -plaintext -d '{{\"min_time\":0,\"max_time\":{max},\"matchers\":[{{\"name\":\"__name__\",\"value\":\"up\"}}]}}' {addr} thanos.Store/Series\n\n\
         self-check, a Series call for {{__name__=\"up\"}} through {addr}:\n{summary}\n\
         the other APIs a querier reads (its rules, alerts, targets, metadata and exemplars pages):\n{others}",
        dir = dir.display(),
        remotes = running
            .upstreams
            .endpoints()
            .iter()
            .map(|e| format!("  {} at {}\n", e.remote, e.address))
            .collect::<String>(),
        addr = loopback(grpc),
        http = loopback(running.http_addr),
        max = i64::MAX,
    );
    if once {
        running.shutdown().await?;
    } else {
        println!("press Ctrl-C to stop");
        running.run_until(app::shutdown_signal).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn loopback(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// Queries the aggregator over gRPC as a querier would and describes the answer.
async fn self_check(endpoint: &str) -> Result<String, DemoError> {
    let check = |e: &dyn std::fmt::Display| DemoError::Check(e.to_string());
    let mut client = StoreClient::connect(endpoint.to_owned())
        .await
        .map_err(|e| check(&e))?;
    let up = LabelMatcher {
        r#type: label_matcher::Type::Eq as i32,
        name: "__name__".into(),
        value: "up".into(),
    };
    let mut stream = client
        .series(SeriesRequest {
            min_time: 0,
            max_time: i64::MAX,
            matchers: vec![up.clone()],
            ..Default::default()
        })
        .await
        .map_err(|e| check(&e))?
        .into_inner();
    let mut lines = String::new();
    let mut count = 0;
    while let Some(frame) = stream.message().await.map_err(|e| check(&e))? {
        match frame.result {
            Some(series_response::Result::Series(s)) => {
                count += 1;
                lines.push_str(&format!(
                    "  {} with {} chunks\n",
                    labelset::Display(&s.labels),
                    s.chunks.len()
                ));
            }
            Some(series_response::Result::Warning(w)) => {
                lines.push_str(&format!("  warning: {w}\n"))
            }
            _ => {}
        }
    }
    let clusters = client
        .label_values(LabelValuesRequest {
            label: "cluster".into(),
            start: 0,
            end: i64::MAX,
            matchers: vec![up],
            ..Default::default()
        })
        .await
        .map_err(|e| check(&e))?
        .into_inner()
        .values;
    if count == 0 || clusters.len() != CLUSTERS.len() {
        return Err(DemoError::Check(format!(
            "expected series from {} clusters, got {count} series from {clusters:?}:\n{lines}",
            CLUSTERS.len()
        )));
    }
    Ok(format!("{lines}  {count} series, clusters {clusters:?}\n"))
}

/// Calls Rules, Targets, Metadata and Exemplars through the aggregator and
/// counts what came back from all clusters.
async fn other_apis_check(endpoint: &str) -> Result<String, DemoError> {
    let check = |e: &dyn std::fmt::Display| DemoError::Check(e.to_string());
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| check(&e))?
        .connect()
        .await
        .map_err(|e| check(&e))?;
    let mut rules = RulesClient::new(channel.clone())
        .rules(RulesRequest::default())
        .await
        .map_err(|e| check(&e))?
        .into_inner();
    let (mut groups, mut firing) = (0, 0);
    while let Some(frame) = rules.message().await.map_err(|e| check(&e))? {
        if let Some(rules_response::Result::Group(group)) = frame.result {
            groups += 1;
            firing += group
                .rules
                .iter()
                .filter(|r| matches!(&r.result, Some(rule::Result::Alert(a)) if a.state == AlertState::Firing as i32))
                .count();
        }
    }
    let mut targets = TargetsClient::new(channel.clone())
        .targets(TargetsRequest::default())
        .await
        .map_err(|e| check(&e))?
        .into_inner();
    let mut active = 0;
    while let Some(frame) = targets.message().await.map_err(|e| check(&e))? {
        if let Some(targets_response::Result::Targets(t)) = frame.result {
            active += t.active_targets.len();
        }
    }
    let mut metadata = MetadataClient::new(channel.clone())
        .metric_metadata(MetricMetadataRequest {
            limit: -1,
            ..Default::default()
        })
        .await
        .map_err(|e| check(&e))?
        .into_inner();
    let mut names = std::collections::BTreeSet::new();
    while let Some(frame) = metadata.message().await.map_err(|e| check(&e))? {
        if let Some(metric_metadata_response::Result::Metadata(m)) = frame.result {
            names.extend(m.metadata.into_keys());
        }
    }
    let mut exemplars = ExemplarsClient::new(channel)
        .exemplars(ExemplarsRequest {
            query: r#"demo_http_requests_total{cluster="demo-a"}"#.into(),
            start: 0,
            end: i64::MAX,
            ..Default::default()
        })
        .await
        .map_err(|e| check(&e))?
        .into_inner();
    let mut exemplar_series = 0;
    while let Some(frame) = exemplars.message().await.map_err(|e| check(&e))? {
        if let Some(exemplars_response::Result::Data(_)) = frame.result {
            exemplar_series += 1;
        }
    }
    if groups != CLUSTERS.len()
        || firing != CLUSTERS.len()
        || active == 0
        || names.is_empty()
        || exemplar_series == 0
    {
        return Err(DemoError::Check(format!(
            "expected a rule group with a firing alert, targets, metadata and exemplars from each of {} clusters; got {groups} groups, {firing} firing alerts, {active} targets, {} metric names, {exemplar_series} exemplar series",
            CLUSTERS.len(),
            names.len()
        )));
    }
    Ok(format!(
        "  {groups} rule groups with {firing} firing alerts, {active} active targets, metadata for {names:?},\n  \
         {exemplar_series} exemplar series for demo_http_requests_total{{cluster=\"demo-a\"}} (routed to demo-a only)\n"
    ))
}
