//! The querier-facing HTTP/2 server's own limits: streams per connection,
//! header size, and keepalive pings that drop a querier that vanished
//! without closing its connection, with every call it had in flight.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use thanos_fanout::proto::thanos::store_client::StoreClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::common::*;

/// Remote `a`, whose Series calls hang (for two minutes before its
/// timeout), and remote `b`, which answers; thanos-fanout in front of them
/// configured by `tweak`.
async fn hanging_and_answering(
    tweak: impl FnOnce(&mut thanos_fanout::config::Config),
) -> (RemoteHandle, RemoteHandle, thanos_fanout::app::Running) {
    let a = up_remote("a", None).await;
    a.script.set(SeriesScript::Hang);
    let b = up_remote("b", None).await;
    let mut cfg = config(vec![remote("a", a.addr, None), remote("b", b.addr, None)]);
    cfg.remotes[0].timeout = Duration::from_secs(120);
    tweak(&mut cfg);
    let running = start_fanout(cfg).await;
    (a, b, running)
}

/// A call that only remote `a` is asked, so it hangs.
fn to_a() -> thanos_fanout::proto::thanos::SeriesRequest {
    request(vec![eq("__name__", "up"), eq("cluster", "a")])
}

/// A call only remote `b` is asked, which it answers.
async fn answered_by_b(client: &mut StoreClient<Channel>) {
    let answer = call_series(
        client,
        request(vec![eq("__name__", "up"), eq("cluster", "b")]),
    )
    .await
    .expect("answered");
    assert_eq!(answer.label_values("cluster"), ["b"]);
}

async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

#[tokio::test]
async fn calls_beyond_max_concurrent_streams_wait_on_their_connection() {
    let (a, b, running) = hanging_and_answering(|cfg| cfg.grpc.max_concurrent_streams = 4).await;
    // One connection: four calls take every stream it may have.
    let channel = connect(running.grpc_addr).await;
    let spawn_call = || {
        let mut client = StoreClient::new(channel.clone());
        tokio::spawn(async move { call_series(&mut client, to_a()).await })
    };
    let first: Vec<_> = (0..4).map(|_| spawn_call()).collect();
    eventually("four calls at remote a", Duration::from_secs(10), || {
        a.script.series_calls() == 4
    })
    .await;
    // Two more on the same connection wait for a stream.
    let more: Vec<_> = (0..2).map(|_| spawn_call()).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        a.script.series_calls(),
        4,
        "calls beyond grpc.max_concurrent_streams (4) on one connection reached the remote"
    );
    // Another connection has streams of its own.
    answered_by_b(&mut client(&running).await).await;
    assert_eq!(b.script.series_calls(), 1);
    // Ending the first four lets the two in.
    for call in &first {
        call.abort();
    }
    eventually(
        "the waiting calls at remote a",
        Duration::from_secs(10),
        || a.script.series_calls() == 6,
    )
    .await;
    for call in &more {
        call.abort();
    }
}

#[tokio::test]
async fn a_call_with_headers_over_max_header_list_bytes_is_refused() {
    let (_a, b, running) =
        hanging_and_answering(|cfg| cfg.grpc.max_header_list_bytes = 8 << 10).await;
    let channel = connect(running.grpc_addr).await;
    let mut client = StoreClient::new(channel.clone());
    let mut big = tonic::Request::new(request(vec![eq("__name__", "up"), eq("cluster", "b")]));
    big.metadata_mut().insert(
        "x-padding",
        "p".repeat(12 << 10).parse().expect("metadata value"),
    );
    let refused = async {
        let mut answer = client.series(big).await?.into_inner();
        while answer.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    }
    .await
    .expect_err("a call with 12 KiB of headers past grpc.max_header_list_bytes (8 KiB)");
    // 431 Request Header Fields Too Large, before any service saw it.
    assert!(refused.message().contains("431"), "{refused:?}");
    assert_eq!(b.script.series_calls(), 0);
    // The connection serves on.
    answered_by_b(&mut client).await;
}

/// Forwards one connection's bytes `from` -> `to` until `frozen`, then
/// holds both open forwarding nothing.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let read = tokio::select! {
            _ = frozen.wait_for(|f| *f) => break,
            read = from.read(&mut buf) => read,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    std::future::pending::<()>().await;
    drop((from, to));
}

/// A TCP proxy to `upstream` which, once `frozen`, stops forwarding both
/// ways and keeps its connections open: the other side sees a peer that
/// vanished without a FIN (a querier's node lost, a network partition).
async fn freezing_proxy(upstream: SocketAddr, frozen: watch::Receiver<bool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pipe(client_read, server_write, frozen.clone()));
            tokio::spawn(pipe(server_read, client_write, frozen.clone()));
        }
    });
    addr
}

#[tokio::test]
async fn a_querier_that_vanished_has_its_calls_and_their_remote_calls_dropped() {
    let (a, b, running) = hanging_and_answering(|cfg| {
        cfg.grpc.keepalive_interval = Duration::from_secs(1);
        cfg.grpc.keepalive_timeout = Duration::from_secs(1);
    })
    .await;
    let (freeze, frozen) = watch::channel(false);
    let proxy = freezing_proxy(running.grpc_addr, frozen).await;
    let mut querier = StoreClient::new(connect(proxy).await);
    let call = tokio::spawn(async move { call_series(&mut querier, to_a()).await });
    eventually("the call at remote a", Duration::from_secs(10), || {
        a.script.series_calls() == 1
    })
    .await;
    // A querier that answers pings keeps its connection through silence
    // longer than interval + timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.script.cancelled.load(Ordering::SeqCst), 0);
    assert!(!call.is_finished());

    freeze.send_replace(true);
    let frozen_at = Instant::now();
    eventually(
        "the vanished querier's remote call to be cancelled",
        Duration::from_secs(20),
        || a.script.cancelled.load(Ordering::SeqCst) == 1,
    )
    .await;
    // No sooner than its pings could have gone unanswered.
    assert!(
        frozen_at.elapsed() >= Duration::from_millis(500),
        "{:?}",
        frozen_at.elapsed()
    );
    // Everyone else is served as before.
    answered_by_b(&mut client(&running).await).await;
    assert_eq!(b.script.series_calls(), 1);
    call.abort();
}
