//! A synthetic remote StoreAPI server over an in-memory data set of real XOR
//! chunks, behaving like a sidecar (external labels on every series, sorted
//! output, `without_replica_labels`, sharding, `limit`, batches; the other
//! sidecar APIs are in `sidecar_apis`). The demo runs three of them; tests
//! wrap them to inject faults.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding::{Gzip, Zstd};
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use xxhash_rust::xxh64::xxh64;

use crate::demo::chunkenc::{self, ChunkError, SAMPLES_PER_CHUNK};
use crate::fanout::shard::ShardMatcher;
use crate::labelset::{self, Matcher};
use crate::proto::MAX_MESSAGE_SIZE;
use crate::proto::thanos::exemplars_server::ExemplarsServer;
use crate::proto::thanos::info::info_server::{Info, InfoServer};
use crate::proto::thanos::info::{
    ExemplarsInfo, InfoRequest, InfoResponse, MetricMetadataInfo, RulesInfo, StatusInfo, StoreInfo,
    TargetsInfo, TsdbInfo,
};
use crate::proto::thanos::metadata_server::MetadataServer;
use crate::proto::thanos::rules_server::RulesServer;
use crate::proto::thanos::status_server::StatusServer;
use crate::proto::thanos::store_server::{Store, StoreServer};
use crate::proto::thanos::targets_server::TargetsServer;
use crate::proto::thanos::{
    AggrChunk, Chunk, Label, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest,
    LabelValuesResponse, Series, SeriesBatch, SeriesRequest, SeriesResponse, ZLabelSet,
    series_response,
};

/// One series as samples, before encoding.
#[derive(Debug, Clone)]
pub struct SampleSeries {
    pub labels: Vec<Label>,
    pub samples: Vec<(i64, f64)>,
}

/// Encodes samples into raw XOR chunks of 120 samples, hashed as sidecars do.
pub fn encode_chunks(samples: &[(i64, f64)]) -> Result<Vec<AggrChunk>, ChunkError> {
    Ok(chunkenc::chunk_samples(samples, SAMPLES_PER_CHUNK)?
        .into_iter()
        .map(|c| AggrChunk {
            min_time: c.min_time,
            max_time: c.max_time,
            raw: Some(Chunk {
                r#type: 0,
                hash: xxh64(&c.data, 0),
                data: c.data.into(),
            }),
            ..Default::default()
        })
        .collect())
}

/// Encoded series with external labels applied, sorted by label set.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub external_labels: Vec<Label>,
    pub series: Vec<Series>,
    pub min_time: i64,
    pub max_time: i64,
}

impl Dataset {
    /// Encodes `series` into 120-sample XOR chunks; external labels win over
    /// series labels of the same name, as on a sidecar.
    pub fn new(external_labels: Vec<Label>, series: Vec<SampleSeries>) -> Result<Self, ChunkError> {
        let mut encoded = Vec::with_capacity(series.len());
        let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
        for s in series {
            let mut labels: Vec<Label> = s
                .labels
                .into_iter()
                .filter(|l| !external_labels.iter().any(|e| e.name == l.name))
                .chain(external_labels.iter().cloned())
                .collect();
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            let chunks = encode_chunks(&s.samples)?;
            if let (Some(first), Some(last)) = (chunks.first(), chunks.last()) {
                min_time = min_time.min(first.min_time);
                max_time = max_time.max(last.max_time);
            }
            encoded.push(Series { labels, chunks });
        }
        encoded.sort_by(|a, b| labelset::compare(&a.labels, &b.labels));
        if min_time > max_time {
            (min_time, max_time) = (0, 0);
        }
        Ok(Self {
            external_labels,
            series: encoded,
            min_time,
            max_time,
        })
    }

    /// The demo's deterministic data: request counters (one with resets),
    /// temperature gauges and `up`, every 15 s over the six hours before `end_ms`.
    pub fn demo(external_labels: Vec<Label>, end_ms: i64) -> Result<Self, ChunkError> {
        const STEP: i64 = 15_000;
        let end = end_ms - end_ms % STEP;
        let start = end - 6 * 3600 * 1000;
        let times = || (start..=end).step_by(STEP as usize);
        let mut series = Vec::new();
        for (i, instance) in ["api-0", "api-1", "api-2"].into_iter().enumerate() {
            for (j, method) in ["GET", "POST"].into_iter().enumerate() {
                for (k, code) in ["200", "500"].into_iter().enumerate() {
                    // Whole requests per scrape, so counters read as counts.
                    let per_step = (10 - 3 * k as i64 - j as i64 + i as i64) as f64;
                    // api-1 restarts every two hours: its counters reset.
                    let period = if i == 1 { 2 * 3600 * 1000 } else { i64::MAX };
                    series.push(SampleSeries {
                        labels: labelset::from_pairs([
                            ("__name__", "demo_http_requests_total"),
                            ("job", "api"),
                            ("instance", instance),
                            ("method", method),
                            ("code", code),
                        ]),
                        samples: times()
                            .map(|t| (t, (((t - start) % period) / STEP) as f64 * per_step))
                            .collect(),
                    });
                }
            }
            series.push(SampleSeries {
                labels: labelset::from_pairs([
                    ("__name__", "up"),
                    ("job", "api"),
                    ("instance", instance),
                ]),
                samples: times().map(|t| (t, 1.0)).collect(),
            });
        }
        for (i, room) in ["lab", "office", "server-room"].into_iter().enumerate() {
            series.push(SampleSeries {
                labels: labelset::from_pairs([
                    ("__name__", "demo_temperature_celsius"),
                    ("job", "sensors"),
                    ("room", room),
                ]),
                samples: times()
                    .map(|t| {
                        let phase = (t / STEP) as f64 / 240.0 + i as f64;
                        (t, 20.0 + 5.0 * i as f64 + 2.0 * phase.sin())
                    })
                    .collect(),
            });
        }
        Self::new(external_labels, series)
    }
}

/// What the synthetic store claims (and does) itself.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    pub without_replica_labels: bool,
    pub sharding: bool,
    /// Whether Info advertises rules, targets, metadata, exemplars and
    /// status (served by [`sidecar_routes`]).
    pub sidecar_apis: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            without_replica_labels: true,
            sharding: true,
            sidecar_apis: false,
        }
    }
}

/// A StoreAPI and Info server over a [`Dataset`].
#[derive(Debug, Clone)]
pub struct SyntheticStore {
    data: Arc<Dataset>,
    caps: Capabilities,
}

impl SyntheticStore {
    pub fn new(data: Dataset) -> Self {
        Self {
            data: Arc::new(data),
            caps: Capabilities::default(),
        }
    }

    pub fn with_capabilities(mut self, caps: Capabilities) -> Self {
        self.caps = caps;
        self
    }

    pub fn dataset(&self) -> &Dataset {
        &self.data
    }

    fn compile(matchers: &[crate::proto::thanos::LabelMatcher]) -> Result<Vec<Matcher>, Status> {
        labelset::compile_all(matchers).map_err(|e| Status::invalid_argument(e.to_string()))
    }

    /// Series matching the matchers with data in `[min, max]`, labels final.
    fn select(
        &self,
        matchers: &[Matcher],
        min: i64,
        max: i64,
        strip: &[String],
    ) -> Vec<(Vec<Label>, Vec<AggrChunk>)> {
        let strip = if self.caps.without_replica_labels {
            strip
        } else {
            &[]
        };
        let mut out: Vec<_> = self
            .data
            .series
            .iter()
            .filter(|s| labelset::matches_series(matchers, &s.labels))
            .filter_map(|s| {
                let chunks: Vec<AggrChunk> = s
                    .chunks
                    .iter()
                    .filter(|c| c.max_time >= min && c.min_time <= max)
                    .cloned()
                    .collect();
                if chunks.is_empty() {
                    return None;
                }
                let mut labels = s.labels.clone();
                labelset::strip(&mut labels, strip);
                Some((labels, chunks))
            })
            .collect();
        out.sort_by(|a, b| labelset::compare(&a.0, &b.0));
        out
    }

    /// The full answer to a Series request, as frames.
    pub fn series_frames(&self, req: &SeriesRequest) -> Result<Vec<SeriesResponse>, Status> {
        let matchers = Self::compile(&req.matchers)?;
        let shard = if self.caps.sharding {
            ShardMatcher::new(req.shard_info.as_ref())
        } else {
            None
        };
        let mut series: Vec<Series> = self
            .select(
                &matchers,
                req.min_time,
                req.max_time,
                &req.without_replica_labels,
            )
            .into_iter()
            .filter(|(labels, _)| {
                shard
                    .as_ref()
                    .is_none_or(|s| s.matches(crate::labelset::as_bytes(labels)))
            })
            .map(|(labels, chunks)| Series {
                labels,
                chunks: if req.skip_chunks { Vec::new() } else { chunks },
            })
            .collect();
        if req.limit > 0 {
            series.truncate(req.limit as usize);
        }
        Ok(if req.response_batch_size > 1 {
            series
                .chunks(req.response_batch_size as usize)
                .map(|batch| SeriesResponse {
                    result: Some(series_response::Result::Batch(SeriesBatch {
                        series: batch.to_vec(),
                    })),
                })
                .collect()
        } else {
            series
                .into_iter()
                .map(|s| SeriesResponse {
                    result: Some(series_response::Result::Series(s)),
                })
                .collect()
        })
    }

    /// The Info answer.
    pub fn info_response(&self) -> InfoResponse {
        let d = &self.data;
        let has_labels = !d.external_labels.is_empty();
        InfoResponse {
            label_sets: if has_labels {
                vec![ZLabelSet {
                    labels: d.external_labels.clone(),
                }]
            } else {
                Vec::new()
            },
            component_type: "sidecar".into(),
            store: Some(StoreInfo {
                min_time: d.min_time,
                max_time: d.max_time,
                supports_sharding: self.caps.sharding,
                supports_without_replica_labels: self.caps.without_replica_labels,
                tsdb_infos: has_labels
                    .then(|| TsdbInfo {
                        labels: Some(ZLabelSet {
                            labels: d.external_labels.clone(),
                        }),
                        min_time: d.min_time,
                        max_time: d.max_time,
                    })
                    .into_iter()
                    .collect(),
                supports_projections: false,
            }),
            rules: self.caps.sidecar_apis.then_some(RulesInfo {}),
            metric_metadata: self.caps.sidecar_apis.then_some(MetricMetadataInfo {}),
            targets: self.caps.sidecar_apis.then_some(TargetsInfo {}),
            exemplars: self.caps.sidecar_apis.then_some(ExemplarsInfo::default()),
            status: self.caps.sidecar_apis.then_some(StatusInfo {}),
            query: None,
        }
    }
}

fn limited(mut values: Vec<String>, limit: i64) -> Vec<String> {
    values.sort();
    values.dedup();
    if limit > 0 {
        values.truncate(limit as usize);
    }
    values
}

#[tonic::async_trait]
impl Store for SyntheticStore {
    type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesResponse, Status>> + Send>>;

    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let frames = self.series_frames(request.get_ref())?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            frames.into_iter().map(Ok),
        ))))
    }

    async fn label_names(
        &self,
        request: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        let req = request.into_inner();
        let matchers = Self::compile(&req.matchers)?;
        let names = self
            .select(&matchers, req.start, req.end, &req.without_replica_labels)
            .into_iter()
            .flat_map(|(labels, _)| labels.into_iter().map(|l| l.name))
            .collect();
        Ok(Response::new(LabelNamesResponse {
            names: limited(names, req.limit),
            ..Default::default()
        }))
    }

    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        let req = request.into_inner();
        if req.label.is_empty() {
            return Err(Status::invalid_argument(
                "label name parameter cannot be empty",
            ));
        }
        let matchers = Self::compile(&req.matchers)?;
        let values = self
            .select(&matchers, req.start, req.end, &req.without_replica_labels)
            .into_iter()
            .filter_map(|(labels, _)| {
                labels
                    .into_iter()
                    .find(|l| l.name == req.label)
                    .map(|l| l.value)
            })
            .collect();
        Ok(Response::new(LabelValuesResponse {
            values: limited(values, req.limit),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl Info for SyntheticStore {
    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(self.info_response()))
    }
}

/// Configures a generated server like a Thanos server: large messages, reads
/// gzip and zstd and answers in kind (snappy is
/// [`crate::snappy::SnappyRequests`]'s).
macro_rules! thanos_like {
    ($server:expr) => {
        $server
            .accept_compressed(Gzip)
            .accept_compressed(Zstd)
            .send_compressed(Gzip)
            .send_compressed(Zstd)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    };
}

/// A Store service configured like a Thanos server's.
pub fn store_server<S: Store>(store: S) -> StoreServer<S> {
    thanos_like!(StoreServer::new(store))
}

/// An Info service configured like [`store_server`].
pub fn info_server<I: Info>(info: I) -> InfoServer<I> {
    thanos_like!(InfoServer::new(info))
}

/// A StoreAPI remote: `store` and `info`.
pub fn store_routes<S: Store, I: Info>(store: S, info: I) -> Routes {
    Routes::new(info_server(info)).add_service(store_server(store))
}

/// A sidecar-like remote: the StoreAPI and every other API a sidecar serves,
/// all answered by `store` (advertised in Info if its capabilities say so).
pub fn sidecar_routes(store: SyntheticStore) -> Routes {
    store_routes(store.clone(), store.clone())
        .add_service(thanos_like!(RulesServer::new(store.clone())))
        .add_service(thanos_like!(TargetsServer::new(store.clone())))
        .add_service(thanos_like!(MetadataServer::new(store.clone())))
        .add_service(thanos_like!(ExemplarsServer::new(store.clone())))
        .add_service(thanos_like!(StatusServer::new(store)))
}

/// Serves `routes` on `listener` like a Thanos server (snappy requests
/// read), over TLS when `tls` is given, until `shutdown` resolves.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let router = Server::builder()
        .layer(crate::snappy::SnappyRequests::new(crate::snappy::Limit {
            bytes: MAX_MESSAGE_SIZE,
            key: "the remote's message size limit",
        }))
        .add_routes(routes);
    match tls {
        Some(config) => {
            router
                .serve_with_incoming_shutdown(
                    crate::demo::tls_server::incoming(listener, config),
                    shutdown,
                )
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(crate::server::incoming(listener), shutdown)
                .await
        }
    }
}
