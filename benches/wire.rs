//! Bytes on the wire between thanos-fanout and a remote for one Series
//! answer, and the CPU it costs, with each `remotes[].compression` setting;
//! then an HA pair of replicas in `mode: all` and `mode: any`.
//! The remote serves real-shaped data (Prometheus XOR chunks of counters and
//! noisy gauges, Kubernetes-style label sets) and answers in the encoding it
//! is asked in, as a Thanos sidecar does; a counting TCP relay in between
//! measures what crosses.
//!
//! Run: `cargo bench --bench wire` (release build).

// A benchmark stops at the first thing it did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use thanos_fanout::config::{Compression, RemoteMode};
use thanos_fanout::demo::synthetic::{Dataset, SampleSeries, SyntheticStore};
use thanos_fanout::labelset::from_pairs;
use thanos_fanout::proto::thanos::store_client::StoreClient;
use thanos_fanout::proto::thanos::{LabelMatcher, SeriesRequest, series_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `n` series over six hours at 15 s: counters with uneven increments and
/// gauges that wander with noise, as node and pod metrics do.
fn dataset(n: usize) -> Dataset {
    dataset_with(n, &[("cluster", "eu-1")])
}

/// [`dataset`] with other external labels.
fn dataset_with(n: usize, external: &[(&str, &str)]) -> Dataset {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 10_000) as f64 / 10_000.0
    };
    let series = (0..n)
        .map(|i| {
            let counter = i % 2 == 0;
            let name = if counter {
                "container_cpu_usage_seconds_total"
            } else {
                "container_memory_working_set_bytes"
            };
            let pod = format!("checkout-{:08x}-{:05}", i * 2_654_435_761 % 0xffff_ffff, i);
            let instance = format!("10.{}.{}.{}:10250", i % 7, i % 251, i % 13);
            let labels = from_pairs([
                ("__name__", name),
                ("container", "app"),
                ("instance", &instance),
                ("job", "kubelet"),
                ("namespace", "shop"),
                ("pod", &pod),
            ]);
            let mut value = 1_000_000.0 * random();
            let samples = (0..1440)
                .map(|t| {
                    value = if counter {
                        value + 15.0 * random()
                    } else {
                        (value + 50_000.0 * (random() - 0.5)).max(0.0)
                    };
                    (i64::from(t) * 15_000, value)
                })
                .collect();
            SampleSeries { labels, samples }
        })
        .collect();
    Dataset::new(from_pairs(external.iter().copied()), series).expect("dataset")
}

/// Every series of the data set, over all time.
fn shop() -> SeriesRequest {
    SeriesRequest {
        min_time: i64::MIN,
        max_time: i64::MAX,
        matchers: vec![LabelMatcher {
            r#type: 0,
            name: "namespace".into(),
            value: "shop".into(),
        }],
        ..Default::default()
    }
}

/// Relays TCP connections to `upstream`, counting bytes in each direction.
async fn counting_relay(
    upstream: SocketAddr,
    down: Arc<AtomicU64>,
    up: Arc<AtomicU64>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(upstream).await.expect("connect");
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(copy(server_read, client_write, down.clone()));
            tokio::spawn(copy(client_read, server_write, up.clone()));
        }
    });
    addr
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// User plus system CPU time of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are the 14th and 15th fields; `rest` starts at the 3rd.
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 200 } else { 5_000 };
    let remote = support::serve_remote(SyntheticStore::new(dataset(n))).await;

    println!("{n} series, 1440 samples each, one Series call through one remote");
    println!(
        "answer | compression | MiB remote to fanout | vs none | MiB fanout to remote | seconds | CPU seconds"
    );
    let mut none_bytes = [0.0; 2];
    for (name, compression) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("zstd", Compression::Zstd),
    ] {
        let (down, up) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let relay = counting_relay(remote, down.clone(), up.clone()).await;
        let mut config = support::remote("eu-1", relay);
        config.compression = compression;
        let running = support::start_fanout(vec![config]).await;
        let mut client = StoreClient::connect(format!("http://{}", running.grpc_addr))
            .await
            .expect("connect")
            .max_decoding_message_size(usize::MAX);
        // Chunks (a PromQL query), then labels only (/api/v1/series).
        for (row, skip_chunks) in [(0, false), (1, true)] {
            // What Info and connection set-up cost is not the answer's.
            let (down_before, up_before) =
                (down.load(Ordering::Relaxed), up.load(Ordering::Relaxed));
            let (started, cpu) = (Instant::now(), cpu_seconds());
            let mut stream = client
                .series(SeriesRequest {
                    skip_chunks,
                    ..shop()
                })
                .await
                .expect("series")
                .into_inner();
            let mut count = 0;
            while let Some(frame) = stream.message().await.expect("frame") {
                if let Some(series_response::Result::Series(_)) = frame.result {
                    count += 1;
                }
            }
            assert_eq!(count, n, "every series arrives");
            let (seconds, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
            let mib = |b: u64| b as f64 / f64::from(1 << 20);
            let down_mib = mib(down.load(Ordering::Relaxed) - down_before);
            if compression == Compression::None {
                none_bytes[row] = down_mib;
            }
            println!(
                "{} | {name} | {down_mib:.2} | {:.0}% | {:.3} | {seconds:.2} | {cpu:.2}",
                if skip_chunks { "labels only" } else { "chunks" },
                100.0 * down_mib / none_bytes[row],
                mib(up.load(Ordering::Relaxed) - up_before),
            );
        }
        running.shutdown().await.expect("shutdown");
    }
    ha_pair(n).await;
}

/// An HA pair of replicas (same series, `replica` 0 and 1) behind one remote,
/// in `mode: all` and `mode: any`: bytes over the link and time per call, as
/// a querier deduplicating by `replica` asks.
async fn ha_pair(n: usize) {
    let (down, up) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut relays = Vec::new();
    for replica in ["0", "1"] {
        let data = dataset_with(n, &[("cluster", "eu-1"), ("replica", replica)]);
        let remote = support::serve_remote(SyntheticStore::new(data)).await;
        relays.push(counting_relay(remote, down.clone(), up.clone()).await);
    }
    println!("\nHA pair: {n} series on each replica, the querier deduplicating by replica");
    println!("mode | series out | MiB remote to fanout | vs all | median seconds per call");
    let mut all_mib = 0.0;
    for (name, mode) in [("all", RemoteMode::All), ("any", RemoteMode::Any)] {
        let mut config = support::remote("eu-1", relays[0]);
        config.targets = relays.iter().map(ToString::to_string).collect();
        config.mode = mode;
        let running = support::start_fanout(vec![config]).await;
        let mut client = StoreClient::connect(format!("http://{}", running.grpc_addr))
            .await
            .expect("connect")
            .max_decoding_message_size(usize::MAX);
        let before = down.load(Ordering::Relaxed);
        let mut times = Vec::new();
        let mut count = 0;
        const CALLS: usize = 5;
        for _ in 0..CALLS {
            let started = Instant::now();
            let mut stream = client
                .series(SeriesRequest {
                    without_replica_labels: vec!["replica".into()],
                    ..shop()
                })
                .await
                .expect("series")
                .into_inner();
            count = 0;
            while let Some(frame) = stream.message().await.expect("frame") {
                if let Some(series_response::Result::Series(_)) = frame.result {
                    count += 1;
                }
            }
            times.push(started.elapsed().as_secs_f64());
        }
        assert_eq!(count, n, "every series arrives once");
        times.sort_by(f64::total_cmp);
        let mib =
            (down.load(Ordering::Relaxed) - before) as f64 / f64::from(1 << 20) / CALLS as f64;
        if mode == RemoteMode::All {
            all_mib = mib;
        }
        println!(
            "{name} | {count} | {mib:.2} | {:.0}% | {:.3}",
            100.0 * mib / all_mib,
            times[CALLS / 2]
        );
        running.shutdown().await.expect("shutdown");
    }
}
