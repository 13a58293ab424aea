//! `mode: any`: a remote whose endpoints are replicas (an HA pair of
//! sidecars) is asked through one of them, replicas take turns, and a replica
//! that fails before its first frame hands the call to the next one.

use std::sync::atomic::Ordering;
use std::time::Duration;

use thanos_fanout::config::{RemoteConfig, RemoteMode};
use thanos_fanout::demo::synthetic::Capabilities;
use thanos_fanout::proto::thanos::{LabelValuesRequest, PartialResponseStrategy};

use crate::common::*;

/// Two replicas of cluster a, each with three `up` series labelled with its
/// replica, behind one remote in `mode`.
async fn ha_pair(mode: RemoteMode) -> (RemoteHandle, RemoteHandle, thanos_fanout::app::Running) {
    let replica = |r: &'static str| {
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
    };
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

fn up() -> thanos_fanout::proto::thanos::SeriesRequest {
    request(vec![eq("__name__", "up")])
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
            .label_values(LabelValuesRequest {
                label: "replica".into(),
                start: i64::MIN,
                end: i64::MAX,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(values.warnings.is_empty(), "{:?}", values.warnings);
        assert_eq!(values.values, ["1"]);
    }
    assert_eq!(r1.script.label_calls.load(Ordering::SeqCst), 2);
}
