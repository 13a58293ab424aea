//! Getting a call to a remote under way: the one rule, shared by Series, the
//! streamed APIs and the label calls, for what happens when an endpoint fails
//! before its first frame (a stream's first message, a unary call's answer).
//!
//! - A call the remote turned away unread
//!   ([`crate::upstream::RemoteErrorKind::unprocessed`]:
//!   a stream opened after its GOAWAY, REFUSED_STREAM, a connection that
//!   closed before the request went out) is sent again to the same endpoint
//!   on a new connection, up to [`RESENDS`] times per endpoint. HTTP/2 promises such a
//!   call was not processed, so this is safe for every kind of call, and it
//!   leaves the retry to the client.
//! - Any other failure before the first frame moves the call to the remote's
//!   next endpoint (`mode: any`), which keeps the call's one place among the
//!   remote's calls in progress. The failed attempt is counted and logged;
//!   only the last failure is the remote's (a warning or an abort).
//! - Once the first frame has arrived, nothing moves: another replica's
//!   answer would start over, so a later failure is the remote's.
//!
//! Timeouts: every wait on an endpoint is bounded by that endpoint's own
//! `timeout`, started afresh for each attempt, a resend included (for a
//! unary call, the earlier of the caller's deadline and `timeout` from the
//! moment the attempt starts). So an endpoint tried after another one failed
//! or went silent gets a full `timeout` of its own, not what the first left.
//! Only the caller's deadline bounds the call across all its attempts.

use std::future::Future;

use super::Selected;
use super::remote::{RemoteCall, Stop};
use crate::upstream::StreamLease;

/// How many times a call the remote turned away unread (GOAWAY,
/// REFUSED_STREAM) is sent again before it counts as failed.
pub(super) const RESENDS: usize = 2;

/// One kind of call, as [`open`] drives it from endpoint to endpoint.
pub(super) trait Attempts {
    /// What a successful attempt hands back: a stream and its first frame,
    /// or a unary answer.
    type Opened;

    /// The call to the endpoint being tried.
    fn call(&mut self) -> &mut RemoteCall;

    /// Sends the call to the current endpoint and waits for its first frame,
    /// each wait bounded by the endpoint's `timeout`. The lease holds the
    /// connection it went on, to retire if the call was turned away.
    fn attempt(&mut self)
    -> impl Future<Output = (Result<Self::Opened, Stop>, StreamLease)> + Send;

    /// The endpoint to try after the current one failed, ready to be
    /// called (its request made, its local state reset); None: no other.
    fn next(&mut self) -> Option<Selected>;
}

/// Gets the call under way: the first frame and the lease to hold while the
/// rest is read, or why no endpoint of the remote could start it. On
/// `Err(Stop::Failed)` the last attempt is not counted yet: the caller
/// concludes it like any other failure.
pub(super) async fn open<A: Attempts>(calls: &mut A) -> Result<(A::Opened, StreamLease), Stop> {
    let mut resends = 0;
    loop {
        let (attempt, lease) = calls.attempt().await;
        let error = match attempt {
            Ok(opened) => {
                calls.call().first_frame();
                return Ok((opened, lease));
            }
            Err(Stop::Failed(error)) => error,
            Err(stop) => return Err(stop),
        };
        if error.kind.unprocessed() && resends < RESENDS {
            resends += 1;
            tracing::debug!(%error, "sending the call again on a new connection");
            lease.retire();
            continue;
        }
        drop(lease);
        let Some(next) = calls.next() else {
            return Err(Stop::Failed(error));
        };
        tracing::info!(%error, next = %next.endpoint.address, "trying the remote's next endpoint");
        let call = calls.call();
        call.conclude(Err(Stop::Failed(error)));
        *call = RemoteCall::new(next, call.method());
        resends = 0;
    }
}
