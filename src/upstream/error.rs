//! What can go wrong with a call to a remote, as a value: which remote and
//! endpoint, and a kind. Its `Display` is the one rendering users see, as a
//! warning (WARN) or in the `Aborted` status (ABORT).

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Outcome;
use crate::timefmt::seconds;

/// A failed (or skipped) call to one endpoint of a remote.
#[derive(Debug, Clone, thiserror::Error)]
#[error("remote {remote} ({endpoint}): {kind}")]
pub struct RemoteError {
    pub remote: Arc<str>,
    pub endpoint: String,
    pub kind: RemoteErrorKind,
}

/// Why a remote call failed; the text says what an operator can do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteErrorKind {
    /// Unhealthy, so not called: why its last Info call failed.
    #[error("not queried, its last Info call failed: {0}")]
    NotQueried(String),
    /// Skipped: its circuit breaker is open after calls failed in a row.
    #[error(
        "not queried until {} (circuit breaker open after {} failed calls in a row; last: {})",
        wall_clock(*.until), .failures, .last_error
    )]
    CircuitOpen {
        failures: u32,
        until: std::time::SystemTime,
        last_error: String,
    },
    /// Not called: as many calls to the remote as it may have are in progress.
    #[error(
        "not queried: {limit} calls to this remote are in progress already (remotes[].max_concurrent_calls)"
    )]
    Busy { limit: usize },
    /// It sent more than `limits.bytes_per_remote` for one request.
    #[error(
        "sent more than limits.bytes_per_remote ({limit} bytes) for one request, after {received} series; the rest of its answer is dropped"
    )]
    TooManyBytes { limit: u64, received: u64 },
    /// No replica of a `mode: any` remote can be asked: each one and why.
    #[error("no replica can be queried: {}", replicas(.0))]
    NoReplica(Vec<RemoteError>),
    /// Discovery finds no endpoint for the remote.
    #[error(
        "not queried, discovery finds no endpoints for it (a name that does not resolve, an SRV record without targets, or an empty file_sd file?)"
    )]
    NoEndpoints,
    /// Found by discovery moments ago and not yet asked for Info, so not called.
    #[error("not queried, it has not answered its first Info call yet")]
    NotAskedYet,
    /// No connection (TCP, name resolution, connect timeout).
    #[error("{0}")]
    Connect(String),
    /// The TLS handshake failed; the text names the setting to check.
    #[error("{0}")]
    Tls(String),
    /// The connection ended under the call: the remote, or an ingress or
    /// load balancer in front of it, closed or reset it.
    #[error("the remote closed the connection: {0}")]
    Closed(String),
    /// The remote turned the call's stream away unread: it was opened after
    /// the remote's GOAWAY (a graceful close: nginx sends one after
    /// `keepalive_requests` calls on a connection, a server as it shuts
    /// down) or reset with REFUSED_STREAM. HTTP/2 promises such a stream was
    /// not processed, so the call may be sent again.
    #[error("the remote turned the call away unread: {0}")]
    Refused(String),
    /// The connection closed before the call's request was sent (as a
    /// graceful close races a call being dispatched): like [`Self::Closed`]
    /// for the endpoint's health, but the call may be sent again.
    #[error("the remote closed the connection before the call was sent: {0}")]
    Unsent(String),
    /// The remote (or something in front of it) answered with an error.
    #[error("{0}")]
    Status(String),
    /// A stream sent nothing for `timeout` while we were ready for it, after
    /// `received` items (series, rule groups, ...) named `unit`.
    #[error(
        "sent nothing for {} (its timeout) after {received} {unit}; the rest of its answer is missing",
        seconds(*.timeout)
    )]
    NoProgress {
        timeout: Duration,
        received: u64,
        unit: &'static str,
    },
    /// A unary call got no answer in time.
    #[error("no answer within {}", seconds(*.0))]
    NoAnswer(Duration),
    /// The caller's deadline passed while the remote was still sending.
    #[error("the caller's deadline passed after {} and {received} {unit}", seconds(*.elapsed))]
    CallerDeadline {
        elapsed: Duration,
        received: u64,
        unit: &'static str,
    },
    /// The remote broke the StoreAPI's sort order.
    #[error("sent series out of order: {later} after {earlier}; the rest of its answer is dropped")]
    OutOfOrder { later: String, earlier: String },
    /// The remote sent something that is not valid (a bad label set).
    #[error("{0}")]
    Invalid(String),
    /// A warning the remote itself sent with its answer.
    #[error("{0}")]
    Warning(String),
    /// A bug of ours while calling the remote.
    #[error("internal error in a remote call: {0}")]
    Internal(String),
}

impl RemoteErrorKind {
    /// Whether the call never reached the remote and may be sent again as
    /// it is, on a new stream.
    pub fn unprocessed(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::Unsent(_))
    }

    /// How a call that ended with this counts in `thanos_fanout_remote_calls_total`.
    /// Whether the failure says the endpoint itself is unhealthy (rather
    /// than the request, the caller or the data), so that it counts
    /// towards its circuit breaker.
    pub fn trips_breaker(&self) -> bool {
        match self {
            Self::Connect(_)
            | Self::Tls(_)
            | Self::Closed(_)
            | Self::Unsent(_)
            | Self::NoProgress { .. }
            | Self::NoAnswer(_) => true,
            Self::Status(text) => ["Unavailable", "Internal", "Unknown", "DeadlineExceeded"]
                .iter()
                .any(|code| text.starts_with(code)),
            _ => false,
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Self::NoProgress { .. } | Self::NoAnswer(_) | Self::CallerDeadline { .. } => {
                Outcome::Timeout
            }
            // The call itself answered.
            Self::Warning(_) => Outcome::Success,
            _ => Outcome::Error,
        }
    }
}

/// A moment in messages: `2025-06-01 12:00:00 UTC`.
fn wall_clock(at: std::time::SystemTime) -> String {
    let unix = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    crate::timefmt::human_date(unix)
}

/// Each replica and why it was not asked: `a:1: why; b:2: why`.
fn replicas(errors: &[RemoteError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.endpoint, e.kind))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_remote_endpoint_and_reason() {
        let error = RemoteError {
            remote: "b".into(),
            endpoint: "10.0.0.7:443".into(),
            kind: RemoteErrorKind::NoProgress {
                timeout: Duration::from_secs(30),
                received: 1200,
                unit: "series",
            },
        };
        assert_eq!(
            error.to_string(),
            "remote b (10.0.0.7:443): sent nothing for 30.0s (its timeout) after 1200 series; the rest of its answer is missing"
        );
        assert_eq!(error.kind.outcome(), Outcome::Timeout);
    }
}
