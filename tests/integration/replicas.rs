//! `mode: any`: a remote whose endpoints are replicas (an HA pair of
//! sidecars) is asked through one of them, replicas take turns, and a replica
//! that fails before its first frame hands the call to the next one.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use thanos_fanout::config::{RemoteConfig, RemoteMode};
use thanos_fanout::demo::synthetic::{Capabilities, Dataset};
use thanos_fanout::proto::thanos::{
    LabelNamesRequest, LabelValuesRequest, PartialResponseStrategy,
};

use crate::common::*;

/// Two replicas of cluster a, each with three `up` series labelled with its
/// replica, behind one remote in `mode`.
async fn ha_pair(mode: RemoteMode) -> (RemoteHandle, RemoteHandle, thanos_fanout::app::Running) {
    let r0 = start_remote(replica("0"), Capabilities::default(), None).await;
    let r1 = start_remote(replica("1"), Capabilities::default(), None).await;
    let config = config(vec![RemoteConfig {
        targets: vec![r0.addr.to_string(), r1.addr.to_string()],
        timeout: Duration::from_millis(500),
        mode,
        ..remote("a", r0.addr, None)
    }]);
    let running = start_fanout(config).await;
    (r0, r1, running)
}

/// Replica `r` of cluster a: three `up` series labelled with the replica.
fn replica(r: &str) -> Dataset {
    dataset(
        &[("cluster", "a"), ("replica", r)],
        ["x", "y", "z"]
            .iter()
            .map(|job| {
                series(
                    &[("__name__", "up"), ("job", job)],
                    samples(0, MINUTE, |_| 1.0),
                )
            })
            .collect(),
    )
}

/// A loopback address nothing listens on: connections to it are refused.
fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Waits until the endpoint's last Info call failed, per `/metrics`.
async fn wait_down(running: &thanos_fanout::app::Running, remote: &str, endpoint: SocketAddr) {
    let line =
        format!(r#"thanos_fanout_remote_endpoint_up{{remote="{remote}",endpoint="{endpoint}"}} 0"#);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = crate::info::http_get(running.http_addr, "/metrics").await;
        if metrics.contains(&line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {line} in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn up() -> thanos_fanout::proto::thanos::SeriesRequest {
    request(vec![eq("__name__", "up")])
}

/// The values of `replica` over all time.
fn replica_values(strategy: PartialResponseStrategy) -> LabelValuesRequest {
    LabelValuesRequest {
        label: "replica".into(),
        start: i64::MIN,
        end: i64::MAX,
        partial_response_strategy: strategy as i32,
        ..Default::default()
    }
}

/// Every label name over all time.
fn all_names(strategy: PartialResponseStrategy) -> LabelNamesRequest {
    LabelNamesRequest {
        start: i64::MIN,
        end: i64::MAX,
        partial_response_strategy: strategy as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn one_replica_answers_and_they_take_turns() {
    let (r0, r1, running) = ha_pair(RemoteMode::Any).await;
    let mut client = client(&running).await;
    for _ in 0..4 {
        let answer = call_series(&mut client, up()).await.unwrap();
        assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
        let replicas = answer.label_values("replica");
        assert_eq!(replicas.len(), 3, "one replica's series: {replicas:?}");
        assert!(replicas.iter().all(|r| *r == replicas[0]), "{replicas:?}");
    }
    // Four calls, four remote calls, shared by both replicas.
    assert_eq!((r0.script.series_calls(), r1.script.series_calls()), (2, 2));

    // `mode: all` asks both and merges.
    let (r0, r1, running) = ha_pair(RemoteMode::All).await;
    let mut both = crate::common::client(&running).await;
    let answer = call_series(&mut both, up()).await.unwrap();
    assert_eq!(answer.series.len(), 6);
    assert_eq!((r0.script.series_calls(), r1.script.series_calls()), (1, 1));
}

#[tokio::test]
async fn a_replica_failing_before_its_first_frame_hands_over() {
    let (r0, r1, running) = ha_pair(RemoteMode::Any).await;
    let mut client = client(&running).await;
    // r0 refuses, then hangs past the remote's timeout: either way every call
    // is answered whole by r1, under ABORT too, without a warning.
    for script in [
        SeriesScript::Fail(tonic::Code::Unavailable, "shutting down".into()),
        SeriesScript::Hang,
    ] {
        r0.script.set(script);
        for strategy in [
            PartialResponseStrategy::Warn,
            PartialResponseStrategy::Abort,
        ] {
            for _ in 0..2 {
                let mut req = up();
                req.partial_response_strategy = strategy as i32;
                let answer = call_series(&mut client, req).await.unwrap();
                assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
                assert_eq!(answer.label_values("replica"), ["1", "1", "1"]);
            }
        }
    }
    // r0 was tried on its turns, and those attempts are counted as its errors
    // and timeouts.
    assert!(
        r0.script.series_calls() >= 4,
        "{}",
        r0.script.series_calls()
    );
    let (_, metrics) = crate::info::http_get(running.http_addr, "/metrics").await;
    for outcome in ["Error", "Timeout"] {
        let line = format!(
            r#"thanos_fanout_remote_calls_total{{remote="a",method="Series",outcome="{outcome}"}} 2"#
        );
        assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    }

    // Both fail: the warning names the last one tried.
    r1.script.set(SeriesScript::Fail(
        tonic::Code::Unavailable,
        "also down".into(),
    ));
    r0.script.set(SeriesScript::Fail(
        tonic::Code::Unavailable,
        "shutting down".into(),
    ));
    let answer = call_series(&mut client, up()).await.unwrap();
    assert!(answer.series.is_empty());
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    assert!(
        answer.warnings[0].starts_with("remote a ("),
        "{}",
        answer.warnings[0]
    );
}

#[tokio::test]
async fn a_replica_failing_after_its_first_frame_is_not_retried() {
    let (r0, r1, running) = ha_pair(RemoteMode::Any).await;
    let mut client = client(&running).await;
    // Whichever replica is asked sends one series and goes silent: the call
    // keeps that series and warns, and the other replica is not asked (its
    // answer would start over, out of order).
    for r in [&r0, &r1] {
        r.script.set(SeriesScript::PartThenHang(1));
    }
    let answer = call_series(&mut client, up()).await.unwrap();
    assert_eq!(answer.series.len(), 1);
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    assert!(
        answer.warnings[0].contains("sent nothing for 0.5s"),
        "{}",
        answer.warnings[0]
    );
    assert_eq!(r0.script.series_calls() + r1.script.series_calls(), 1);
}

#[tokio::test]
async fn label_calls_hand_over_too() {
    let (r0, r1, running) = ha_pair(RemoteMode::Any).await;
    let mut client = client(&running).await;
    r0.script
        .set(SeriesScript::Fail(tonic::Code::Unavailable, "down".into()));
    for _ in 0..2 {
        let values = client
            .label_values(replica_values(PartialResponseStrategy::Warn))
            .await
            .unwrap()
            .into_inner();
        assert!(values.warnings.is_empty(), "{:?}", values.warnings);
        assert_eq!(values.values, ["1"]);
    }
    assert_eq!(r1.script.label_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_down_replica_is_silent_while_another_answers() {
    let mut live = start_remote(replica("0"), Capabilities::default(), None).await;
    let dead = refused_addr();
    let running = start_fanout(config(vec![RemoteConfig {
        targets: vec![live.addr.to_string(), dead.to_string()],
        timeout: Duration::from_millis(500),
        mode: RemoteMode::Any,
        ..remote("ha-pair", live.addr, None)
    }]))
    .await;
    // The down replica still shows where operators look.
    wait_down(&running, "ha-pair", dead).await;

    let mut client = client(&running).await;
    for strategy in [
        PartialResponseStrategy::Warn,
        PartialResponseStrategy::Abort,
    ] {
        // Four calls each, so the down replica's turns come up too; each
        // kind of call concurrently with the others.
        for _ in 0..4 {
            let mut req = up();
            req.partial_response_strategy = strategy as i32;
            let mut names_client = client.clone();
            let mut values_client = client.clone();
            let (series, names, values) = tokio::join!(
                call_series(&mut client, req),
                names_client.label_names(all_names(strategy)),
                values_client.label_values(replica_values(strategy)),
            );
            let series = series.unwrap_or_else(|e| panic!("{strategy:?}: {e}"));
            assert!(
                series.warnings.is_empty(),
                "{strategy:?}: {:?}",
                series.warnings
            );
            assert_eq!(series.label_values("replica"), ["0", "0", "0"]);
            let names = names
                .unwrap_or_else(|e| panic!("{strategy:?}: {e}"))
                .into_inner();
            assert!(
                names.warnings.is_empty(),
                "{strategy:?}: {:?}",
                names.warnings
            );
            assert!(names.names.contains(&"job".to_owned()), "{:?}", names.names);
            let values = values
                .unwrap_or_else(|e| panic!("{strategy:?}: {e}"))
                .into_inner();
            assert!(
                values.warnings.is_empty(),
                "{strategy:?}: {:?}",
                values.warnings
            );
            assert_eq!(values.values, ["0"]);
        }
    }

    // Every replica down: one warning naming the remote and each replica
    // with its cause, or `Aborted` saying the same.
    live.stop().await;
    wait_down(&running, "ha-pair", live.addr).await;
    let answer = call_series(&mut client, up()).await.unwrap();
    assert!(answer.series.is_empty());
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    let warning = &answer.warnings[0];
    assert!(warning.starts_with("remote ha-pair ("), "{warning}");
    for replica in [live.addr, dead] {
        assert!(
            warning.contains(&format!("{replica}: not queried")),
            "{warning}"
        );
    }
    assert_eq!(
        warning.matches("Connection refused").count(),
        2,
        "{warning}"
    );

    let mut req = up();
    req.partial_response_strategy = PartialResponseStrategy::Abort as i32;
    let error = call_series(&mut client, req).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::Aborted, "{error}");
    for replica in [live.addr, dead] {
        assert!(error.message().contains(&replica.to_string()), "{error}");
    }
    let values = client
        .label_values(replica_values(PartialResponseStrategy::Warn))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(values.warnings.len(), 1, "{:?}", values.warnings);
    assert!(
        values.warnings[0].starts_with("remote ha-pair ("),
        "{:?}",
        values.warnings
    );
}

#[tokio::test]
async fn a_call_to_a_remote_takes_one_place_whatever_its_replicas() {
    // Three replicas answering slowly, at most three calls to the remote at
    // once: three concurrent calls are all answered (one place each), a
    // fourth meanwhile is not.
    let mut replicas = Vec::new();
    for r in ["0", "1", "2"] {
        let remote = start_remote(replica(r), Capabilities::default(), None).await;
        remote
            .script
            .set(SeriesScript::Drip(Duration::from_millis(400)));
        replicas.push(remote);
    }
    let running = start_fanout(config(vec![RemoteConfig {
        targets: replicas.iter().map(|r| r.addr.to_string()).collect(),
        timeout: Duration::from_secs(10),
        mode: RemoteMode::Any,
        max_concurrent_calls: 3,
        ..remote("a", replicas[0].addr, None)
    }]))
    .await;
    let client = client(&running).await;
    let call = |mut client: thanos_fanout::proto::thanos::store_client::StoreClient<_>| async move {
        call_series(&mut client, up()).await.unwrap()
    };
    let three: Vec<_> = (0..3).map(|_| tokio::spawn(call(client.clone()))).collect();
    // The fourth is planned while the three are still being answered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fourth = call(client.clone()).await;
    for answer in three {
        let answer = answer.await.unwrap();
        assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
        assert_eq!(answer.series.len(), 3);
    }
    assert!(fourth.series.is_empty(), "{:?}", fourth.series);
    assert_eq!(fourth.warnings.len(), 1, "{:?}", fourth.warnings);
    assert!(
        fourth.warnings[0].contains("3 calls to this remote are in progress already"),
        "{}",
        fourth.warnings[0]
    );
    // Every place is given back: the next call is answered whole.
    let answer = call(client.clone()).await;
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
    assert_eq!(answer.series.len(), 3);
}

/// `n` Series calls at once under `strategy`.
async fn concurrent_series(
    running: &thanos_fanout::app::Running,
    n: usize,
    strategy: PartialResponseStrategy,
) -> Vec<Answer> {
    let client = client(running).await;
    let calls = (0..n).map(|_| {
        let mut client = client.clone();
        let mut req = up();
        req.partial_response_strategy = strategy as i32;
        async move { call_series(&mut client, req).await }
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|e| panic!("{strategy:?}: {e}")))
        .collect()
}

#[tokio::test]
async fn series_fall_back_before_the_first_frame_and_never_after() {
    let (r0, r1, running) = ha_pair(RemoteMode::Any).await;
    // Before the first frame: refused, or silent past the remote's timeout.
    // Concurrent calls, half of them starting on r0, are answered whole by
    // r1 without a warning; the replica tried after a silent one gets a
    // full timeout of its own, which its slow first frame needs.
    r1.script
        .set(SeriesScript::Drip(Duration::from_millis(300)));
    for script in [
        SeriesScript::Fail(tonic::Code::Unavailable, "restarting".into()),
        SeriesScript::Hang,
    ] {
        r0.script.set(script);
        for strategy in [
            PartialResponseStrategy::Warn,
            PartialResponseStrategy::Abort,
        ] {
            for answer in concurrent_series(&running, 4, strategy).await {
                assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
                assert_eq!(answer.label_values("replica"), ["1", "1", "1"]);
            }
        }
    }
    // After the first frame: the replica asked keeps the call, its failure
    // is a warning and the other replica is not asked.
    for r in [&r0, &r1] {
        r.script.set(SeriesScript::PartThenHang(1));
    }
    let before = r0.script.series_calls() + r1.script.series_calls();
    for answer in concurrent_series(&running, 4, PartialResponseStrategy::Warn).await {
        assert_eq!(answer.series.len(), 1, "{:?}", answer.series);
        assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
        assert!(
            answer.warnings[0].contains("sent nothing for 0.5s (its timeout) after 1 series"),
            "{}",
            answer.warnings[0]
        );
    }
    assert_eq!(
        r0.script.series_calls() + r1.script.series_calls() - before,
        4,
        "one remote call per call"
    );
}

#[tokio::test]
async fn label_calls_fall_back_before_their_answer_and_never_after() {
    let (r0, r1, running) = ha_pair(RemoteMode::Any).await;
    let client = client(&running).await;
    let names = |client: &thanos_fanout::proto::thanos::store_client::StoreClient<_>| {
        let mut client = client.clone();
        async move {
            client
                .label_names(all_names(PartialResponseStrategy::Abort))
                .await
                .map(|r| r.into_inner())
        }
    };
    let values = |client: &thanos_fanout::proto::thanos::store_client::StoreClient<_>| {
        let mut client = client.clone();
        async move {
            client
                .label_values(replica_values(PartialResponseStrategy::Abort))
                .await
                .map(|r| r.into_inner())
        }
    };
    // Before the answer: refused, or silent past the remote's timeout (the
    // replica tried next gets a full timeout, not what r0 left of it).
    // Concurrent calls of both kinds, under ABORT, are answered by r1.
    for hang in [false, true] {
        r0.script.labels_hang.store(hang, Ordering::SeqCst);
        r0.script.set(if hang {
            SeriesScript::Normal
        } else {
            SeriesScript::Fail(tonic::Code::Unavailable, "restarting".into())
        });
        let (n, v) = futures::future::join(
            futures::future::join_all((0..3).map(|_| names(&client))),
            futures::future::join_all((0..3).map(|_| values(&client))),
        )
        .await;
        for answer in n {
            let answer = answer.unwrap_or_else(|e| panic!("hang {hang}: {e}"));
            assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
            assert!(answer.names.contains(&"job".to_owned()), "{answer:?}");
        }
        for answer in v {
            let answer = answer.unwrap_or_else(|e| panic!("hang {hang}: {e}"));
            assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
            assert_eq!(answer.values, ["1"]);
        }
    }
    // An answer that came is the call's, its warning included: the other
    // replica is not asked.
    r0.script.labels_hang.store(false, Ordering::SeqCst);
    r0.script.set(SeriesScript::Normal);
    for r in [&r0, &r1] {
        *r.script.label_warning.lock().unwrap() = Some("head is compacting".into());
    }
    let calls = || {
        r0.script.label_calls.load(Ordering::SeqCst) + r1.script.label_calls.load(Ordering::SeqCst)
    };
    let before = calls();
    let answers = futures::future::join_all((0..4).map(|_| values(&client))).await;
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.values.len(), 1, "one replica's: {:?}", answer.values);
        assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
        assert!(
            answer.warnings[0].starts_with("remote a (")
                && answer.warnings[0].ends_with("head is compacting"),
            "{}",
            answer.warnings[0]
        );
    }
    assert_eq!(calls() - before, 4, "one remote call per call");
}
