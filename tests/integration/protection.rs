//! Protection from failing remotes: circuit breaking per endpoint.

use std::time::Duration;

use thanos_fanout::config::CircuitBreakerConfig;
use thanos_fanout::demo::synthetic::Capabilities;
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn a_failing_endpoint_is_skipped_after_n_failures_then_retried_and_closed() {
    let a = up_remote("a", None).await;
    let b = up_remote("b", None).await;
    // Info answers; every Series call fails.
    b.script
        .set(SeriesScript::Fail(Code::Unavailable, "overloaded".into()));
    let mut cfg = config(vec![remote("a", a.addr, None), remote("b", b.addr, None)]);
    cfg.remotes[1].circuit_breaker = CircuitBreakerConfig {
        failures: 3,
        backoff: Duration::from_millis(800),
        max_backoff: Duration::from_secs(10),
    };
    let running = start_fanout(cfg).await;
    let mut client = client(&running).await;
    let up = || request(vec![eq("__name__", "up")]);

    for n in 1..=3 {
        let answer = call_series(&mut client, up()).await.expect("WARN");
        assert_eq!(answer.label_values("cluster"), ["a"]);
        assert!(
            answer.warnings.len() == 1 && answer.warnings[0].contains("overloaded"),
            "call {n}: {:?}",
            answer.warnings
        );
    }
    assert_eq!(b.script.series_calls(), 3);

    // Open: b is not called, and the warning says so and until when.
    let (mut one, mut two) = (client.clone(), client.clone());
    let (first, second) = tokio::join!(call_series(&mut one, up()), call_series(&mut two, up()));
    for answer in [first.expect("WARN"), second.expect("WARN")] {
        assert_eq!(answer.label_values("cluster"), ["a"]);
        assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
        let warning = &answer.warnings[0];
        assert!(
            warning.contains("remote b")
                && warning.contains("circuit breaker open after 3 failed calls")
                && warning.contains("not queried until")
                && warning.contains("overloaded"),
            "{warning}"
        );
    }
    assert_eq!(b.script.series_calls(), 3, "skipped while open");
    let metric = format!(
        r#"thanos_fanout_remote_circuit_breaker_open{{remote="b",endpoint="{}"}} 1"#,
        b.addr
    );
    let (_, body) = crate::info::http_get(running.http_addr, "/metrics").await;
    assert!(body.contains(&metric), "{body}");
    // The status page says so too.
    let (_, page) = crate::info::http_get(running.http_addr, "/").await;
    assert!(
        page.contains("circuit breaker open after 3 failed calls in a row: skipped until"),
        "{page}"
    );
    let (_, json) = crate::info::http_get(running.http_addr, "/status.json").await;
    assert!(json.contains(r#""circuit_open": {"#), "{json}");

    // After the back-off, a failing call opens it again, for longer.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let answer = call_series(&mut client, up()).await.expect("WARN");
    assert!(
        answer.warnings[0].contains("overloaded"),
        "{:?}",
        answer.warnings
    );
    assert_eq!(b.script.series_calls(), 4, "retried after the back-off");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let answer = call_series(&mut client, up()).await.expect("WARN");
    assert!(
        answer.warnings[0].contains("circuit breaker open"),
        "the second back-off is longer: {:?}",
        answer.warnings
    );
    assert_eq!(b.script.series_calls(), 4);

    // b recovers: the next retry succeeds and closes the breaker.
    b.script.set(SeriesScript::Normal);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let answer = call_series(&mut client, up()).await.expect("answer");
    assert_eq!(answer.label_values("cluster"), ["a", "b"]);
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    let answer = call_series(&mut client, up()).await.expect("answer");
    assert_eq!(answer.label_values("cluster"), ["a", "b"]);
    let (_, body) = crate::info::http_get(running.http_addr, "/metrics").await;
    assert!(body.contains(&metric.replace("} 1", "} 0")), "{body}");
    assert!(
        body.contains(&format!(
            r#"thanos_fanout_remote_circuit_breaker_opened_total{{remote="b",endpoint="{}"}} 2"#,
            b.addr
        )),
        "{body}"
    );
}

#[tokio::test]
async fn request_errors_do_not_open_the_breaker() {
    let a = up_remote("a", None).await;
    a.script.set(SeriesScript::Fail(
        Code::InvalidArgument,
        "bad request".into(),
    ));
    let mut cfg = config(vec![remote("a", a.addr, None)]);
    cfg.remotes[0].circuit_breaker.failures = 2;
    let running = start_fanout(cfg).await;
    let mut client = client(&running).await;
    for _ in 0..4 {
        let answer = call_series(&mut client, request(vec![eq("__name__", "up")]))
            .await
            .expect("WARN");
        assert!(
            answer.warnings[0].contains("bad request"),
            "{:?}",
            answer.warnings
        );
    }
    assert_eq!(a.script.series_calls(), 4, "never skipped");
}

/// Remote a (one series) and remote slow, whose three series come 300 ms
/// apart, and a config for both.
async fn one_fast_one_slow() -> (RemoteHandle, RemoteHandle, thanos_fanout::config::Config) {
    let a = up_remote("a", None).await;
    let data = dataset(
        &[("cluster", "slow")],
        ["1", "2", "3"]
            .iter()
            .map(|i| series(&[("__name__", "up"), ("i", i)], samples(0, MINUTE, |_| 1.0)))
            .collect(),
    );
    let slow = start_remote(data, Default::default(), None).await;
    slow.script
        .set(SeriesScript::Drip(Duration::from_millis(300)));
    let cfg = config(vec![
        remote("a", a.addr, None),
        remote("slow", slow.addr, None),
    ]);
    (a, slow, cfg)
}

#[tokio::test]
async fn series_calls_beyond_the_concurrency_limit_are_refused_at_once() {
    let (_a, _slow, mut cfg) = one_fast_one_slow().await;
    cfg.limits.concurrent_series_calls = 2;
    let running = start_fanout(cfg).await;
    let up = || request(vec![eq("__name__", "up")]);
    let (mut one, mut two, mut three) = (
        client(&running).await,
        client(&running).await,
        client(&running).await,
    );
    let first = tokio::spawn(async move { call_series(&mut one, up()).await });
    let second = tokio::spawn(async move { call_series(&mut two, up()).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    let refused = call_series(&mut three, up())
        .await
        .expect_err("a third call");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("limits.concurrent_series_calls"),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once, not queued"
    );
    for call in [first, second] {
        let answer = call.await.expect("task").expect("admitted calls complete");
        assert_eq!(answer.series.len(), 4);
    }
    // Slots are given back when calls end.
    let answer = call_series(&mut three, up()).await.expect("admitted now");
    assert_eq!(answer.series.len(), 4);
}

#[tokio::test]
async fn an_answer_over_a_request_limit_fails_with_resource_exhausted() {
    let data = dataset(
        &[("cluster", "a")],
        (0..10)
            .map(|i| {
                let i = i.to_string();
                series(
                    &[("__name__", "up"), ("i", i.as_str())],
                    samples(0, MINUTE, |_| 1.0),
                )
            })
            .collect(),
    );
    let a = start_remote(data, Default::default(), None).await;
    for (key, set) in [
        ("series_per_request", (5, 0, 0)),
        ("chunks_per_request", (0, 5, 0)),
        ("bytes_per_request", (0, 0, 300)),
    ] {
        let mut cfg = config(vec![remote("a", a.addr, None)]);
        (
            cfg.limits.series_per_request,
            cfg.limits.chunks_per_request,
            cfg.limits.bytes_per_request,
        ) = set;
        let running = start_fanout(cfg).await;
        let mut client = client(&running).await;
        let err = call_series(&mut client, request(vec![eq("__name__", "up")]))
            .await
            .expect_err("over the limit");
        assert_eq!(err.code(), Code::ResourceExhausted, "{key}: {err:?}");
        assert!(err.message().contains(&format!("limits.{key}")), "{err:?}");
        // A smaller answer passes.
        let answer = call_series(
            &mut client,
            request(vec![eq("__name__", "up"), eq("i", "1")]),
        )
        .await
        .expect("within the limit");
        assert_eq!(answer.series.len(), 1);
    }
}

/// A remote that does not strip replica labels itself has its whole answer
/// held to be sorted again after they are stripped here: past
/// `limits.buffered_bytes_per_request` that call fails, and only that call.
#[tokio::test]
async fn an_answer_buffered_to_strip_replica_labels_is_bounded() {
    let unable = Capabilities {
        without_replica_labels: false,
        ..Capabilities::default()
    };
    let mut remotes = Vec::new();
    for (cluster, series, chunk_bytes) in [("big", 200, 16 << 10), ("small", 3, 1 << 10)] {
        let r = start_remote(dataset(&[("cluster", cluster)], vec![]), unable, None).await;
        r.script.set(SeriesScript::Large {
            series,
            chunk_bytes,
        });
        remotes.push(r);
    }
    let mut cfg = config(vec![
        remote("big", remotes[0].addr, None),
        remote("small", remotes[1].addr, None),
    ]);
    // The big answer is about 3 MiB; the small one a few KiB.
    cfg.limits.buffered_bytes_per_request = 1 << 20;
    let running = start_fanout(cfg).await;
    let mut client = client(&running).await;
    let from = |cluster: &str, strip: bool| {
        let mut req = request(vec![eq("__name__", "big"), eq("cluster", cluster)]);
        if strip {
            req.without_replica_labels = vec!["replica".into()];
        }
        req
    };

    // The same answer streamed, while the buffered one fails beside it.
    let (mut one, mut two) = (client.clone(), client.clone());
    let (buffered, streamed) = tokio::join!(
        call_series(&mut one, from("big", true)),
        call_series(&mut two, from("big", false)),
    );
    let err = match buffered {
        Ok(answer) => panic!(
            "answered in full past the bound: {} series",
            answer.series.len()
        ),
        Err(err) => err,
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("limits.buffered_bytes_per_request"),
        "{err:?}"
    );
    let streamed = streamed.expect("the streamed call is not held to the bound");
    assert_eq!(streamed.series.len(), 200);
    assert!(streamed.warnings.is_empty(), "{:?}", streamed.warnings);

    // Under the bound, buffering works.
    let answer = call_series(&mut client, from("small", true))
        .await
        .expect("within the bound");
    assert_eq!(answer.series.len(), 3);
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
}

#[tokio::test]
async fn a_remote_over_its_byte_limit_is_cut_off_and_the_others_answer() {
    let big = up_remote("big", None).await;
    big.script.set(SeriesScript::Large {
        series: 100,
        chunk_bytes: 16 << 10,
    });
    let small = up_remote("small", None).await;
    small.script.set(SeriesScript::Large {
        series: 3,
        chunk_bytes: 1 << 10,
    });
    let mut cfg = config(vec![
        remote("big", big.addr, None),
        remote("small", small.addr, None),
    ]);
    cfg.limits.bytes_per_remote = 100 << 10;
    let running = start_fanout(cfg).await;
    let mut client = client(&running).await;
    let answer = call_series(&mut client, request(vec![eq("__name__", "big")]))
        .await
        .expect("WARN");
    let from = |cluster: &str| {
        answer
            .label_values("cluster")
            .iter()
            .filter(|c| *c == cluster)
            .count()
    };
    assert_eq!(from("small"), 3);
    assert!(
        from("big") < 10,
        "cut off at about 100 KiB: {}",
        from("big")
    );
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    assert!(
        answer.warnings[0].contains("remote big")
            && answer.warnings[0].contains("limits.bytes_per_remote"),
        "{}",
        answer.warnings[0]
    );
}

/// Three remotes that each hang in their own way, four concurrent calls
/// through thanos-fanout, and how long after `cancel` the last remote stream
/// was dropped on the remotes' side.
/// `cancel` gets the open streams and when the first was opened, and
/// returns when it cancelled them.
async fn cancellation_delay(
    cancel: impl FnOnce(
        Vec<tonic::Streaming<thanos_fanout::proto::thanos::SeriesResponse>>,
        std::time::Instant,
    ) -> std::time::Instant,
    deadline: Option<Duration>,
) -> Duration {
    let mut remotes = Vec::new();
    for (cluster, script) in [
        ("a", SeriesScript::NormalThenHang),
        ("b", SeriesScript::Hang),
        ("c", SeriesScript::PartThenHang(1)),
    ] {
        let r = up_remote(cluster, None).await;
        r.script.set(script);
        remotes.push(r);
    }
    let mut cfg = config(
        remotes
            .iter()
            .zip(["a", "b", "c"])
            .map(|(r, c)| remote(c, r.addr, None))
            .collect(),
    );
    for r in &mut cfg.remotes {
        r.timeout = Duration::from_secs(60);
    }
    let running = start_fanout(cfg).await;
    let mut streams = Vec::new();
    let opened = std::time::Instant::now();
    for _ in 0..4 {
        let mut client = client(&running).await;
        let mut req = tonic::Request::new(request(vec![eq("__name__", "up")]));
        if let Some(deadline) = deadline {
            req.set_timeout(deadline);
        }
        streams.push(client.series(req).await.expect("open").into_inner());
    }
    eventually(
        "every remote called four times",
        Duration::from_secs(5),
        || remotes.iter().all(|r| r.script.series_calls() == 4),
    )
    .await;
    let cancelled = cancel(streams, opened);
    eventually(
        "every remote stream cancelled",
        Duration::from_secs(5),
        || {
            remotes
                .iter()
                .all(|r| r.script.cancelled.load(std::sync::atomic::Ordering::SeqCst) == 4)
        },
    )
    .await;
    remotes
        .iter()
        .flat_map(|r| r.script.cancelled_at.lock().expect("lock").clone())
        .map(|at| at.saturating_duration_since(cancelled))
        .max()
        .expect("cancellations")
}

#[tokio::test]
async fn a_querier_cancelling_stops_every_remote_call_within_100ms() {
    let delay = cancellation_delay(
        |streams, _| {
            drop(streams);
            std::time::Instant::now()
        },
        None,
    )
    .await;
    assert!(
        delay <= Duration::from_millis(100),
        "last remote stream dropped {delay:?} after the cancel"
    );
}

#[tokio::test]
async fn a_passing_deadline_stops_every_remote_call_within_100ms() {
    let deadline = Duration::from_millis(1500);
    let delay = cancellation_delay(
        move |streams, opened| {
            // Keep the streams, reading nothing: the deadline ends the calls
            // (no later than `deadline` after the first was opened).
            std::mem::forget(streams);
            opened + deadline
        },
        Some(deadline),
    )
    .await;
    assert!(
        delay <= Duration::from_millis(100),
        "last remote stream dropped {delay:?} after the deadline"
    );
}

#[tokio::test]
async fn a_stalled_reader_slows_the_remote_instead_of_buffering() {
    const SERIES: usize = 2000;
    const CHUNK: usize = 64 << 10;
    let big = up_remote("big", None).await;
    big.script.set(SeriesScript::Large {
        series: SERIES,
        chunk_bytes: CHUNK,
    });
    let mut cfg = config(vec![remote("big", big.addr, None)]);
    cfg.fanout.prefetch_bytes = 4 << 20;
    let running = start_fanout(cfg).await;
    let mut client = client(&running).await;
    let mut stream = client
        .series(request(vec![eq("__name__", "big")]))
        .await
        .expect("open")
        .into_inner();
    let mut received = 0;
    while received < 5 {
        if let Some(frame) = stream.message().await.expect("frame") {
            received += usize::from(frame.result.is_some());
        }
    }
    // The reader stalls: the remote must stop too, with at most the
    // read-ahead budget, the HTTP/2 windows and socket buffers in between.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = || {
        big.script
            .frames_sent
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let stalled_at = sent();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sent(),
        stalled_at,
        "the remote kept sending to a stalled reader"
    );
    let in_between = stalled_at * CHUNK;
    assert!(
        in_between < 48 << 20,
        "{} MiB of a {} MiB answer sent ahead of a stalled reader",
        in_between >> 20,
        (SERIES * CHUNK) >> 20
    );
    // Reading again gets all of it.
    while stream.message().await.expect("frame").is_some() {
        received += 1;
    }
    assert_eq!(received, SERIES);
    assert_eq!(sent(), SERIES);
}

/// The read-ahead budget in use, and the remote calls waiting for room in
/// it (their call's share full, or the process's budget spent), show in
/// metrics while readers stall, and go back to nothing once they read.
#[tokio::test]
async fn read_ahead_in_use_and_the_calls_waiting_for_it_are_measured() {
    const SERIES: usize = 300;
    const CHUNK: usize = 64 << 10;
    const PER_CALL: usize = 4 << 20;
    const TOTAL: usize = 6 << 20;
    let big = up_remote("big", None).await;
    big.script.set(SeriesScript::Large {
        series: SERIES,
        chunk_bytes: CHUNK,
    });
    let mut cfg = config(vec![remote("big", big.addr, None)]);
    cfg.fanout.prefetch_bytes = PER_CALL;
    cfg.fanout.prefetch_bytes_total = TOTAL;
    let running = start_fanout(cfg).await;
    let in_use = || metric_in(&running, "thanos_fanout_series_read_ahead_bytes");
    let waiting = |budget: &str| {
        metric_in(
            &running,
            &format!(r#"thanos_fanout_series_read_ahead_waiting_calls{{budget="{budget}"}}"#),
        )
    };
    assert_eq!(
        metric_in(&running, "thanos_fanout_series_read_ahead_limit_bytes"),
        Some(TOTAL as f64)
    );
    assert_eq!(in_use(), Some(0.0));
    assert_eq!(
        (waiting("call"), waiting("process")),
        (Some(0.0), Some(0.0))
    );

    // A call nobody reads fills its share of the read-ahead and waits.
    let client = client(&running).await;
    let open = || {
        let mut client = client.clone();
        async move {
            client
                .series(request(vec![eq("__name__", "big")]))
                .await
                .expect("open")
                .into_inner()
        }
    };
    let first = open().await;
    eventually("the first call waits", Duration::from_secs(10), || {
        waiting("call") == Some(1.0)
    })
    .await;
    let share = in_use().expect("in use");
    assert!(
        share > (PER_CALL - 2 * CHUNK) as f64 && share <= PER_CALL as f64,
        "{share} bytes read ahead for one call"
    );
    // A second one gets what is left of the process's budget, then waits
    // with one frame ahead.
    let second = open().await;
    eventually("the second call waits", Duration::from_secs(10), || {
        waiting("process") == Some(1.0)
    })
    .await;
    let spent = in_use().expect("in use");
    assert!(
        spent > (TOTAL - 2 * CHUNK) as f64 && spent <= TOTAL as f64,
        "{spent} bytes read ahead of {TOTAL}"
    );
    assert_eq!(waiting("call"), Some(1.0));

    // Read, both calls get everything, and nothing is held or waits any more.
    for mut stream in [first, second] {
        let mut received = 0;
        while let Some(frame) = stream.message().await.expect("frame") {
            received += usize::from(frame.result.is_some());
        }
        assert_eq!(received, SERIES);
    }
    eventually("the budget given back", Duration::from_secs(5), || {
        in_use() == Some(0.0) && waiting("call") == Some(0.0) && waiting("process") == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn calls_beyond_a_remotes_limit_are_not_made_and_say_why() {
    let (_a, slow, mut cfg) = one_fast_one_slow().await;
    cfg.remotes[1].max_concurrent_calls = 2;
    let running = start_fanout(cfg).await;
    let up = || request(vec![eq("__name__", "up")]);
    let mut calls = Vec::new();
    for _ in 0..2 {
        let mut client = client(&running).await;
        calls.push(tokio::spawn(
            async move { call_series(&mut client, up()).await },
        ));
    }
    eventually(
        "two calls at the slow remote",
        Duration::from_secs(3),
        || slow.script.series_calls() == 2,
    )
    .await;
    let mut third = client(&running).await;
    let answer = call_series(&mut third, up()).await.expect("WARN");
    assert_eq!(answer.label_values("cluster"), ["a"], "a answers in full");
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    assert!(
        answer.warnings[0].contains("remote slow")
            && answer.warnings[0].contains("max_concurrent_calls"),
        "{}",
        answer.warnings[0]
    );
    assert_eq!(slow.script.series_calls(), 2, "no third call made");
    for call in calls {
        assert_eq!(call.await.expect("task").expect("answer").series.len(), 4);
    }
    let answer = call_series(&mut third, up()).await.expect("answer");
    assert_eq!(answer.series.len(), 4, "room again: {:?}", answer.warnings);
}
