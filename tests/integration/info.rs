//! Info aggregation, readiness and the admin endpoints.

use std::time::Duration;

use thanos_fanout::demo::synthetic::Capabilities;
use thanos_fanout::labelset::from_pairs;
use thanos_fanout::proto::thanos::info::InfoRequest;
use thanos_fanout::proto::thanos::info::info_client::InfoClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

#[tokio::test]
async fn info_aggregates_remotes() {
    let mut remotes = Vec::new();
    for (cluster, start, end) in [("a", 0, 10), ("b", 5, 20), ("c", 2, 30)] {
        let data = dataset(
            &[("cluster", cluster), ("region", "eu")],
            vec![series(
                &[("__name__", "up")],
                samples(start * MINUTE, end * MINUTE, |_| 1.0),
            )],
        );
        remotes.push(start_remote(data, Capabilities::default(), None).await);
    }
    let running = start_fanout(config(
        ["a", "b", "c"]
            .iter()
            .zip(&remotes)
            .map(|(c, r)| remote(c, r.addr, None))
            .collect(),
    ))
    .await;
    let mut info = InfoClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect");
    let started = std::time::Instant::now();
    let resp = info.info(InfoRequest {}).await.expect("info").into_inner();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered from cache"
    );
    let sets: Vec<_> = resp.label_sets.iter().map(|s| s.labels.clone()).collect();
    assert_eq!(
        sets,
        ["a", "b", "c"]
            .map(|c| from_pairs([("cluster", c), ("region", "eu")]))
            .to_vec()
    );
    assert_eq!(resp.component_type, "query");
    let store = resp.store.expect("store info");
    assert_eq!((store.min_time, store.max_time), (0, 30 * MINUTE));
    assert!(store.supports_without_replica_labels && store.supports_sharding);
    assert_eq!(store.tsdb_infos.len(), 3);

    // A remote whose Info fails keeps its label sets and time range in ours,
    // so the querier still sends us its queries (and gets a warning).
    remotes[2]
        .script
        .info_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    eventually("c unhealthy", Duration::from_secs(5), || {
        running.upstreams.endpoints()[2].queryable().is_none()
    })
    .await;
    let resp = info.info(InfoRequest {}).await.expect("info").into_inner();
    assert_eq!(resp.label_sets.len(), 3);
    assert_eq!(resp.store.expect("store").max_time, 30 * MINUTE);
}

#[tokio::test]
async fn no_healthy_remotes_advertises_everything_never_zero() {
    let running = start_fanout(config(vec![])).await;
    let mut info = InfoClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect");
    let store = info
        .info(InfoRequest {})
        .await
        .expect("info")
        .into_inner()
        .store
        .expect("store");
    assert_eq!((store.min_time, store.max_time), (i64::MIN, i64::MAX));
}

pub(crate) async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut body = String::new();
    stream.read_to_string(&mut body).await.expect("read");
    let status = body
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body)
}

#[tokio::test]
async fn probes_and_metrics() {
    let r = up_remote("a", None).await;
    let running = start_fanout(config(vec![remote("a", r.addr, None)])).await;
    assert_eq!(http_get(running.http_addr, "/-/healthy").await.0, 200);
    assert_eq!(http_get(running.http_addr, "/-/ready").await.0, 200);
    let mut client = client(&running).await;
    call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("series");
    let (status, body) = http_get(running.http_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains(
            r#"thanos_fanout_remote_calls_total{remote="a",method="Series",outcome="Success"} 1"#
        ),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            r#"thanos_fanout_remote_endpoint_up{{remote="a",endpoint="{}"}} 1"#,
            r.addr
        )),
        "{body}"
    );
    assert!(body.contains("thanos_fanout_series_sent_total 1"), "{body}");

    // Per remote: what arrived, how long it took, what is in flight.
    let value = |series: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{body}"))
    };
    assert!(value(r#"thanos_fanout_remote_series_received_bytes_total{remote="a"}"#) > 20.0);
    assert_eq!(
        value(r#"thanos_fanout_remote_chunks_received_total{remote="a"}"#),
        1.0
    );
    for histogram in [
        "thanos_fanout_remote_call_duration_seconds",
        "thanos_fanout_remote_first_frame_seconds",
    ] {
        let count = format!(r#"{histogram}_count{{remote="a",method="Series"}}"#);
        assert_eq!(value(&count), 1.0);
    }
    assert_eq!(
        value(r#"thanos_fanout_remote_calls_in_flight{remote="a",method="Series"}"#),
        0.0
    );
    let last_info = value(&format!(
        r#"thanos_fanout_remote_endpoint_last_info_success_timestamp_seconds{{remote="a",endpoint="{}"}}"#,
        r.addr
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (now - 60.0..=now).contains(&last_info),
        "{last_info} vs {now}"
    );
    assert!(
        body.contains(&format!(
            r#"thanos_fanout_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        )),
        "{body}"
    );
}

#[tokio::test]
async fn a_call_in_progress_is_counted_in_flight() {
    let r = up_remote("a", None).await;
    *r.script.series.lock().expect("script") = SeriesScript::Hang;
    let running = start_fanout(config(vec![remote("a", r.addr, None)])).await;
    let mut client = client(&running).await;
    let call = tokio::spawn(async move {
        let _ = call_series(&mut client, request(vec![eq("__name__", "up")])).await;
    });
    let line = r#"thanos_fanout_remote_calls_in_flight{remote="a",method="Series"} "#;
    let in_flight = || async {
        let (_, body) = http_get(running.http_addr, "/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(line)?.parse::<i64>().ok())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while in_flight().await != Some(1) {
        assert!(tokio::time::Instant::now() < deadline, "never in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The caller goes away: the remote call ends and is no longer counted.
    call.abort();
    while in_flight().await != Some(0) {
        assert!(tokio::time::Instant::now() < deadline, "still in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn grpc_health_serves_after_first_info_round() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let running = start_fanout(config(vec![])).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}

/// A Series request as a querier with `compression: snappy` sends it: one
/// gRPC message flagged compressed, in snappy's framing format.
fn snappy_request(addr: std::net::SocketAddr) -> http::Request<tonic::body::Body> {
    use std::io::Write;
    let message = prost::Message::encode_to_vec(&request(vec![eq("__name__", "up")]));
    let mut encoder = snap::write::FrameEncoder::new(Vec::new());
    encoder.write_all(&message).expect("compress");
    let compressed = encoder.into_inner().expect("flush");
    let mut body = vec![1];
    body.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
    body.extend_from_slice(&compressed);
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/thanos.Store/Series"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-encoding", "snappy")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(body),
        )))
        .expect("request")
}

#[tokio::test]
async fn compressed_requests_are_understood() {
    use http_body_util::BodyExt;
    use tonic::codec::CompressionEncoding;
    let r = up_remote("a", None).await;
    let running = start_fanout(config(vec![remote("a", r.addr, None)])).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    // snappy, Thanos's encoding: tonic alone would answer Unimplemented.
    let response = tower::ServiceExt::oneshot(channel.clone(), snappy_request(running.grpc_addr))
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    // A trailers-only answer is a refusal (Unimplemented without the layer).
    assert!(
        response.headers().get("grpc-status").is_none(),
        "refused: {:?} {:?}",
        response.headers().get("grpc-status"),
        response.headers().get("grpc-message")
    );
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(
        trailers
            .get("grpc-status")
            .map(|v| v.to_str().expect("ascii")),
        Some("0"),
        "{:?}",
        trailers.get("grpc-message")
    );
    let body = collected.to_bytes();
    assert_eq!(body[0], 0, "answered uncompressed");
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let frame: thanos_fanout::proto::thanos::SeriesResponse =
        prost::Message::decode(&body[5..5 + len]).expect("a Series frame");
    let Some(thanos_fanout::proto::thanos::series_response::Result::Series(series)) = frame.result
    else {
        panic!("expected a series, got {frame:?}");
    };
    assert_eq!(value(&series.labels, "cluster"), "a");

    // gzip and zstd, which tonic and grpc-go both speak.
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client =
            thanos_fanout::proto::thanos::store_client::StoreClient::new(channel.clone())
                .send_compressed(encoding);
        let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
            .await
            .expect("series");
        assert_eq!(answer.label_values("cluster"), ["a"], "{encoding:?}");
    }
}
