//! Soak test: the real thanos-fanout binary in front of 16 TLS remotes for a
//! while, under concurrent queries from several clients, with remotes
//! killed and restarted and DNS records changing throughout.
//!
//! Every answer is checked against the remotes' own answers: each series
//! (labels and chunk bytes) of every remote must arrive exactly once, in
//! order, unless the answer carries a warning naming that remote; warnings
//! may name only the remotes being killed. At the end it prints latency
//! percentiles and thanos-fanout's resident memory and open file
//! descriptors after warm-up and at the end, both measured at rest (no
//! queries, every remote up), and fails if data was lost, duplicated or
//! corrupted, a call failed, an unexpected warning came, or memory or file
//! descriptors grew.
//!
//! The remotes:
//! - c00-c03: separate processes, killed (SIGKILL, mid-stream) one at a
//!   time and restarted on the same port;
//! - c04-c07: `dnssrv+` names whose SRV record moves between two instances
//!   with the same data;
//! - c08-c11: `dns+` names (A records);
//! - c12-c15: static addresses.
//!
//! Run with `scripts/soak` (10 minutes, release build); `scripts/test` runs
//! it for one minute. Options: `--duration 10m`, `--clients 6`,
//! `--series 400` (per remote), `--report FILE` (JSON).

// A test stops at the first thing it did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The integration tests' DNS server; the soak changes only some records.
#[allow(dead_code)]
#[path = "../tests/integration/dns_server.rs"]
mod dns_server;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use thanos_fanout::demo::certs::Authority;
use thanos_fanout::demo::synthetic::{self, Dataset, SampleSeries, SyntheticStore};
use thanos_fanout::labelset::from_pairs;
use thanos_fanout::proto::thanos::store_client::StoreClient;
use thanos_fanout::proto::thanos::{
    Label, LabelMatcher, LabelValuesRequest, PartialResponseStrategy, Series, SeriesRequest,
    label_matcher, series_response,
};
use tokio::net::TcpListener;
use tonic::transport::Channel;

use dns_server::TestDns;

const REMOTES: usize = 16;
const KILLED: std::ops::Range<usize> = 0..4;
const SRV: std::ops::Range<usize> = 4..8;
const A_RECORDS: std::ops::Range<usize> = 8..12;
const DOMAIN: &str = "soak.test";
const STEP_MS: i64 = 15_000;
const HOURS: i64 = 2;

fn cluster(i: usize) -> String {
    format!("c{i:02}")
}

/// The data of remote `i`: `series` counters over two hours, plus `soak_up`.
fn dataset(i: usize, series: usize) -> Dataset {
    let end = 1_700_000_000_000_i64;
    let start = end - HOURS * 3600 * 1000;
    let mut all = Vec::with_capacity(series + 1);
    for j in 0..series {
        let pod = format!("pod-{j:05}");
        let shard = (j % 4).to_string();
        all.push(SampleSeries {
            labels: from_pairs([
                ("__name__", "soak_requests_total"),
                ("pod", pod.as_str()),
                ("shard", shard.as_str()),
            ]),
            samples: (start..=end)
                .step_by(STEP_MS as usize)
                .map(|t| {
                    (
                        t,
                        ((t - start) / STEP_MS * (j as i64 % 7 + 1) + i as i64) as f64,
                    )
                })
                .collect(),
        });
    }
    all.push(SampleSeries {
        labels: from_pairs([("__name__", "soak_up")]),
        samples: (start..=end)
            .step_by(STEP_MS as usize)
            .map(|t| (t, 1.0))
            .collect(),
    });
    Dataset::new(from_pairs([("cluster", cluster(i).as_str())]), all).expect("dataset")
}

#[derive(Debug, Clone)]
struct Options {
    duration: Duration,
    clients: usize,
    series: usize,
    report: Option<PathBuf>,
}

fn parse_options(args: &[String]) -> Options {
    let mut options = Options {
        duration: Duration::from_secs(600),
        clients: 6,
        series: 400,
        report: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().cloned().unwrap_or_default();
        match arg.as_str() {
            "--duration" => {
                options.duration =
                    humantime_serde::re::humantime::parse_duration(&value()).expect("--duration")
            }
            "--clients" => options.clients = value().parse().expect("--clients"),
            "--series" => options.series = value().parse().expect("--series"),
            "--report" => options.report = Some(value().into()),
            other => panic!("unknown option {other}"),
        }
    }
    options
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if args.first().map(String::as_str) == Some("remote") {
        // A killable remote: `remote <index> <series> <port> <cert dir>`.
        let i: usize = args[1].parse().expect("index");
        let series: usize = args[2].parse().expect("series");
        let port: u16 = args[3].parse().expect("port");
        runtime.block_on(serve_remote_process(i, series, port, Path::new(&args[4])));
        return;
    }
    let options = parse_options(&args);
    let passed = runtime.block_on(soak(options));
    if !passed {
        std::process::exit(1);
    }
}

/// Certificates: one CA, one server certificate for every remote's name,
/// one client certificate for thanos-fanout.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let ca = Authority::new("soak CA").expect("CA");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("write CA");
        let names: Vec<String> = (0..REMOTES)
            .map(|i| format!("{}.{DOMAIN}", cluster(i)))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        ca.server(&names)
            .expect("server cert")
            .write(dir.path(), "server")
            .expect("write server cert");
        ca.client("thanos-fanout")
            .expect("client cert")
            .write(dir.path(), "client")
            .expect("write client cert");
        Self { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

fn server_tls(dir: &Path) -> Arc<rustls::ServerConfig> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("read cert");
    thanos_fanout::demo::tls_server::server_config(
        &read("server.pem"),
        &read("server-key.pem"),
        Some(&read("ca.pem")),
    )
    .expect("server TLS")
}

async fn serve_remote_process(i: usize, series: usize, port: u16, dir: &Path) {
    let listener = bind_retrying(port).await;
    let store = SyntheticStore::new(dataset(i, series));
    synthetic::serve(
        synthetic::store_routes(store.clone(), store),
        listener,
        Some(server_tls(dir)),
        std::future::pending(),
    )
    .await
    .expect("serve");
}

/// Binds `port` on loopback, waiting for a killed predecessor's socket to go.
async fn bind_retrying(port: u16) -> TcpListener {
    let mut last = None;
    for _ in 0..100 {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(listener) => return listener,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("bind 127.0.0.1:{port}: {last:?}");
}

async fn serve_in_process(store: SyntheticStore, tls: Arc<rustls::ServerConfig>) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(synthetic::serve(
        synthetic::store_routes(store.clone(), store),
        listener,
        Some(tls),
        std::future::pending(),
    ));
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A remote running as its own process, so it can be killed.
struct Killable {
    index: usize,
    port: u16,
    series: usize,
    dir: PathBuf,
    child: Option<Child>,
}

impl Killable {
    fn start(&mut self) {
        let child = Command::new(std::env::current_exe().expect("own path"))
            .args([
                "remote",
                &self.index.to_string(),
                &self.series.to_string(),
                &self.port.to_string(),
                &self.dir.display().to_string(),
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("start remote process");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The thanos-fanout process under test.
struct Fanout {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Drop for Fanout {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fanout_binary() -> PathBuf {
    // target/<profile>/examples/soak -> target/<profile>/thanos-fanout
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("thanos-fanout");
    assert!(
        bin.exists(),
        "{} missing: cargo build --bin thanos-fanout (same profile)",
        bin.display()
    );
    bin
}

fn write_config(pki: &Pki, dns: SocketAddr, ports: &[u16], grpc: u16, http: u16) -> PathBuf {
    let tls = |i: usize| {
        format!(
            "    tls:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n      server_name: {}.{DOMAIN}\n",
            pki.path("ca.pem").display(),
            pki.path("client.pem").display(),
            pki.path("client-key.pem").display(),
            cluster(i),
        )
    };
    let mut yaml = format!(
        "grpc:\n  listen: 127.0.0.1:{grpc}\n  grace_period: 5s\nhttp:\n  listen: 127.0.0.1:{http}\n\
         log:\n  level: warn\ninfo:\n  interval: 1s\n  timeout: 2s\n\
         discovery:\n  nameservers: [\"{dns}\"]\n  refresh_interval: 1s\n\
         remotes:\n"
    );
    for (i, port) in ports.iter().enumerate() {
        let name = cluster(i);
        let target = if SRV.contains(&i) {
            format!("dnssrv+_grpc._tcp.{name}.{DOMAIN}")
        } else if A_RECORDS.contains(&i) {
            format!("dns+{name}.{DOMAIN}:{port}")
        } else {
            format!("127.0.0.1:{port}")
        };
        yaml.push_str(&format!(
            "  - name: {name}\n    targets: [\"{target}\"]\n    timeout: 10s\n    connect_timeout: 2s\n{}",
            tls(i)
        ));
    }
    let path = pki.path("config.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

async fn start_fanout(config: &Path, grpc: u16, http: u16) -> Fanout {
    let child = Command::new(fanout_binary())
        .args(["--config", &config.display().to_string()])
        .stdin(Stdio::null())
        .spawn()
        .expect("start thanos-fanout");
    let fanout = Fanout {
        child,
        grpc: SocketAddr::from((Ipv4Addr::LOCALHOST, grpc)),
        http: SocketAddr::from((Ipv4Addr::LOCALHOST, http)),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_status(fanout.http, "/-/ready").await != Some(200) {
        assert!(Instant::now() < deadline, "thanos-fanout not ready in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fanout
}

async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = vec![0; 12];
    stream.read_exact(&mut head).await.ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Resident memory (MiB) and open file descriptors of a process.
fn usage(pid: u32) -> (f64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

/// The queries the clients rotate through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Query {
    AllSeries,
    OneShard,
    LabelsOnly,
    Up,
    ClusterValues,
}

const QUERIES: [Query; 5] = [
    Query::AllSeries,
    Query::OneShard,
    Query::LabelsOnly,
    Query::Up,
    Query::ClusterValues,
];

fn matcher(t: label_matcher::Type, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: t as i32,
        name: name.into(),
        value: value.into(),
    }
}

fn series_request(query: Query) -> SeriesRequest {
    use label_matcher::Type::{Eq, Re};
    let matchers = match query {
        Query::AllSeries => vec![matcher(Eq, "__name__", "soak_requests_total")],
        Query::OneShard => vec![
            matcher(Eq, "__name__", "soak_requests_total"),
            matcher(Eq, "shard", "1"),
        ],
        Query::LabelsOnly => vec![
            matcher(Re, "__name__", "soak_.*"),
            matcher(Re, "cluster", "c0[0-7]"),
        ],
        Query::Up | Query::ClusterValues => vec![matcher(Eq, "__name__", "soak_up")],
    };
    SeriesRequest {
        min_time: i64::MIN,
        max_time: i64::MAX,
        matchers,
        skip_chunks: query == Query::LabelsOnly,
        partial_response_strategy: PartialResponseStrategy::Warn as i32,
        ..Default::default()
    }
}

/// A series as compared: its labels, and a digest of its chunks.
type Digest = (Vec<(String, String)>, u64);

fn digest(series: &Series) -> Digest {
    use std::hash::{Hash, Hasher};
    let labels = series
        .labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for chunk in &series.chunks {
        (chunk.min_time, chunk.max_time).hash(&mut hasher);
        if let Some(raw) = &chunk.raw {
            (raw.r#type, raw.data.as_ref()).hash(&mut hasher);
        }
    }
    (labels, hasher.finish())
}

fn cluster_of(series: &Series) -> Option<&str> {
    series
        .labels
        .iter()
        .find(|l| l.name == "cluster")
        .map(|l| l.value.as_str())
}

/// Each remote's own answer to each Series query, by cluster.
type Expected = BTreeMap<Query, BTreeMap<String, Vec<Digest>>>;

fn expected_answers(series: usize) -> Expected {
    let stores: Vec<SyntheticStore> = (0..REMOTES)
        .map(|i| SyntheticStore::new(dataset(i, series)))
        .collect();
    QUERIES
        .iter()
        .filter(|q| **q != Query::ClusterValues)
        .map(|&query| {
            let request = series_request(query);
            let by_cluster = stores
                .iter()
                .enumerate()
                .map(|(i, store)| {
                    let frames = store.series_frames(&request).expect("own answer");
                    let digests = frames
                        .iter()
                        .filter_map(|f| match &f.result {
                            Some(series_response::Result::Series(s)) => Some(digest(s)),
                            _ => None,
                        })
                        .collect();
                    (cluster(i), digests)
                })
                .collect();
            (query, by_cluster)
        })
        .collect()
}

/// What the checks found, over the whole run.
#[derive(Debug, Default)]
struct Tally {
    calls: BTreeMap<Query, usize>,
    latencies: BTreeMap<Query, Vec<Duration>>,
    failed_calls: Vec<String>,
    lost: usize,
    duplicated: usize,
    corrupted: usize,
    unsorted: usize,
    /// Calls with a warning naming a killed remote, and how many of those
    /// remotes' series such calls still carried.
    warned_calls: usize,
    partial_remotes: usize,
    expected_warnings: BTreeMap<String, usize>,
    unexpected_warnings: Vec<String>,
    problems: Vec<String>,
}

impl Tally {
    fn note(&mut self, problem: String) {
        if self.problems.len() < 20 {
            self.problems.push(problem);
        }
    }
}

/// Which remote a warning names, if any.
fn named_remote(warning: &str) -> Option<String> {
    (0..REMOTES)
        .map(cluster)
        .find(|name| warning.contains(&format!("remote {name}")))
}

/// Tallies an answer's warnings; returns the remotes they name.
fn tally_warnings(warnings: &[String], tally: &mut Tally) -> BTreeSet<String> {
    let mut warned = BTreeSet::new();
    for warning in warnings {
        match named_remote(warning) {
            Some(name) if KILLED.contains(&name[1..].parse::<usize>().unwrap_or(usize::MAX)) => {
                *tally.expected_warnings.entry(name.clone()).or_default() += 1;
                warned.insert(name);
            }
            _ => {
                if tally.unexpected_warnings.len() < 20 {
                    tally.unexpected_warnings.push(warning.clone());
                }
                if let Some(name) = named_remote(warning) {
                    warned.insert(name);
                }
            }
        }
    }
    if !warned.is_empty() {
        tally.warned_calls += 1;
    }
    warned
}

fn check_series(
    query: Query,
    answer: &[Series],
    warnings: &[String],
    expected: &Expected,
    tally: &mut Tally,
) {
    let warned = tally_warnings(warnings, tally);
    for pair in answer.windows(2) {
        match thanos_fanout::labelset::compare(&pair[0].labels, &pair[1].labels) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => tally.duplicated += 1,
            std::cmp::Ordering::Greater => tally.unsorted += 1,
        }
    }
    let mut got: BTreeMap<&str, Vec<Digest>> = BTreeMap::new();
    for series in answer {
        let Some(cluster) = cluster_of(series) else {
            tally.corrupted += 1;
            tally.note(format!("{query:?}: a series without a cluster label"));
            continue;
        };
        got.entry(cluster).or_default().push(digest(series));
    }
    for (cluster, own) in &expected[&query] {
        let received = got.remove(cluster.as_str()).unwrap_or_default();
        let own_set: BTreeSet<&Digest> = own.iter().collect();
        let received_set: BTreeSet<&Digest> = received.iter().collect();
        let foreign = received_set.difference(&own_set).count();
        if foreign > 0 {
            tally.corrupted += foreign;
            tally.note(format!(
                "{query:?}: {foreign} series of {cluster} differ from its own answer"
            ));
        }
        let missing = own_set.difference(&received_set).count();
        if missing > 0 {
            if warned.contains(cluster) {
                tally.partial_remotes += 1;
            } else {
                tally.lost += missing;
                tally.note(format!(
                    "{query:?}: {missing} of {} series of {cluster} missing without a warning",
                    own.len()
                ));
            }
        }
    }
    for (cluster, series) in got {
        tally.corrupted += series.len();
        tally.note(format!(
            "{query:?}: {} series of unknown cluster {cluster}",
            series.len()
        ));
    }
}

async fn run_query(
    client: &mut StoreClient<Channel>,
    query: Query,
    expected: &Expected,
    tally: &Mutex<Tally>,
) {
    let started = Instant::now();
    let result: Result<(Vec<Series>, Vec<String>), tonic::Status> = async {
        if query == Query::ClusterValues {
            let answer = client
                .label_values(LabelValuesRequest {
                    label: "cluster".into(),
                    start: i64::MIN,
                    end: i64::MAX,
                    partial_response_strategy: PartialResponseStrategy::Warn as i32,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let series = answer
                .values
                .iter()
                .map(|v| Series {
                    labels: vec![Label {
                        name: "cluster".into(),
                        value: v.clone(),
                    }],
                    chunks: Vec::new(),
                })
                .collect();
            return Ok((series, answer.warnings));
        }
        let mut stream = client.series(series_request(query)).await?.into_inner();
        let (mut series, mut warnings) = (Vec::new(), Vec::new());
        while let Some(frame) = stream.next().await {
            match frame?.result {
                Some(series_response::Result::Series(s)) => series.push(s),
                Some(series_response::Result::Batch(b)) => series.extend(b.series),
                Some(series_response::Result::Warning(w)) => warnings.push(w),
                _ => {}
            }
        }
        Ok((series, warnings))
    }
    .await;
    let elapsed = started.elapsed();
    let mut tally = tally.lock().expect("tally");
    *tally.calls.entry(query).or_default() += 1;
    tally.latencies.entry(query).or_default().push(elapsed);
    match result {
        Err(status) => tally.failed_calls.push(format!("{query:?}: {status}")),
        Ok((series, warnings)) if query == Query::ClusterValues => {
            // Every cluster's value, unless a warning names it.
            let values: BTreeSet<String> =
                series.iter().map(|s| s.labels[0].value.clone()).collect();
            let warned = tally_warnings(&warnings, &mut tally);
            for i in 0..REMOTES {
                let name = cluster(i);
                if !values.contains(&name) && !warned.contains(&name) {
                    tally.lost += 1;
                    tally.note(format!("LabelValues: {name} missing without a warning"));
                }
            }
            if values.len() > REMOTES {
                tally.corrupted += values.len() - REMOTES;
            }
        }
        Ok((series, warnings)) => check_series(query, &series, &warnings, expected, &mut tally),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// Waits until every remote is queryable again (nothing killed).
async fn settle(fanout: &Fanout) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http_get(fanout.http, "/metrics").await;
        let up = body
            .lines()
            .filter(|l| l.starts_with("thanos_fanout_remote_endpoint_up{") && l.ends_with(" 1"))
            .count();
        if up >= REMOTES || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let mut body = Vec::new();
    let _ = stream.read_to_end(&mut body).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// Runs `clients` querying clients for `duration`.
async fn load(
    fanout: &Fanout,
    clients: usize,
    duration: Duration,
    expected: &Arc<Expected>,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let endpoint = format!("http://{}", fanout.grpc);
        let (expected, tally) = (expected.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let channel = Channel::from_shared(endpoint)
                .expect("uri")
                .connect()
                .await
                .expect("connect to thanos-fanout");
            let mut client = StoreClient::new(channel).max_decoding_message_size(64 << 20);
            // Clients start at different queries, then take each in turn.
            for query in QUERIES.iter().cycle().skip(c) {
                if Instant::now() >= deadline {
                    break;
                }
                run_query(&mut client, *query, &expected, &tally).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    std::mem::take(&mut *tally.lock().expect("tally"))
}

/// The remotes, running.
struct Remotes {
    /// The port of each remote dialled at a fixed port (0 for the moving ones).
    ports: Vec<u16>,
    killable: Vec<Killable>,
    /// For each `dnssrv+` remote, its index and its two instances' ports.
    moving: Vec<(usize, u16, u16)>,
}

async fn start_remotes(pki: &Pki, dns: &TestDns, series: usize) -> Remotes {
    let tls = server_tls(pki.dir.path());
    let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let mut remotes = Remotes {
        ports: vec![0; REMOTES],
        killable: Vec::new(),
        moving: Vec::new(),
    };
    for (i, port) in remotes.ports.iter_mut().enumerate() {
        let host = format!("{}.{DOMAIN}", cluster(i));
        let store = SyntheticStore::new(dataset(i, series));
        if KILLED.contains(&i) {
            let mut remote = Killable {
                index: i,
                port: free_port(),
                series,
                dir: pki.dir.path().to_owned(),
                child: None,
            };
            remote.start();
            *port = remote.port;
            remotes.killable.push(remote);
        } else if SRV.contains(&i) {
            let a = serve_in_process(store.clone(), tls.clone()).await;
            let b = serve_in_process(store, tls.clone()).await;
            dns.set_ips(&host, &loopback, 1);
            dns.set_srv(&srv_name(i), &[(&host, a)], 1);
            remotes.moving.push((i, a, b));
        } else {
            *port = serve_in_process(store, tls.clone()).await;
            if A_RECORDS.contains(&i) {
                dns.set_ips(&host, &loopback, 1);
            }
        }
    }
    remotes
}

fn srv_name(i: usize) -> String {
    format!("_grpc._tcp.{}.{DOMAIN}", cluster(i))
}

/// What the fault injector did, and thanos-fanout's resources meanwhile.
#[derive(Debug, Default, Clone)]
struct Chaos {
    kills: usize,
    restarts: usize,
    dns_changes: usize,
    /// (seconds into the run, RSS MiB, open fds), every second.
    samples: Vec<(f64, f64, usize)>,
}

/// Until `stop`: kills a remote process every few seconds (one at a time,
/// down for 3 s), moves every `dnssrv+` record to the remote's other
/// instance every 5 s, and samples thanos-fanout's memory and fds.
async fn chaos(
    mut killable: Vec<Killable>,
    moving: Vec<(usize, u16, u16)>,
    dns: Arc<TestDns>,
    pid: u32,
    stop: Arc<AtomicBool>,
) -> (Chaos, Vec<Killable>) {
    let mut done = Chaos::default();
    let started = Instant::now();
    let mut down: Option<(usize, Instant)> = None;
    let mut next_kill = started + Duration::from_secs(3);
    let mut next_move = started + Duration::from_secs(5);
    let mut next_sample = started;
    let mut moved = false;
    let mut turn = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        if now >= next_sample {
            let (rss, fds) = usage(pid);
            done.samples
                .push((started.elapsed().as_secs_f64(), rss, fds));
            next_sample = now + Duration::from_secs(1);
        }
        match down {
            Some((k, since)) if now - since >= Duration::from_secs(3) => {
                killable[k].start();
                done.restarts += 1;
                down = None;
                next_kill = now + Duration::from_secs(4);
            }
            None if now >= next_kill => {
                let k = turn % killable.len();
                turn += 1;
                killable[k].kill();
                done.kills += 1;
                down = Some((k, now));
            }
            _ => {}
        }
        if now >= next_move {
            moved = !moved;
            for &(i, a, b) in &moving {
                let host = format!("{}.{DOMAIN}", cluster(i));
                dns.set_srv(&srv_name(i), &[(&host, if moved { b } else { a })], 1);
                done.dns_changes += 1;
            }
            next_move = now + Duration::from_secs(5);
        }
    }
    if let Some((k, _)) = down {
        killable[k].start();
        done.restarts += 1;
    }
    (done, killable)
}

/// thanos-fanout's memory (MiB) and fds at rest: after a settle, no queries.
#[derive(Debug, Clone, Copy)]
struct AtRest {
    rss: f64,
    fds: usize,
}

async fn soak(options: Options) -> bool {
    println!(
        "soak: {REMOTES} remotes x {} series, {} clients, {:?}",
        options.series, options.clients, options.duration
    );
    let pki = Pki::new();
    let dns = Arc::new(TestDns::start().await);
    let remotes = start_remotes(&pki, &dns, options.series).await;
    let expected = Arc::new(expected_answers(options.series));
    let (grpc, http) = (free_port(), free_port());
    let config = write_config(&pki, dns.addr, &remotes.ports, grpc, http);
    let fanout = start_fanout(&config, grpc, http).await;
    let pid = fanout.child.id();

    // Warm-up: a tenth of the run (at least 10 s) of queries, no faults.
    let warmup = (options.duration / 10).max(Duration::from_secs(10));
    load(&fanout, options.clients, warmup, &expected).await;
    settle(&fanout).await;
    let (rss, fds) = usage(pid);
    let start = AtRest { rss, fds };

    let stop = Arc::new(AtomicBool::new(false));
    let injector = tokio::spawn(chaos(
        remotes.killable,
        remotes.moving,
        dns.clone(),
        pid,
        stop.clone(),
    ));
    let run_started = Instant::now();
    let tally = load(&fanout, options.clients, options.duration, &expected).await;
    let run_time = run_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (chaos, _killable) = injector.await.expect("fault injector");
    settle(&fanout).await;
    let (rss, fds) = usage(pid);
    let end = AtRest { rss, fds };

    let passed = report(&options, &tally, &chaos, run_time, start, end);
    drop(fanout);
    passed
}

fn latency_row(latencies: &[Duration]) -> (usize, f64, f64) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    (
        sorted.len(),
        ms(percentile(&sorted, 0.5)),
        ms(percentile(&sorted, 0.99)),
    )
}

/// Prints (and writes, with `--report`) what the run showed; whether it passed.
fn report(
    options: &Options,
    tally: &Tally,
    chaos: &Chaos,
    run_time: Duration,
    start: AtRest,
    end: AtRest,
) -> bool {
    let all: Vec<Duration> = tally.latencies.values().flatten().copied().collect();
    let (calls, p50, p99) = latency_row(&all);
    println!("\n| query | calls | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: |");
    for (query, latencies) in &tally.latencies {
        let (n, p50, p99) = latency_row(latencies);
        println!("| {query:?} | {n} | {p50} | {p99} |");
    }
    println!("| all | {calls} | {p50} | {p99} |");
    // Peak RSS and fds in each quarter of the run.
    let quarters: Vec<(f64, usize)> = (0..4)
        .map(|q| {
            let n = chaos.samples.len();
            let part = &chaos.samples[n * q / 4..n * (q + 1) / 4];
            let rss = part.iter().map(|s| s.1).fold(0.0, f64::max);
            let fds = part.iter().map(|s| s.2).max().unwrap_or(0);
            (rss, fds)
        })
        .collect();
    println!(
        "\nfaults: {} kills, {} restarts, {} DNS record changes",
        chaos.kills, chaos.restarts, chaos.dns_changes
    );
    println!(
        "calls: {calls} in {:.0} s ({:.1}/s); {} with warnings, all naming killed remotes ({:?}); a killed remote's answer missing or cut short in {}",
        run_time.as_secs_f64(),
        calls as f64 / run_time.as_secs_f64(),
        tally.warned_calls,
        tally.expected_warnings,
        tally.partial_remotes,
    );
    println!(
        "lost {}, duplicated {}, corrupted {}, unsorted {}, failed calls {}, unexpected warnings {}",
        tally.lost,
        tally.duplicated,
        tally.corrupted,
        tally.unsorted,
        tally.failed_calls.len(),
        tally.unexpected_warnings.len()
    );
    println!(
        "thanos-fanout at rest: RSS {:.1} -> {:.1} MiB, fds {} -> {}; under load, peak (RSS MiB, fds) by quarter: {quarters:?}",
        start.rss, end.rss, start.fds, end.fds
    );
    for line in tally
        .problems
        .iter()
        .chain(&tally.unexpected_warnings)
        .chain(&tally.failed_calls)
    {
        println!("  {line}");
    }
    // At rest, memory and fds may not grow beyond noise: allocator pages
    // kept for reuse, a connection or two being re-dialled.
    let flat = end.rss <= start.rss * 1.25 + 16.0 && end.fds <= start.fds + 4;
    let passed = tally.lost == 0
        && tally.duplicated == 0
        && tally.corrupted == 0
        && tally.unsorted == 0
        && tally.failed_calls.is_empty()
        && tally.unexpected_warnings.is_empty()
        && calls > 0
        && chaos.kills > 0
        && flat;
    if let Some(path) = &options.report {
        let latency: BTreeMap<String, serde_json::Value> = tally
            .latencies
            .iter()
            .map(|(q, l)| {
                let (n, p50, p99) = latency_row(l);
                let row = serde_json::json!({"calls": n, "p50_ms": p50, "p99_ms": p99});
                (format!("{q:?}"), row)
            })
            .collect();
        let report = serde_json::json!({
            "duration_seconds": run_time.as_secs_f64(),
            "remotes": REMOTES,
            "series_per_remote": options.series,
            "clients": options.clients,
            "calls": calls,
            "p50_ms": p50,
            "p99_ms": p99,
            "latency": latency,
            "kills": chaos.kills,
            "restarts": chaos.restarts,
            "dns_changes": chaos.dns_changes,
            "warned_calls": tally.warned_calls,
            "partial_remotes": tally.partial_remotes,
            "lost": tally.lost,
            "duplicated": tally.duplicated,
            "corrupted": tally.corrupted,
            "unsorted": tally.unsorted,
            "failed_calls": tally.failed_calls,
            "unexpected_warnings": tally.unexpected_warnings,
            "rss_mib": {"after_warmup": start.rss, "end": end.rss},
            "fds": {"after_warmup": start.fds, "end": end.fds},
            "samples": chaos.samples,
            "passed": passed,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report).expect("json"))
            .expect("write report");
    }
    println!("\nsoak {}", if passed { "passed" } else { "FAILED" });
    passed
}
