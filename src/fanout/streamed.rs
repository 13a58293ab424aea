//! Rules, Targets, MetricMetadata, Exemplars and TSDBStatistics: the streams
//! a querier reads besides Series. Each answer is a stream of items (rule
//! groups, target lists, metadata maps, exemplar series, statistics maps)
//! and warnings.
//!
//! We answer as a querier does when it is itself someone's endpoint: the
//! request goes to every healthy endpoint that offers the API (for
//! exemplars, only to those whose external labels its selectors can match),
//! items are passed on as they arrive, and deduplication by replica labels is
//! left to the querier on top, which does it anyway. A remote's own warnings
//! are passed on (naming it) under either strategy; a failed remote becomes a
//! warning under WARN and ends the call with `Aborted` under ABORT, which
//! cancels the other calls. A remote is given `timeout` to make progress,
//! counted while we wait for it; the caller's deadline bounds the call.
//! Getting a call under way (resending one turned away unread, moving to a
//! replica) is [`super::fallback`]'s.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use futures::Stream;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::fallback;
use super::remote::{RemoteCall, Stop, settle, within_deadline};
use super::{Fanout, FanoutError, Plan, RequestContext, Selected, aborts, selectors};
use crate::metrics::Method;
use crate::proto::thanos::{
    ExemplarsRequest, ExemplarsResponse, MetricMetadataRequest, MetricMetadataResponse,
    RulesRequest, RulesResponse, TargetsRequest, TargetsResponse, TsdbStatisticsRequest,
    TsdbStatisticsResponse, exemplars_response, metric_metadata_response, rules_response,
    targets_response, tsdb_statistics_response,
};
use crate::upstream::{Api, Endpoint, RemoteError, RemoteErrorKind, StreamLease};

/// An answer stream, as tonic wants it.
pub type ApiStream<R> = Pin<Box<dyn Stream<Item = Result<R, FanoutError>> + Send>>;

/// A remote call that has been sent and waits for the stream to open.
type Opening<R> = BoxFuture<'static, Result<tonic::Streaming<R>, tonic::Status>>;

/// What one frame of an answer is.
pub enum Frame<R> {
    Item(R),
    Warning(String),
    /// No result set: nothing to pass on.
    Empty,
}

/// One streamed API: its messages, and how to call it on an endpoint.
pub trait StreamedApi: 'static {
    type Request: Clone + Send + Sync + 'static;
    type Response: Send + 'static;
    const API: Api;
    const METHOD: Method;
    /// What its items are called in messages.
    const UNIT: &'static str;

    fn strategy(request: &Self::Request) -> i32;
    fn classify(response: Self::Response) -> Frame<Self::Response>;
    fn warning(text: String) -> Self::Response;
    /// Starts the call on one endpoint, on a connection with room for it.
    fn open(
        endpoint: &Endpoint,
        request: tonic::Request<Self::Request>,
    ) -> (Opening<Self::Response>, StreamLease);
}

/// Implements [`StreamedApi`] for one service: its request and response
/// types, the oneof module of the response and its item variant, and the
/// client method.
macro_rules! streamed_api {
    ($name:ident, $api:ident, $method:ident, $unit:literal, $req:ty, $resp:ident, $oneof:ident :: $item:ident, $client:ident . $call:ident) => {
        pub struct $name;

        impl StreamedApi for $name {
            type Request = $req;
            type Response = $resp;
            const API: Api = Api::$api;
            const METHOD: Method = Method::$method;
            const UNIT: &'static str = $unit;

            fn strategy(request: &$req) -> i32 {
                request.partial_response_strategy
            }

            fn classify(response: $resp) -> Frame<$resp> {
                match response.result {
                    Some($oneof::Result::Warning(text)) => Frame::Warning(text),
                    Some($oneof::Result::$item(_)) => Frame::Item(response),
                    None => Frame::Empty,
                }
            }

            fn warning(text: String) -> $resp {
                $resp {
                    result: Some($oneof::Result::Warning(text)),
                }
            }

            fn open(
                endpoint: &Endpoint,
                request: tonic::Request<$req>,
            ) -> (Opening<$resp>, StreamLease) {
                let (mut client, lease) = endpoint.$client();
                let opening = Box::pin(async move {
                    client.$call(request).await.map(tonic::Response::into_inner)
                });
                (opening, lease)
            }
        }
    };
}

streamed_api!(
    RulesApi,
    Rules,
    Rules,
    "rule groups",
    RulesRequest,
    RulesResponse,
    rules_response::Group,
    rules_client.rules
);
streamed_api!(
    TargetsApi,
    Targets,
    Targets,
    "target lists",
    TargetsRequest,
    TargetsResponse,
    targets_response::Targets,
    targets_client.targets
);
streamed_api!(
    MetadataApi,
    MetricMetadata,
    MetricMetadata,
    "metadata maps",
    MetricMetadataRequest,
    MetricMetadataResponse,
    metric_metadata_response::Metadata,
    metadata_client.metric_metadata
);
streamed_api!(
    ExemplarsApi,
    Exemplars,
    Exemplars,
    "exemplar series",
    ExemplarsRequest,
    ExemplarsResponse,
    exemplars_response::Data,
    exemplars_client.exemplars
);
streamed_api!(
    StatusApi,
    Status,
    TSDBStatistics,
    "statistics maps",
    TsdbStatisticsRequest,
    TsdbStatisticsResponse,
    tsdb_statistics_response::Statistics,
    status_client.tsdb_statistics
);

impl Fanout {
    /// `thanos.Rules/Rules`: every endpoint offering rules.
    pub fn rules(
        &self,
        req: RulesRequest,
        ctx: RequestContext,
    ) -> Result<ApiStream<RulesResponse>, FanoutError> {
        self.to_all::<RulesApi>(req, ctx)
    }

    /// `thanos.Targets/Targets`: every endpoint offering targets.
    pub fn targets(
        &self,
        req: TargetsRequest,
        ctx: RequestContext,
    ) -> Result<ApiStream<TargetsResponse>, FanoutError> {
        self.to_all::<TargetsApi>(req, ctx)
    }

    /// `thanos.Metadata/MetricMetadata`: every endpoint offering metadata.
    /// The querier on top applies `limit` across all of them.
    pub fn metric_metadata(
        &self,
        req: MetricMetadataRequest,
        ctx: RequestContext,
    ) -> Result<ApiStream<MetricMetadataResponse>, FanoutError> {
        self.to_all::<MetadataApi>(req, ctx)
    }

    /// `thanos.Status/TSDBStatistics`: every endpoint offering statistics
    /// (a sidecar itself answers empty when the matchers exclude its external
    /// labels).
    pub fn tsdb_statistics(
        &self,
        req: TsdbStatisticsRequest,
        ctx: RequestContext,
    ) -> Result<ApiStream<TsdbStatisticsResponse>, FanoutError> {
        self.to_all::<StatusApi>(req, ctx)
    }

    /// `thanos.Exemplars/Exemplars`: routed by external labels like Series.
    /// We present ourselves as a querier, so the querier on top keeps the
    /// matchers on external labels and leaves choosing the clusters to us.
    /// Each endpoint gets the selectors its label sets can match; endpoints
    /// that are not queriers get them without matchers on their external
    /// label names, which their storage does not hold.
    pub fn exemplars(
        &self,
        req: ExemplarsRequest,
        ctx: RequestContext,
    ) -> Result<ApiStream<ExemplarsResponse>, FanoutError> {
        let selectors = selectors::parse(&req.query).map_err(FanoutError::InvalidArgument)?;
        let plan = self.plan_by(|info| {
            info.offers(Api::Exemplars) && selectors.iter().any(|s| s.matches(&info.label_sets))
        });
        let requests = |s: &Selected| {
            let keeps_external_labels = s.info.component == "query";
            selectors::query_for(&selectors, &s.info.label_sets, keeps_external_labels).map(
                |query| ExemplarsRequest {
                    query,
                    ..req.clone()
                },
            )
        };
        self.streamed::<ExemplarsApi>(plan, &req, requests, ctx)
    }

    /// Forwards the request unchanged to every endpoint offering the API.
    fn to_all<A: StreamedApi>(
        &self,
        req: A::Request,
        ctx: RequestContext,
    ) -> Result<ApiStream<A::Response>, FanoutError> {
        let plan = self.plan_by(|info| info.offers(A::API));
        self.streamed::<A>(plan, &req, |_| Some(req.clone()), ctx)
    }

    /// Calls the planned endpoints with the request `request_for` makes for
    /// each (None: skip it) and streams their answers back as they arrive.
    fn streamed<A: StreamedApi>(
        &self,
        plan: Plan,
        req: &A::Request,
        request_for: impl Fn(&Selected) -> Option<A::Request>,
        ctx: RequestContext,
    ) -> Result<ApiStream<A::Response>, FanoutError> {
        let abort = aborts(A::strategy(req), false);
        plan.check_abort(abort)?;
        let (tx, rx) = mpsc::channel(self.buffer_frames);
        let mut tasks = JoinSet::new();
        for selected in plan.selected {
            // The endpoint, then (`mode: any`) the remote's others in turn,
            // each with its own request.
            let mut attempts = VecDeque::new();
            let mut candidate = Some(selected);
            while let Some(selected) = candidate {
                candidate = selected.next();
                if let Some(request) = request_for(&selected) {
                    attempts.push_back((selected, request));
                }
            }
            let Some((first, request)) = attempts.pop_front() else {
                continue;
            };
            let span = super::remote::span(A::METHOD, &first.endpoint);
            let pump = Pump::<A> {
                request,
                fallbacks: attempts,
                ctx: ctx.clone(),
                call: RemoteCall::new(first, A::METHOD),
                tx: tx.clone(),
                received: 0,
            };
            tasks.spawn(pump.run().instrument(span));
        }
        drop(tx);
        let output = Output::<A> {
            rx,
            queued: plan.skipped.iter().map(ToString::to_string).collect(),
            abort,
            done: false,
            tasks,
        };
        Ok(Box::pin(futures::stream::unfold(
            output,
            |mut out| async move { out.next().await.map(|item| (item, out)) },
        )))
    }
}

/// What a pump passes to the output.
enum Event<R> {
    Item(R),
    /// A remote's own warning, already naming it: passed on under either
    /// strategy, as a querier does.
    Warning(String),
    Failed(RemoteError),
}

/// Reads one endpoint's stream into the output's channel.
struct Pump<A: StreamedApi> {
    call: RemoteCall,
    ctx: RequestContext,
    /// The request for the endpoint being tried.
    request: A::Request,
    /// Endpoints to try in turn if this one fails before its first frame.
    fallbacks: VecDeque<(Selected, A::Request)>,
    tx: mpsc::Sender<Event<A::Response>>,
    received: u64,
}

impl<A: StreamedApi> Pump<A> {
    async fn run(mut self) {
        let result = within_deadline(self.ctx.deadline, self.stream())
            .await
            .unwrap_or_else(|| {
                Err(Stop::Failed(self.call.error(
                    RemoteErrorKind::CallerDeadline {
                        elapsed: self.call.elapsed(),
                        received: self.received,
                        unit: A::UNIT,
                    },
                )))
            });
        tracing::Span::current().record("received", self.received);
        if let Some(error) = self.call.conclude(result) {
            let _ = self.tx.send(Event::Failed(error)).await;
        }
    }

    /// Waits for the remote, up to its `timeout`, unless the reader goes
    /// away.
    async fn wait<T>(
        &self,
        step: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, Stop> {
        let timeout = self.call.selected.endpoint.timeout;
        let silent = || RemoteErrorKind::NoProgress {
            timeout,
            received: self.received,
            unit: A::UNIT,
        };
        self.call
            .step(step, timeout, silent, self.tx.closed())
            .await
    }

    async fn stream(&mut self) -> Result<(), Stop> {
        // Held until the stream ends, like a Series stream's.
        let ((mut stream, mut next), _lease) = fallback::open(self).await?;
        while let Some(response) = next {
            let event = match A::classify(response) {
                Frame::Item(item) => {
                    self.received += 1;
                    Some(Event::Item(item))
                }
                Frame::Warning(text) => Some(Event::Warning(
                    self.call.error(RemoteErrorKind::Warning(text)).to_string(),
                )),
                Frame::Empty => None,
            };
            if let Some(event) = event {
                self.tx.send(event).await.map_err(|_| Stop::Cancelled)?;
            }
            next = self.wait(stream.message()).await?;
        }
        Ok(())
    }
}

impl<A: StreamedApi> fallback::Attempts for Pump<A> {
    type Opened = (tonic::Streaming<A::Response>, Option<A::Response>);

    fn call(&mut self) -> &mut RemoteCall {
        &mut self.call
    }

    async fn attempt(&mut self) -> (Result<Self::Opened, Stop>, StreamLease) {
        let request = self.ctx.outgoing(self.request.clone(), self.ctx.deadline);
        let (opening, lease) = A::open(&self.call.selected.endpoint, request);
        let opened = async {
            let mut stream = self.wait(opening).await?;
            let first = self.wait(stream.message()).await?;
            Ok((stream, first))
        }
        .await;
        (opened, lease)
    }

    fn next(&mut self) -> Option<Selected> {
        let (next, request) = self.fallbacks.pop_front()?;
        self.request = request;
        Some(next)
    }
}

/// Turns the pumps' events into responses, applying the strategy.
struct Output<A: StreamedApi> {
    rx: mpsc::Receiver<Event<A::Response>>,
    /// Warnings about endpoints that were not called, sent first.
    queued: VecDeque<String>,
    abort: bool,
    done: bool,
    /// Owning the endpoint tasks: dropping the output aborts them.
    tasks: JoinSet<()>,
}

impl<A: StreamedApi> Output<A> {
    async fn next(&mut self) -> Option<Result<A::Response, FanoutError>> {
        if let Some(warning) = self.queued.pop_front() {
            return Some(Ok(A::warning(warning)));
        }
        if self.done {
            return None;
        }
        match self.rx.recv().await {
            // Every pump has finished.
            None => {
                self.done = true;
                None
            }
            Some(Event::Item(item)) => Some(Ok(item)),
            Some(Event::Warning(text)) => Some(Ok(A::warning(text))),
            Some(Event::Failed(error)) => match settle(error, self.abort) {
                Ok(warning) => Some(Ok(A::warning(warning))),
                Err(abort) => {
                    self.done = true;
                    self.tasks.abort_all();
                    Some(Err(abort))
                }
            },
        }
    }
}
