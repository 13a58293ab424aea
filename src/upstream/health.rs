//! The health rule: an endpoint's cached state after its last Info call,
//! the last query call that failed, and from them whether the endpoint may
//! be queried now ([`Endpoint::availability`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Endpoint, RemoteError, RemoteErrorKind, RemoteInfo};
use crate::metrics::Method;

/// The cached view of one endpoint, replaced as a whole after each Info poll.
#[derive(Debug, Clone, Default)]
pub struct EndpointState {
    /// Last successful Info, kept through failures for the status page.
    pub info: Option<Arc<RemoteInfo>>,
    /// Whether the last Info call succeeded; only healthy endpoints are queried.
    pub healthy: bool,
    pub last_error: Option<String>,
    pub last_check: Option<Instant>,
    /// How long the last Info call took, or took to fail.
    pub info_latency: Option<Duration>,
}

/// The last call to an endpoint that did not succeed, kept for the status
/// page: a remote can answer Info and still fail or time out on queries.
#[derive(Debug, Clone)]
pub struct CallFailure {
    pub at: SystemTime,
    pub method: Method,
    pub error: RemoteErrorKind,
}

/// Whether an endpoint may be queried; see [`Endpoint::availability`].
#[derive(Debug, Clone)]
pub enum Availability {
    /// Its last Info call succeeded: queried when a request matches this Info.
    Queryable(Arc<RemoteInfo>),
    /// Its last Info call failed (`why`): not queried, but reported to a
    /// request its last known Info matches (any request, if it never
    /// answered), as [`RemoteErrorKind::NotQueried`].
    Down {
        last_info: Option<Arc<RemoteInfo>>,
        why: String,
    },
    /// Not asked for Info yet: neither queried nor reported.
    Unknown,
}

impl Endpoint {
    /// The current cached state.
    pub fn state(&self) -> Arc<EndpointState> {
        self.state.load_full()
    }

    pub(super) fn set_state(&self, state: EndpointState) {
        self.state.store(Arc::new(state));
    }

    /// Remembers a call that failed, timed out or was cut short.
    pub fn note_failure(&self, method: Method, error: &RemoteError) {
        let failure = Arc::new(CallFailure {
            at: SystemTime::now(),
            method,
            error: error.kind.clone(),
        });
        self.last_failure.store(Some(failure));
    }

    /// The last call that did not succeed, if any.
    pub fn last_failure(&self) -> Option<Arc<CallFailure>> {
        self.last_failure.load_full()
    }

    /// The one health rule: whether the endpoint may be queried now, and if
    /// not, why.
    pub fn availability(&self) -> Availability {
        let state = self.state();
        match (&state.info, state.healthy, &state.last_error) {
            (Some(info), true, _) => Availability::Queryable(info.clone()),
            (last_info, false, Some(error)) => Availability::Down {
                last_info: last_info.clone(),
                why: error.clone(),
            },
            // Not asked yet (it appeared after the last poll).
            _ => Availability::Unknown,
        }
    }

    /// The cached Info if the endpoint may be queried now.
    pub fn queryable(&self) -> Option<Arc<RemoteInfo>> {
        match self.availability() {
            Availability::Queryable(info) => Some(info),
            _ => None,
        }
    }
}
