//! LabelNames and LabelValues: parallel unary calls to the selected
//! endpoints, merged sorted and unique, cut to `limit`.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::remote::{RemoteCall, settle};
use super::{Fanout, FanoutError, RequestContext, Selected, aborts};
use crate::labelset;
use crate::metrics::Method;
use crate::proto::thanos::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse,
};
use crate::upstream::{RemoteError, RemoteErrorKind};

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
        let (names, mut warnings) = gather(
            &ctx,
            plan.selected,
            abort,
            limit,
            Method::LabelNames,
            |s, deadline| {
                let strip = if s.info.supports_without_replica_labels {
                    Vec::new()
                } else {
                    forward.without_replica_labels.clone()
                };
                let request = ctx.outgoing(forward.clone(), Some(deadline));
                let mut client = s.endpoint.store();
                async move {
                    let resp = client.label_names(request).await?.into_inner();
                    let names = resp
                        .names
                        .into_iter()
                        .filter(|n| !strip.contains(n))
                        .collect();
                    Ok((names, resp.warnings))
                }
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
        let (values, mut warnings) = gather(
            &ctx,
            plan.selected,
            abort,
            limit,
            Method::LabelValues,
            |s, deadline| {
                let request = ctx.outgoing(forward.clone(), Some(deadline));
                let mut client = s.endpoint.store();
                async move {
                    let resp = client.label_values(request).await?.into_inner();
                    Ok((resp.values, resp.warnings))
                }
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
async fn gather<F, Fut>(
    ctx: &RequestContext,
    selected: Vec<Selected>,
    abort: bool,
    limit: i64,
    method: Method,
    call: F,
) -> Result<Answer, FanoutError>
where
    F: Fn(&Selected, Instant) -> Fut,
    Fut: Future<Output = Result<Answer, tonic::Status>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    let mut by_task = HashMap::new();
    for s in selected {
        // The endpoint, then (`mode: any`) the remote's others in turn.
        let mut candidates = vec![s];
        while let Some(next) = candidates.last().and_then(Selected::next) {
            candidates.push(next);
        }
        let attempts: Vec<_> = candidates
            .into_iter()
            .map(|s| {
                let deadline = ctx.deadline_for(&s.endpoint);
                let limit = deadline.saturating_duration_since(Instant::now());
                let fut = call(&s, deadline);
                (s, fut, limit)
            })
            .collect();
        let first = &attempts[0].0.endpoint;
        let span = super::remote::span(method, first);
        let endpoint = first.clone();
        let task = tasks.spawn(
            async move {
                let mut failure = None;
                for (selected, fut, limit) in attempts {
                    // Started only now: a fallback may never be called.
                    let remote = RemoteCall::new(selected, method);
                    let result = remote
                        .wait(fut, limit, || RemoteErrorKind::NoAnswer(limit))
                        .await;
                    if result.is_ok() {
                        remote.first_frame();
                    }
                    remote.finish(result.as_ref().map(|_| ()));
                    match result {
                        // The remote's own warnings name it, like a stream's do.
                        Ok((values, warnings)) => {
                            let warnings: Vec<String> = warnings
                                .into_iter()
                                .map(|w| remote.error(RemoteErrorKind::Warning(w)).to_string())
                                .collect();
                            return Ok((values, warnings));
                        }
                        Err(error) => failure = Some(error),
                    }
                }
                Err(failure.unwrap_or_else(|| RemoteError {
                    remote: "?".into(),
                    endpoint: "?".into(),
                    kind: RemoteErrorKind::Internal("no endpoint to call".into()),
                }))
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
