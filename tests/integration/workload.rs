//! Real workloads: many calls at once over shared connections, answers far
//! larger than every buffer and HTTP/2 window, callers that read slowly or not
//! at all, remotes that stream for longer than their timeout, and a cluster
//! that goes down.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use thanos_fanout::app::Running;
use thanos_fanout::config::RemoteConfig;
use thanos_fanout::demo::synthetic::Capabilities;
use thanos_fanout::labelset::compare;
use thanos_fanout::proto::thanos::info::InfoRequest;
use thanos_fanout::proto::thanos::info::info_client::InfoClient;
use thanos_fanout::proto::thanos::{
    AggrChunk, Chunk, PartialResponseStrategy, Series, SeriesRequest, SeriesResponse,
    series_response,
};
use tonic::Code;
use tonic::codec::Streaming;

use crate::common::*;

/// 16 KiB per series: 1,500 series are 24 MiB, twelve times an HTTP/2
/// stream window and five times a default connection window.
const CHUNK_BYTES: usize = 16 << 10;

/// A remote timeout short enough for tests to outlast it, long enough that a
/// loaded machine running the other tests at once does not trip it.
const TIMEOUT: Duration = Duration::from_secs(2);

fn big() -> SeriesRequest {
    request(vec![eq("__name__", "big")])
}

/// A TLS remote for `cluster` that answers every Series call with `series`
/// generated series of [`CHUNK_BYTES`] each.
async fn large_remote(pki: &Pki, cluster: &str, series: usize) -> RemoteHandle {
    let data = dataset(
        &[("cluster", cluster)],
        vec![crate::common::series(
            &[("__name__", "up")],
            samples(0, MINUTE, |_| 1.0),
        )],
    );
    let tls = pki.server(&[&format!("{cluster}.remote.test")]);
    let r = start_remote(data, Capabilities::default(), Some(tls)).await;
    r.script.set(SeriesScript::Large {
        series,
        chunk_bytes: CHUNK_BYTES,
    });
    r
}

fn tls_remote(pki: &Pki, cluster: &str, r: &RemoteHandle) -> RemoteConfig {
    remote(
        cluster,
        r.addr,
        Some(pki.client_tls(&format!("{cluster}.remote.test"))),
    )
}

/// Waits until the remote has stopped handing out frames for a second: every
/// window and buffer between it and the stalled callers is full.
async fn until_quiet(r: &RemoteHandle) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = r.script.frames_sent.load(Ordering::SeqCst);
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(1) {
        assert!(
            Instant::now() < deadline,
            "the remote never stopped sending"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = r.script.frames_sent.load(Ordering::SeqCst);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
}

/// Reads a whole answer, pausing `pause` after every `every` frames.
async fn read_all(
    mut stream: Streaming<SeriesResponse>,
    every: usize,
    pause: Duration,
) -> Result<Answer, tonic::Status> {
    let mut answer = Answer::default();
    let mut frames = 0;
    while let Some(frame) = stream.message().await? {
        frames += 1;
        if every > 0 && frames % every == 0 {
            tokio::time::sleep(pause).await;
        }
        match frame.result {
            Some(series_response::Result::Series(s)) => answer.series.push(s),
            Some(series_response::Result::Batch(b)) => answer.series.extend(b.series),
            Some(series_response::Result::Warning(w)) => answer.warnings.push(w),
            _ => {}
        }
    }
    Ok(answer)
}

fn assert_strictly_sorted(series: &[Series]) {
    for w in series.windows(2) {
        assert_eq!(
            compare(&w[0].labels, &w[1].labels),
            std::cmp::Ordering::Less,
            "output not sorted and unique"
        );
    }
}

fn info_failures(running: &Running) -> u64 {
    running
        .upstreams
        .endpoints()
        .iter()
        .map(|e| e.metrics.info_failures.get())
        .sum()
}

/// Callers that open calls and never read them fill every window on the way
/// to the remote. That must not stop Info to that remote, nor a caller that
/// does read, on the same remote. Without a per-connection stream limit the
/// stalled streams exhaust their shared connection's window, and both wait
/// for ever: Info polling is off here, so no timed-out Info call resets a
/// stream and frees a little of the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_callers_never_block_a_reading_caller_or_info() {
    let pki = Pki::new();
    let r = large_remote(&pki, "a", 1_500).await;
    let mut cfg = config(vec![tls_remote(&pki, "a", &r)]);
    cfg.info.interval = Duration::from_secs(3600);
    let running = start_fanout(cfg).await;

    // Each on a connection of its own: this client's own HTTP/2 connection
    // window would otherwise be what stalls (a grpc-go querier's would not).
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut client = client(&running).await;
        let stream = client.series(big()).await.expect("opened");
        stalled.push(stream.into_inner());
    }
    until_quiet(&r).await;

    let endpoint = running.upstreams.endpoints()[0].clone();
    endpoint.refresh_info(Duration::from_secs(2)).await;
    assert_eq!(
        endpoint.state().last_error,
        None,
        "Info was starved by stalled streams"
    );

    // A caller on a connection of its own, reading as fast as it can.
    let mut reader = client(&running).await;
    let answer = tokio::time::timeout(Duration::from_secs(20), call_series(&mut reader, big()))
        .await
        .expect("a reading caller is never held up by stalled ones")
        .expect("series");
    assert_eq!(answer.series.len(), 1_500);
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);

    // The stalled calls lost nothing either.
    let first = stalled.remove(0);
    let answer = tokio::time::timeout(Duration::from_secs(20), read_all(first, 0, Duration::ZERO))
        .await
        .expect("a stalled caller completes once it reads")
        .expect("series");
    assert_eq!(answer.series.len(), 1_500);
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
}

/// Many merged calls at once over two remotes, with few streams allowed per
/// connection, each caller reading at its own speed (some stalling for
/// seconds): every call gets the whole merged answer, and Info never fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_merges_at_different_read_speeds_all_complete() {
    const SERIES: usize = 300;
    let pki = Pki::new();
    let a = large_remote(&pki, "a", SERIES).await;
    let b = large_remote(&pki, "b", SERIES).await;
    let mut cfg = config(vec![tls_remote(&pki, "a", &a), tls_remote(&pki, "b", &b)]);
    cfg.fanout.streams_per_connection = 3;
    // An Info call starved by exhausted windows never completes; a long
    // timeout keeps a busy machine's slow answers from counting as that.
    cfg.info.timeout = Duration::from_secs(10);
    // Without read-ahead each remote stream lasts as long as its caller
    // reads, so the ten are open at once and the stalled ones hold what
    // their windows took in.
    cfg.fanout.prefetch_bytes = 0;
    let running = start_fanout(cfg).await;

    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..10usize {
        let mut client = client(&running).await;
        callers.spawn(async move {
            let stream = client.series(big()).await?.into_inner();
            // Callers 0-2 stall for seconds every 200 frames; the others
            // read at different small paces.
            let (every, pause) = match caller {
                0..=2 => (200, Duration::from_millis(1_500)),
                _ => (50, Duration::from_millis(caller as u64 * 5)),
            };
            read_all(stream, every, pause).await.map(|a| (caller, a))
        });
    }
    let mut peak_connections = 0;
    let all = async {
        let mut done = Vec::new();
        loop {
            tokio::select! {
                joined = callers.join_next() => match joined {
                    Some(joined) => done.push(joined.expect("caller task")),
                    None => break done,
                },
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    let open = running.upstreams.endpoints()[0].connections();
                    peak_connections = peak_connections.max(open);
                }
            }
        }
    };
    let done = tokio::time::timeout(Duration::from_secs(90), all)
        .await
        .expect("every concurrent call completes");
    for result in done {
        let (caller, answer) = result.expect("series");
        assert_eq!(
            answer.series.len(),
            2 * SERIES,
            "caller {caller}: {:?}",
            answer.warnings
        );
        assert!(
            answer.warnings.is_empty(),
            "caller {caller}: {:?}",
            answer.warnings
        );
        assert_strictly_sorted(&answer.series);
    }
    assert!(
        peak_connections >= 10usize.div_ceil(3),
        "ten streams, three per connection, used {peak_connections} connections"
    );
    assert_eq!(info_failures(&running), 0, "an Info call was starved");
}

/// A plaintext remote for cluster `a` with twelve `up` series, answering
/// Series as `script` says, behind the aggregator with a [`TIMEOUT`].
async fn twelve_series_behind_fanout(script: SeriesScript) -> (RemoteHandle, Running) {
    let data = dataset(
        &[("cluster", "a")],
        (0..12)
            .map(|i| {
                series(
                    &[("__name__", "up"), ("i", &format!("{i:02}"))],
                    samples(0, MINUTE, |_| 1.0),
                )
            })
            .collect(),
    );
    let r = start_remote(data, Capabilities::default(), None).await;
    r.script.set(script);
    let mut cfg = config(vec![remote("a", r.addr, None)]);
    cfg.remotes[0].timeout = TIMEOUT;
    let running = start_fanout(cfg).await;
    (r, running)
}

/// [`twelve_series_behind_fanout`], and the answer of a Series call for them
/// and the time it took.
async fn twelve_series_with_timeout(script: SeriesScript) -> (Answer, Duration) {
    let (_r, running) = twelve_series_behind_fanout(script).await;
    let mut client = client(&running).await;
    let started = Instant::now();
    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("series");
    (answer, started.elapsed())
}

/// A remote whose answer takes three times its timeout to stream, but never
/// pauses for longer than the timeout, delivers everything.
#[tokio::test]
async fn steady_remote_streams_for_longer_than_its_timeout() {
    let (answer, elapsed) =
        twelve_series_with_timeout(SeriesScript::Drip(Duration::from_millis(600))).await;
    assert!(elapsed >= 3 * TIMEOUT);
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    assert_eq!(answer.series.len(), 12);
}

/// A caller that reads slowly, pausing for longer than the remote's timeout
/// three times, gets the whole answer (far larger than every buffer) with no
/// warning: the remote is not blamed for the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_caller_is_not_cut_by_the_remote_timeout() {
    let pki = Pki::new();
    let r = large_remote(&pki, "a", 1_500).await;
    let mut cfg = config(vec![tls_remote(&pki, "a", &r)]);
    cfg.remotes[0].timeout = TIMEOUT;
    let running = start_fanout(cfg).await;
    let mut client = client(&running).await;
    let stream = client.series(big()).await.expect("opened").into_inner();
    let started = Instant::now();
    let answer = read_all(stream, 500, TIMEOUT + Duration::from_millis(200))
        .await
        .expect("series");
    assert!(started.elapsed() >= 3 * TIMEOUT);
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    assert_eq!(answer.series.len(), 1_500);
}

/// A remote that stops sending in the middle of its answer is warned about
/// within its timeout, naming it, and what came before is kept.
#[tokio::test]
async fn remote_silent_mid_stream_is_warned_within_its_timeout() {
    let (_r, running) = twelve_series_behind_fanout(SeriesScript::PartThenHang(5)).await;
    let mut client = client(&running).await;
    let started = Instant::now();
    let mut stream = client
        .series(request(vec![eq("__name__", "up")]))
        .await
        .expect("open")
        .into_inner();
    // Timed from the first series, which comes once the remote answers: the
    // time to connect and start the call (long on a loaded machine) is not
    // part of what the remote is given.
    let mut first_series = None;
    let mut series = 0;
    let mut warnings = Vec::new();
    while let Some(frame) = stream.message().await.expect("frame") {
        match frame.result {
            Some(series_response::Result::Series(_)) => {
                series += 1;
                first_series.get_or_insert_with(Instant::now);
            }
            Some(series_response::Result::Warning(w)) => warnings.push(w),
            other => panic!("{other:?}"),
        }
    }
    let first_series = first_series.expect("series before the silence");
    assert!(
        started.elapsed() >= TIMEOUT,
        "warned after {:?}",
        started.elapsed()
    );
    // A whole timeout's margin for a loaded machine; a timer that only fires
    // after a second period of silence still fails.
    let silent_for = first_series.elapsed();
    assert!(
        silent_for < 2 * TIMEOUT,
        "warned {silent_for:?} after the first series"
    );
    assert_eq!(series, 5);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = &warnings[0];
    assert!(
        warning.contains("remote a") && warning.contains("sent nothing for 2.0s"),
        "{warning}"
    );
}

fn raw(min: i64, data: &[u8]) -> AggrChunk {
    AggrChunk {
        min_time: min,
        max_time: min + MINUTE - 1,
        raw: Some(Chunk {
            r#type: 0,
            data: bytes::Bytes::copy_from_slice(data),
            hash: 0,
        }),
        ..Default::default()
    }
}

fn frame(labels: &[(&str, &str)], chunks: Vec<AggrChunk>) -> SeriesResponse {
    SeriesResponse {
        result: Some(series_response::Result::Series(Series {
            labels: thanos_fanout::labelset::from_pairs(labels.iter().copied()),
            chunks,
        })),
    }
}

/// With one remote selected, consecutive equal series (a store gateway that
/// strips replica labels over both replicas' blocks sends them) come out as
/// one series with the duplicate chunk dropped, as the merge does.
#[tokio::test]
async fn single_remote_equal_series_are_merged() {
    let r = up_remote("a", None).await;
    let up = [("__name__", "up"), ("cluster", "a")];
    r.script.set(SeriesScript::Frames(vec![
        frame(&up, vec![raw(MINUTE, b"second"), raw(0, b"first")]),
        frame(&up, vec![raw(MINUTE, b"second"), raw(2 * MINUTE, b"third")]),
        frame(&[("__name__", "up"), ("cluster", "b")], vec![raw(0, b"x")]),
    ]));
    let running = start_fanout(config(vec![remote("a", r.addr, None)])).await;
    let mut client = client(&running).await;
    let mut req = request(vec![eq("__name__", "up")]);
    req.without_replica_labels = vec!["replica".into()];
    let answer = call_series(&mut client, req).await.expect("series");
    assert_eq!(answer.label_values("cluster"), ["a", "b"]);
    let data: Vec<&[u8]> = answer.series[0]
        .chunks
        .iter()
        .map(|c| c.raw.as_ref().expect("raw").data.as_ref())
        .collect();
    assert_eq!(data, [&b"first"[..], b"second", b"third"]);
}

/// A cluster that answered Info and then went down stays in our Info for as
/// long as it is configured, so a querier still sends us its queries, and
/// they get a warning (or `Aborted`) that names it instead of nothing.
#[tokio::test]
async fn a_cluster_that_goes_down_stays_visible() {
    let a = up_remote("a", None).await;
    let mut b = up_remote("b", None).await;
    let running = start_fanout(config(vec![
        remote("a", a.addr, None),
        remote("b", b.addr, None),
    ]))
    .await;
    b.stop().await;
    // Several Info rounds fail.
    eventually("b fails Info three times", Duration::from_secs(10), || {
        running.upstreams.endpoints()[1].metrics.info_failures.get() >= 3
    })
    .await;
    let mut info = InfoClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect");
    let resp = info.info(InfoRequest {}).await.expect("info").into_inner();
    let clusters: Vec<String> = resp
        .label_sets
        .iter()
        .map(|s| value(&s.labels, "cluster").to_owned())
        .collect();
    assert_eq!(clusters, ["a", "b"], "b is still advertised");

    let mut client = client(&running).await;
    let only_b = || request(vec![eq("__name__", "up"), eq("cluster", "b")]);
    let answer = call_series(&mut client, only_b()).await.expect("WARN");
    assert!(answer.series.is_empty());
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    assert!(
        answer.warnings[0].contains("remote b") && answer.warnings[0].contains("not queried"),
        "{}",
        answer.warnings[0]
    );
    let mut abort = only_b();
    abort.partial_response_strategy = PartialResponseStrategy::Abort as i32;
    let err = call_series(&mut client, abort).await.expect_err("ABORT");
    assert_eq!(err.code(), Code::Aborted);
    assert!(err.message().contains("remote b"), "{}", err.message());
}

/// While the merge takes cluster a's series (all of them sort first), b keeps
/// downloading into its share of the call's read-ahead budget instead of
/// stalling once its HTTP/2 window is full. With no budget it stalls. Either
/// way the answer is whole and sorted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remotes_the_merge_is_not_reading_yet_keep_downloading() {
    // 600 series of 16 KiB: 9.4 MiB, far more than a 2 MiB stream window,
    // well within half of the default budget.
    const SERIES: usize = 600;
    const STREAM_WINDOW: u32 = 2 << 20;
    for budget in [
        thanos_fanout::config::Config::default()
            .fanout
            .prefetch_bytes,
        0,
    ] {
        let pki = Pki::new();
        let a = large_remote(&pki, "a", SERIES).await;
        let b = large_remote(&pki, "b", SERIES).await;
        let mut remotes = vec![tls_remote(&pki, "a", &a), tls_remote(&pki, "b", &b)];
        for remote in &mut remotes {
            remote.http2.stream_window = STREAM_WINDOW;
        }
        let mut cfg = config(remotes);
        cfg.fanout.prefetch_bytes = budget;
        let running = start_fanout(cfg).await;
        let mut client = client(&running).await;
        let mut stream = client.series(big()).await.expect("series").into_inner();
        // The caller takes one frame (one of a's), then nothing for a while.
        stream
            .message()
            .await
            .expect("a frame")
            .expect("not the end");
        until_quiet(&b).await;
        let sent = b.script.frames_sent.load(Ordering::SeqCst);
        if budget > 0 {
            assert_eq!(sent, SERIES, "b read ahead in full");
        } else {
            assert!(sent < SERIES / 2, "b stalls without read-ahead: {sent}");
        }
        let rest = read_all(stream, 0, Duration::ZERO).await.expect("series");
        assert_eq!(rest.series.len(), 2 * SERIES - 1, "budget {budget}");
        assert_strictly_sorted(&rest.series);
    }
}

/// With the process-wide read-ahead spent by calls whose callers stall, other
/// calls still complete: each stream can always hand the merge its next
/// series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_process_wide_budget_slows_calls_but_never_blocks_them() {
    const SERIES: usize = 300;
    let pki = Pki::new();
    let a = large_remote(&pki, "a", SERIES).await;
    let b = large_remote(&pki, "b", SERIES).await;
    let mut cfg = config(vec![tls_remote(&pki, "a", &a), tls_remote(&pki, "b", &b)]);
    cfg.fanout.prefetch_bytes_total = 1 << 20;
    let running = start_fanout(cfg).await;
    // Stalled calls that hold what they read ahead.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut client = client(&running).await;
        let mut stream = client.series(big()).await.expect("series").into_inner();
        stream.message().await.expect("a frame");
        stalled.push(stream);
    }
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let mut client = client(&running).await;
        callers.spawn(async move {
            let stream = client.series(big()).await?.into_inner();
            read_all(stream, 0, Duration::ZERO).await
        });
    }
    let done = tokio::time::timeout(Duration::from_secs(60), callers.join_all())
        .await
        .expect("the reading calls complete");
    for answer in done {
        let answer = answer.expect("series");
        assert_eq!(answer.series.len(), 2 * SERIES, "{:?}", answer.warnings);
        assert_strictly_sorted(&answer.series);
    }
    // The stalled ones complete too once read.
    for stream in stalled {
        let rest = read_all(stream, 0, Duration::ZERO).await.expect("series");
        assert_eq!(rest.series.len(), 2 * SERIES - 1);
    }
}
