//! Metric families. Each component registers what it owns; per-remote label
//! children are created when an endpoint appears, so the request path only
//! increments handles it already holds.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// gRPC methods we serve and call, as metric label values.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Method {
    Info,
    Series,
    LabelNames,
    LabelValues,
    Rules,
    Targets,
    MetricMetadata,
    Exemplars,
    TSDBStatistics,
}

impl Method {
    /// The methods called on remotes and counted per call (Info has its own
    /// failure counter).
    const CALLED: [Method; 8] = [
        Method::Series,
        Method::LabelNames,
        Method::LabelValues,
        Method::Rules,
        Method::Targets,
        Method::MetricMetadata,
        Method::Exemplars,
        Method::TSDBStatistics,
    ];
}

/// How a call to a remote ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    Success,
    Error,
    Timeout,
    Cancelled,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Cancelled,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    remote: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    remote: String,
    method: Method,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemoteLabels {
    remote: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: Method,
    code: String,
}

/// Families describing remotes, registered once.
#[derive(Clone)]
pub struct RemoteFamilies {
    up: Family<EndpointLabels, Gauge>,
    connections: Family<EndpointLabels, Gauge>,
    info_failures: Family<EndpointLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    series_received: Family<RemoteLabels, Counter>,
}

impl RemoteFamilies {
    pub fn register(registry: &mut Registry) -> Self {
        let families = Self {
            up: Family::default(),
            connections: Family::default(),
            info_failures: Family::default(),
            calls: Family::default(),
            series_received: Family::default(),
        };
        registry.register(
            "thanos_fanout_remote_endpoint_up",
            "Whether the endpoint's last Info call succeeded (1) so it is queried, or failed (0)",
            families.up.clone(),
        );
        registry.register(
            "thanos_fanout_remote_connections",
            "HTTP/2 connections open (or being dialled) to an endpoint; concurrent Series streams beyond fanout.streams_per_connection open more",
            families.connections.clone(),
        );
        registry.register(
            "thanos_fanout_remote_info_failures",
            "Failed Info calls to an endpoint",
            families.info_failures.clone(),
        );
        registry.register(
            "thanos_fanout_remote_calls",
            "Calls made to a remote, by gRPC method and outcome",
            families.calls.clone(),
        );
        registry.register(
            "thanos_fanout_remote_series_received",
            "Series received from a remote",
            families.series_received.clone(),
        );
        families
    }

    /// Drops the label children of an endpoint discovery removed.
    pub fn forget_endpoint(&self, remote: &str, endpoint: &str) {
        let labels = EndpointLabels {
            remote: remote.to_owned(),
            endpoint: endpoint.to_owned(),
        };
        self.up.remove(&labels);
        self.connections.remove(&labels);
        self.info_failures.remove(&labels);
    }

    /// Creates the label children of one endpoint.
    pub fn endpoint(&self, remote: &str, endpoint: &str) -> EndpointMetrics {
        let labels = EndpointLabels {
            remote: remote.to_owned(),
            endpoint: endpoint.to_owned(),
        };
        // Indexed like Method::CALLED, then like Outcome::ALL.
        let calls = Method::CALLED.map(|method| {
            Outcome::ALL.map(|outcome| {
                self.calls
                    .get_or_create(&CallLabels {
                        remote: remote.to_owned(),
                        method,
                        outcome,
                    })
                    .clone()
            })
        });
        EndpointMetrics {
            up: self.up.get_or_create(&labels).clone(),
            connections: self.connections.get_or_create(&labels).clone(),
            info_failures: self.info_failures.get_or_create(&labels).clone(),
            calls,
            series_received: self
                .series_received
                .get_or_create(&RemoteLabels {
                    remote: remote.to_owned(),
                })
                .clone(),
        }
    }
}

/// Handles for one endpoint.
#[derive(Clone, Debug)]
pub struct EndpointMetrics {
    pub up: Gauge,
    pub connections: Gauge,
    pub info_failures: Counter,
    calls: [[Counter; 4]; 8],
    pub series_received: Counter,
}

impl EndpointMetrics {
    /// Counts one finished call.
    pub fn call(&self, method: Method, outcome: Outcome) {
        let Some(m) = Method::CALLED.iter().position(|c| *c == method) else {
            return;
        };
        let o = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or_default();
        self.calls[m][o].inc();
    }
}

/// Families describing the calls the querier makes to us.
#[derive(Clone)]
pub struct ServerMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
    pub series_sent: Counter,
}

impl ServerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 4.0, 8))
            }),
            series_sent: Counter::default(),
        };
        registry.register(
            "thanos_fanout_requests",
            "Requests from queriers handled, by gRPC method and code",
            metrics.requests.clone(),
        );
        registry.register(
            "thanos_fanout_request_duration_seconds",
            "Time to answer a request from a querier (for streams, until the stream ends)",
            metrics.duration.clone(),
        );
        registry.register(
            "thanos_fanout_series_sent",
            "Series sent to queriers after merging",
            metrics.series_sent.clone(),
        );
        metrics
    }

    /// Records one finished request.
    pub fn observe(&self, method: Method, code: tonic::Code, seconds: f64) {
        let labels = RequestLabels {
            method,
            code: format!("{code:?}"),
        };
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(seconds);
    }
}
