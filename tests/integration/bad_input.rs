//! Bad requests from the querier side: each gets a clear, bounded error (or
//! a well-defined answer) and costs nothing else, while good calls run on
//! the same connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use thanos_fanout::proto::thanos::{LabelNamesRequest, LabelValuesRequest, ShardInfo};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::common::*;

/// Longest message a bad request may bring back: well under the 8 KiB a
/// gRPC client accepts in its trailers.
const MAX_MESSAGE: usize = 1024;

/// One remote `a` with a few series, and thanos-fanout in front of it.
async fn one_remote() -> (RemoteHandle, thanos_fanout::app::Running) {
    let r = up_remote("a", None).await;
    let running = start_fanout(config(vec![remote("a", r.addr, None)])).await;
    (r, running)
}

/// Runs `bad` while a good Series call runs beside it on the same
/// connection; the good one must come back whole.
async fn beside_a_good_call<T>(
    running: &thanos_fanout::app::Running,
    bad: impl std::future::Future<Output = T>,
) -> T {
    let mut client = client(running).await;
    let good = async {
        call_series(&mut client, request(vec![eq("__name__", "up")]))
            .await
            .expect("the good call")
    };
    let (bad, good) = tokio::join!(bad, good);
    assert!(good.warnings.is_empty(), "{:?}", good.warnings);
    assert_eq!(good.label_values("cluster"), ["a"]);
    bad
}

#[tokio::test]
async fn a_megabyte_regex_is_invalid_argument_with_a_bounded_message() {
    let (_r, running) = one_remote().await;
    let mut client = client(&running).await;
    let pattern = format!("({}", "x".repeat(1 << 20));
    let err = beside_a_good_call(
        &running,
        call_series(
            &mut client,
            request(vec![matcher(
                thanos_fanout::proto::thanos::label_matcher::Type::Re,
                "job",
                &pattern,
            )]),
        ),
    )
    .await
    .expect_err("an unclosed group");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().len() <= MAX_MESSAGE,
        "{} bytes",
        err.message().len()
    );
    assert!(
        err.message().contains(r#"job=~"(xxxx"#),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("(1048577 bytes)"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("unclosed group"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_megabyte_label_name_in_label_values_is_bounded() {
    let (_r, running) = one_remote().await;
    let mut client = client(&running).await;
    let err = client
        .label_values(LabelValuesRequest {
            label: String::new(),
            start: i64::MIN,
            end: i64::MAX,
            matchers: vec![matcher(
                thanos_fanout::proto::thanos::label_matcher::Type::Re,
                &"n".repeat(1 << 20),
                "(",
            )],
            ..Default::default()
        })
        .await
        .expect_err("no label name, bad matcher");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().len() <= MAX_MESSAGE,
        "{} bytes",
        err.message().len()
    );
}

#[tokio::test]
async fn no_matchers_is_invalid_argument() {
    let (r, running) = one_remote().await;
    let mut client = client(&running).await;
    let err = beside_a_good_call(&running, call_series(&mut client, request(vec![])))
        .await
        .expect_err("no matchers");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("matcher"), "{}", err.message());
    // Only the good call reached the remote.
    assert_eq!(r.script.series_calls(), 1);
}

#[tokio::test]
async fn min_time_after_max_time_is_an_empty_answer_without_remote_calls() {
    let (r, running) = one_remote().await;
    let mut client = client(&running).await;
    let mut req = request(vec![eq("__name__", "up")]);
    req.min_time = 2_000;
    req.max_time = 1_000;
    let answer = call_series(&mut client, req)
        .await
        .expect("an empty answer");
    assert!(
        answer.series.is_empty() && answer.warnings.is_empty(),
        "{answer:?}"
    );
    assert_eq!(r.script.series_calls(), 0);
    let names = client
        .label_names(LabelNamesRequest {
            start: 2_000,
            end: 1_000,
            ..Default::default()
        })
        .await
        .expect("an empty answer")
        .into_inner();
    assert!(names.names.is_empty(), "{names:?}");
    assert_eq!(
        r.script
            .label_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn a_negative_limit_means_no_limit_and_a_huge_batch_size_works() {
    let names: Vec<String> = (0..50).map(|i| format!("{i:02}")).collect();
    let data = dataset(
        &[("cluster", "a")],
        names
            .iter()
            .map(|i| series(&[("__name__", "m"), ("i", i)], samples(0, MINUTE, |_| 1.0)))
            .collect(),
    );
    let r = start_remote(data, Default::default(), None).await;
    let running = start_fanout(config(vec![remote("a", r.addr, None)])).await;
    let mut client = client(&running).await;
    let all = call_series(&mut client, request(vec![])).await;
    assert!(all.is_err());
    let mut everything = request(vec![matcher(
        thanos_fanout::proto::thanos::label_matcher::Type::Re,
        "__name__",
        ".+",
    )]);
    let full = call_series(&mut client, everything.clone())
        .await
        .expect("all");
    assert_eq!(full.series.len(), 50);
    everything.limit = -5;
    let negative = call_series(&mut client, everything.clone())
        .await
        .expect("limit -5");
    assert_eq!(negative.series.len(), full.series.len());
    everything.limit = 0;
    everything.response_batch_size = i64::MAX;
    let batched = call_series(&mut client, everything)
        .await
        .expect("one batch");
    assert_eq!(batched.series.len(), full.series.len());
    assert!(r.script.series_calls() >= 3);
}

#[tokio::test]
async fn shard_info_with_no_shards_is_unsharded_and_out_of_range_is_invalid() {
    let (_r, running) = one_remote().await;
    let mut client = client(&running).await;
    let everything = || {
        request(vec![matcher(
            thanos_fanout::proto::thanos::label_matcher::Type::Re,
            "__name__",
            ".+",
        )])
    };
    let full = call_series(&mut client, everything()).await.expect("all");
    let mut zero = everything();
    zero.shard_info = Some(ShardInfo {
        shard_index: 0,
        total_shards: 0,
        ..Default::default()
    });
    let unsharded = call_series(&mut client, zero).await.expect("no shards");
    assert_eq!(unsharded.series.len(), full.series.len());
    for (index, total) in [(3, 3), (-1, 3), (7, 2)] {
        let mut bad = everything();
        bad.shard_info = Some(ShardInfo {
            shard_index: index,
            total_shards: total,
            ..Default::default()
        });
        let err = beside_a_good_call(&running, call_series(&mut client, bad))
            .await
            .expect_err("out of range");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains("shard"), "{}", err.message());
    }
}

#[tokio::test]
async fn ten_thousand_matchers_are_answered() {
    let (_r, running) = one_remote().await;
    let mut client = client(&running).await;
    let mut matchers = vec![eq("__name__", "up")];
    matchers.extend((0..10_000).map(|i| {
        matcher(
            thanos_fanout::proto::thanos::label_matcher::Type::Nre,
            &format!("l{i}"),
            "x+",
        )
    }));
    let started = std::time::Instant::now();
    let answer = beside_a_good_call(&running, call_series(&mut client, request(matchers)))
        .await
        .expect("answered");
    assert_eq!(answer.label_values("cluster"), ["a"]);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn an_undecodable_request_is_refused_and_the_connection_serves_on() {
    let (_r, running) = one_remote().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.grpc_addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    // A Series request whose body is not protobuf: field 1 with wire type 7.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/thanos.Store/Series");
    let err = grpc
        .server_streaming(
            tonic::Request::new(bytes::Bytes::from_static(&[0x0f, 0xff, 0xff])),
            path,
            RawCodec,
        )
        .await
        .expect_err("undecodable");
    assert!(
        matches!(err.code(), Code::Internal | Code::InvalidArgument),
        "{err:?}"
    );
    assert!(err.message().len() <= MAX_MESSAGE);
    // The same connection answers the next call.
    let mut client = thanos_fanout::proto::thanos::store_client::StoreClient::new(channel);
    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("a good call after");
    assert_eq!(answer.label_values("cluster"), ["a"]);
}

/// Sends and receives raw bytes.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Self::Item,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, Self::Error> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n)))
    }
}

#[tokio::test]
async fn batches_stay_small_whatever_the_batch_size_asked() {
    let r = up_remote("a", None).await;
    r.script.set(SeriesScript::Large {
        series: 300,
        chunk_bytes: 16 << 10,
    });
    let running = start_fanout(config(vec![remote("a", r.addr, None)])).await;
    let mut client = client(&running).await;
    let mut req = request(vec![eq("__name__", "big")]);
    req.response_batch_size = i64::MAX;
    let answer = call_series(&mut client, req).await.expect("answered");
    assert_eq!(answer.series.len(), 300);
    // 300 series of 16 KiB: about 5 MiB, in frames of about 1 MiB.
    assert!(answer.batches.len() >= 4, "{:?}", answer.batches);
    assert!(
        answer.batches.iter().all(|&n| n <= 80),
        "{:?}",
        answer.batches
    );
}

/// A `grpc-timeout` that is not one (not even ASCII, or with an unknown
/// unit) means no deadline, as tonic's own server reads it: the call is
/// answered in full and the remote is called without a deadline. A
/// well-formed one sent the same way is passed on.
#[tokio::test]
async fn a_malformed_grpc_timeout_means_no_deadline() {
    let (r, running) = one_remote().await;
    let cases: [(&[u8], bool); 4] = [
        ("1é".as_bytes(), false),
        ("é".as_bytes(), false),
        (b"5x", false),
        (b"30S", true),
    ];
    for (value, passed_on) in cases {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
                .expect("endpoint")
                .connect()
                .await
                .expect("connect");
        // Set below tonic, which only sends timeouts it formatted itself.
        let header = http::HeaderValue::from_bytes(value).expect("a header value");
        let with_timeout = tower::ServiceBuilder::new()
            .map_request(move |mut req: http::Request<tonic::body::Body>| {
                req.headers_mut().insert("grpc-timeout", header.clone());
                req
            })
            .service(channel);
        let mut client = thanos_fanout::proto::thanos::store_client::StoreClient::new(with_timeout);
        let mut stream = client
            .series(request(vec![eq("__name__", "up")]))
            .await
            .unwrap_or_else(|e| panic!("{value:?}: {e}"))
            .into_inner();
        let mut series = 0;
        while let Some(frame) = stream
            .message()
            .await
            .unwrap_or_else(|e| panic!("{value:?}: {e}"))
        {
            assert!(
                !matches!(
                    frame.result,
                    Some(thanos_fanout::proto::thanos::series_response::Result::Warning(_))
                ),
                "{value:?}: {frame:?}"
            );
            series += 1;
        }
        assert_eq!(series, 1, "{value:?}");
        let forwarded = r
            .script
            .grpc_timeouts
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("a call");
        assert_eq!(forwarded.is_some(), passed_on, "{value:?}: {forwarded:?}");
    }
}

/// One remote `a`, and thanos-fanout in front of it taking messages of at
/// most 2 MiB.
async fn one_remote_small_messages() -> (RemoteHandle, thanos_fanout::app::Running, Channel) {
    let r = up_remote("a", None).await;
    let mut cfg = config(vec![remote("a", r.addr, None)]);
    cfg.grpc.max_message_bytes = LIMIT;
    let running = start_fanout(cfg).await;
    let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    (r, running, channel)
}

/// `grpc.max_message_bytes` in the tests below.
const LIMIT: usize = 2 << 20;

/// A Series call sent by hand on `channel` with `grpc-encoding: snappy`,
/// whose body is what comes through `body` (ending when it closes); the
/// status it ends with.
async fn snappy_series_call(
    channel: &Channel,
    body: tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, Status>>,
) -> Status {
    let body = tonic::body::Body::new(http_body_util::StreamBody::new(
        tokio_stream::wrappers::ReceiverStream::new(body),
    ));
    let request = http::Request::post("http://fanout/thanos.Store/Series")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-encoding", "snappy")
        .body(body)
        .expect("request");
    let response = tower::ServiceExt::oneshot(channel.clone(), request)
        .await
        .expect("an HTTP answer");
    if let Some(status) = Status::from_header_map(response.headers()) {
        return status;
    }
    let collected = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("the answer's body");
    collected
        .trailers()
        .and_then(Status::from_header_map)
        .expect("a grpc-status")
}

/// A good Series call on `channel`, which must come back whole.
async fn a_good_call(channel: &Channel) {
    let mut client = thanos_fanout::proto::thanos::store_client::StoreClient::new(channel.clone());
    let good = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("the good call");
    assert_eq!(good.label_values("cluster"), ["a"]);
}

#[tokio::test]
async fn a_snappy_request_over_max_message_bytes_is_refused_before_it_is_read() {
    let (_r, _running, channel) = one_remote_small_messages().await;
    // A message announced as 768 MiB, coming at 64 KiB per 10 ms for as
    // long as it is taken (at most 96 MiB, then the body ends).
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let sent = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let (sent, ended) = (sent.clone(), ended.clone());
        async move {
            let mut header = vec![1];
            header.extend_from_slice(&(768u32 << 20).to_be_bytes());
            if tx
                .send(Ok(http_body::Frame::data(header.into())))
                .await
                .is_err()
            {
                return;
            }
            let chunk = Bytes::from(vec![0xa5; 64 << 10]);
            while sent.load(Ordering::SeqCst) < 96 << 20 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if tx
                    .send(Ok(http_body::Frame::data(chunk.clone())))
                    .await
                    .is_err()
                {
                    return;
                }
                sent.fetch_add(chunk.len(), Ordering::SeqCst);
            }
            ended.store(true, Ordering::SeqCst);
        }
    });
    let (status, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(60), snappy_series_call(&channel, rx)),
        a_good_call(&channel),
    );
    let status = status.expect("an answer within a minute");
    assert!(
        !ended.load(Ordering::SeqCst),
        "answered only after the whole body ({} bytes) was sent: {status:?}",
        sent.load(Ordering::SeqCst)
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("grpc.max_message_bytes"),
        "{}",
        status.message()
    );
    sender.abort();
    // The connection serves on.
    a_good_call(&channel).await;
}

/// 16 MiB of zeros in one snappy-compressed message: under 1 MiB, well
/// within the limit, until it inflates.
fn bomb() -> Vec<u8> {
    let bomb = grpc_frame(1, &snappy(&vec![0; 16 << 20]));
    assert!(bomb.len() < LIMIT / 2, "{} bytes", bomb.len());
    bomb
}

#[tokio::test]
async fn a_small_snappy_bomb_is_refused_with_resource_exhausted() {
    let (_r, _running, channel) = one_remote_small_messages().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(Ok(http_body::Frame::data(Bytes::from(bomb()))))
        .await
        .expect("send");
    drop(tx);
    let (status, ()) = tokio::join!(snappy_series_call(&channel, rx), a_good_call(&channel));
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("grpc.max_message_bytes"),
        "{}",
        status.message()
    );
    a_good_call(&channel).await;
}

#[tokio::test]
async fn a_snappy_bomb_is_refused_as_it_inflates_without_waiting_for_the_rest() {
    let (_r, _running, channel) = one_remote_small_messages().await;
    // Its first half, which inflates to 8 MiB, and the body held open.
    let bomb = bomb();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(Ok(http_body::Frame::data(Bytes::copy_from_slice(
        &bomb[..bomb.len() / 2],
    ))))
    .await
    .expect("send");
    let (status, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(30), snappy_series_call(&channel, rx)),
        a_good_call(&channel),
    );
    let status = status.expect("refused while the rest of the body is awaited");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    drop(tx);
    a_good_call(&channel).await;
}
