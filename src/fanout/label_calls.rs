//! LabelNames and LabelValues: parallel unary calls to the selected
//! endpoints, merged sorted and unique, cut to `limit`. Getting each call
//! answered (resending one turned away unread, moving to a replica) is
//! [`super::fallback`]'s, the answer being the call's first frame.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::fallback;
use super::remote::{RemoteCall, Stop, settle};
use super::{Fanout, FanoutError, RequestContext, Selected, aborts};
use crate::labelset;
use crate::metrics::Method;
use crate::proto::thanos::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse,
};
use crate::upstream::{RemoteError, RemoteErrorKind, StreamLease};

/// One endpoint's answer: its list and its warnings.
type Answer = (Vec<String>, Vec<String>);

impl Fanout {
    pub async fn label_names(
        &self,
        req: LabelNamesRequest,
        ctx: RequestContext,
    ) -> Result<LabelNamesResponse, FanoutError> {
        let matchers = labelset::compile_all(&req.matchers)
            .map_err(|e| FanoutError::InvalidArgument(e.to_string()))?;
        let plan = self.plan(&matchers, req.start, req.end);
        let abort = aborts(req.partial_response_strategy, req.partial_response_disabled);
        plan.check_abort(abort)?;
        let limit = req.limit;
        let forward = LabelNamesRequest { hints: None, ..req };
        let outgoing = ctx.clone();
        let (names, mut warnings) = gather(
            &ctx,
            plan.selected,
            abort,
            limit,
            Method::LabelNames,
            move |s: &Selected, deadline| {
                let strip = if s.info.supports_without_replica_labels {
                    Vec::new()
                } else {
                    forward.without_replica_labels.clone()
                };
                let request = outgoing.outgoing(forward.clone(), Some(deadline));
                let (mut client, lease) = s.endpoint.store();
                let answer = async move {
                    let resp = client.label_names(request).await?.into_inner();
                    let names = resp
                        .names
                        .into_iter()
                        .filter(|n| !strip.contains(n))
                        .collect();
                    Ok((names, resp.warnings))
                };
                (answer, lease)
            },
        )
        .await?;
        warnings.extend(plan.skipped.iter().map(ToString::to_string));
        Ok(LabelNamesResponse {
            names,
            warnings,
            hints: None,
        })
    }

    pub async fn label_values(
        &self,
        req: LabelValuesRequest,
        ctx: RequestContext,
    ) -> Result<LabelValuesResponse, FanoutError> {
        if req.label.is_empty() {
            return Err(FanoutError::InvalidArgument(
                "label name parameter cannot be empty".into(),
            ));
        }
        let matchers = labelset::compile_all(&req.matchers)
            .map_err(|e| FanoutError::InvalidArgument(e.to_string()))?;
        if req.without_replica_labels.contains(&req.label) {
            // Values of a stripped replica label are, by definition, not there.
            return Ok(LabelValuesResponse::default());
        }
        let plan = self.plan(&matchers, req.start, req.end);
        let abort = aborts(req.partial_response_strategy, req.partial_response_disabled);
        plan.check_abort(abort)?;
        let limit = req.limit;
        let forward = LabelValuesRequest { hints: None, ..req };
        let outgoing = ctx.clone();
        let (values, mut warnings) = gather(
            &ctx,
            plan.selected,
            abort,
            limit,
            Method::LabelValues,
            move |s: &Selected, deadline| {
                let request = outgoing.outgoing(forward.clone(), Some(deadline));
                let (mut client, lease) = s.endpoint.store();
                let answer = async move {
                    let resp = client.label_values(request).await?.into_inner();
                    Ok((resp.values, resp.warnings))
                };
                (answer, lease)
            },
        )
        .await?;
        warnings.extend(plan.skipped.iter().map(ToString::to_string));
        Ok(LabelValuesResponse {
            values,
            warnings,
            hints: None,
        })
    }
}

/// Calls every selected endpoint at once and merges the lists. With ABORT the
/// first failure cancels the other calls (dropping the set aborts them).
/// `call` sends the call to one endpoint with the deadline of the attempt.
async fn gather<F, Fut>(
    ctx: &RequestContext,
    selected: Vec<Selected>,
    abort: bool,
    limit: i64,
    method: Method,
    call: F,
) -> Result<Answer, FanoutError>
where
    F: Fn(&Selected, Instant) -> (Fut, StreamLease) + Send + Sync + 'static,
    Fut: Future<Output = Result<Answer, tonic::Status>> + Send + 'static,
{
    let call = Arc::new(call);
    let mut tasks = JoinSet::new();
    let mut by_task = HashMap::new();
    for s in selected {
        let span = super::remote::span(method, &s.endpoint);
        let endpoint = s.endpoint.clone();
        let mut unary = Unary {
            call: RemoteCall::new(s, method),
            ctx: ctx.clone(),
            send: call.clone(),
        };
        let task = tasks.spawn(
            async move {
                match fallback::open(&mut unary).await {
                    Ok(((values, warnings), _lease)) => {
                        let remote = &unary.call;
                        remote.finish(Ok(()));
                        // The remote's own warnings name it, like a stream's do.
                        let warnings: Vec<String> = warnings
                            .into_iter()
                            .map(|w| remote.error(RemoteErrorKind::Warning(w)).to_string())
                            .collect();
                        Ok((values, warnings))
                    }
                    Err(stop) => Err(unary.call.conclude(Err(stop)).unwrap_or_else(|| {
                        unary
                            .call
                            .error(RemoteErrorKind::Internal("the call was cancelled".into()))
                    })),
                }
            }
            .instrument(span),
        );
        by_task.insert(task.id(), endpoint);
    }
    let mut merged = BTreeSet::new();
    let mut warnings = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let result = joined.unwrap_or_else(|join_error| {
            // A panicking call is a bug; report it like a failed remote.
            let internal = RemoteErrorKind::Internal(join_error.to_string());
            Err(match by_task.get(&join_error.id()) {
                Some(endpoint) => endpoint.error(internal),
                None => RemoteError {
                    remote: "?".into(),
                    endpoint: "?".into(),
                    kind: internal,
                },
            })
        });
        match result {
            Ok((values, remote_warnings)) => {
                merged.extend(values);
                warnings.extend(remote_warnings);
            }
            Err(error) => warnings.push(settle(error, abort)?),
        }
    }
    let mut values: Vec<String> = merged.into_iter().collect();
    if limit > 0 {
        values.truncate(limit as usize);
    }
    Ok((values, warnings))
}

/// One label call to one remote, as [`fallback::open`] drives it.
struct Unary<F> {
    call: RemoteCall,
    ctx: RequestContext,
    send: Arc<F>,
}

impl<F, Fut> fallback::Attempts for Unary<F>
where
    F: Fn(&Selected, Instant) -> (Fut, StreamLease) + Send + Sync + 'static,
    Fut: Future<Output = Result<Answer, tonic::Status>> + Send + 'static,
{
    type Opened = Answer;

    fn call(&mut self) -> &mut RemoteCall {
        &mut self.call
    }

    async fn attempt(&mut self) -> (Result<Answer, Stop>, StreamLease) {
        // Each attempt's own deadline: see `fallback` on timeouts.
        let deadline = self.ctx.deadline_for(&self.call.selected.endpoint);
        let limit = deadline.saturating_duration_since(Instant::now());
        let (answer, lease) = (self.send)(&self.call.selected, deadline);
        let answer = self
            .call
            .wait(answer, limit, || RemoteErrorKind::NoAnswer(limit))
            .await
            .map_err(Stop::from);
        (answer, lease)
    }

    fn next(&mut self) -> Option<Selected> {
        self.call.selected.next()
    }
}
