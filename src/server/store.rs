//! `thanos.Store`: Series, LabelNames and LabelValues, answered by the fan-out.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::Stream;
use tonic::{Code, Request, Response, Status};

use super::{request_context, status};
use crate::fanout::{Fanout, SeriesStream};
use crate::metrics::{Method, ServerMetrics};
use crate::proto::thanos::store_server::Store;
use crate::proto::thanos::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, SeriesRequest,
    SeriesResponse, series_response,
};

pub struct StoreService {
    fanout: Arc<Fanout>,
    metrics: ServerMetrics,
}

impl StoreService {
    pub fn new(fanout: Arc<Fanout>, metrics: ServerMetrics) -> Self {
        Self { fanout, metrics }
    }

    fn finish<T>(&self, method: Method, started: Instant, result: &Result<T, Status>) {
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.metrics
            .observe(method, code, started.elapsed().as_secs_f64());
    }
}

#[tonic::async_trait]
impl Store for StoreService {
    type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesResponse, Status>> + Send>>;

    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let started = Instant::now();
        let ctx = request_context(request.metadata());
        let req = request.into_inner();
        let span = tracing::info_span!(
            "series",
            min_time = req.min_time,
            max_time = req.max_time,
            matchers = req.matchers.len(),
            tenant = ctx.tenant.as_deref().unwrap_or(""),
        );
        let result = span
            .in_scope(|| self.fanout.series(req, ctx))
            .map_err(status);
        match result {
            Ok(stream) => Ok(Response::new(Box::pin(Observed {
                inner: stream,
                metrics: self.metrics.clone(),
                started,
                code: None,
            }))),
            Err(e) => {
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
        let result = self
            .fanout
            .label_names(request.into_inner(), ctx)
            .await
            .map(Response::new)
            .map_err(status);
        self.finish(Method::LabelNames, started, &result);
        result
    }

    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        let started = Instant::now();
        let ctx = request_context(request.metadata());
        let result = self
            .fanout
            .label_values(request.into_inner(), ctx)
            .await
            .map(Response::new)
            .map_err(status);
        self.finish(Method::LabelValues, started, &result);
        result
    }
}

/// The Series response stream, recording how it ended (a drop before the end
/// means the querier cancelled).
struct Observed {
    inner: SeriesStream,
    metrics: ServerMetrics,
    started: Instant,
    code: Option<Code>,
}

impl Stream for Observed {
    type Item = Result<SeriesResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = match self.inner.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        Poll::Ready(match item {
            None => {
                self.code.get_or_insert(Code::Ok);
                None
            }
            Some(Err(e)) => {
                let e = status(e);
                self.code = Some(e.code());
                Some(Err(e))
            }
            Some(Ok(resp)) => {
                match &resp.result {
                    Some(series_response::Result::Series(_)) => {
                        self.metrics.series_sent.inc();
                    }
                    Some(series_response::Result::Batch(b)) => {
                        self.metrics.series_sent.inc_by(b.series.len() as u64);
                    }
                    _ => {}
                }
                Some(Ok(resp))
            }
        })
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled);
        self.metrics
            .observe(Method::Series, code, self.started.elapsed().as_secs_f64());
    }
}
