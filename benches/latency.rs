//! Added latency of small calls: Info, LabelNames and a one-series Series
//! call, each made one at a time, straight to a remote and through the
//! aggregator in front of the same remote, in one run. A querier's selective
//! queries are made of such calls, so what the extra hop adds to them is what
//! users feel.
//!
//! Run: `cargo bench --bench latency` (release build).

// A benchmark stops at the first thing it did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use thanos_fanout::demo::synthetic::{Dataset, SampleSeries, SyntheticStore};
use thanos_fanout::labelset::from_pairs;
use thanos_fanout::proto::thanos::info::InfoRequest;
use thanos_fanout::proto::thanos::info::info_client::InfoClient;
use thanos_fanout::proto::thanos::store_client::StoreClient;
use thanos_fanout::proto::thanos::{LabelMatcher, LabelNamesRequest, SeriesRequest};
use tonic::transport::Channel;

/// Latencies of `calls` sequential calls, sorted.
async fn measure<F, Fut>(calls: usize, mut call: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Warm the connection and the remote's code paths first.
    for _ in 0..calls.min(20) {
        call().await;
    }
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        call().await;
        out.push(started.elapsed());
    }
    out.sort();
    out
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

struct Target {
    store: StoreClient<Channel>,
    info: InfoClient<Channel>,
}

impl Target {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect");
        Self {
            store: StoreClient::new(channel.clone()),
            info: InfoClient::new(channel),
        }
    }
}

fn one_series() -> SeriesRequest {
    SeriesRequest {
        min_time: i64::MIN,
        max_time: i64::MAX,
        matchers: vec![
            LabelMatcher {
                r#type: 0,
                name: "__name__".into(),
                value: "up".into(),
            },
            LabelMatcher {
                r#type: 0,
                name: "instance".into(),
                value: "0".into(),
            },
        ],
        ..Default::default()
    }
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let calls = if quick { 20 } else { 1_000 };

    let series = (0..100)
        .map(|i| SampleSeries {
            labels: from_pairs([("__name__", "up"), ("instance", &i.to_string())]),
            samples: (0..240).map(|t| (t * 15_000, 1.0)).collect(),
        })
        .collect();
    let data = Dataset::new(from_pairs([("cluster", "a")]), series).expect("dataset");
    let remote = support::serve_remote(SyntheticStore::new(data)).await;
    let running = support::start_fanout(vec![support::remote("a", remote)]).await;

    println!("{calls} sequential calls each; milliseconds");
    println!("call | direct p50 | through p50 | added p50 | direct p99 | through p99");
    let mut direct = Target::connect(remote).await;
    let mut through = Target::connect(running.grpc_addr).await;
    for call in ["Info", "LabelNames", "Series, one series"] {
        let mut rows = Vec::new();
        for target in [&mut direct, &mut through] {
            let latencies = match call {
                "Info" => {
                    measure(calls, || {
                        let mut c = target.info.clone();
                        async move {
                            c.info(InfoRequest {}).await.expect("info");
                        }
                    })
                    .await
                }
                "LabelNames" => {
                    measure(calls, || {
                        let mut c = target.store.clone();
                        async move {
                            c.label_names(LabelNamesRequest {
                                start: i64::MIN,
                                end: i64::MAX,
                                ..Default::default()
                            })
                            .await
                            .expect("label names");
                        }
                    })
                    .await
                }
                _ => {
                    measure(calls, || {
                        let mut c = target.store.clone();
                        async move {
                            let mut stream =
                                c.series(one_series()).await.expect("series").into_inner();
                            let mut n = 0;
                            while stream.message().await.expect("frame").is_some() {
                                n += 1;
                            }
                            assert_eq!(n, 1, "one series");
                        }
                    })
                    .await
                }
            };
            rows.push(latencies);
        }
        let (d, t) = (&rows[0], &rows[1]);
        println!(
            "{call} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}",
            quantile(d, 0.5),
            quantile(t, 0.5),
            quantile(t, 0.5) - quantile(d, 0.5),
            quantile(d, 0.99),
            quantile(t, 0.99),
        );
    }
}
