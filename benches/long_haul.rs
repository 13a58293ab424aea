//! One large Series answer from one remote behind an emulated long-haul link,
//! through thanos-fanout, with each `remotes[].http2.stream_window`. A stream
//! carries at most one window per round trip, so on a far link its window,
//! not the link or the CPU, bounds its speed.
//!
//! The link is a relay that holds every chunk of bytes for half the round
//! trip in each direction before passing it on: latency without a bandwidth
//! limit. It holds any amount in flight, or, like a TCP connection whose
//! sender's buffer is that size, at most a cap (4 MiB: Linux's default
//! largest `net.ipv4.tcp_wmem`). Prints, per cap, round-trip time and window,
//! MiB/s over the link and series/s out of thanos-fanout (the median of three
//! calls), and the speed relative to the old 2 MiB window.
//!
//! Run: `cargo bench --bench long_haul` (release build). `LONG_HAUL_SERIES`
//! sets the answer's size (100000), `LONG_HAUL_RTT_MS` the round trips
//! (`0,30,100`), `LONG_HAUL_WINDOWS_MIB` the windows (`2,4,8,16,32,64`),
//! `LONG_HAUL_IN_FLIGHT_MIB` the caps (`0,4`; 0: none).

// A benchmark stops at the first thing it did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use thanos_fanout::config::{Config, DEFAULT_STREAM_WINDOW};
use thanos_fanout::labelset::from_pairs;
use thanos_fanout::proto::thanos::info::info_server::Info;
use thanos_fanout::proto::thanos::info::{InfoRequest, InfoResponse};
use thanos_fanout::proto::thanos::store_client::StoreClient;
use thanos_fanout::proto::thanos::store_server::Store;
use thanos_fanout::proto::thanos::{
    AggrChunk, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse,
    Series, SeriesRequest, SeriesResponse, series_response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::{Request, Response, Status};

/// A remote answering every Series call with `series` generated series as
/// fast as it can.
#[derive(Clone)]
struct Generated {
    chunks: Vec<AggrChunk>,
    series: usize,
}

#[tonic::async_trait]
impl Store for Generated {
    type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesResponse, Status>> + Send>>;

    async fn series(
        &self,
        _: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let chunks = self.chunks.clone();
        let frames = futures::stream::iter(0..self.series).map(move |i| {
            let name = format!("{i:09}");
            Ok(SeriesResponse {
                result: Some(series_response::Result::Series(Series {
                    labels: from_pairs([
                        ("__name__", "load"),
                        ("cluster", "far"),
                        ("i", name.as_str()),
                    ]),
                    chunks: chunks.clone(),
                })),
            })
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
impl Info for Generated {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(support::sidecar_info("far")))
    }
}

/// An emulated link: its latency each way and, like a TCP connection whose
/// sender's buffer is that size, the most bytes it holds unacknowledged.
#[derive(Clone, Copy)]
struct Link {
    one_way: Duration,
    in_flight: Option<u32>,
}

/// Relays TCP connections to `upstream` over `link`, each direction on its
/// own; counts the bytes from `upstream`.
async fn relay(upstream: SocketAddr, link: Link, down: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(upstream).await.expect("connect");
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(delayed_copy(
                server_read,
                client_write,
                link,
                Some(down.clone()),
            ));
            tokio::spawn(delayed_copy(client_read, server_write, link, None));
        }
    });
    addr
}

/// Reads what `from` sends (while the link has room) and writes each chunk
/// to `to` `one_way` after it arrived; its room comes back `one_way` later,
/// when the acknowledgement would.
async fn delayed_copy(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: Link,
    count: Option<Arc<AtomicU64>>,
) {
    let room = link
        .in_flight
        .map(|bytes| Arc::new(Semaphore::new(bytes as usize)));
    // Far more chunks than the largest HTTP/2 window measured puts in flight,
    // so without `in_flight` the relay never pushes back on the sender.
    type Chunk = (tokio::time::Instant, Vec<u8>, Option<OwnedSemaphorePermit>);
    let (tx, mut rx) = mpsc::channel::<Chunk>(1 << 16);
    let reader = async move {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let permit = match &room {
                Some(room) => Some(
                    room.clone()
                        .acquire_many_owned(n as u32)
                        .await
                        .expect("open semaphore"),
                ),
                None => None,
            };
            let due = tokio::time::Instant::now() + link.one_way;
            if tx.send((due, buf[..n].to_vec(), permit)).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes, permit)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
            if let Some(count) = &count {
                count.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            if let Some(permit) = permit {
                tokio::spawn(async move {
                    tokio::time::sleep(link.one_way).await;
                    drop(permit);
                });
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
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

/// A comma-separated list of numbers from the environment, or `default`.
fn list(name: &str, default: &[u64]) -> Vec<u64> {
    std::env::var(name).map_or_else(
        |_| default.to_vec(),
        |v| {
            v.split(',')
                .map(|n| n.trim().parse().expect("a number"))
                .collect()
        },
    )
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let series = if quick {
        2_000
    } else {
        list("LONG_HAUL_SERIES", &[100_000])[0] as usize
    };
    let rtts = if quick {
        vec![0, 10]
    } else {
        list("LONG_HAUL_RTT_MS", &[0, 30, 100])
    };
    let calls = if quick { 1 } else { 3 };
    // 0: the link holds whatever is sent; 4 MiB: Linux's default largest
    // TCP send buffer (net.ipv4.tcp_wmem), at the remote's end of the link.
    let in_flights: Vec<Option<u32>> = if quick {
        vec![0, 1]
    } else {
        list("LONG_HAUL_IN_FLIGHT_MIB", &[0, 4])
    }
    .into_iter()
    .map(|mib| (mib > 0).then(|| u32::try_from(mib << 20).expect("below 4 GiB")))
    .collect();
    let windows: Vec<u32> = if quick {
        vec![2 << 20, DEFAULT_STREAM_WINDOW]
    } else {
        list("LONG_HAUL_WINDOWS_MIB", &[2, 4, 8, 16, 32, 64])
            .into_iter()
            .map(|mib| u32::try_from(mib << 20).expect("a window below 4 GiB"))
            .collect()
    };

    // The series of the parallel_remotes bench: 6 h at 15 s, 12 XOR chunks.
    let samples: Vec<(i64, f64)> = (0..1440).map(|i| (i * 15_000, (i % 97) as f64)).collect();
    let chunks = thanos_fanout::demo::synthetic::encode_chunks(&samples).expect("chunks");
    let remote = support::serve_remote(Generated { chunks, series }).await;

    println!("one remote, {series} series per Series call, plaintext; median of {calls} calls");
    println!(
        "link holds | RTT ms | stream window | MiB over the link | seconds | MiB/s | series/s | vs 2 MiB"
    );
    for &in_flight in &in_flights {
        for &rtt in &rtts {
            // Without latency a cap on bytes in flight changes nothing.
            if rtt == 0 && in_flight.is_some() {
                continue;
            }
            let link = Link {
                one_way: Duration::from_millis(rtt) / 2,
                in_flight,
            };
            let down = Arc::new(AtomicU64::new(0));
            let link_addr = relay(remote, link, down.clone()).await;
            let holds = in_flight.map_or("any amount".into(), |b| format!("{} MiB", b >> 20));
            let mut baseline = None;
            for &window in &windows {
                let mut config = support::remote("far", link_addr);
                config.http2.stream_window = window;
                let running = support::start_fanout_with(Config::default(), vec![config]).await;
                let mut client = StoreClient::connect(format!("http://{}", running.grpc_addr))
                    .await
                    .expect("connect")
                    .max_decoding_message_size(usize::MAX);
                let before = down.load(Ordering::Relaxed);
                let mut times = Vec::with_capacity(calls);
                for _ in 0..calls {
                    let (count, secs) = drain(&mut client).await;
                    assert_eq!(count, series, "every series arrives");
                    times.push(secs);
                }
                times.sort_by(f64::total_cmp);
                let secs = times[calls / 2];
                let mib = (down.load(Ordering::Relaxed) - before) as f64
                    / f64::from(1 << 20)
                    / calls as f64;
                let rate = series as f64 / secs;
                if window == 2 << 20 {
                    baseline = Some(rate);
                }
                let label = if window == DEFAULT_STREAM_WINDOW {
                    format!("{} MiB (default)", window >> 20)
                } else {
                    format!("{} MiB", window >> 20)
                };
                println!(
                    "{holds} | {rtt} | {label} | {mib:.1} | {secs:.2} | {:.1} | {rate:.0} | {}",
                    mib / secs,
                    baseline.map_or(String::new(), |b| format!("{:.2}x", rate / b)),
                );
                running.shutdown().await.expect("shutdown");
            }
        }
    }
}
