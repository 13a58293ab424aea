//! `thanos.Store`: Series, LabelNames and LabelValues, answered by the fan-out.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use super::observed::Observed;
use super::{call_span, request_context, status};
use crate::admission::SeriesSlots;
use crate::fanout::Fanout;
use crate::metrics::{Method, ServerMetrics};
use crate::proto::relay::store_server::Store;
use crate::proto::thanos::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, SeriesRequest,
};
use crate::wire::SeriesFrame;

pub struct StoreService {
    fanout: Arc<Fanout>,
    metrics: ServerMetrics,
    series_slots: SeriesSlots,
}

impl StoreService {
    pub fn new(fanout: Arc<Fanout>, metrics: ServerMetrics) -> Self {
        Self {
            fanout,
            metrics,
            series_slots: SeriesSlots::default(),
        }
    }

    /// Serves at most `calls` Series calls at once (0: no limit).
    pub fn with_concurrent_series_calls(mut self, calls: usize) -> Self {
        self.series_slots = SeriesSlots::new(calls);
        self
    }

    fn finish<T>(&self, method: Method, started: Instant, result: &Result<T, Status>) {
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.metrics
            .observe(method, code, started.elapsed().as_secs_f64());
    }
}

#[tonic::async_trait]
impl Store for StoreService {
    type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesFrame, Status>> + Send>>;

    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let started = Instant::now();
        let slot = match self.series_slots.admit() {
            Ok(slot) => slot,
            Err(refused) => {
                self.finish(Method::Series, started, &Err::<(), _>(refused.clone()));
                return Err(refused);
            }
        };
        let ctx = request_context(request.metadata());
        let req = request.into_inner();
        let span = call_span(Method::Series, &ctx);
        tracing::debug!(
            parent: &span,
            min_time = req.min_time,
            max_time = req.max_time,
            matchers = req.matchers.len(),
            "series request"
        );
        let result = span
            .in_scope(|| self.fanout.series(req, ctx))
            .map_err(status);
        match result {
            Ok(stream) => Ok(Response::new(Box::pin(Observed::new(
                // The slot is held until the stream ends or is dropped.
                Box::pin(stream.map(move |frame| {
                    let _held = &slot;
                    frame
                })),
                Method::Series,
                self.metrics.clone(),
                started,
                count_series,
                span,
            )))),
            Err(e) => {
                span.record("code", tracing::field::debug(e.code()));
                self.finish(Method::Series, started, &Err::<(), _>(e.clone()));
                Err(e)
            }
        }
    }

    async fn label_names(
        &self,
        request: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        let started = Instant::now();
        let ctx = request_context(request.metadata());
        let span = call_span(Method::LabelNames, &ctx);
        let result = self
            .fanout
            .label_names(request.into_inner(), ctx)
            .instrument(span.clone())
            .await
            .map(Response::new)
            .map_err(status);
        record_code(&span, &result);
        self.finish(Method::LabelNames, started, &result);
        result
    }

    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        let started = Instant::now();
        let ctx = request_context(request.metadata());
        let span = call_span(Method::LabelValues, &ctx);
        let result = self
            .fanout
            .label_values(request.into_inner(), ctx)
            .instrument(span.clone())
            .await
            .map(Response::new)
            .map_err(status);
        record_code(&span, &result);
        self.finish(Method::LabelValues, started, &result);
        result
    }
}

fn record_code<T>(span: &tracing::Span, result: &Result<T, Status>) {
    let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
    span.record("code", tracing::field::debug(code));
}

/// Counts the series in a Series response.
fn count_series(frame: &SeriesFrame, metrics: &ServerMetrics) {
    match frame {
        SeriesFrame::Series(_) => {
            metrics.series_sent.inc();
        }
        SeriesFrame::Batch(batch) => {
            metrics.series_sent.inc_by(batch.len() as u64);
        }
        _ => {}
    }
}
