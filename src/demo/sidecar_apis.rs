//! The other APIs of a sidecar, answered by a [`SyntheticStore`] from its
//! data set the way a sidecar answers from its Prometheus: a rule group with
//! a recording rule and a firing alert, one scrape target per job and
//! instance, metadata per metric name, an exemplar per counter series, and
//! TSDB statistics. External labels are added where a sidecar adds them.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;

use futures::Stream;
use prost_types::Timestamp;
use tonic::{Request, Response, Status};

use super::synthetic::SyntheticStore;
use crate::fanout::selectors;
use crate::labelset;
use crate::proto::thanos::exemplars_server::Exemplars;
use crate::proto::thanos::metadata_server::Metadata;
use crate::proto::thanos::rules_server::Rules;
use crate::proto::thanos::status_server::Status as StatusApi;
use crate::proto::thanos::targets_server::Targets;
use crate::proto::thanos::{
    ActiveTarget, Alert, AlertInstance, AlertState, Exemplar, ExemplarData, ExemplarsRequest,
    ExemplarsResponse, HeadStatistics, Label, Meta, MetricMetadata, MetricMetadataEntry,
    MetricMetadataRequest, MetricMetadataResponse, RecordingRule, Rule, RuleGroup, RulesRequest,
    RulesResponse, Statistic, TargetDiscovery, TargetHealth, TargetsRequest, TargetsResponse,
    TsdbStatistics, TsdbStatisticsEntry, TsdbStatisticsRequest, TsdbStatisticsResponse, ZLabelSet,
    exemplars_response, metric_metadata_response, rule, rules_request, rules_response,
    targets_request, targets_response, tsdb_statistics_response,
};

type Answer<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn answer<T: Send + 'static>(frames: Vec<T>) -> Result<Response<Answer<T>>, Status> {
    Ok(Response::new(Box::pin(tokio_stream::iter(
        frames.into_iter().map(Ok),
    ))))
}

fn zset(labels: Vec<Label>) -> Option<ZLabelSet> {
    Some(ZLabelSet { labels })
}

fn timestamp(ms: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

impl SyntheticStore {
    /// `labels` plus the external labels, which win (as on a sidecar).
    fn external(&self, labels: &[(&str, &str)]) -> Vec<Label> {
        let external = &self.dataset().external_labels;
        let mut all: Vec<Label> = labelset::from_pairs(labels.iter().copied())
            .into_iter()
            .filter(|l| !external.iter().any(|e| e.name == l.name))
            .chain(external.iter().cloned())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn metric_names(&self) -> BTreeSet<&str> {
        self.dataset()
            .series
            .iter()
            .map(|s| labelset_value(&s.labels, "__name__"))
            .collect()
    }
}

fn labelset_value<'a>(labels: &'a [Label], name: &str) -> &'a str {
    labels
        .iter()
        .find(|l| l.name == name)
        .map_or("", |l| l.value.as_str())
}

#[tonic::async_trait]
impl Rules for SyntheticStore {
    type RulesStream = Answer<RulesResponse>;

    async fn rules(
        &self,
        request: Request<RulesRequest>,
    ) -> Result<Response<Self::RulesStream>, Status> {
        let kind = request.into_inner().r#type;
        let evaluated = timestamp(self.dataset().max_time);
        let recording = Rule {
            result: Some(rule::Result::Recording(RecordingRule {
                name: "job:demo_http_requests:rate5m".into(),
                query: "sum by (job) (rate(demo_http_requests_total[5m]))".into(),
                labels: zset(self.external(&[])),
                health: "ok".into(),
                last_evaluation: evaluated,
                ..Default::default()
            })),
        };
        let alert = Rule {
            result: Some(rule::Result::Alert(Alert {
                state: AlertState::Firing as i32,
                name: "DemoErrorsPresent".into(),
                query: r#"sum by (job) (rate(demo_http_requests_total{code="500"}[5m])) > 0"#
                    .into(),
                duration_seconds: 300.0,
                labels: zset(self.external(&[("severity", "warning")])),
                annotations: zset(labelset::from_pairs([(
                    "summary",
                    "The demo API answers some requests with 500.",
                )])),
                alerts: vec![AlertInstance {
                    labels: zset(labelset::from_pairs([
                        ("alertname", "DemoErrorsPresent"),
                        ("job", "api"),
                        ("severity", "warning"),
                    ])),
                    state: AlertState::Firing as i32,
                    active_at: timestamp(self.dataset().min_time),
                    value: "1e+00".into(),
                    ..Default::default()
                }],
                health: "ok".into(),
                last_evaluation: evaluated,
                ..Default::default()
            })),
        };
        let rules = match rules_request::Type::try_from(kind) {
            Ok(rules_request::Type::Alert) => vec![alert],
            Ok(rules_request::Type::Record) => vec![recording],
            _ => vec![recording, alert],
        };
        answer(vec![RulesResponse {
            result: Some(rules_response::Result::Group(RuleGroup {
                name: "demo".into(),
                file: "/etc/prometheus/rules/demo.yaml".into(),
                rules,
                interval: 15.0,
                last_evaluation: evaluated,
                ..Default::default()
            })),
        }])
    }
}

#[tonic::async_trait]
impl Targets for SyntheticStore {
    type TargetsStream = Answer<TargetsResponse>;

    async fn targets(
        &self,
        request: Request<TargetsRequest>,
    ) -> Result<Response<Self::TargetsStream>, Status> {
        let state = request.into_inner().state;
        let jobs: BTreeSet<(&str, &str)> = self
            .dataset()
            .series
            .iter()
            .map(|s| {
                let instance = labelset_value(&s.labels, "instance");
                let instance = if instance.is_empty() {
                    labelset_value(&s.labels, "job")
                } else {
                    instance
                };
                (labelset_value(&s.labels, "job"), instance)
            })
            .collect();
        let active = jobs
            .into_iter()
            .map(|(job, instance)| {
                let address = format!("{instance}:8080");
                ActiveTarget {
                    discovered_labels: zset(self.external(&[
                        ("__address__", &address),
                        ("__metrics_path__", "/metrics"),
                        ("__scheme__", "http"),
                        ("job", job),
                    ])),
                    labels: zset(self.external(&[("instance", &address), ("job", job)])),
                    scrape_pool: job.into(),
                    scrape_url: format!("http://{address}/metrics"),
                    last_scrape: timestamp(self.dataset().max_time),
                    last_scrape_duration: 0.003,
                    health: TargetHealth::Up as i32,
                    ..Default::default()
                }
            })
            .collect();
        let discovery = match targets_request::State::try_from(state) {
            Ok(targets_request::State::Dropped) => TargetDiscovery::default(),
            _ => TargetDiscovery {
                active_targets: active,
                dropped_targets: Vec::new(),
            },
        };
        answer(vec![TargetsResponse {
            result: Some(targets_response::Result::Targets(discovery)),
        }])
    }
}

#[tonic::async_trait]
impl Metadata for SyntheticStore {
    type MetricMetadataStream = Answer<MetricMetadataResponse>;

    async fn metric_metadata(
        &self,
        request: Request<MetricMetadataRequest>,
    ) -> Result<Response<Self::MetricMetadataStream>, Status> {
        let req = request.into_inner();
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        let metadata = self
            .metric_names()
            .into_iter()
            .filter(|name| req.metric.is_empty() || *name == req.metric)
            .take(limit)
            .map(|name| {
                let kind = if name.ends_with("_total") {
                    "counter"
                } else {
                    "gauge"
                };
                let meta = Meta {
                    r#type: kind.into(),
                    help: format!("Demo {kind} {name}."),
                    unit: String::new(),
                };
                (name.to_owned(), MetricMetadataEntry { metas: vec![meta] })
            })
            .collect();
        answer(vec![MetricMetadataResponse {
            result: Some(metric_metadata_response::Result::Metadata(MetricMetadata {
                metadata,
            })),
        }])
    }
}

#[tonic::async_trait]
impl Exemplars for SyntheticStore {
    type ExemplarsStream = Answer<ExemplarsResponse>;

    async fn exemplars(
        &self,
        request: Request<ExemplarsRequest>,
    ) -> Result<Response<Self::ExemplarsStream>, Status> {
        let req = request.into_inner();
        let selected = selectors::parse(&req.query).map_err(Status::invalid_argument)?;
        let frames = self
            .dataset()
            .series
            .iter()
            .filter(|s| labelset_value(&s.labels, "__name__").ends_with("_total"))
            .filter(|s| selected.iter().any(|sel| sel.selects(&s.labels)))
            .filter_map(|s| {
                let last = s.chunks.last()?.max_time;
                (req.start <= last && last <= req.end).then(|| {
                    let trace = format!(
                        "{:016x}",
                        xxhash_rust::xxh64::xxh64(
                            labelset::Display(&s.labels).to_string().as_bytes(),
                            0,
                        )
                    );
                    ExemplarData {
                        series_labels: zset(s.labels.clone()),
                        exemplars: vec![Exemplar {
                            labels: zset(labelset::from_pairs([("trace_id", trace.as_str())])),
                            value: 1.0,
                            ts: last,
                        }],
                    }
                })
            })
            .map(|data| ExemplarsResponse {
                result: Some(exemplars_response::Result::Data(data)),
            })
            .collect();
        answer(frames)
    }
}

#[tonic::async_trait]
impl StatusApi for SyntheticStore {
    type TSDBStatisticsStream = Answer<TsdbStatisticsResponse>;

    async fn tsdb_statistics(
        &self,
        request: Request<TsdbStatisticsRequest>,
    ) -> Result<Response<Self::TSDBStatisticsStream>, Status> {
        let req = request.into_inner();
        let matchers = labelset::compile_all(&req.matchers)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let data = self.dataset();
        // Like a sidecar: matchers are checked against the external labels
        // only (others read as ""), and a miss is an empty answer.
        if !labelset::matches_series(&matchers, &data.external_labels) {
            return answer(vec![TsdbStatisticsResponse {
                result: Some(tsdb_statistics_response::Result::Statistics(
                    TsdbStatistics::default(),
                )),
            }]);
        }
        let limit = usize::try_from(req.limit.max(1)).unwrap_or(10);
        let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
        let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut pairs: BTreeMap<String, u64> = BTreeMap::new();
        for series in &data.series {
            *by_name
                .entry(labelset_value(&series.labels, "__name__").to_owned())
                .or_default() += 1;
            for l in &series.labels {
                values
                    .entry(l.name.clone())
                    .or_default()
                    .insert(l.value.clone());
                *pairs.entry(format!("{}={}", l.name, l.value)).or_default() += 1;
            }
        }
        let top = |counts: BTreeMap<String, u64>| {
            let mut list: Vec<Statistic> = counts
                .into_iter()
                .map(|(name, value)| Statistic { name, value })
                .collect();
            list.sort_by(|a, b| b.value.cmp(&a.value).then_with(|| a.name.cmp(&b.name)));
            list.truncate(limit);
            list
        };
        let label_pairs = pairs.len() as i64;
        let entry = TsdbStatisticsEntry {
            head_statistics: Some(HeadStatistics {
                num_series: data.series.len() as u64,
                num_label_pairs: label_pairs,
                chunk_count: data.series.iter().map(|s| s.chunks.len() as i64).sum(),
                min_time: data.min_time,
                max_time: data.max_time,
            }),
            series_count_by_metric_name: top(by_name),
            label_value_count_by_label_name: top(values
                .into_iter()
                .map(|(name, set)| (name, set.len() as u64))
                .collect()),
            memory_in_bytes_by_label_name: Vec::new(),
            series_count_by_label_value_pair: top(pairs),
        };
        answer(vec![TsdbStatisticsResponse {
            result: Some(tsdb_statistics_response::Result::Statistics(
                TsdbStatistics {
                    statistics: [(String::new(), entry)].into_iter().collect(),
                },
            )),
        }])
    }
}
