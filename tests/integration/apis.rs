//! Rules, Targets, Metadata, Exemplars and TSDB status through the fan-out,
//! against sidecar-like fake remotes: Info advertisement, answers from every
//! remote, warnings and ABORT, timeouts, cancellation, forwarded metadata,
//! exemplar routing by external labels, and concurrent large answers.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use thanos_fanout::app::Running;
use thanos_fanout::config::RemoteConfig;
use thanos_fanout::demo::synthetic::{self, Capabilities, SyntheticStore};
use thanos_fanout::labelset::{self, from_pairs};
use thanos_fanout::proto::thanos::exemplars_client::ExemplarsClient;
use thanos_fanout::proto::thanos::exemplars_server::{Exemplars, ExemplarsServer};
use thanos_fanout::proto::thanos::info::info_client::InfoClient;
use thanos_fanout::proto::thanos::info::info_server::Info;
use thanos_fanout::proto::thanos::info::{
    ExemplarsInfo, InfoRequest, InfoResponse, MetricMetadataInfo, RulesInfo, StatusInfo,
    TargetsInfo,
};
use thanos_fanout::proto::thanos::metadata_client::MetadataClient;
use thanos_fanout::proto::thanos::metadata_server::{Metadata, MetadataServer};
use thanos_fanout::proto::thanos::rules_client::RulesClient;
use thanos_fanout::proto::thanos::rules_server::{Rules, RulesServer};
use thanos_fanout::proto::thanos::status_client::StatusClient;
use thanos_fanout::proto::thanos::status_server::{Status as StatusService, StatusServer};
use thanos_fanout::proto::thanos::store_server::Store;
use thanos_fanout::proto::thanos::targets_client::TargetsClient;
use thanos_fanout::proto::thanos::targets_server::{Targets, TargetsServer};
use thanos_fanout::proto::thanos::{
    ActiveTarget, Alert, AlertInstance, AlertState, DroppedTarget, Exemplar, ExemplarData,
    ExemplarsRequest, ExemplarsResponse, HeadStatistics, Label, LabelNamesRequest,
    LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, Meta, MetricMetadata,
    MetricMetadataEntry, MetricMetadataRequest, MetricMetadataResponse, PartialResponseStrategy,
    RecordingRule, Rule, RuleGroup, RulesRequest, RulesResponse, SeriesRequest, SeriesResponse,
    Statistic, TargetDiscovery, TargetHealth, TargetsRequest, TargetsResponse, TsdbStatistics,
    TsdbStatisticsEntry, TsdbStatisticsRequest, TsdbStatisticsResponse, ZLabelSet,
    exemplars_response, metric_metadata_response, rule, rules_response, targets_response,
    tsdb_statistics_response,
};
use thanos_fanout::upstream::Api;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::common::*;

/// What a fake answers on one of the five services.
#[derive(Debug, Clone, Default)]
enum Reply {
    /// Its own data (like a sidecar reading its Prometheus).
    #[default]
    Data,
    /// Fail with this status.
    Fail(tonic::Code, String),
    /// Accept the call and never send anything.
    Hang,
    /// Send its data, then keep the stream open.
    DataThenHang,
    /// A warning frame, then its data.
    WarnThenData(String),
}

/// Shared between a fake sidecar and its test.
#[derive(Debug, Default)]
struct SidecarScript {
    advertised: Mutex<Vec<Api>>,
    reply: Mutex<Reply>,
    calls: AtomicUsize,
    /// Streams dropped by the caller before their end.
    cancelled: AtomicUsize,
    /// (`thanos-tenant`, `request-id`) of each call.
    metadata: Mutex<Vec<(String, String)>>,
    exemplar_queries: Mutex<Vec<String>>,
    rules_requests: Mutex<Vec<RulesRequest>>,
}

/// What a fake sidecar's Prometheus holds besides series.
#[derive(Debug, Clone)]
struct Holdings {
    external: Vec<Label>,
    /// Rule groups to answer with (`Data`), this many of them.
    rule_groups: usize,
    /// Exemplar series, without external labels (as Prometheus stores them).
    exemplar_series: Vec<(Vec<Label>, Vec<Exemplar>)>,
}

/// A sidecar-like remote: a StoreAPI over synthetic data, plus the five
/// services answering from [`Holdings`] the way a sidecar does (external
/// labels added to rule, target and exemplar labels).
#[derive(Clone)]
struct Sidecar {
    store: SyntheticStore,
    holdings: Arc<Holdings>,
    script: Arc<SidecarScript>,
}

type Frames<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Counts a stream as cancelled if it is dropped before its end.
struct Guard<T> {
    inner: Frames<T>,
    script: Arc<SidecarScript>,
    ended: bool,
}

impl<T> Stream for Guard<T> {
    type Item = Result<T, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(None) = item {
            self.ended = true;
        }
        item
    }
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if !self.ended {
            self.script.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Sidecar {
    /// Records the call and answers by the script: `data` are the frames of
    /// its own answer, `warning` makes a warning frame.
    fn reply<T: Send + 'static, Q>(
        &self,
        request: &Request<Q>,
        data: Vec<T>,
        warning: fn(String) -> T,
    ) -> Result<Response<Frames<T>>, Status> {
        self.script.calls.fetch_add(1, Ordering::SeqCst);
        let text = |key| {
            request
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        self.script
            .metadata
            .lock()
            .unwrap()
            .push((text("thanos-tenant"), text("request-id")));
        let ok = |frames: Vec<T>| tokio_stream::iter(frames.into_iter().map(Ok));
        let inner: Frames<T> = match self.script.reply.lock().unwrap().clone() {
            Reply::Data => Box::pin(ok(data)),
            Reply::Fail(code, message) => return Err(Status::new(code, message)),
            Reply::Hang => Box::pin(futures::stream::pending()),
            Reply::DataThenHang => Box::pin(futures::StreamExt::chain(
                ok(data),
                futures::stream::pending(),
            )),
            Reply::WarnThenData(text) => {
                let mut frames = vec![warning(text)];
                frames.extend(data);
                Box::pin(ok(frames))
            }
        };
        Ok(Response::new(Box::pin(Guard {
            inner,
            script: self.script.clone(),
            ended: false,
        })))
    }

    fn with_external(&self, labels: &[Label]) -> Vec<Label> {
        let mut all: Vec<Label> = labels
            .iter()
            .filter(|l| !self.holdings.external.iter().any(|e| e.name == l.name))
            .cloned()
            .collect();
        all.extend(self.holdings.external.iter().cloned());
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn zset(labels: Vec<Label>) -> Option<ZLabelSet> {
        Some(ZLabelSet { labels })
    }

    fn rule_groups(&self) -> Vec<RuleGroup> {
        let evaluated = Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        });
        (0..self.holdings.rule_groups)
            .map(|i| RuleGroup {
                name: format!("group-{i}"),
                file: "/etc/prometheus/rules.yaml".into(),
                interval: 15.0,
                last_evaluation: evaluated,
                rules: vec![
                    Rule {
                        result: Some(rule::Result::Recording(RecordingRule {
                            name: format!("job:up:sum_{i}"),
                            query: "sum by (job) (up)".into(),
                            labels: Self::zset(self.with_external(&from_pairs([("team", "x")]))),
                            health: "ok".into(),
                            last_evaluation: evaluated,
                            ..Default::default()
                        })),
                    },
                    Rule {
                        result: Some(rule::Result::Alert(Alert {
                            state: AlertState::Firing as i32,
                            name: "AlwaysFiring".into(),
                            query: "vector(1)".into(),
                            labels: Self::zset(
                                self.with_external(&from_pairs([("severity", "page")])),
                            ),
                            annotations: Self::zset(vec![Label {
                                name: "summary".into(),
                                value: "x".repeat(200),
                            }]),
                            alerts: vec![AlertInstance {
                                labels: Self::zset(from_pairs([
                                    ("alertname", "AlwaysFiring"),
                                    ("severity", "page"),
                                ])),
                                state: AlertState::Firing as i32,
                                active_at: evaluated,
                                value: "1e+00".into(),
                                ..Default::default()
                            }],
                            health: "ok".into(),
                            last_evaluation: evaluated,
                            ..Default::default()
                        })),
                    },
                ],
                ..Default::default()
            })
            .collect()
    }

    /// Exemplar series selected by `query` (matched without external
    /// labels, as the sidecar's Prometheus would), with external labels.
    fn exemplars(&self, query: &str) -> Result<Vec<ExemplarData>, Status> {
        let selectors = selectors_of(query).map_err(Status::invalid_argument)?;
        Ok(self
            .holdings
            .exemplar_series
            .iter()
            .filter(|(labels, _)| {
                selectors
                    .iter()
                    .any(|matchers| labelset::matches_series(matchers, labels))
            })
            .map(|(labels, exemplars)| ExemplarData {
                series_labels: Self::zset(self.with_external(labels)),
                exemplars: exemplars.clone(),
            })
            .collect())
    }
}

/// The vector selectors of `query`, compiled, as Prometheus would select
/// series by them.
fn selectors_of(query: &str) -> Result<Vec<Vec<labelset::Matcher>>, String> {
    use promql_parser::label::MatchOp;
    use promql_parser::parser::{Expr, parse};
    use promql_parser::util::{ExprVisitor, walk_expr};
    use thanos_fanout::proto::thanos::label_matcher::Type;
    struct Collect(Vec<Vec<labelset::Matcher>>);
    impl ExprVisitor for Collect {
        type Error = String;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
            if let Expr::VectorSelector(vs) = expr {
                let mut matchers = Vec::new();
                if let Some(name) = &vs.name {
                    matchers.push(eq("__name__", name));
                }
                for m in &vs.matchers.matchers {
                    let t = match m.op {
                        MatchOp::Equal => Type::Eq,
                        MatchOp::NotEqual => Type::Neq,
                        MatchOp::Re(_) => Type::Re,
                        MatchOp::NotRe(_) => Type::Nre,
                    };
                    matchers.push(matcher(t, &m.name, &m.value));
                }
                self.0
                    .push(labelset::compile_all(&matchers).map_err(|e| e.to_string())?);
            }
            Ok(true)
        }
    }
    let expr = parse(query)?;
    let mut collect = Collect(Vec::new());
    walk_expr(&mut collect, &expr)?;
    Ok(collect.0)
}

#[tonic::async_trait]
impl Store for Sidecar {
    type SeriesStream = Frames<SeriesResponse>;

    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        Store::series(&self.store, request).await
    }

    async fn label_names(
        &self,
        request: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        Store::label_names(&self.store, request).await
    }

    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        Store::label_values(&self.store, request).await
    }
}

#[tonic::async_trait]
impl Info for Sidecar {
    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let mut info = self.store.info_response();
        let advertised = self.script.advertised.lock().unwrap().clone();
        let has = |api| advertised.contains(&api);
        info.rules = has(Api::Rules).then_some(RulesInfo {});
        info.targets = has(Api::Targets).then_some(TargetsInfo {});
        info.metric_metadata = has(Api::MetricMetadata).then_some(MetricMetadataInfo {});
        info.exemplars = has(Api::Exemplars).then_some(ExemplarsInfo::default());
        info.status = has(Api::Status).then_some(StatusInfo {});
        Ok(Response::new(info))
    }
}

#[tonic::async_trait]
impl Rules for Sidecar {
    type RulesStream = Frames<RulesResponse>;

    async fn rules(
        &self,
        request: Request<RulesRequest>,
    ) -> Result<Response<Self::RulesStream>, Status> {
        self.script
            .rules_requests
            .lock()
            .unwrap()
            .push(request.get_ref().clone());
        let groups = self
            .rule_groups()
            .into_iter()
            .map(|g| RulesResponse {
                result: Some(rules_response::Result::Group(g)),
            })
            .collect();
        self.reply(&request, groups, |w| RulesResponse {
            result: Some(rules_response::Result::Warning(w)),
        })
    }
}

#[tonic::async_trait]
impl Targets for Sidecar {
    type TargetsStream = Frames<TargetsResponse>;

    async fn targets(
        &self,
        request: Request<TargetsRequest>,
    ) -> Result<Response<Self::TargetsStream>, Status> {
        let discovery = TargetDiscovery {
            active_targets: vec![ActiveTarget {
                discovered_labels: Self::zset(
                    self.with_external(&from_pairs([("__address__", "localhost:9090")])),
                ),
                labels: Self::zset(self.with_external(&from_pairs([
                    ("instance", "localhost:9090"),
                    ("job", "prometheus"),
                ]))),
                scrape_pool: "prometheus".into(),
                scrape_url: "http://localhost:9090/metrics".into(),
                health: TargetHealth::Up as i32,
                last_scrape: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            dropped_targets: vec![DroppedTarget {
                discovered_labels: Self::zset(
                    self.with_external(&from_pairs([("__address__", "dropped:1")])),
                ),
            }],
        };
        let frames = vec![TargetsResponse {
            result: Some(targets_response::Result::Targets(discovery)),
        }];
        self.reply(&request, frames, |w| TargetsResponse {
            result: Some(targets_response::Result::Warning(w)),
        })
    }
}

#[tonic::async_trait]
impl Metadata for Sidecar {
    type MetricMetadataStream = Frames<MetricMetadataResponse>;

    async fn metric_metadata(
        &self,
        request: Request<MetricMetadataRequest>,
    ) -> Result<Response<Self::MetricMetadataStream>, Status> {
        let cluster = value(&self.holdings.external, "cluster").to_owned();
        let metadata = MetricMetadata {
            metadata: [
                ("up".to_owned(), "gauge", "Whether the target is up."),
                (format!("only_in_{cluster}"), "counter", "Local."),
            ]
            .into_iter()
            .map(|(name, kind, help)| {
                (
                    name,
                    MetricMetadataEntry {
                        metas: vec![Meta {
                            r#type: kind.into(),
                            help: help.into(),
                            unit: String::new(),
                        }],
                    },
                )
            })
            .collect(),
        };
        let frames = vec![MetricMetadataResponse {
            result: Some(metric_metadata_response::Result::Metadata(metadata)),
        }];
        self.reply(&request, frames, |w| MetricMetadataResponse {
            result: Some(metric_metadata_response::Result::Warning(w)),
        })
    }
}

#[tonic::async_trait]
impl Exemplars for Sidecar {
    type ExemplarsStream = Frames<ExemplarsResponse>;

    async fn exemplars(
        &self,
        request: Request<ExemplarsRequest>,
    ) -> Result<Response<Self::ExemplarsStream>, Status> {
        self.script
            .exemplar_queries
            .lock()
            .unwrap()
            .push(request.get_ref().query.clone());
        let frames = self
            .exemplars(&request.get_ref().query)?
            .into_iter()
            .map(|data| ExemplarsResponse {
                result: Some(exemplars_response::Result::Data(data)),
            })
            .collect();
        self.reply(&request, frames, |w| ExemplarsResponse {
            result: Some(exemplars_response::Result::Warning(w)),
        })
    }
}

#[tonic::async_trait]
impl StatusService for Sidecar {
    type TSDBStatisticsStream = Frames<TsdbStatisticsResponse>;

    async fn tsdb_statistics(
        &self,
        request: Request<TsdbStatisticsRequest>,
    ) -> Result<Response<Self::TSDBStatisticsStream>, Status> {
        let series = self.store.dataset().series.len() as u64;
        let entry = TsdbStatisticsEntry {
            head_statistics: Some(HeadStatistics {
                num_series: series,
                num_label_pairs: 3,
                chunk_count: series as i64,
                min_time: self.store.dataset().min_time,
                max_time: self.store.dataset().max_time,
            }),
            series_count_by_metric_name: vec![Statistic {
                name: "up".into(),
                value: series,
            }],
            ..Default::default()
        };
        let frames = vec![TsdbStatisticsResponse {
            result: Some(tsdb_statistics_response::Result::Statistics(
                TsdbStatistics {
                    statistics: [(String::new(), entry)].into_iter().collect(),
                },
            )),
        }];
        self.reply(&request, frames, |w| TsdbStatisticsResponse {
            result: Some(tsdb_statistics_response::Result::Warning(w)),
        })
    }
}

/// A running fake sidecar; stops when dropped.
struct SidecarHandle {
    addr: std::net::SocketAddr,
    script: Arc<SidecarScript>,
    _stop: oneshot::Sender<()>,
}

/// A sidecar for `external` labels holding `rule_groups` groups and one
/// exemplar series per metric name in `exemplar_metrics`, offering every API.
async fn start_sidecar(
    external: &[(&str, &str)],
    rule_groups: usize,
    exemplar_metrics: &[&str],
) -> SidecarHandle {
    let data = dataset(
        external,
        vec![series(&[("__name__", "up")], samples(0, MINUTE, |_| 1.0))],
    );
    let holdings = Holdings {
        external: from_pairs(external.iter().copied()),
        rule_groups,
        exemplar_series: exemplar_metrics
            .iter()
            .map(|name| {
                (
                    from_pairs([("__name__", *name), ("job", "api")]),
                    vec![Exemplar {
                        labels: Some(ZLabelSet {
                            labels: from_pairs([("trace_id", "abc123")]),
                        }),
                        value: 1.0,
                        ts: 30_000,
                    }],
                )
            })
            .collect(),
    };
    let sidecar = Sidecar {
        store: SyntheticStore::new(data).with_capabilities(Capabilities::default()),
        holdings: Arc::new(holdings),
        script: Arc::new(SidecarScript {
            advertised: Mutex::new(Api::ALL.to_vec()),
            ..Default::default()
        }),
    };
    let script = sidecar.script.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .add_service(synthetic::info_server(sidecar.clone()))
        .add_service(synthetic::store_server(sidecar.clone()))
        .add_service(RulesServer::new(sidecar.clone()))
        .add_service(TargetsServer::new(sidecar.clone()))
        .add_service(MetadataServer::new(sidecar.clone()))
        .add_service(ExemplarsServer::new(sidecar.clone()))
        .add_service(StatusServer::new(sidecar));
    tokio::spawn(router.serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        async {
            let _ = stopped.await;
        },
    ));
    SidecarHandle {
        addr,
        script,
        _stop: stop,
    }
}

fn channel(running: &Running) -> Channel {
    Channel::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect_lazy()
}

/// Items and warnings of one answer.
#[derive(Debug)]
struct Collected<T> {
    items: Vec<T>,
    warnings: Vec<String>,
}

/// Reads a whole answer, splitting items from warnings with `split`.
async fn collect<R, T>(
    stream: Result<Response<tonic::Streaming<R>>, Status>,
    split: fn(R) -> Result<T, String>,
) -> Result<Collected<T>, Status> {
    let mut stream = stream?.into_inner();
    let mut collected = Collected {
        items: Vec::new(),
        warnings: Vec::new(),
    };
    while let Some(frame) = stream.message().await? {
        match split(frame) {
            Ok(item) => collected.items.push(item),
            Err(warning) => collected.warnings.push(warning),
        }
    }
    Ok(collected)
}

fn rules_split(r: RulesResponse) -> Result<RuleGroup, String> {
    match r.result {
        Some(rules_response::Result::Group(g)) => Ok(g),
        Some(rules_response::Result::Warning(w)) => Err(w),
        None => Err("empty frame".into()),
    }
}

async fn rules(
    running: &Running,
    strategy: PartialResponseStrategy,
) -> Result<Collected<RuleGroup>, Status> {
    let mut client = RulesClient::new(channel(running));
    let request = RulesRequest {
        partial_response_strategy: strategy as i32,
        ..Default::default()
    };
    collect(client.rules(request).await, rules_split).await
}

/// The value of external label `name` on a rule group's first rule.
fn group_cluster(group: &RuleGroup) -> String {
    match &group.rules[0].result {
        Some(rule::Result::Recording(r)) => value(&r.labels.as_ref().unwrap().labels, "cluster"),
        Some(rule::Result::Alert(a)) => value(&a.labels.as_ref().unwrap().labels, "cluster"),
        None => "",
    }
    .to_owned()
}

async fn info(running: &Running) -> InfoResponse {
    let mut client = InfoClient::new(channel(running));
    client.info(InfoRequest {}).await.unwrap().into_inner()
}

#[tokio::test]
async fn info_advertises_each_api_while_a_remote_offers_it() {
    // A store-only remote: nothing but the StoreAPI is offered.
    let store = up_remote("s", None).await;
    let sidecar = start_sidecar(&[("cluster", "a")], 1, &[]).await;
    sidecar.script.advertised.lock().unwrap().clear();
    let running = start_fanout(config(vec![
        remote("s", store.addr, None),
        remote("a", sidecar.addr, None),
    ]))
    .await;
    let offered = |i: &InfoResponse| {
        [
            i.rules.is_some(),
            i.targets.is_some(),
            i.metric_metadata.is_some(),
            i.exemplars.is_some(),
            i.status.is_some(),
        ]
    };
    assert_eq!(offered(&info(&running).await), [false; 5]);

    // The sidecar starts offering rules and exemplars: so do we, after its
    // next Info poll.
    *sidecar.script.advertised.lock().unwrap() = vec![Api::Rules, Api::Exemplars];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while offered(&info(&running).await) != [true, false, false, true, false] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rules and exemplars never advertised"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    *sidecar.script.advertised.lock().unwrap() = Api::ALL.to_vec();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while offered(&info(&running).await) != [true; 5] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "all APIs never advertised"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And stops when the remote stops.
    sidecar.script.advertised.lock().unwrap().clear();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while offered(&info(&running).await) != [false; 5] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "APIs still advertised"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The StoreAPI and the label sets are unaffected throughout.
    let now = info(&running).await;
    assert!(now.store.is_some());
    assert_eq!(now.label_sets.len(), 2);
}

#[tokio::test]
async fn every_api_answers_from_every_remote_offering_it() {
    let a0 = start_sidecar(
        &[("cluster", "a"), ("replica", "0")],
        3,
        &["requests_total"],
    )
    .await;
    let a1 = start_sidecar(
        &[("cluster", "a"), ("replica", "1")],
        3,
        &["requests_total"],
    )
    .await;
    let b = start_sidecar(&[("cluster", "b")], 2, &["requests_total"]).await;
    // A store gateway offers none of these and must not be called for them.
    let store = up_remote("s", None).await;
    let running = start_fanout(config(vec![
        RemoteConfig {
            targets: vec![a0.addr.to_string(), a1.addr.to_string()],
            ..remote("a", a0.addr, None)
        },
        remote("b", b.addr, None),
        remote("s", store.addr, None),
    ]))
    .await;

    // Rules: every group of every replica, external and replica labels kept
    // (the querier on top deduplicates by them).
    let got = rules(&running, PartialResponseStrategy::Warn)
        .await
        .unwrap();
    assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    assert_eq!(got.items.len(), 3 + 3 + 2);
    let mut replicas: Vec<String> = got
        .items
        .iter()
        .map(|g| match &g.rules[1].result {
            Some(rule::Result::Alert(a)) => {
                let labels = &a.labels.as_ref().unwrap().labels;
                format!("{}/{}", value(labels, "cluster"), value(labels, "replica"))
            }
            other => panic!("second rule is not the alert: {other:?}"),
        })
        .collect();
    replicas.sort();
    assert_eq!(
        replicas,
        ["a/0", "a/0", "a/0", "a/1", "a/1", "a/1", "b/", "b/"]
    );
    let group = &got.items[0];
    assert_eq!(group.file, "/etc/prometheus/rules.yaml");
    assert!(group.last_evaluation.is_some());
    match &group.rules[1].result {
        Some(rule::Result::Alert(a)) => {
            assert_eq!(a.state, AlertState::Firing as i32);
            assert_eq!(a.alerts.len(), 1);
            assert_eq!(a.alerts[0].active_at.unwrap().seconds, 1_700_000_000);
        }
        other => panic!("{other:?}"),
    }

    // Targets: one discovery per sidecar.
    let mut client = TargetsClient::new(channel(&running));
    let got = collect(
        client.targets(TargetsRequest::default()).await,
        |r| match r.result {
            Some(targets_response::Result::Targets(t)) => Ok(t),
            Some(targets_response::Result::Warning(w)) => Err(w),
            None => Err("empty".into()),
        },
    )
    .await
    .unwrap();
    assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    let mut clusters: Vec<String> = got
        .items
        .iter()
        .map(|t| {
            value(
                &t.active_targets[0].labels.as_ref().unwrap().labels,
                "cluster",
            )
            .to_owned()
        })
        .collect();
    clusters.sort();
    assert_eq!(clusters, ["a", "a", "b"]);
    assert!(got.items.iter().all(|t| t.dropped_targets.len() == 1));

    // Metadata: each sidecar's map.
    let mut client = MetadataClient::new(channel(&running));
    let got = collect(
        client
            .metric_metadata(MetricMetadataRequest {
                limit: -1,
                ..Default::default()
            })
            .await,
        |r| match r.result {
            Some(metric_metadata_response::Result::Metadata(m)) => Ok(m),
            Some(metric_metadata_response::Result::Warning(w)) => Err(w),
            None => Err("empty".into()),
        },
    )
    .await
    .unwrap();
    let mut names: Vec<String> = got
        .items
        .iter()
        .flat_map(|m| m.metadata.keys().cloned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["only_in_a", "only_in_a", "only_in_b", "up", "up", "up"]
    );

    // Status: each sidecar's statistics under "".
    let mut client = StatusClient::new(channel(&running));
    let got = collect(
        client
            .tsdb_statistics(TsdbStatisticsRequest {
                limit: 10,
                ..Default::default()
            })
            .await,
        |r| match r.result {
            Some(tsdb_statistics_response::Result::Statistics(s)) => Ok(s),
            Some(tsdb_statistics_response::Result::Warning(w)) => Err(w),
            None => Err("empty".into()),
        },
    )
    .await
    .unwrap();
    assert_eq!(got.items.len(), 3);
    assert!(
        got.items
            .iter()
            .all(|s| s.statistics[""].head_statistics.unwrap().num_series == 1)
    );

    // Exemplars across all clusters.
    let got = exemplars(&running, "requests_total").await.unwrap();
    assert_eq!(got.items.len(), 3);

    // Only the sidecars were called, once per API each (the store gateway
    // advertises none of these).
    for sidecar in [&a0, &a1, &b] {
        assert_eq!(sidecar.script.calls.load(Ordering::SeqCst), 5);
    }
    let (_, metrics) = crate::info::http_get(running.http_addr, "/metrics").await;
    for method in [
        "Rules",
        "Targets",
        "MetricMetadata",
        "Exemplars",
        "TSDBStatistics",
    ] {
        for remote in ["a", "b"] {
            let want = if remote == "a" { 2 } else { 1 };
            let line = format!(
                r#"thanos_fanout_remote_calls_total{{remote="{remote}",method="{method}",outcome="Success"}} {want}"#
            );
            assert!(metrics.contains(&line), "no {line} in\n{metrics}");
        }
        let line = format!(r#"thanos_fanout_requests_total{{method="{method}",code="Ok"}} 1"#);
        assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    }
}

async fn exemplars(running: &Running, query: &str) -> Result<Collected<ExemplarData>, Status> {
    let mut client = ExemplarsClient::new(channel(running));
    let request = ExemplarsRequest {
        query: query.into(),
        start: 0,
        end: MINUTE,
        ..Default::default()
    };
    collect(client.exemplars(request).await, |r| match r.result {
        Some(exemplars_response::Result::Data(d)) => Ok(d),
        Some(exemplars_response::Result::Warning(w)) => Err(w),
        None => Err("empty".into()),
    })
    .await
}

#[tokio::test]
async fn exemplars_are_routed_by_external_labels() {
    let a = start_sidecar(&[("cluster", "a")], 0, &["requests_total", "errors_total"]).await;
    let b = start_sidecar(&[("cluster", "b")], 0, &["requests_total"]).await;
    let running = start_fanout(config(vec![
        remote("a", a.addr, None),
        remote("b", b.addr, None),
    ]))
    .await;

    // The querier on top keeps cluster="a" in the query, since we present
    // ourselves as a querier: only a is asked, without the matcher its
    // Prometheus could not satisfy.
    let got = exemplars(
        &running,
        r#"rate(requests_total{cluster="a", job="api"}[5m])"#,
    )
    .await
    .unwrap();
    assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    assert_eq!(got.items.len(), 1);
    let labels = &got.items[0].series_labels.as_ref().unwrap().labels;
    assert_eq!(value(labels, "cluster"), "a");
    assert_eq!(value(labels, "__name__"), "requests_total");
    assert_eq!(got.items[0].exemplars.len(), 1);
    assert_eq!(b.script.calls.load(Ordering::SeqCst), 0, "b was asked");
    assert_eq!(
        a.script.exemplar_queries.lock().unwrap().as_slice(),
        [r#"{__name__="requests_total", job="api"}"#]
    );

    // Selectors for different clusters in one query: each gets its own.
    let got = exemplars(
        &running,
        r#"requests_total{cluster="b"} / on() errors_total{cluster=~"a|c"}"#,
    )
    .await
    .unwrap();
    let mut found: Vec<String> = got
        .items
        .iter()
        .map(|d| {
            let l = &d.series_labels.as_ref().unwrap().labels;
            format!("{}@{}", value(l, "__name__"), value(l, "cluster"))
        })
        .collect();
    found.sort();
    assert_eq!(found, ["errors_total@a", "requests_total@b"]);
    assert_eq!(
        b.script.exemplar_queries.lock().unwrap().as_slice(),
        [r#"{__name__="requests_total"}"#]
    );

    // No cluster in the query: everyone.
    let got = exemplars(&running, "requests_total").await.unwrap();
    assert_eq!(got.items.len(), 2);

    // A query that does not parse is the caller's error.
    let err = exemplars(&running, "rate(requests_total[5m]")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
}

#[tokio::test]
async fn a_failing_remote_is_a_warning_under_warn_and_aborts_under_abort() {
    let a = start_sidecar(&[("cluster", "a")], 2, &[]).await;
    let b = start_sidecar(&[("cluster", "b")], 2, &[]).await;
    let running = start_fanout(config(vec![
        remote("a", a.addr, None),
        remote("b", b.addr, None),
    ]))
    .await;
    *b.script.reply.lock().unwrap() =
        Reply::Fail(tonic::Code::Unavailable, "prometheus is down".into());

    let got = rules(&running, PartialResponseStrategy::Warn)
        .await
        .unwrap();
    assert_eq!(got.items.len(), 2, "a's groups");
    assert!(got.items.iter().all(|g| group_cluster(g) == "a"));
    assert_eq!(got.warnings.len(), 1, "{:?}", got.warnings);
    let warning = &got.warnings[0];
    assert!(
        warning.starts_with(&format!("remote b ({})", b.addr))
            && warning.contains("prometheus is down"),
        "{warning}"
    );

    // ABORT: the call fails naming b, and a's call, still open, is
    // cancelled.
    *a.script.reply.lock().unwrap() = Reply::Hang;
    let err = rules(&running, PartialResponseStrategy::Abort)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted);
    assert!(
        err.message().contains("remote b") && err.message().contains("prometheus is down"),
        "{err}"
    );
    eventually("a's call cancelled", Duration::from_secs(2), || {
        a.script.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;

    // A remote's own warning is passed on under ABORT too, naming it.
    *a.script.reply.lock().unwrap() = Reply::WarnThenData("rule manager not ready".into());
    *b.script.reply.lock().unwrap() = Reply::Data;
    let got = rules(&running, PartialResponseStrategy::Abort)
        .await
        .unwrap();
    assert_eq!(got.items.len(), 4);
    assert_eq!(
        got.warnings,
        [format!("remote a ({}): rule manager not ready", a.addr)]
    );
}

#[tokio::test]
async fn an_unhealthy_remote_is_reported_not_called() {
    let a = start_sidecar(&[("cluster", "a")], 1, &[]).await;
    let mut down = up_remote("b", None).await;
    let down_addr = down.addr;
    let running = start_fanout(config(vec![
        remote("a", a.addr, None),
        remote("b", down_addr, None),
    ]))
    .await;
    down.stop().await;
    eventually("b unhealthy", Duration::from_secs(5), || {
        running
            .upstreams
            .endpoints()
            .iter()
            .any(|e| e.address == down_addr.to_string() && !e.state().healthy)
    })
    .await;
    // b never offered targets: nothing to report for them.
    let mut client = TargetsClient::new(channel(&running));
    let got = collect(
        client.targets(TargetsRequest::default()).await,
        |r| match r.result {
            Some(targets_response::Result::Targets(t)) => Ok(t),
            Some(targets_response::Result::Warning(w)) => Err(w),
            None => Err("empty".into()),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (got.items.len(), got.warnings.len()),
        (1, 0),
        "{:?}",
        got.warnings
    );

    // A sidecar that goes down is reported for the APIs it offered.
    let b = start_sidecar(&[("cluster", "b")], 1, &[]).await;
    let running = start_fanout(config(vec![
        remote("a", a.addr, None),
        remote("b", b.addr, None),
    ]))
    .await;
    let b_addr = b.addr;
    drop(b);
    eventually("b unhealthy", Duration::from_secs(5), || {
        running
            .upstreams
            .endpoints()
            .iter()
            .any(|e| e.address == b_addr.to_string() && !e.state().healthy)
    })
    .await;
    let got = rules(&running, PartialResponseStrategy::Warn)
        .await
        .unwrap();
    assert_eq!(got.items.len(), 1);
    assert_eq!(got.warnings.len(), 1);
    assert!(
        got.warnings[0].starts_with(&format!("remote b ({b_addr}): not queried")),
        "{}",
        got.warnings[0]
    );
    let err = rules(&running, PartialResponseStrategy::Abort)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "{err}");
}

#[tokio::test]
async fn a_silent_remote_times_out_and_a_cancelled_call_stops_the_remotes() {
    let a = start_sidecar(&[("cluster", "a")], 2, &[]).await;
    let b = start_sidecar(&[("cluster", "b")], 2, &[]).await;
    let mut slow = remote("b", b.addr, None);
    slow.timeout = Duration::from_millis(300);
    let running = start_fanout(config(vec![remote("a", a.addr, None), slow])).await;

    // b sends its groups and then nothing: what it sent is kept, and the
    // warning says how long it was silent.
    *b.script.reply.lock().unwrap() = Reply::DataThenHang;
    let started = std::time::Instant::now();
    let got = rules(&running, PartialResponseStrategy::Warn)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(got.items.len(), 4);
    assert_eq!(
        got.warnings,
        [format!(
            "remote b ({}): sent nothing for 0.3s (its timeout) after 2 rule groups; the rest of its answer is missing",
            b.addr
        )]
    );

    // The caller goes away in the middle: both remote calls end.
    *a.script.reply.lock().unwrap() = Reply::Hang;
    *b.script.reply.lock().unwrap() = Reply::Hang;
    let mut client = RulesClient::new(channel(&running));
    let request = tonic::Request::new(RulesRequest::default());
    let stream = client.rules(request).await.unwrap().into_inner();
    eventually("both remotes called", Duration::from_secs(2), || {
        a.script.calls.load(Ordering::SeqCst) == 2 && b.script.calls.load(Ordering::SeqCst) == 2
    })
    .await;
    drop(stream);
    eventually("a's call cancelled", Duration::from_secs(2), || {
        a.script.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;

    // The caller's deadline bounds the call even within the remote's timeout.
    let mut patient = RulesClient::new(channel(&running));
    let mut request = tonic::Request::new(RulesRequest::default());
    request.set_timeout(Duration::from_millis(200));
    *b.script.reply.lock().unwrap() = Reply::Data;
    let started = std::time::Instant::now();
    let result = collect(patient.rules(request).await, rules_split).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    match result {
        // Our own answer: b's groups and a warning about a.
        Ok(got) => assert!(
            got.warnings
                .iter()
                .any(|w| w.contains("remote a") && w.contains("deadline")),
            "{got:?}"
        ),
        // Or the client's deadline fired first.
        Err(status) => assert_eq!(status.code(), tonic::Code::DeadlineExceeded),
    }
}

#[tokio::test]
async fn tenant_and_request_id_are_forwarded() {
    let a = start_sidecar(&[("cluster", "a")], 1, &["requests_total"]).await;
    let running = start_fanout(config(vec![remote("a", a.addr, None)])).await;
    let mut client = RulesClient::new(channel(&running));
    let mut request = tonic::Request::new(RulesRequest::default());
    request
        .metadata_mut()
        .insert("thanos-tenant", "team-x".parse().unwrap());
    request
        .metadata_mut()
        .insert("request-id", "req-42".parse().unwrap());
    collect(client.rules(request).await, rules_split)
        .await
        .unwrap();
    assert_eq!(
        a.script.metadata.lock().unwrap().as_slice(),
        [("team-x".to_owned(), "req-42".to_owned())]
    );
    // The request itself arrives unchanged.
    let mut client = RulesClient::new(channel(&running));
    let sent = RulesRequest {
        r#type: 1,
        partial_response_strategy: PartialResponseStrategy::Abort as i32,
        matcher_string: vec![r#"{severity="page"}"#.into()],
        rule_name: vec!["AlwaysFiring".into()],
        rule_group: vec!["group-0".into()],
        file: vec!["/etc/prometheus/rules.yaml".into()],
    };
    collect(client.rules(sent.clone()).await, rules_split)
        .await
        .unwrap();
    assert_eq!(a.script.rules_requests.lock().unwrap().last(), Some(&sent));
}

/// Many callers at once, each reading large answers, one of them reading
/// slowly: every answer is complete and the slow one holds no one up.
#[tokio::test]
async fn concurrent_large_answers_and_a_slow_reader() {
    const GROUPS: usize = 3_000;
    let a = start_sidecar(&[("cluster", "a")], GROUPS, &[]).await;
    let b = start_sidecar(&[("cluster", "b")], GROUPS, &[]).await;
    let running = Arc::new(
        start_fanout(config(vec![
            remote("a", a.addr, None),
            remote("b", b.addr, None),
        ]))
        .await,
    );
    // The slow reader takes one frame, then waits.
    let mut slow = RulesClient::new(channel(&running));
    let mut slow_stream = slow
        .rules(RulesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(slow_stream.message().await.unwrap().is_some());

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let running = running.clone();
        calls.spawn(async move {
            let got = rules(&running, PartialResponseStrategy::Abort)
                .await
                .unwrap();
            let a = got.items.iter().filter(|g| group_cluster(g) == "a").count();
            (a, got.items.len() - a)
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(60), calls.join_all())
        .await
        .expect("the other calls finish while one reader is stalled");
    assert!(
        all.iter().all(|&counts| counts == (GROUPS, GROUPS)),
        "{all:?}"
    );

    // The slow reader still gets everything.
    let mut read = 1;
    while let Some(frame) = slow_stream.message().await.unwrap() {
        assert!(rules_split(frame).is_ok());
        read += 1;
    }
    assert_eq!(read, 2 * GROUPS);
}

/// Rules and exemplars from cluster `a` under ABORT, twice (each replica's
/// turn): whole, without a warning; the exemplars' `replica` label.
async fn answered_whole(running: &Running) -> Vec<String> {
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let got = rules(running, PartialResponseStrategy::Abort)
            .await
            .unwrap();
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);
        assert_eq!(got.items.len(), 2);
        let got = exemplars(running, r#"requests_total{cluster="a"}"#)
            .await
            .unwrap();
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);
        assert_eq!(got.items.len(), 1);
        let labels = &got.items[0].series_labels.as_ref().unwrap().labels;
        replicas.push(value(labels, "replica").to_string());
    }
    replicas
}

/// Two replicas of cluster `a`: two rule groups and `requests_total`
/// exemplars each, told apart by their `replica` label.
async fn replica_pair() -> (SidecarHandle, SidecarHandle) {
    let s0 = start_sidecar(
        &[("cluster", "a"), ("replica", "0")],
        2,
        &["requests_total"],
    )
    .await;
    let s1 = start_sidecar(
        &[("cluster", "a"), ("replica", "1")],
        2,
        &["requests_total"],
    )
    .await;
    (s0, s1)
}

/// `mode: any`: an HA pair of sidecars is asked through one of them, and a
/// sidecar failing before its first frame hands the call to the other.
#[tokio::test]
async fn a_replica_pair_in_any_mode_answers_once_and_hands_over() {
    let (s0, s1) = replica_pair().await;
    let running = start_fanout(config(vec![RemoteConfig {
        targets: vec![s0.addr.to_string(), s1.addr.to_string()],
        mode: thanos_fanout::config::RemoteMode::Any,
        ..remote("a", s0.addr, None)
    }]))
    .await;
    for _ in 0..2 {
        let got = rules(&running, PartialResponseStrategy::Abort)
            .await
            .unwrap();
        assert_eq!(got.items.len(), 2, "one replica's groups");
    }
    let calls = |s: &SidecarHandle| s.script.calls.load(Ordering::SeqCst);
    assert_eq!((calls(&s0), calls(&s1)), (1, 1), "they take turns");

    *s0.script.reply.lock().unwrap() = Reply::Fail(tonic::Code::Unavailable, "restarting".into());
    assert_eq!(answered_whole(&running).await, ["1", "1"]);
}

#[tokio::test]
async fn a_down_replica_in_any_mode_is_silent_while_another_answers() {
    let s0 = start_sidecar(
        &[("cluster", "a"), ("replica", "0")],
        2,
        &["requests_total"],
    )
    .await;
    // Nothing listens there: the replica's Info calls are refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let running = start_fanout(config(vec![RemoteConfig {
        targets: vec![s0.addr.to_string(), dead.to_string()],
        mode: thanos_fanout::config::RemoteMode::Any,
        ..remote("a", s0.addr, None)
    }]))
    .await;
    // Both replicas' turns, each API, under ABORT: answered by the live one.
    assert_eq!(answered_whole(&running).await, ["0", "0"]);
}

#[tokio::test]
async fn streamed_calls_fall_back_before_the_first_frame_and_never_after() {
    let (s0, s1) = replica_pair().await;
    let running = start_fanout(config(vec![RemoteConfig {
        targets: vec![s0.addr.to_string(), s1.addr.to_string()],
        mode: thanos_fanout::config::RemoteMode::Any,
        timeout: Duration::from_millis(500),
        ..remote("a", s0.addr, None)
    }]))
    .await;
    let calls = || s0.script.calls.load(Ordering::SeqCst) + s1.script.calls.load(Ordering::SeqCst);

    // Before the first frame: refused, or silent past the remote's timeout.
    // Concurrent Rules and Exemplars calls, half of them starting on s0, are
    // answered whole by s1 without a warning, under ABORT too.
    for reply in [
        Reply::Fail(tonic::Code::Unavailable, "restarting".into()),
        Reply::Hang,
    ] {
        *s0.script.reply.lock().unwrap() = reply.clone();
        for strategy in [
            PartialResponseStrategy::Warn,
            PartialResponseStrategy::Abort,
        ] {
            let (groups, found) = futures::future::join(
                futures::future::join_all((0..3).map(|_| rules(&running, strategy))),
                futures::future::join_all(
                    (0..3).map(|_| exemplars(&running, r#"requests_total{cluster="a"}"#)),
                ),
            )
            .await;
            for got in groups {
                let got = got.unwrap_or_else(|e| panic!("{reply:?} {strategy:?}: {e}"));
                assert!(got.warnings.is_empty(), "{reply:?}: {:?}", got.warnings);
                assert_eq!(got.items.len(), 2, "{reply:?}: one replica's groups");
                assert!(got.items.iter().all(|g| group_cluster(g) == "a"));
            }
            for got in found {
                let got = got.unwrap_or_else(|e| panic!("{reply:?}: {e}"));
                assert!(got.warnings.is_empty(), "{reply:?}: {:?}", got.warnings);
                assert_eq!(got.items.len(), 1);
                let labels = &got.items[0].series_labels.as_ref().unwrap().labels;
                assert_eq!(value(labels, "replica"), "1");
            }
        }
    }

    // After the first frame: the replica asked keeps the call, its silence
    // is a warning and the other replica is not asked.
    for s in [&s0, &s1] {
        *s.script.reply.lock().unwrap() = Reply::DataThenHang;
    }
    let before = calls();
    let answers =
        futures::future::join_all((0..4).map(|_| rules(&running, PartialResponseStrategy::Warn)))
            .await;
    for got in answers {
        let got = got.unwrap();
        assert_eq!(got.items.len(), 2, "one replica's groups");
        assert_eq!(got.warnings.len(), 1, "{:?}", got.warnings);
        assert!(
            got.warnings[0].contains("sent nothing for 0.5s (its timeout) after 2 rule groups"),
            "{}",
            got.warnings[0]
        );
    }
    assert_eq!(calls() - before, 4, "one remote call per call");
}
