//! LabelNames and LabelValues: parallel unary calls to the selected
//! endpoints, merged sorted and unique, cut to `limit`.

use std::collections::BTreeSet;
use std::future::Future;

use tokio::task::JoinSet;
use tracing::Instrument;

use tokio::time::Instant;

use super::{Fanout, FanoutError, RequestContext, Selected, aborts, secs};
use crate::labelset;
use crate::metrics::{Method, Outcome};
use crate::proto::thanos::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse,
};

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
        warnings.extend(plan.skipped);
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
        warnings.extend(plan.skipped);
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
    for s in &selected {
        let name = s.name();
        let endpoint = s.endpoint.clone();
        let deadline = ctx.deadline_for(&endpoint);
        let timeout = deadline.saturating_duration_since(Instant::now());
        let fut = call(s, deadline);
        let span = tracing::info_span!("remote_labels", remote = %endpoint.remote, endpoint = %endpoint.address, ?method);
        tasks.spawn(
            async move {
                let result = match tokio::time::timeout_at(deadline, fut).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(status)) => Err((Outcome::Error, endpoint.describe(&status))),
                    Err(_) => Err((
                        Outcome::Timeout,
                        format!("no answer within {}", secs(timeout)),
                    )),
                };
                endpoint.metrics.call(
                    method,
                    result.as_ref().map_or_else(|e| e.0, |_| Outcome::Success),
                );
                result.map_err(|(_, error)| format!("{name}: {error}"))
            }
            .instrument(span),
        );
    }
    let mut merged = BTreeSet::new();
    let mut warnings = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((values, remote_warnings))) => {
                merged.extend(values);
                warnings.extend(remote_warnings);
            }
            Ok(Err(error)) if abort => return Err(FanoutError::Aborted(error)),
            Ok(Err(error)) => {
                tracing::warn!(%error, "remote label call failed");
                warnings.push(error);
            }
            // A panicking call is a bug; report it like a failed remote.
            Err(join_error) => {
                let error = format!("internal error in a remote call: {join_error}");
                if abort {
                    return Err(FanoutError::Aborted(error));
                }
                warnings.push(error);
            }
        }
    }
    let mut values: Vec<String> = merged.into_iter().collect();
    if limit > 0 {
        values.truncate(limit as usize);
    }
    Ok((values, warnings))
}
