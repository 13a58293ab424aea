//! The Info model: what an endpoint says about itself in its Info answer
//! (external labels, time range, the APIs it offers), checked and
//! normalised once so the rest of the crate reads a [`RemoteInfo`].

use crate::labelset;
use crate::proto::thanos::Label;
use crate::proto::thanos::info::{InfoResponse, TsdbInfo};

/// The APIs besides the StoreAPI that an endpoint may offer; its Info
/// answer says which, by the presence of each one's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Rules,
    Targets,
    MetricMetadata,
    Exemplars,
    Status,
}

impl Api {
    pub const ALL: [Api; 5] = [
        Api::Rules,
        Api::Targets,
        Api::MetricMetadata,
        Api::Exemplars,
        Api::Status,
    ];

    /// Which of these an Info answer advertises.
    fn offered_by(resp: &InfoResponse) -> Vec<Api> {
        let present = [
            (Api::Rules, resp.rules.is_some()),
            (Api::Targets, resp.targets.is_some()),
            (Api::MetricMetadata, resp.metric_metadata.is_some()),
            (Api::Exemplars, resp.exemplars.is_some()),
            (Api::Status, resp.status.is_some()),
        ];
        present
            .into_iter()
            .filter_map(|(api, present)| present.then_some(api))
            .collect()
    }
}

/// What an endpoint said about itself in its last successful Info answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteInfo {
    /// External label sets, each sorted; empty sets dropped as the querier does.
    pub label_sets: Vec<Vec<Label>>,
    /// Whether it offers the StoreAPI (Series and labels); the time range and
    /// the `supports_*` flags are only meaningful if so.
    pub store: bool,
    /// The other APIs it offers.
    pub apis: Vec<Api>,
    pub min_time: i64,
    pub max_time: i64,
    pub supports_sharding: bool,
    pub supports_without_replica_labels: bool,
    pub tsdb_infos: Vec<TsdbInfo>,
    pub component: String,
}

impl RemoteInfo {
    /// Checks and normalises an Info answer; an error says why it is unusable.
    pub fn from_response(resp: InfoResponse) -> Result<Self, String> {
        let apis = Api::offered_by(&resp);
        if resp.store.is_none() && apis.is_empty() {
            return Err("the endpoint offers none of the APIs we serve (its Info has no store, rules, targets, metric_metadata, exemplars or status)".into());
        }
        let has_store = resp.store.is_some();
        let store = resp.store.unwrap_or_default();
        let mut label_sets = Vec::with_capacity(resp.label_sets.len());
        for set in resp.label_sets {
            let mut set = set.labels;
            labelset::normalize(&mut set).map_err(|e| format!("external labels: {e}"))?;
            if !set.is_empty() {
                label_sets.push(set);
            }
        }
        Ok(Self {
            label_sets,
            store: has_store,
            apis,
            min_time: store.min_time,
            max_time: store.max_time,
            supports_sharding: store.supports_sharding,
            supports_without_replica_labels: store.supports_without_replica_labels,
            tsdb_infos: store.tsdb_infos,
            component: resp.component_type,
        })
    }

    /// Whether it offers `api`.
    pub fn offers(&self, api: Api) -> bool {
        self.apis.contains(&api)
    }

    /// Whether it serves data that external labels describe (series or
    /// exemplars), so its label sets say which requests it can answer.
    pub fn serves_data(&self) -> bool {
        self.store || self.offers(Api::Exemplars)
    }
}
