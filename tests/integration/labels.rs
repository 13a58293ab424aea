//! LabelNames and LabelValues: merge, limit, warnings, invalid requests.

use thanos_fanout::demo::synthetic::Capabilities;
use thanos_fanout::proto::thanos::{
    LabelNamesRequest, LabelValuesRequest, PartialResponseStrategy,
};
use tonic::Code;

use crate::common::*;

/// A LabelNames request over the data's minute.
fn names_req() -> LabelNamesRequest {
    LabelNamesRequest {
        start: 0,
        end: MINUTE,
        ..Default::default()
    }
}

/// A LabelValues request for `label` over the data's minute.
fn values_req(label: &str) -> LabelValuesRequest {
    LabelValuesRequest {
        label: label.into(),
        start: 0,
        end: MINUTE,
        ..Default::default()
    }
}

async fn two_remotes() -> (Vec<RemoteHandle>, thanos_fanout::app::Running) {
    let a = dataset(
        &[("cluster", "a")],
        vec![
            series(
                &[("__name__", "up"), ("job", "api")],
                samples(0, MINUTE, |_| 1.0),
            ),
            series(
                &[("__name__", "http_requests_total"), ("path", "/")],
                samples(0, MINUTE, |_| 1.0),
            ),
        ],
    );
    let b = dataset(
        &[("cluster", "b")],
        vec![
            series(
                &[("__name__", "up"), ("job", "db")],
                samples(0, MINUTE, |_| 1.0),
            ),
            series(
                &[("__name__", "queries_total"), ("db", "main")],
                samples(0, MINUTE, |_| 1.0),
            ),
        ],
    );
    let ra = start_remote(a, Capabilities::default(), None).await;
    let rb = start_remote(b, Capabilities::default(), None).await;
    let running = start_fanout(config(vec![
        remote("a", ra.addr, None),
        remote("b", rb.addr, None),
    ]))
    .await;
    (vec![ra, rb], running)
}

#[tokio::test]
async fn label_names_and_values_merge_sorted_unique() {
    let (_remotes, running) = two_remotes().await;
    let mut client = client(&running).await;

    let names = client
        .label_names(names_req())
        .await
        .expect("names")
        .into_inner();
    assert_eq!(names.names, ["__name__", "cluster", "db", "job", "path"]);
    assert!(names.warnings.is_empty());

    let values = client
        .label_values(values_req("__name__"))
        .await
        .expect("values")
        .into_inner();
    assert_eq!(
        values.values,
        ["http_requests_total", "queries_total", "up"]
    );

    let limited = client
        .label_values(LabelValuesRequest {
            limit: 2,
            ..values_req("__name__")
        })
        .await
        .expect("values")
        .into_inner();
    assert_eq!(limited.values, ["http_requests_total", "queries_total"]);

    let limited = client
        .label_names(LabelNamesRequest {
            limit: 3,
            ..names_req()
        })
        .await
        .expect("names")
        .into_inner();
    assert_eq!(limited.names, ["__name__", "cluster", "db"]);

    // Matchers on external labels prune; values of a replica label are empty.
    let only_b = client
        .label_values(LabelValuesRequest {
            matchers: vec![eq("cluster", "b")],
            ..values_req("job")
        })
        .await
        .expect("values")
        .into_inner();
    assert_eq!(only_b.values, ["db"]);
    let replica = client
        .label_values(LabelValuesRequest {
            without_replica_labels: vec!["cluster".into()],
            ..values_req("cluster")
        })
        .await
        .expect("values")
        .into_inner();
    assert!(replica.values.is_empty());
    let names = client
        .label_names(LabelNamesRequest {
            without_replica_labels: vec!["cluster".into()],
            ..names_req()
        })
        .await
        .expect("names")
        .into_inner();
    assert!(!names.names.contains(&"cluster".to_string()));
}

#[tokio::test]
async fn failing_remote_is_a_warning_or_an_abort() {
    let (remotes, running) = two_remotes().await;
    remotes[1]
        .script
        .set(SeriesScript::Fail(Code::Internal, "disk on fire".into()));
    let mut client = client(&running).await;

    let warn = client
        .label_values(values_req("__name__"))
        .await
        .expect("WARN succeeds")
        .into_inner();
    assert_eq!(warn.values, ["http_requests_total", "up"]);
    assert_eq!(warn.warnings.len(), 1);
    assert!(
        warn.warnings[0].contains("remote b") && warn.warnings[0].contains("disk on fire"),
        "{:?}",
        warn.warnings
    );

    let abort = client
        .label_names(LabelNamesRequest {
            partial_response_strategy: PartialResponseStrategy::Abort as i32,
            ..names_req()
        })
        .await
        .expect_err("ABORT fails");
    assert_eq!(abort.code(), Code::Aborted);
    assert!(abort.message().contains("remote b"), "{}", abort.message());
}

#[tokio::test]
async fn invalid_label_requests_are_rejected() {
    let (_remotes, running) = two_remotes().await;
    let mut client = client(&running).await;
    let err = client
        .label_values(values_req(""))
        .await
        .expect_err("empty label");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .label_names(LabelNamesRequest {
            matchers: vec![matcher(
                thanos_fanout::proto::thanos::label_matcher::Type::Nre,
                "x",
                "[",
            )],
            ..names_req()
        })
        .await
        .expect_err("bad regex");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains(r#"x!~"[""#), "{}", err.message());
}
