//! `thanos.Rules`, `thanos.Targets`, `thanos.Metadata`, `thanos.Exemplars`
//! and `thanos.Status`: the other APIs a querier reads from its endpoints,
//! answered by the fan-out (see `fanout::streamed`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::observed::Observed;
use super::{call_span, request_context};
use crate::fanout::{ApiStream, Fanout, RequestContext};
use crate::metrics::{Method, ServerMetrics};
use crate::proto::thanos::exemplars_server::Exemplars;
use crate::proto::thanos::metadata_server::Metadata;
use crate::proto::thanos::rules_server::Rules;
use crate::proto::thanos::status_server::Status as StatusApi;
use crate::proto::thanos::targets_server::Targets;
use crate::proto::thanos::{
    ExemplarsRequest, ExemplarsResponse, MetricMetadataRequest, MetricMetadataResponse,
    RulesRequest, RulesResponse, TargetsRequest, TargetsResponse, TsdbStatisticsRequest,
    TsdbStatisticsResponse,
};

/// One handler for all five services.
#[derive(Clone)]
pub struct ApiService {
    fanout: Arc<Fanout>,
    metrics: ServerMetrics,
}

type Answer<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl ApiService {
    pub fn new(fanout: Arc<Fanout>, metrics: ServerMetrics) -> Self {
        Self { fanout, metrics }
    }

    /// Starts the fan-out for one call and records how it ends.
    fn answer<Q, T: Send + 'static>(
        &self,
        method: Method,
        request: Request<Q>,
        start: impl FnOnce(
            &Fanout,
            Q,
            RequestContext,
        ) -> Result<ApiStream<T>, crate::fanout::FanoutError>,
    ) -> Result<Response<Answer<T>>, Status> {
        let started = Instant::now();
        let ctx = request_context(request.metadata());
        let span = call_span(method, &ctx);
        let req = request.into_inner();
        let stream = span.in_scope(|| start(&self.fanout, req, ctx));
        // A call refused up front is recorded like one that failed later.
        let stream = stream.unwrap_or_else(|e| Box::pin(futures::stream::once(async { Err(e) })));
        let observed = Observed::new(
            stream,
            method,
            self.metrics.clone(),
            started,
            |_, _| {},
            span,
        );
        Ok(Response::new(Box::pin(observed)))
    }
}

#[tonic::async_trait]
impl Rules for ApiService {
    type RulesStream = Answer<RulesResponse>;

    async fn rules(
        &self,
        request: Request<RulesRequest>,
    ) -> Result<Response<Self::RulesStream>, Status> {
        self.answer(Method::Rules, request, Fanout::rules)
    }
}

#[tonic::async_trait]
impl Targets for ApiService {
    type TargetsStream = Answer<TargetsResponse>;

    async fn targets(
        &self,
        request: Request<TargetsRequest>,
    ) -> Result<Response<Self::TargetsStream>, Status> {
        self.answer(Method::Targets, request, Fanout::targets)
    }
}

#[tonic::async_trait]
impl Metadata for ApiService {
    type MetricMetadataStream = Answer<MetricMetadataResponse>;

    async fn metric_metadata(
        &self,
        request: Request<MetricMetadataRequest>,
    ) -> Result<Response<Self::MetricMetadataStream>, Status> {
        self.answer(Method::MetricMetadata, request, Fanout::metric_metadata)
    }
}

#[tonic::async_trait]
impl Exemplars for ApiService {
    type ExemplarsStream = Answer<ExemplarsResponse>;

    async fn exemplars(
        &self,
        request: Request<ExemplarsRequest>,
    ) -> Result<Response<Self::ExemplarsStream>, Status> {
        self.answer(Method::Exemplars, request, Fanout::exemplars)
    }
}

#[tonic::async_trait]
impl StatusApi for ApiService {
    type TSDBStatisticsStream = Answer<TsdbStatisticsResponse>;

    async fn tsdb_statistics(
        &self,
        request: Request<TsdbStatisticsRequest>,
    ) -> Result<Response<Self::TSDBStatisticsStream>, Status> {
        self.answer(Method::TSDBStatistics, request, Fanout::tsdb_statistics)
    }
}
