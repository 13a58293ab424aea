//! `thanos.info.Info`: what we serve, computed from the remotes' cached Info
//! answers so it returns at once, presenting ourselves like a querier does.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::labelset;
use crate::metrics::Method;
use crate::proto::thanos::ZLabelSet;
use crate::proto::thanos::info::info_server::Info;
use crate::proto::thanos::info::{
    ExemplarsInfo, InfoRequest, InfoResponse, MetricMetadataInfo, RulesInfo, StatusInfo, StoreInfo,
    TargetsInfo,
};
use crate::readiness::Phase;
use crate::upstream::{Api, Upstreams};

pub struct InfoService {
    upstreams: Arc<Upstreams>,
    ready: watch::Receiver<Phase>,
}

impl InfoService {
    /// `ready` turns true once every endpoint has been asked for Info once.
    pub fn new(upstreams: Arc<Upstreams>, ready: watch::Receiver<Phase>) -> Self {
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
    // Label sets route series and exemplar requests; a rules-only endpoint
    // says nothing about them.
    let data: Vec<_> = known.iter().filter(|info| info.serves_data()).collect();
    // A remote without external labels could hold any series; the querier can
    // only be told "anything" by an empty list, since it drops empty sets.
    let wildcard = data.iter().any(|info| info.label_sets.is_empty());
    let mut label_sets: Vec<_> = if wildcard {
        Vec::new()
    } else {
        data.iter()
            .flat_map(|info| info.label_sets.iter().cloned())
            .collect()
    };
    label_sets.sort_by(|a, b| labelset::compare(a, b));
    label_sets.dedup();
    let stores: Vec<_> = known.iter().filter(|info| info.store).collect();
    let (min_time, max_time) = if stores.is_empty() {
        // Like a querier with no stores: ask for everything, answer empty.
        (i64::MIN, i64::MAX)
    } else {
        (
            stores.iter().map(|i| i.min_time).min().unwrap_or(i64::MIN),
            stores.iter().map(|i| i.max_time).max().unwrap_or(i64::MAX),
        )
    };
    // Each other API is offered once a remote offers it, and stays offered
    // while that remote is down, so its calls get a warning naming it.
    let offered = |api| known.iter().any(|info| info.offers(api));
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
            tsdb_infos: stores
                .iter()
                .flat_map(|i| i.tsdb_infos.iter().cloned())
                .collect(),
            supports_projections: false,
        }),
        rules: offered(Api::Rules).then_some(RulesInfo {}),
        metric_metadata: offered(Api::MetricMetadata).then_some(MetricMetadataInfo {}),
        targets: offered(Api::Targets).then_some(TargetsInfo {}),
        // Queriers ignore the time range here, and sidecars send zeros.
        exemplars: offered(Api::Exemplars).then_some(ExemplarsInfo::default()),
        status: offered(Api::Status).then_some(StatusInfo {}),
        // thanos.Query is not offered: we answer no PromQL.
        query: None,
    }
}

#[tonic::async_trait]
impl Info for InfoService {
    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let ctx = super::request_context(request.metadata());
        let _span = super::call_span(Method::Info, &ctx).entered();
        if *self.ready.borrow() == Phase::Starting {
            return Err(Status::unavailable(
                "not ready: the first Info round to the remotes is still running",
            ));
        }
        Ok(Response::new(aggregate(&self.upstreams)))
    }
}
