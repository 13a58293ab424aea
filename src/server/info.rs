//! `thanos.info.Info`: what we serve, computed from the remotes' cached Info
//! answers so it returns at once, presenting ourselves like a querier does.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::labelset;
use crate::proto::thanos::ZLabelSet;
use crate::proto::thanos::info::info_server::Info;
use crate::proto::thanos::info::{InfoRequest, InfoResponse, StoreInfo};
use crate::upstream::Upstreams;

pub struct InfoService {
    upstreams: Arc<Upstreams>,
    ready: watch::Receiver<bool>,
}

impl InfoService {
    /// `ready` turns true once every endpoint has been asked for Info once.
    pub fn new(upstreams: Arc<Upstreams>, ready: watch::Receiver<bool>) -> Self {
        Self { upstreams, ready }
    }
}

/// Aggregates the endpoints' Info into ours: every endpoint that answered
/// Info at least once counts with its last answer, healthy or not. A querier
/// prunes stores by these label sets, so a cluster that goes down must stay
/// in them: its queries then still reach us and get a warning (or `Aborted`)
/// that names it, instead of an empty answer.
pub fn aggregate(upstreams: &Upstreams) -> InfoResponse {
    let known: Vec<_> = upstreams
        .endpoints()
        .iter()
        .filter_map(|e| e.state().info.clone())
        .collect();
    // A remote without external labels could hold any series; the querier can
    // only be told "anything" by an empty list, since it drops empty sets.
    let wildcard = known.iter().any(|info| info.label_sets.is_empty());
    let mut label_sets: Vec<_> = if wildcard {
        Vec::new()
    } else {
        known
            .iter()
            .flat_map(|info| info.label_sets.iter().cloned())
            .collect()
    };
    label_sets.sort_by(|a, b| labelset::compare(a, b));
    label_sets.dedup();
    let (min_time, max_time) = if known.is_empty() {
        // Like a querier with no stores: ask for everything, answer empty.
        (i64::MIN, i64::MAX)
    } else {
        (
            known.iter().map(|i| i.min_time).min().unwrap_or(i64::MIN),
            known.iter().map(|i| i.max_time).max().unwrap_or(i64::MAX),
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
            tsdb_infos: known
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
        if !*self.ready.borrow() {
            return Err(Status::unavailable(
                "not ready: the first Info round to the remotes is still running",
            ));
        }
        Ok(Response::new(aggregate(&self.upstreams)))
    }
}
