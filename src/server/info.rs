//! `thanos.info.Info`: what we serve, computed from the remotes' cached Info
//! answers so it returns at once, presenting ourselves like a querier does.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::admin::Readiness;
use crate::labels;
use crate::proto::thanos::ZLabelSet;
use crate::proto::thanos::info::info_server::Info;
use crate::proto::thanos::info::{InfoRequest, InfoResponse, StoreInfo};
use crate::upstream::Upstreams;

pub struct InfoService {
    upstreams: Arc<Upstreams>,
    ready: Readiness,
}

impl InfoService {
    /// `ready` turns true once every endpoint has been asked for Info once.
    pub fn new(upstreams: Arc<Upstreams>, ready: Readiness) -> Self {
        Self { upstreams, ready }
    }
}

/// Aggregates the healthy endpoints' Info into ours.
pub fn aggregate(upstreams: &Upstreams) -> InfoResponse {
    let healthy: Vec<_> = upstreams
        .endpoints()
        .iter()
        .filter_map(|e| e.queryable())
        .collect();
    // A remote without external labels could hold any series; the querier can
    // only be told "anything" by an empty list, since it drops empty sets.
    let wildcard = healthy.iter().any(|info| info.label_sets.is_empty());
    let mut label_sets: Vec<_> = if wildcard {
        Vec::new()
    } else {
        healthy
            .iter()
            .flat_map(|info| info.label_sets.iter().cloned())
            .collect()
    };
    label_sets.sort_by(|a, b| labels::compare(a, b));
    label_sets.dedup();
    let (min_time, max_time) = if healthy.is_empty() {
        // Like a querier with no stores: ask for everything, answer empty.
        (i64::MIN, i64::MAX)
    } else {
        (
            healthy.iter().map(|i| i.min_time).min().unwrap_or(i64::MIN),
            healthy.iter().map(|i| i.max_time).max().unwrap_or(i64::MAX),
        )
    };
    InfoResponse {
        label_sets: label_sets
            .into_iter()
            .map(|labels| ZLabelSet { labels })
            .collect(),
        component_type: "query".into(),
        store: Some(StoreInfo {
            min_time,
            max_time,
            // Forwarded to remotes that honour them, done locally for the rest.
            supports_sharding: true,
            supports_without_replica_labels: true,
            tsdb_infos: healthy
                .iter()
                .flat_map(|i| i.tsdb_infos.iter().cloned())
                .collect(),
            supports_projections: false,
        }),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Info for InfoService {
    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        if !self.ready.is_ready() {
            return Err(Status::unavailable(
                "not ready: the first Info round to the remotes is still running",
            ));
        }
        Ok(Response::new(aggregate(&self.upstreams)))
    }
}
