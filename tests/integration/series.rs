//! Series: merge, pruning, replica labels, limit, batches, partial response,
//! cancellation.

use std::time::Duration;

use thanos_fanout::demo::chunkenc::decode_xor;
use thanos_fanout::demo::synthetic::Capabilities;
use thanos_fanout::labelset::{compare, from_pairs};
use thanos_fanout::proto::thanos::{
    PartialResponseStrategy, Series, SeriesBatch, SeriesResponse, label_matcher, series_response,
};
use tonic::Code;

use crate::common::*;

fn samples_of(series: &Series) -> Vec<(i64, f64)> {
    series
        .chunks
        .iter()
        .flat_map(|c| decode_xor(&c.raw.as_ref().expect("raw chunk").data).expect("valid XOR"))
        .collect()
}

fn assert_sorted(series: &[Series]) {
    for w in series.windows(2) {
        assert_eq!(
            compare(&w[0].labels, &w[1].labels),
            std::cmp::Ordering::Less,
            "output not strictly sorted: {:?} then {:?}",
            w[0].labels,
            w[1].labels
        );
    }
}

/// Three clusters over mTLS, each with `up` for two instances and a
/// cluster-specific metric; values encode the cluster so data can be traced.
async fn three_clusters(pki: &Pki) -> Vec<RemoteHandle> {
    let mut remotes = Vec::new();
    for (i, cluster) in ["a", "b", "c"].into_iter().enumerate() {
        let data = dataset(
            &[("cluster", cluster)],
            vec![
                series(
                    &[("__name__", "up"), ("instance", "x")],
                    samples(0, 60 * MINUTE, |_| i as f64),
                ),
                series(
                    &[("__name__", "up"), ("instance", "y")],
                    samples(0, 60 * MINUTE, |t| (t / 1000) as f64 + i as f64),
                ),
                series(
                    &[("__name__", &format!("only_{cluster}"))],
                    samples(0, 10 * MINUTE, |_| 7.0),
                ),
            ],
        );
        let tls = pki.server(&[&format!("{cluster}.remote.test")]);
        remotes.push(start_remote(data, Capabilities::default(), Some(tls)).await);
    }
    remotes
}

fn tls_config(pki: &Pki, remotes: &[RemoteHandle]) -> Vec<thanos_fanout::config::RemoteConfig> {
    ["a", "b", "c"]
        .iter()
        .zip(remotes)
        .map(|(c, r)| remote(c, r.addr, Some(pki.client_tls(&format!("{c}.remote.test")))))
        .collect()
}

#[tokio::test]
async fn merges_three_remotes_sorted_with_external_labels() {
    let pki = Pki::new();
    let remotes = three_clusters(&pki).await;
    let running = start_fanout(config(tls_config(&pki, &remotes))).await;
    let mut client = client(&running).await;

    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("series");
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    assert_eq!(answer.series.len(), 6);
    assert_sorted(&answer.series);
    assert_eq!(
        answer.label_values("cluster"),
        ["a", "a", "b", "b", "c", "c"]
    );
    // The data is each cluster's own, decoded from the XOR chunks we relayed.
    for s in &answer.series {
        let cluster = value(&s.labels, "cluster");
        let i = ["a", "b", "c"]
            .iter()
            .position(|c| *c == cluster)
            .expect("known cluster") as f64;
        let decoded = samples_of(s);
        assert_eq!(decoded.len(), 241, "every sample of the hour arrives");
        let expected: Vec<(i64, f64)> = if value(&s.labels, "instance") == "x" {
            samples(0, 60 * MINUTE, |_| i)
        } else {
            samples(0, 60 * MINUTE, |t| (t / 1000) as f64 + i)
        };
        assert_eq!(decoded, expected);
    }
}

#[tokio::test]
async fn external_label_matchers_reach_only_matching_remotes() {
    let pki = Pki::new();
    let remotes = three_clusters(&pki).await;
    let running = start_fanout(config(tls_config(&pki, &remotes))).await;
    let mut client = client(&running).await;

    let answer = call_series(
        &mut client,
        request(vec![eq("__name__", "up"), eq("cluster", "b")]),
    )
    .await
    .expect("series");
    assert_eq!(answer.label_values("cluster"), ["b", "b"]);
    let calls: Vec<usize> = remotes.iter().map(|r| r.script.series_calls()).collect();
    assert_eq!(calls, [0, 1, 0]);

    let re = matcher(label_matcher::Type::Re, "cluster", "a|c");
    let answer = call_series(&mut client, request(vec![eq("__name__", "up"), re]))
        .await
        .expect("series");
    assert_eq!(answer.label_values("cluster"), ["a", "a", "c", "c"]);
    let calls: Vec<usize> = remotes.iter().map(|r| r.script.series_calls()).collect();
    assert_eq!(calls, [1, 1, 1]);

    // `cluster=""` excludes every remote that has a cluster label.
    let answer = call_series(
        &mut client,
        request(vec![eq("__name__", "up"), eq("cluster", "")]),
    )
    .await
    .expect("series");
    assert!(answer.series.is_empty());
    assert_eq!(
        remotes
            .iter()
            .map(|r| r.script.series_calls())
            .sum::<usize>(),
        3
    );
}

#[tokio::test]
async fn time_range_prunes_remotes() {
    let old = start_remote(
        dataset(
            &[("cluster", "old")],
            vec![series(
                &[("__name__", "m")],
                samples(0, 60 * MINUTE, |_| 1.0),
            )],
        ),
        Capabilities::default(),
        None,
    )
    .await;
    let new = start_remote(
        dataset(
            &[("cluster", "new")],
            vec![series(
                &[("__name__", "m")],
                samples(120 * MINUTE, 180 * MINUTE, |_| 2.0),
            )],
        ),
        Capabilities::default(),
        None,
    )
    .await;
    let running = start_fanout(config(vec![
        remote("old", old.addr, None),
        remote("new", new.addr, None),
    ]))
    .await;
    let mut client = client(&running).await;

    let mut req = request(vec![eq("__name__", "m")]);
    req.min_time = 130 * MINUTE;
    req.max_time = 140 * MINUTE;
    let answer = call_series(&mut client, req).await.expect("series");
    assert_eq!(answer.label_values("cluster"), ["new"]);
    assert_eq!(
        (old.script.series_calls(), new.script.series_calls()),
        (0, 1)
    );

    // Bounds are inclusive: a request ending exactly at the old data's last sample reaches it.
    let mut req = request(vec![eq("__name__", "m")]);
    req.min_time = 60 * MINUTE;
    req.max_time = 60 * MINUTE;
    call_series(&mut client, req).await.expect("series");
    assert_eq!(
        (old.script.series_calls(), new.script.series_calls()),
        (1, 1)
    );
}

#[tokio::test]
async fn identical_series_from_two_remotes_are_merged_without_duplicate_chunks() {
    // Two remotes with the same external labels and overlapping data: the
    // first 240 samples are identical (two equal chunks), each also has its own.
    let first = samples(0, 3599 * 1000, |t| t as f64);
    let mut a = first.clone();
    a.extend(samples(3600 * 1000, 3600 * 1000 + 14 * 15_000, |_| 1.0));
    let mut b = first;
    b.extend(samples(7200 * 1000, 7200 * 1000 + 14 * 15_000, |_| 2.0));
    let ra = start_remote(
        dataset(&[("cluster", "x")], vec![series(&[("__name__", "m")], a)]),
        Capabilities::default(),
        None,
    )
    .await;
    let rb = start_remote(
        dataset(&[("cluster", "x")], vec![series(&[("__name__", "m")], b)]),
        Capabilities::default(),
        None,
    )
    .await;
    let running = start_fanout(config(vec![
        remote("a", ra.addr, None),
        remote("b", rb.addr, None),
    ]))
    .await;
    let mut client = client(&running).await;

    let answer = call_series(&mut client, request(vec![eq("__name__", "m")]))
        .await
        .expect("series");
    assert_eq!(answer.series.len(), 1, "one merged series");
    let chunks = &answer.series[0].chunks;
    // 240 shared samples = 2 chunks, kept once; plus one own chunk from each.
    assert_eq!(chunks.len(), 4);
    let mins: Vec<i64> = chunks.iter().map(|c| c.min_time).collect();
    let mut sorted = mins.clone();
    sorted.sort();
    assert_eq!(mins, sorted, "chunks sorted by time");
    assert_eq!(mins[2], 3600 * 1000);
    assert_eq!(mins[3], 7200 * 1000);
}

#[tokio::test]
async fn without_replica_labels_strips_and_keeps_order() {
    // The replica label sits inside the TSDB and decides the order before it
    // is removed: {r="0", z="b"} < {r="1", z="a"}, but {z="a"} < {z="b"} after.
    let data = |replica: &str| {
        dataset(
            &[("cluster", "x"), ("replica", replica)],
            vec![
                series(
                    &[("__name__", "m"), ("r", "0"), ("z", "b")],
                    samples(0, 10 * MINUTE, |_| 1.0),
                ),
                series(
                    &[("__name__", "m"), ("r", "1"), ("z", "a")],
                    samples(0, 10 * MINUTE, |_| 2.0),
                ),
            ],
        )
    };
    // One remote honours without_replica_labels, the other does not.
    let capable = start_remote(data("0"), Capabilities::default(), None).await;
    let plain = start_remote(
        data("1"),
        Capabilities {
            without_replica_labels: false,
            ..Capabilities::default()
        },
        None,
    )
    .await;
    let running = start_fanout(config(vec![
        remote("r0", capable.addr, None),
        remote("r1", plain.addr, None),
    ]))
    .await;
    let mut client = client(&running).await;

    let mut req = request(vec![eq("__name__", "m")]);
    req.without_replica_labels = vec!["replica".into(), "r".into()];
    let answer = call_series(&mut client, req).await.expect("series");
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    let got: Vec<Vec<_>> = answer.series.iter().map(|s| s.labels.clone()).collect();
    assert_eq!(
        got,
        vec![
            from_pairs([("__name__", "m"), ("cluster", "x"), ("z", "a")]),
            from_pairs([("__name__", "m"), ("cluster", "x"), ("z", "b")]),
        ],
        "replicas merged, replica labels gone, sorted after removal"
    );
    // Both replicas' identical chunks collapse to one.
    assert_eq!(answer.series[0].chunks.len(), 1);
    // The capable remote was asked to strip; the other got the field too but ignored it.
    let forwarded = capable.script.requests.lock().expect("lock")[0]
        .without_replica_labels
        .clone();
    assert_eq!(forwarded, ["replica", "r"]);
}

#[tokio::test]
async fn limit_stops_after_n_series() {
    let pki = Pki::new();
    let remotes = three_clusters(&pki).await;
    let running = start_fanout(config(tls_config(&pki, &remotes))).await;
    let mut client = client(&running).await;

    let all = call_series(
        &mut client,
        request(vec![matcher(label_matcher::Type::Re, "__name__", ".+")]),
    )
    .await
    .expect("series");
    assert_eq!(all.series.len(), 9);
    let mut req = request(vec![matcher(label_matcher::Type::Re, "__name__", ".+")]);
    req.limit = 4;
    let limited = call_series(&mut client, req).await.expect("series");
    assert_eq!(
        limited.series,
        all.series[..4].to_vec(),
        "the first four in merged order"
    );
    assert_eq!(
        remotes[0].script.requests.lock().expect("lock")[1].limit,
        4,
        "limit forwarded"
    );
}

#[tokio::test]
async fn batches_in_and_out() {
    let pki = Pki::new();
    let remotes = three_clusters(&pki).await;
    let running = start_fanout(config(tls_config(&pki, &remotes))).await;
    let mut client = client(&running).await;

    let mut req = request(vec![matcher(label_matcher::Type::Re, "__name__", ".+")]);
    req.response_batch_size = 4;
    let answer = call_series(&mut client, req).await.expect("series");
    assert_eq!(answer.single_frames, 0);
    assert_eq!(answer.batches, [4, 4, 1]);
    assert_sorted(&answer.series);

    // A remote that sends batch frames to a caller that asked for single
    // series: the batch is unpacked.
    let batch = |names: &[&str]| SeriesResponse {
        result: Some(series_response::Result::Batch(SeriesBatch {
            series: names
                .iter()
                .map(|n| {
                    let one = dataset(
                        &[("cluster", "a")],
                        vec![series(&[("__name__", n)], samples(0, MINUTE, |_| 1.0))],
                    );
                    one.series[0].clone()
                })
                .collect(),
        })),
    };
    remotes[0].script.set(SeriesScript::Frames(vec![
        batch(&["b1", "b2"]),
        batch(&["b3"]),
    ]));
    let answer = call_series(&mut client, request(vec![eq("cluster", "a")]))
        .await
        .expect("series");
    assert_eq!(answer.batches, Vec::<usize>::new());
    assert_eq!(answer.single_frames, 3);
    assert_eq!(answer.label_values("__name__"), ["b1", "b2", "b3"]);
}

/// a answers, b is down (its server stopped after a healthy Info), c hangs
/// past its 1 s timeout.
async fn one_down_one_hanging() -> (Vec<RemoteHandle>, thanos_fanout::app::Running) {
    let mut remotes = Vec::new();
    for cluster in ["a", "b", "c"] {
        remotes.push(up_remote(cluster, None).await);
    }
    let mut cfg = config(
        ["a", "b", "c"]
            .iter()
            .zip(&remotes)
            .map(|(c, r)| remote(c, r.addr, None))
            .collect(),
    );
    cfg.remotes[2].timeout = Duration::from_secs(1);
    // Keep the cached Info from before b went down, as between two polls.
    cfg.info.interval = Duration::from_secs(3600);
    let running = start_fanout(cfg).await;
    remotes[1].stop().await;
    remotes[2].script.set(SeriesScript::Hang);
    (remotes, running)
}

#[tokio::test]
async fn partial_response_warn_keeps_the_rest() {
    let (remotes, running) = one_down_one_hanging().await;
    let mut client = client(&running).await;
    let started = std::time::Instant::now();
    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("WARN succeeds");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the per-remote timeout"
    );
    assert_eq!(answer.label_values("cluster"), ["a"]);
    assert_eq!(answer.warnings.len(), 2, "{:?}", answer.warnings);
    let down = answer
        .warnings
        .iter()
        .find(|w| w.contains("remote b"))
        .expect("warning names b");
    assert!(down.contains(&remotes[1].addr.to_string()), "{down}");
    // The cause once, not again for each error wrapping it.
    assert_eq!(down.matches("Connection refused").count(), 1, "{down}");
    let slow = answer
        .warnings
        .iter()
        .find(|w| w.contains("remote c"))
        .expect("warning names c");
    assert!(slow.contains("sent nothing for 1.0s"), "{slow}");
}

#[tokio::test]
async fn partial_response_abort_fails_and_cancels_the_others() {
    let (remotes, running) = one_down_one_hanging().await;
    let mut client = client(&running).await;
    let mut req = request(vec![eq("__name__", "up")]);
    req.partial_response_strategy = PartialResponseStrategy::Abort as i32;
    let started = std::time::Instant::now();
    let err = call_series(&mut client, req)
        .await
        .expect_err("ABORT fails");
    assert_eq!(err.code(), Code::Aborted);
    assert!(err.message().contains("remote b"), "{}", err.message());
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "fails before the hanging remote times out"
    );
    // The hanging remote's call is cancelled rather than left to run.
    eventually("c's call cancelled", Duration::from_secs(3), || {
        remotes[2]
            .script
            .cancelled
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1
    })
    .await;

    // The deprecated partial_response_disabled means ABORT too.
    let mut req = request(vec![eq("__name__", "up")]);
    req.partial_response_disabled = true;
    assert_eq!(
        call_series(&mut client, req)
            .await
            .expect_err("aborts")
            .code(),
        Code::Aborted
    );
}

/// A remote call an ABORT cuts short is counted, as cancelled: not as a
/// failure of its remote, and not left out of the calls.
#[tokio::test]
async fn a_remote_call_an_abort_stops_is_counted_as_cancelled() {
    let mut remotes = Vec::new();
    for cluster in ["a", "b"] {
        remotes.push(up_remote(cluster, None).await);
    }
    // a sends its whole answer and keeps the stream open; b says nothing
    // and fails once its timeout passes, by when a is mid-stream.
    remotes[0].script.set(SeriesScript::NormalThenHang);
    remotes[1].script.set(SeriesScript::Hang);
    let mut cfg = config(vec![
        remote("a", remotes[0].addr, None),
        remote("b", remotes[1].addr, None),
    ]);
    cfg.remotes[0].timeout = Duration::from_secs(60);
    cfg.remotes[1].timeout = Duration::from_secs(1);
    let running = start_fanout(cfg).await;
    let mut client = client(&running).await;
    let mut req = request(vec![eq("__name__", "up")]);
    req.partial_response_strategy = PartialResponseStrategy::Abort as i32;
    let err = call_series(&mut client, req)
        .await
        .expect_err("ABORT fails");
    assert_eq!(err.code(), Code::Aborted);
    assert!(err.message().contains("remote b"), "{}", err.message());
    assert!(
        remotes[0]
            .script
            .frames_sent
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0,
        "a was mid-stream"
    );
    let calls = |remote: &str, outcome: &str| {
        metric_in(
            &running,
            &format!(
                r#"thanos_fanout_remote_calls_total{{remote="{remote}",method="Series",outcome="{outcome}"}}"#
            ),
        )
    };
    eventually("a's call ended", Duration::from_secs(3), || {
        metric_in(
            &running,
            r#"thanos_fanout_remote_calls_in_flight{remote="a",method="Series"}"#,
        ) == Some(0.0)
    })
    .await;
    assert_eq!(calls("a", "Cancelled"), Some(1.0), "a's aborted call");
    for outcome in ["Success", "Error", "Timeout"] {
        assert_eq!(calls("a", outcome), Some(0.0), "a's {outcome}");
    }
    assert_eq!(calls("b", "Timeout"), Some(1.0), "b's failure");
}

#[tokio::test]
async fn querier_cancellation_reaches_the_remotes() {
    let mut remotes = Vec::new();
    for cluster in ["a", "b"] {
        remotes.push(up_remote(cluster, None).await);
    }
    remotes[0].script.set(SeriesScript::NormalThenHang);
    remotes[1].script.set(SeriesScript::Hang);
    let running = start_fanout(config(vec![
        remote("a", remotes[0].addr, None),
        remote("b", remotes[1].addr, None),
    ]))
    .await;
    let mut client = client(&running).await;

    let mut stream = client
        .series(request(vec![eq("__name__", "up")]))
        .await
        .expect("open")
        .into_inner();
    eventually("both remotes called", Duration::from_secs(3), || {
        remotes.iter().all(|r| r.script.series_calls() == 1)
    })
    .await;
    // Nothing can be emitted while b has not answered; give up like a querier would.
    let waited = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(waited.is_err(), "no frame while a remote's head is missing");
    drop(stream);
    eventually(
        "both remote calls cancelled",
        Duration::from_secs(3),
        || {
            remotes
                .iter()
                .all(|r| r.script.cancelled.load(std::sync::atomic::Ordering::SeqCst) == 1)
        },
    )
    .await;
}

#[tokio::test]
async fn bad_regex_is_invalid_argument() {
    let running = start_fanout(config(vec![])).await;
    let mut client = client(&running).await;
    let err = call_series(
        &mut client,
        request(vec![matcher(label_matcher::Type::Re, "job", "(unclosed")]),
    )
    .await
    .expect_err("bad regex");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains(r#"job=~"(unclosed""#),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn tenant_and_deadline_are_forwarded() {
    let r = up_remote("a", None).await;
    r.script.set(SeriesScript::Hang);
    let running = start_fanout(config(vec![remote("a", r.addr, None)])).await;
    let mut client = client(&running).await;
    let mut req = tonic::Request::new(request(vec![eq("__name__", "up")]));
    req.metadata_mut()
        .insert("thanos-tenant", "team-x".parse().expect("ascii"));
    // The caller's deadline (500 ms) is shorter than the remote's timeout (10 s).
    req.set_timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let result = match client.series(req).await {
        Ok(resp) => {
            let mut stream = resp.into_inner();
            let mut warnings = Vec::new();
            loop {
                match stream.message().await {
                    Ok(Some(f)) => {
                        if let Some(series_response::Result::Warning(w)) = f.result {
                            warnings.push(w);
                        }
                    }
                    Ok(None) => break Ok(warnings),
                    Err(e) => break Err(e),
                }
            }
        }
        Err(e) => Err(e),
    };
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the caller's deadline bounds the remote call"
    );
    // Either the caller saw its own deadline pass or our warning; never a 10 s wait.
    if let Ok(warnings) = result {
        assert!(
            warnings.iter().any(|w| w.contains("remote a")),
            "{warnings:?}"
        );
    }
    assert_eq!(*r.script.tenants.lock().expect("lock"), ["team-x"]);
}

#[tokio::test]
async fn unsorted_remote_output_becomes_a_warning_and_output_stays_sorted() {
    let good = start_remote(
        dataset(
            &[("cluster", "a")],
            vec![series(
                &[("__name__", "m"), ("i", "5")],
                samples(0, MINUTE, |_| 1.0),
            )],
        ),
        Capabilities::default(),
        None,
    )
    .await;
    let bad = start_remote(
        dataset(&[("cluster", "b")], vec![]),
        Capabilities::default(),
        None,
    )
    .await;
    let frame = |i: &str| {
        let d = dataset(
            &[("cluster", "b")],
            vec![series(
                &[("__name__", "m"), ("i", i)],
                samples(0, MINUTE, |_| 2.0),
            )],
        );
        SeriesResponse {
            result: Some(series_response::Result::Series(d.series[0].clone())),
        }
    };
    bad.script.set(SeriesScript::Frames(vec![
        frame("1"),
        frame("9"),
        frame("3"),
    ]));
    let mut cfg = config(vec![
        remote("a", good.addr, None),
        remote("b", bad.addr, None),
    ]);
    // b has no data of its own, so advertise nothing to prune by; use a long poll.
    cfg.info.interval = Duration::from_secs(3600);
    let running = start_fanout(cfg).await;
    let mut client = client(&running).await;
    let mut req = request(vec![eq("__name__", "m")]);
    req.min_time = 0;
    req.max_time = MINUTE;
    let answer = call_series(&mut client, req).await.expect("series");
    assert_sorted(&answer.series);
    // b's series up to the violation arrive; the out-of-order one and the rest do not.
    assert_eq!(answer.label_values("cluster"), ["a", "b", "b"]);
    assert_eq!(answer.label_values("i"), ["5", "1", "9"]);
    assert_eq!(answer.warnings.len(), 1);
    assert!(
        answer.warnings[0].contains("remote b") && answer.warnings[0].contains("out of order"),
        "{}",
        answer.warnings[0]
    );
}

#[tokio::test]
async fn frames_larger_than_four_mebibytes_pass() {
    let r = start_remote(
        dataset(&[("cluster", "a")], vec![]),
        Capabilities::default(),
        None,
    )
    .await;
    let mut big = dataset(
        &[("cluster", "a")],
        vec![series(&[("__name__", "big")], samples(0, MINUTE, |_| 1.0))],
    )
    .series[0]
        .clone();
    // Opaque to us: only its size matters here.
    big.chunks[0].raw.as_mut().expect("raw").data = vec![7u8; 6 << 20].into();
    big.chunks[0].raw.as_mut().expect("raw").hash = 0;
    r.script.set(SeriesScript::Frames(vec![SeriesResponse {
        result: Some(series_response::Result::Series(big)),
    }]));
    let running = start_fanout(config(vec![remote("a", r.addr, None)])).await;
    let mut client = client(&running).await;
    let mut req = request(vec![eq("__name__", "big")]);
    req.min_time = 0;
    req.max_time = 0;
    let answer = call_series(&mut client, req).await.expect("series");
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    assert_eq!(
        answer.series[0].chunks[0]
            .raw
            .as_ref()
            .expect("raw")
            .data
            .len(),
        6 << 20
    );
}

#[tokio::test]
async fn skip_chunks_returns_labels_only_merged() {
    let data = || {
        dataset(
            &[("cluster", "x")],
            vec![series(
                &[("__name__", "m"), ("i", "1")],
                samples(0, MINUTE, |_| 1.0),
            )],
        )
    };
    let a = start_remote(data(), Capabilities::default(), None).await;
    let b = start_remote(data(), Capabilities::default(), None).await;
    let running = start_fanout(config(vec![
        remote("a", a.addr, None),
        remote("b", b.addr, None),
    ]))
    .await;
    let mut client = client(&running).await;
    let mut req = request(vec![eq("__name__", "m")]);
    req.skip_chunks = true;
    let answer = call_series(&mut client, req).await.expect("series");
    assert_eq!(answer.series.len(), 1, "identical label sets merged");
    assert!(answer.series[0].chunks.is_empty());
    assert!(
        a.script.requests.lock().expect("lock")[0].skip_chunks,
        "forwarded"
    );
}

#[tokio::test]
async fn shards_are_applied_locally_for_remotes_that_cannot() {
    let many: Vec<_> = (0..40)
        .map(|i| {
            series(
                &[("__name__", "m"), ("i", &format!("{i:02}"))],
                samples(0, MINUTE, |_| 1.0),
            )
        })
        .collect();
    let r = start_remote(
        dataset(&[("cluster", "x")], many),
        Capabilities {
            sharding: false,
            ..Capabilities::default()
        },
        None,
    )
    .await;
    let running = start_fanout(config(vec![remote("x", r.addr, None)])).await;
    let mut client = client(&running).await;
    let mut shards = Vec::new();
    for index in 0..2 {
        let mut req = request(vec![eq("__name__", "m")]);
        req.shard_info = Some(thanos_fanout::proto::thanos::ShardInfo {
            shard_index: index,
            total_shards: 2,
            by: false,
            labels: vec![],
        });
        shards.push(
            call_series(&mut client, req)
                .await
                .expect("series")
                .label_values("i"),
        );
    }
    assert!(!shards[0].is_empty() && !shards[1].is_empty(), "{shards:?}");
    assert!(shards[0].iter().all(|i| !shards[1].contains(i)), "disjoint");
    assert_eq!(shards[0].len() + shards[1].len(), 40, "together complete");
}

#[tokio::test]
async fn unhealthy_matching_remotes_are_reported_not_silently_skipped() {
    let a = up_remote("a", None).await;
    let b = up_remote("b", None).await;
    let running = start_fanout(config(vec![
        remote("a", a.addr, None),
        remote("b", b.addr, None),
    ]))
    .await;
    b.script
        .info_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let endpoint = running.upstreams.endpoints()[1].clone();
    eventually("b unhealthy", Duration::from_secs(5), || {
        endpoint.queryable().is_none()
    })
    .await;
    let mut client = client(&running).await;

    let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
        .await
        .expect("WARN");
    assert_eq!(answer.label_values("cluster"), ["a"]);
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    assert!(
        answer.warnings[0].contains("remote b")
            && answer.warnings[0].contains("not queried")
            && answer.warnings[0].contains("not ready"),
        "{}",
        answer.warnings[0]
    );
    assert_eq!(
        b.script.series_calls(),
        0,
        "an unhealthy endpoint is not called"
    );
    // Its last known labels still prune: a query for cluster a does not mention b.
    let answer = call_series(
        &mut client,
        request(vec![eq("__name__", "up"), eq("cluster", "a")]),
    )
    .await
    .expect("WARN");
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);

    let mut req = request(vec![eq("__name__", "up")]);
    req.partial_response_strategy = PartialResponseStrategy::Abort as i32;
    let err = call_series(&mut client, req).await.expect_err("ABORT");
    assert_eq!(err.code(), Code::Aborted);
    assert!(err.message().contains("remote b"), "{}", err.message());
    let values = client
        .label_values(thanos_fanout::proto::thanos::LabelValuesRequest {
            label: "cluster".into(),
            start: 0,
            end: MINUTE,
            ..Default::default()
        })
        .await
        .expect("values")
        .into_inner();
    assert_eq!(values.values, ["a"]);
    assert_eq!(values.warnings.len(), 1, "{:?}", values.warnings);
}

#[tokio::test]
async fn large_batched_merge_stays_sorted() {
    let mut remotes = Vec::new();
    for (cluster, replica) in [("a", "0"), ("a", "1"), ("b", ""), ("c", "")] {
        let many: Vec<_> = (0..3000)
            .map(|i| {
                series(
                    &[("__name__", "load_series"), ("shard", &format!("{i:05}"))],
                    samples(0, MINUTE, |_| 1.0),
                )
            })
            .collect();
        let ext: Vec<(&str, &str)> = if replica.is_empty() {
            vec![("cluster", cluster)]
        } else {
            vec![("cluster", cluster), ("replica", replica)]
        };
        remotes.push(start_remote(dataset(&ext, many), Capabilities::default(), None).await);
    }
    let running = start_fanout(config(
        remotes
            .iter()
            .enumerate()
            .map(|(i, r)| remote(&format!("r{i}"), r.addr, None))
            .collect(),
    ))
    .await;
    let mut client = client(&running).await;
    for (skip_chunks, batch) in [(true, 64), (false, 64), (true, 0)] {
        let mut req = request(vec![eq("__name__", "load_series")]);
        req.skip_chunks = skip_chunks;
        req.response_batch_size = batch;
        let answer = call_series(&mut client, req).await.expect("series");
        assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
        assert_eq!(answer.series.len(), 12_000);
        assert_sorted(&answer.series);
    }
}
