//! Whether every remote streams at full speed at once. Each remote sends its
//! series at a fixed rate per stream (a long-haul link's bandwidth), under
//! its own `cluster` label, so the sorted output takes all of one remote's
//! series before the next one's. Without read-ahead the remotes the merge is
//! not reading yet stall once their HTTP/2 window is full, and the answer
//! arrives at one remote's speed; with it they keep downloading into their
//! share of the request's prefetch budget. Prints series/s and the peak
//! resident memory during the call (of the whole process: remotes, the
//! aggregator and the client) at 1, 4, 8 and 16 remotes, for each prefetch
//! setting.
//!
//! Run: `cargo bench --bench parallel_remotes` (release build).

// A benchmark stops at the first thing it did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use thanos_fanout::config::Config;
use thanos_fanout::labelset::from_pairs;
use thanos_fanout::proto::thanos::info::info_server::Info;
use thanos_fanout::proto::thanos::info::{InfoRequest, InfoResponse};
use thanos_fanout::proto::thanos::store_client::StoreClient;
use thanos_fanout::proto::thanos::store_server::Store;
use thanos_fanout::proto::thanos::{
    AggrChunk, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse,
    Series, SeriesRequest, SeriesResponse, series_response,
};
use tonic::{Request, Response, Status};

/// A remote sending `series` generated series at `bytes_per_second`.
#[derive(Clone)]
struct Throttled {
    cluster: String,
    chunks: Vec<AggrChunk>,
    series: usize,
    bytes_per_second: f64,
}

#[tonic::async_trait]
impl Store for Throttled {
    type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesResponse, Status>> + Send>>;

    async fn series(
        &self,
        _: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let (cluster, chunks) = (self.cluster.clone(), self.chunks.clone());
        let bytes: usize = chunks
            .iter()
            .map(|c| c.raw.as_ref().map_or(0, |r| r.data.len()))
            .sum();
        // Sleep once per 16 series, the time their bytes take on the link.
        let pause = Duration::from_secs_f64(16.0 * bytes as f64 / self.bytes_per_second);
        let frames = futures::stream::iter(0..self.series).then(move |i| {
            let (cluster, chunks) = (cluster.clone(), chunks.clone());
            async move {
                if i % 16 == 15 {
                    tokio::time::sleep(pause).await;
                }
                let name = format!("{i:09}");
                Ok(SeriesResponse {
                    result: Some(series_response::Result::Series(Series {
                        labels: from_pairs([
                            ("__name__", "load"),
                            ("cluster", cluster.as_str()),
                            ("i", name.as_str()),
                        ]),
                        chunks,
                    })),
                })
            }
        });
        Ok(Response::new(Box::pin(frames)))
    }

    async fn label_names(
        &self,
        _: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        Ok(Response::new(LabelNamesResponse::default()))
    }

    async fn label_values(
        &self,
        _: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        Ok(Response::new(LabelValuesResponse::default()))
    }
}

#[tonic::async_trait]
impl Info for Throttled {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(support::sidecar_info(&self.cluster)))
    }
}

/// One Series call over everything; returns (series, seconds).
async fn drain(client: &mut StoreClient<tonic::transport::Channel>) -> (usize, f64) {
    let started = Instant::now();
    let mut stream = client
        .series(support::all_of("load"))
        .await
        .expect("series")
        .into_inner();
    let mut count = 0;
    while let Some(frame) = stream.message().await.expect("frame") {
        if let Some(series_response::Result::Series(_)) = frame.result {
            count += 1;
        }
    }
    (count, started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let samples: Vec<(i64, f64)> = (0..1440).map(|i| (i * 15_000, (i % 97) as f64)).collect();
    let chunks = thanos_fanout::demo::synthetic::encode_chunks(&samples).expect("chunks");
    let series_bytes: usize = chunks
        .iter()
        .map(|c| c.raw.as_ref().map_or(0, |r| r.data.len()))
        .sum();
    // 4 MiB per remote at 4 MiB/s: one second per remote when alone.
    let per_remote = if quick { 200 } else { (4 << 20) / series_bytes };
    let rate = 4.0 * (1 << 20) as f64;
    let counts: &[usize] = if quick { &[2] } else { &[1, 4, 8, 16] };

    println!(
        "each remote: {per_remote} series of {series_bytes} chunk bytes at {:.0} MiB/s per stream",
        rate / (1 << 20) as f64
    );
    println!("remotes | prefetch per request | series | seconds | series/s | peak RSS MiB");
    for &remotes in counts {
        let mut configs = Vec::new();
        for r in 0..remotes {
            let remote = Throttled {
                cluster: format!("c{r:02}"),
                chunks: chunks.clone(),
                series: per_remote,
                bytes_per_second: rate,
            };
            let addr = support::serve_remote(remote).await;
            let mut config = support::remote(&format!("c{r:02}"), addr);
            // With a larger window a remote's whole answer fits in it, and
            // what read-ahead adds would not show.
            config.http2.stream_window = 2 << 20;
            configs.push(config);
        }
        for (label, config) in settings() {
            support::reset_peak_rss();
            let running = support::start_fanout_with(config, configs.clone()).await;
            let mut client = StoreClient::connect(format!("http://{}", running.grpc_addr))
                .await
                .expect("connect")
                .max_decoding_message_size(usize::MAX);
            let (count, secs) = drain(&mut client).await;
            assert_eq!(count, remotes * per_remote, "every series arrives");
            println!(
                "{remotes:>7} | {label:>20} | {count:>6} | {secs:>7.2} | {:>8.0} | {:>12.1}",
                count as f64 / secs,
                support::peak_rss_mib()
            );
            running.shutdown().await.expect("shutdown");
        }
    }
}

/// The configurations compared, each with a label for the table.
fn settings() -> Vec<(String, Config)> {
    [0, 16 << 20, 64 << 20, 256 << 20]
        .into_iter()
        .map(|bytes| {
            let mut config = Config::default();
            config.fanout.prefetch_bytes = bytes;
            let label = if bytes == config_default() {
                format!("{} MiB (default)", bytes >> 20)
            } else if bytes == 0 {
                "none".into()
            } else {
                format!("{} MiB", bytes >> 20)
            };
            (label, config)
        })
        .collect()
}

fn config_default() -> usize {
    Config::default().fanout.prefetch_bytes
}
