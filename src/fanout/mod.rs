//! Answering StoreAPI calls from many remotes: choose the endpoints a request
//! can concern, call them in parallel with bounded time and buffers, merge
//! their answers, and apply the partial-response strategy.
//!
//! Data flows one way: request -> [`Fanout::plan`] -> per-endpoint calls ->
//! merge -> response. A remote's failure is a value (a warning naming the
//! remote, or an abort), never a panic.

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
    _slot: Option<Arc<tokio::sync::OwnedSemaphorePermit>>,
}

impl Selected {
    /// The next endpoint to try after this one failed, if any.
    fn next(&self) -> Option<Selected> {
        let (first, rest) = self.fallbacks.split_first()?;
        Some(Selected {
            fallbacks: rest.to_vec(),
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
    fn plan_by(&self, matches: impl Fn(&RemoteInfo) -> bool) -> Plan {
        let mut plan = Plan::default();
        // Where each `mode: any` remote's first endpoint went in `selected`.
        let mut any_remotes: Vec<(Arc<str>, usize)> = Vec::new();
        let turn = self.turn.fetch_add(1, AtomicOrdering::Relaxed);
        let mut open_replicas: Vec<RemoteError> = Vec::new();
        for endpoint in self.upstreams.endpoints() {
            match endpoint.availability() {
                Availability::Queryable(info) if matches(&info) => {
                    if let Err(open) = endpoint.breaker.admits() {
                        let skipped = endpoint.error(RemoteErrorKind::CircuitOpen {
                            failures: open.failures,
                            until: open.until,
                            last_error: open.last_error,
                        });
                        match endpoint.mode {
                            // A replica's turn goes to the others; reported
                            // below only if none of them can be asked.
                            RemoteMode::Any => open_replicas.push(skipped),
                            RemoteMode::All => plan.skipped.push(skipped),
                        }
                        continue;
                    }
                    let slot = match endpoint.admit() {
                        Ok(slot) => slot,
                        Err(limit) => {
                            plan.skipped
                                .push(endpoint.error(RemoteErrorKind::Busy { limit }));
                            continue;
                        }
                    };
                    let selected = Selected {
                        endpoint,
                        info,
                        fallbacks: Vec::new(),
                        _slot: slot,
                    };
                    if selected.endpoint.mode == RemoteMode::Any {
                        let remote = selected.endpoint.remote.clone();
                        match any_remotes.iter().find(|(r, _)| *r == remote) {
                            Some(&(_, at)) => plan.selected[at].fallbacks.push(selected),
                            None => {
                                any_remotes.push((remote, plan.selected.len()));
                                plan.selected.push(selected);
                            }
                        }
                    } else {
                        plan.selected.push(selected);
                    }
                }
                Availability::Down { last_info, why }
                    if last_info.as_deref().is_none_or(&matches) =>
                {
                    plan.skipped
                        .push(endpoint.error(RemoteErrorKind::NotQueried(why)));
                }
                Availability::Unknown => {
                    plan.skipped
                        .push(endpoint.error(RemoteErrorKind::NotAskedYet));
                }
                Availability::Queryable(_) | Availability::Down { .. } => {}
            }
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
        plan.skipped.extend(
            open_replicas
                .into_iter()
                .filter(|e| !any_remotes.iter().any(|(remote, _)| *remote == e.remote)),
        );
        // Replicas take turns being asked first.
        for &(_, at) in &any_remotes {
            let group = &mut plan.selected[at];
            let mut all = vec![Selected {
                fallbacks: Vec::new(),
                ..group.clone()
            }];
            all.append(&mut group.fallbacks);
            let first = turn % all.len();
            all.rotate_left(first);
            let mut all = all.into_iter();
            if let Some(first) = all.next() {
                *group = Selected {
                    fallbacks: all.collect(),
                    ..first
                };
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
