//! End to end through the gRPC path: three remotes (generating series as
//! they stream, so their memory is constant) behind the aggregator, and a
//! client that reads and drops every frame. Prints series/s and the peak
//! resident memory after each result size; a streaming merge keeps the peak
//! flat as the result grows.
//!
//! Run: `cargo bench --bench stream_memory` (release build).

// A benchmark stops at the first thing it did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::Stream;
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

/// A remote that generates `n` sorted series on the fly.
#[derive(Clone)]
struct Generator {
    cluster: String,
    chunks: Vec<AggrChunk>,
    size: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Store for Generator {
    type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesResponse, Status>> + Send>>;

    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let _ = request;
        let n = self.size.load(Ordering::SeqCst);
        let (cluster, chunks) = (self.cluster.clone(), self.chunks.clone());
        let frames = (0..n).map(move |i| {
            let name = format!("{i:09}");
            Ok(SeriesResponse {
                result: Some(series_response::Result::Series(Series {
                    labels: from_pairs([
                        ("__name__", "load"),
                        ("cluster", cluster.as_str()),
                        ("i", name.as_str()),
                    ]),
                    chunks: chunks.clone(),
                })),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(frames))))
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
impl Info for Generator {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(support::sidecar_info(&self.cluster)))
    }
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let samples: Vec<(i64, f64)> = (0..1440).map(|i| (i * 15_000, (i % 97) as f64)).collect();
    let chunks = thanos_fanout::demo::synthetic::encode_chunks(&samples).expect("chunks");
    let bytes_per_series: usize = chunks
        .iter()
        .map(|c| c.raw.as_ref().map_or(0, |r| r.data.len()))
        .sum();

    let size = Arc::new(AtomicUsize::new(0));
    let mut remotes = Vec::new();
    for cluster in ["a", "b", "c"] {
        let generator = Generator {
            cluster: cluster.into(),
            chunks: chunks.clone(),
            size: size.clone(),
        };
        remotes.push(support::remote(
            cluster,
            support::serve_remote(generator).await,
        ));
    }
    let mut config = thanos_fanout::config::Config::default();
    if let Ok(bytes) = std::env::var("PREFETCH_BYTES") {
        config.fanout.prefetch_bytes = bytes.parse().expect("PREFETCH_BYTES");
    }
    let running = support::start_fanout_with(config, remotes).await;
    let mut client = StoreClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect");

    println!("series per remote | series out | MiB out | seconds | series/s | peak RSS MiB");
    let sizes: &[usize] = if quick {
        &[1_000]
    } else {
        &[10_000, 50_000, 200_000]
    };
    for &n in sizes {
        size.store(n, Ordering::SeqCst);
        let started = Instant::now();
        let mut stream = client
            .series(support::all_of("load"))
            .await
            .expect("series")
            .into_inner();
        let mut count = 0usize;
        while let Some(frame) = stream.message().await.expect("frame") {
            if let Some(series_response::Result::Series(_)) = frame.result {
                count += 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(count, 3 * n, "every series arrives");
        println!(
            "{n:>17} | {count:>10} | {:>7.0} | {secs:>7.2} | {:>8.0} | {:>12.1}",
            (count * bytes_per_series) as f64 / (1 << 20) as f64,
            count as f64 / secs,
            support::peak_rss_mib()
        );
    }
}
