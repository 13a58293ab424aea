//! Answering StoreAPI calls from many remotes: choose the endpoints a request
//! can concern, call them in parallel with bounded time and buffers, merge
//! their answers, and apply the partial-response strategy.
//!
//! Data flows one way: request -> [`Fanout::plan`] -> per-endpoint calls ->
//! merge -> response. What bounds a call is [`crate::admission`]'s. A remote's failure is a value (a warning naming the
//! remote, or an abort), never a panic.

mod fallback;
mod label_calls;
pub mod merge;
mod prefetch;
mod remote;
pub mod selectors;
mod series;
pub mod shard;
mod streamed;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use tokio::time::Instant;

pub use prefetch::Prefetch;
pub use series::SeriesStream;
pub use streamed::ApiStream;

use crate::admission::{self, RemoteSlot};
use crate::config::{LimitsConfig, RemoteMode};
use crate::labelset::{Matcher, label_sets_match};
use crate::proto::thanos::PartialResponseStrategy;
use crate::telemetry::TraceHeaders;
use crate::upstream::{
    Availability, Endpoint, RemoteError, RemoteErrorKind, RemoteInfo, Upstreams,
};

/// A request that cannot be answered as asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FanoutError {
    /// The request itself is wrong (bad matcher, missing label name).
    #[error("{0}")]
    InvalidArgument(String),
    /// A remote failed and the request asked for ABORT.
    #[error(transparent)]
    Aborted(RemoteError),
    /// The answer grew past one of `limits`.
    #[error("{0}")]
    LimitExceeded(String),
}

/// What the caller sent besides the request message.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// `thanos-tenant`, forwarded to every remote.
    pub tenant: Option<String>,
    /// `request-id`, forwarded for correlation.
    pub request_id: Option<String>,
    /// The caller's deadline (from `grpc-timeout`).
    pub deadline: Option<Instant>,
    /// The caller's W3C trace context.
    pub trace: TraceHeaders,
}

impl RequestContext {
    /// The deadline for a unary call to `endpoint`: the earlier of the
    /// caller's and the remote's own timeout.
    fn deadline_for(&self, endpoint: &Endpoint) -> Instant {
        let own = Instant::now() + endpoint.timeout;
        self.deadline.map_or(own, |caller| caller.min(own))
    }

    /// Wraps a message for a remote, carrying tenant, request id and the
    /// deadline, if any.
    fn outgoing<T>(&self, message: T, deadline: Option<Instant>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(deadline) = deadline {
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        let metadata = request.metadata_mut();
        self.trace.inject(metadata);
        for (key, value) in [
            ("thanos-tenant", &self.tenant),
            ("request-id", &self.request_id),
        ] {
            if let Some(value) = value.as_deref().and_then(|v| v.parse().ok()) {
                metadata.insert(key, value);
            }
        }
        request
    }
}

/// Whether failures become warnings or fail the call.
fn aborts(strategy: i32, disabled: bool) -> bool {
    disabled || strategy == PartialResponseStrategy::Abort as i32
}

/// An endpoint chosen for a request, with the Info it was chosen by, and
/// for a remote in `mode: any` the endpoints to try in turn if it fails
/// before its first frame.
#[derive(Debug, Clone)]
struct Selected {
    endpoint: Arc<Endpoint>,
    info: Arc<RemoteInfo>,
    fallbacks: Vec<Selected>,
    /// Its place among the remote's calls in progress, held until the call
    /// (and every copy of this) is done.
    _slot: RemoteSlot,
}

impl Selected {
    /// The next endpoint to try after this one failed, if any.
    fn next(&self) -> Option<Selected> {
        let (first, rest) = self.fallbacks.split_first()?;
        Some(Selected {
            fallbacks: rest.to_vec(),
            // The call keeps its one place while it moves between replicas.
            _slot: self._slot.clone(),
            ..first.clone()
        })
    }
}

/// The fan-out engine shared by all StoreAPI handlers.
#[derive(Debug)]
pub struct Fanout {
    upstreams: Arc<Upstreams>,
    /// Counts plans, so replicas of a `mode: any` remote take turns.
    turn: AtomicUsize,
    /// Read-ahead of Series streams.
    prefetch: Prefetch,
    /// Frames queued per call of the other streamed APIs.
    buffer_frames: usize,
    limits: LimitsConfig,
}

impl Fanout {
    pub fn new(upstreams: Arc<Upstreams>, prefetch: Prefetch, buffer_frames: usize) -> Self {
        Self {
            upstreams,
            turn: AtomicUsize::new(0),
            prefetch,
            buffer_frames,
            limits: LimitsConfig::default(),
        }
    }

    /// Applies `limits` to the Series calls it serves.
    pub fn with_limits(mut self, limits: LimitsConfig) -> Self {
        self.limits = limits;
        self
    }

    /// Chooses endpoints like the querier chooses stores: healthy (last Info
    /// succeeded), offering the StoreAPI, overlapping in time, and with a
    /// compatible external label set.
    fn plan(&self, matchers: &[Matcher], min_time: i64, max_time: i64) -> Plan {
        // An empty time range has no data anywhere: no remote is asked.
        if min_time > max_time {
            return Plan::default();
        }
        self.plan_by(|info| {
            info.store
                && min_time <= info.max_time
                && max_time >= info.min_time
                && label_sets_match(matchers, &info.label_sets)
        })
    }

    /// Chooses the healthy endpoints whose Info `matches`. Unhealthy
    /// endpoints are not called, but those that would have matched (by their
    /// last known Info, or any request if they never answered) are reported,
    /// so a missing cluster is never silent.
    ///
    /// A remote in `mode: any` is one call, to one replica, with the others
    /// to fall back to: it takes one place among the remote's calls in
    /// progress, and its replicas that cannot be asked are reported only
    /// when none of them can (one warning naming each replica and why). A
    /// down replica beside a live one shows on the status page, in metrics
    /// and in the Info poller's logs, not in answers.
    fn plan_by(&self, matches: impl Fn(&RemoteInfo) -> bool) -> Plan {
        let mut plan = Plan::default();
        let turn = self.turn.fetch_add(1, AtomicOrdering::Relaxed);
        let mut replica_sets: Vec<ReplicaSet> = Vec::new();
        for endpoint in self.upstreams.endpoints() {
            let candidate = Candidate::of(&endpoint, &matches);
            match endpoint.mode {
                RemoteMode::All => match candidate {
                    Candidate::Ask(info) => match admission::admit_endpoint(&endpoint) {
                        Ok(slot) => plan.selected.push(Selected {
                            endpoint,
                            info,
                            fallbacks: Vec::new(),
                            _slot: slot,
                        }),
                        Err(busy) => plan.skipped.push(busy),
                    },
                    Candidate::Skip(error) => plan.skipped.push(error),
                    Candidate::HoldsNothing | Candidate::Irrelevant => {}
                },
                RemoteMode::Any => {
                    let at = match replica_sets
                        .iter()
                        .position(|set| set.remote == endpoint.remote)
                    {
                        Some(at) => at,
                        None => {
                            replica_sets.push(ReplicaSet::new(endpoint.remote.clone()));
                            replica_sets.len() - 1
                        }
                    };
                    replica_sets[at].add(endpoint, candidate);
                }
            }
        }
        for set in replica_sets {
            set.plan(turn, &mut plan);
        }
        // A remote whose every endpoint is gone (its name stopped resolving
        // for longer than discovery.stale_after, say) would otherwise just
        // vanish from the answers.
        for remote in self.upstreams.remotes().iter() {
            if remote.endpoints().is_empty() {
                let config = remote.config();
                let sources: Vec<String> = config
                    .targets
                    .iter()
                    .cloned()
                    .chain(config.file_sd.iter().map(|f| f.display().to_string()))
                    .collect();
                plan.skipped.push(RemoteError {
                    remote: remote.name.clone(),
                    endpoint: sources.join(", "),
                    kind: RemoteErrorKind::NoEndpoints,
                });
            }
        }
        tracing::debug!(
            endpoints = ?plan.selected.iter().map(|s| s.endpoint.address.as_str()).collect::<Vec<_>>(),
            skipped = plan.skipped.len(),
            "planned"
        );
        plan
    }
}

/// What one endpoint is to a request.
enum Candidate {
    /// Healthy, matching, its breaker closed: to be asked.
    Ask(Arc<RemoteInfo>),
    /// Would have matched but cannot be asked: why.
    Skip(RemoteError),
    /// Healthy, and its Info says it holds nothing for the request.
    HoldsNothing,
    /// Down, and its last Info says it held nothing for the request.
    Irrelevant,
}

impl Candidate {
    fn of(endpoint: &Endpoint, matches: &impl Fn(&RemoteInfo) -> bool) -> Self {
        match endpoint.availability() {
            Availability::Queryable(info) if matches(&info) => {
                match admission::admit_breaker(endpoint) {
                    Ok(()) => Self::Ask(info),
                    Err(open) => Self::Skip(open),
                }
            }
            Availability::Queryable(_) => Self::HoldsNothing,
            Availability::Down { last_info, why } if last_info.as_deref().is_none_or(matches) => {
                Self::Skip(endpoint.error(RemoteErrorKind::NotQueried(why)))
            }
            Availability::Down { .. } => Self::Irrelevant,
            Availability::Unknown => Self::Skip(endpoint.error(RemoteErrorKind::NotAskedYet)),
        }
    }
}

/// The replicas of one `mode: any` remote, gathered before deciding how the
/// remote is asked.
struct ReplicaSet {
    remote: Arc<str>,
    ask: Vec<(Arc<Endpoint>, Arc<RemoteInfo>)>,
    skipped: Vec<RemoteError>,
    /// A replica answers Info and holds nothing for the request: so does
    /// the remote, whatever its other replicas would have said.
    holds_nothing: bool,
}

impl ReplicaSet {
    fn new(remote: Arc<str>) -> Self {
        Self {
            remote,
            ask: Vec::new(),
            skipped: Vec::new(),
            holds_nothing: false,
        }
    }

    fn add(&mut self, endpoint: Arc<Endpoint>, candidate: Candidate) {
        match candidate {
            Candidate::Ask(info) => self.ask.push((endpoint, info)),
            Candidate::Skip(error) => self.skipped.push(error),
            Candidate::HoldsNothing => self.holds_nothing = true,
            Candidate::Irrelevant => {}
        }
    }

    /// One call to the remote, its replicas taking turns being asked first;
    /// or, when no replica can be asked, one error naming each.
    fn plan(mut self, turn: usize, plan: &mut Plan) {
        if self.ask.is_empty() {
            if !self.holds_nothing {
                plan.skipped
                    .extend(Self::unreachable(self.remote, self.skipped));
            }
            return;
        }
        let first = turn % self.ask.len();
        self.ask.rotate_left(first);
        // The replicas share the remote's limit: one place for the call.
        let slot = match admission::admit_endpoint(&self.ask[0].0) {
            Ok(slot) => slot,
            Err(busy) => {
                plan.skipped.push(busy);
                return;
            }
        };
        let mut replicas = self.ask.into_iter().map(|(endpoint, info)| Selected {
            endpoint,
            info,
            fallbacks: Vec::new(),
            _slot: slot.clone(),
        });
        if let Some(first) = replicas.next() {
            plan.selected.push(Selected {
                fallbacks: replicas.collect(),
                ..first
            });
        }
    }

    /// The remote's error when none of its replicas can be asked.
    fn unreachable(remote: Arc<str>, mut skipped: Vec<RemoteError>) -> Option<RemoteError> {
        match skipped.len() {
            0 => None,
            1 => skipped.pop(),
            _ => Some(RemoteError {
                remote,
                endpoint: skipped
                    .iter()
                    .map(|e| e.endpoint.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                kind: RemoteErrorKind::NoReplica(skipped),
            }),
        }
    }
}

/// The endpoints a request goes to, and the matching ones it cannot.
#[derive(Debug, Default)]
struct Plan {
    selected: Vec<Selected>,
    /// Unhealthy endpoints that would have matched.
    skipped: Vec<RemoteError>,
}

impl Plan {
    /// Under ABORT, an unreachable matching remote fails the call up front.
    fn check_abort(&self, abort: bool) -> Result<(), FanoutError> {
        match self.skipped.first() {
            Some(error) if abort => Err(FanoutError::Aborted(error.clone())),
            _ => Ok(()),
        }
    }
}
