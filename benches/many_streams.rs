//! Many Series streams open at once: 1,000 calls through the aggregator to
//! two remotes (2,000 remote streams), each call holding its stream open (one
//! frame read) until all of them are open, then reading the rest. Prints the time to open them all,
//! errors, series received and the peak resident memory of the process
//! (remotes, aggregator and clients).
//!
//! Run: `cargo bench --bench many_streams` (release build).

// A benchmark stops at the first thing it did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Instant;

use thanos_fanout::demo::synthetic::{Dataset, SampleSeries, SyntheticStore};
use thanos_fanout::labelset::from_pairs;
use thanos_fanout::proto::thanos::series_response;
use thanos_fanout::proto::thanos::store_client::StoreClient;
use tokio::sync::Barrier;

/// `n` series of 1440 samples for `cluster`.
fn dataset(cluster: &str, n: usize) -> Dataset {
    let series = (0..n)
        .map(|i| SampleSeries {
            labels: from_pairs([("__name__", "load"), ("i", &format!("{i:05}"))]),
            samples: (0..1440)
                .map(|t| (t * 15_000, ((t + i as i64) % 97) as f64))
                .collect(),
        })
        .collect();
    Dataset::new(from_pairs([("cluster", cluster)]), series).expect("dataset")
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (calls, series_per_remote): (usize, usize) = if quick { (20, 5) } else { (1_000, 20) };
    // A held stream keeps what it received in its connection's HTTP/2
    // window (5 MiB per client connection): 20 held answers per connection
    // stay well inside it, as a querier's many connections would.
    let connections = calls.div_ceil(20);
    let mut remotes = Vec::new();
    for cluster in ["a", "b"] {
        let addr =
            support::serve_remote(SyntheticStore::new(dataset(cluster, series_per_remote))).await;
        remotes.push(support::remote(cluster, addr));
    }
    let running = support::start_fanout(remotes).await;
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(
            StoreClient::connect(format!("http://{}", running.grpc_addr))
                .await
                .expect("connect")
                .max_decoding_message_size(usize::MAX),
        );
    }
    support::reset_peak_rss();
    let before = support::peak_rss_mib();
    let started = Instant::now();
    let all_open = Arc::new(Barrier::new(calls + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for call in 0..calls {
        let mut client = clients[call % connections].clone();
        let all_open = all_open.clone();
        tasks.spawn(async move {
            let mut stream = client.series(support::all_of("load")).await?.into_inner();
            let mut series = 0;
            // One frame, then hold the stream until every call has one.
            if let Some(frame) = stream.message().await? {
                series += usize::from(matches!(
                    frame.result,
                    Some(series_response::Result::Series(_))
                ));
            }
            all_open.wait().await;
            while let Some(frame) = stream.message().await? {
                series += usize::from(matches!(
                    frame.result,
                    Some(series_response::Result::Series(_))
                ));
            }
            Ok::<_, tonic::Status>(series)
        });
    }
    all_open.wait().await;
    let opened = started.elapsed().as_secs_f64();
    let held_peak = support::peak_rss_mib();
    let results = tasks.join_all().await;
    let seconds = started.elapsed().as_secs_f64();
    let errors = results.iter().filter(|r| r.is_err()).count();
    let complete = results
        .iter()
        .filter(|r| matches!(r, Ok(n) if *n == 2 * series_per_remote))
        .count();
    println!(
        "calls | over connections | series each | all open after s | complete | errors | seconds | RSS before MiB | peak while held MiB | peak MiB"
    );
    println!(
        "{calls} | {connections} | {} | {opened:.2} | {complete} | {errors} | {seconds:.2} | {before:.1} | {held_peak:.1} | {:.1}",
        2 * series_per_remote,
        support::peak_rss_mib()
    );
    assert_eq!(errors, 0, "{:?}", results.iter().find(|r| r.is_err()));
    assert_eq!(complete, calls);
}
