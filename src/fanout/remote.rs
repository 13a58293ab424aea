//! One call to one selected endpoint, made the same way by Series and the
//! label calls: every wait on the remote bounded in time, failures classified
//! into a [`RemoteError`], the call counted in metrics once, and a failure
//! settled by the partial-response strategy.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{FanoutError, Selected};
use crate::metrics::{Method, Outcome};
use crate::upstream::{Endpoint, RemoteError, RemoteErrorKind};

/// Why a streaming call stopped before its end.
pub(super) enum Stop {
    /// Whoever reads the answer is gone (the caller cancelled, or another
    /// remote aborted the call).
    Cancelled,
    Failed(RemoteError),
}

impl From<RemoteError> for Stop {
    fn from(error: RemoteError) -> Self {
        Self::Failed(error)
    }
}

/// Runs a streaming call until it ends, or until the caller's deadline
/// passes (None).
pub(super) async fn within_deadline(
    deadline: Option<Instant>,
    stream: impl Future<Output = Result<(), Stop>>,
) -> Option<Result<(), Stop>> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, stream).await.ok(),
        None => Some(stream.await),
    }
}

/// The span of one call to a remote endpoint, a child of the incoming
/// call's; what the call did is recorded on it as it ends.
pub(super) fn span(method: Method, endpoint: &Endpoint) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        "remote_call",
        otel.name = method.path(),
        otel.kind = "client",
        ?method,
        remote = %endpoint.remote,
        endpoint = %endpoint.address,
        outcome = Empty,
        first_frame_seconds = Empty,
        received = Empty,
        bytes = Empty,
    )
}

/// A call in progress to one endpoint.
pub(super) struct RemoteCall {
    pub selected: Selected,
    method: Method,
    started: Instant,
    /// Whether the call has been counted by how it ended.
    counted: AtomicBool,
}

impl RemoteCall {
    /// A call starting now (counted in flight until dropped).
    pub fn new(selected: Selected, method: Method) -> Self {
        selected.endpoint.metrics.in_flight(method, 1);
        Self {
            selected,
            method,
            started: Instant::now(),
            counted: AtomicBool::new(false),
        }
    }

    pub fn method(&self) -> Method {
        self.method
    }

    /// Counts the call as ended with `outcome`, unless it already was.
    fn count(&self, outcome: Outcome) {
        if self.counted.swap(true, Ordering::Relaxed) {
            return;
        }
        let seconds = self.elapsed().as_secs_f64();
        self.selected
            .endpoint
            .metrics
            .call(self.method, outcome, seconds);
        tracing::Span::current().record("outcome", tracing::field::debug(outcome));
    }

    /// Records that the remote's first answer frame arrived now.
    pub fn first_frame(&self) {
        let seconds = self.elapsed().as_secs_f64();
        tracing::Span::current().record("first_frame_seconds", seconds);
        self.selected
            .endpoint
            .metrics
            .first_frame(self.method, seconds);
    }

    /// This call's error of `kind`.
    pub fn error(&self, kind: RemoteErrorKind) -> RemoteError {
        self.selected.endpoint.error(kind)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for one step of the call (an answer, or a stream's next
    /// frame), at most `limit`; past it, the error is `on_timeout`'s.
    pub async fn wait<T>(
        &self,
        step: impl Future<Output = Result<T, tonic::Status>>,
        limit: Duration,
        on_timeout: impl FnOnce() -> RemoteErrorKind,
    ) -> Result<T, RemoteError> {
        match tokio::time::timeout(limit, step).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(status)) => Err(self.selected.endpoint.failure(&status)),
            Err(_) => Err(self.error(on_timeout())),
        }
    }

    /// Counts the finished call once, by how it ended, and logs a failure.
    pub fn finish(&self, outcome: Result<(), &RemoteError>) {
        let endpoint = &self.selected.endpoint;
        let outcome = match outcome {
            Ok(()) => {
                endpoint.breaker.success();
                Outcome::Success
            }
            Err(error) => {
                tracing::warn!(%error, method = ?self.method, "remote call failed");
                let outcome = error.kind.outcome();
                if outcome != Outcome::Success {
                    endpoint.note_failure(self.method, error);
                }
                if error.kind.trips_breaker() {
                    endpoint.breaker.failure(&error.kind.to_string());
                }
                outcome
            }
        };
        self.count(outcome);
        tracing::debug!(?outcome, elapsed = ?self.elapsed(), "remote call finished");
    }

    /// Waits for one step of a stream like [`RemoteCall::wait`], unless
    /// whoever reads the answer goes away first (`gone` resolves).
    pub async fn step<T>(
        &self,
        step: impl Future<Output = Result<T, tonic::Status>>,
        limit: Duration,
        on_timeout: impl FnOnce() -> RemoteErrorKind,
        gone: impl Future<Output = ()>,
    ) -> Result<T, Stop> {
        tokio::select! {
            result = self.wait(step, limit, on_timeout) => Ok(result?),
            // Notice a vanished reader even while the remote is silent.
            _ = gone => Err(Stop::Cancelled),
        }
    }

    /// Counts a streaming call by how it ended; returns the failure to pass
    /// on, if any.
    pub fn conclude(&self, result: Result<(), Stop>) -> Option<RemoteError> {
        match result {
            Ok(()) => {
                self.finish(Ok(()));
                None
            }
            Err(Stop::Cancelled) => {
                self.cancelled();
                None
            }
            Err(Stop::Failed(error)) => {
                self.finish(Err(&error));
                Some(error)
            }
        }
    }

    /// Counts a call the caller (or an abort) ended before the remote did.
    pub fn cancelled(&self) {
        self.count(Outcome::Cancelled);
    }
}

impl Drop for RemoteCall {
    fn drop(&mut self) {
        // A call dropped before it was counted was stopped from outside: an
        // abort (`JoinSet::abort_all` when another remote fails under ABORT,
        // or a limit is reached) or a caller that went away drops its task
        // wherever it waits.
        self.cancelled();
        self.selected.endpoint.metrics.in_flight(self.method, -1);
    }
}

/// The partial-response strategy applied to one failure: under WARN the
/// warning to pass on, under ABORT the end of the call.
pub(super) fn settle(error: RemoteError, abort: bool) -> Result<String, FanoutError> {
    if abort {
        Err(FanoutError::Aborted(error))
    } else {
        Ok(error.to_string())
    }
}
