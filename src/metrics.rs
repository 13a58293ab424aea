//! Metric families. Each component registers what it owns; per-remote label
//! children are created when an endpoint appears, so the request path only
//! increments handles it already holds.

use std::sync::atomic::AtomicU64;

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
    /// The gRPC method's full name, as trace views show calls.
    pub fn path(self) -> &'static str {
        match self {
            Method::Info => "thanos.info.Info/Info",
            Method::Series => "thanos.Store/Series",
            Method::LabelNames => "thanos.Store/LabelNames",
            Method::LabelValues => "thanos.Store/LabelValues",
            Method::Rules => "thanos.Rules/Rules",
            Method::Targets => "thanos.Targets/Targets",
            Method::MetricMetadata => "thanos.Metadata/MetricMetadata",
            Method::Exemplars => "thanos.Exemplars/Exemplars",
            Method::TSDBStatistics => "thanos.Status/TSDBStatistics",
        }
    }

    /// The methods called on remotes and counted per call (Info has its own
    /// failure counter).
    pub const CALLED: [Method; 8] = [
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
struct HandshakeFailureLabels {
    remote: String,
    endpoint: String,
    reason: &'static str,
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
struct RemoteMethodLabels {
    remote: String,
    method: Method,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// Buckets of remote call times: 1 ms to a minute.
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 13))
}

/// Registers `thanos_fanout_build_info`.
pub fn register_build_info(registry: &mut Registry) {
    let info: Family<BuildLabels, Gauge> = Family::default();
    info.get_or_create(&BuildLabels {
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
    .set(1);
    registry.register(
        "thanos_fanout_build_info",
        "Always 1; the labels say which build is running",
        info,
    );
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
    series_bytes_received: Family<RemoteLabels, Counter>,
    chunks_received: Family<RemoteLabels, Counter>,
    in_flight: Family<RemoteMethodLabels, Gauge>,
    duration: Family<RemoteMethodLabels, Histogram, fn() -> Histogram>,
    first_frame: Family<RemoteMethodLabels, Histogram, fn() -> Histogram>,
    last_info_success: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
    handshake_failures: Family<HandshakeFailureLabels, Counter>,
    server_certificate_expiry: Family<EndpointLabels, Gauge>,
    client_certificate_expiry: Family<RemoteLabels, Gauge>,
    breaker_open: Family<EndpointLabels, Gauge>,
    breaker_opened: Family<EndpointLabels, Counter>,
}

impl RemoteFamilies {
    pub fn register(registry: &mut Registry) -> Self {
        let families = Self {
            up: Family::default(),
            connections: Family::default(),
            info_failures: Family::default(),
            calls: Family::default(),
            series_received: Family::default(),
            series_bytes_received: Family::default(),
            chunks_received: Family::default(),
            in_flight: Family::default(),
            duration: Family::new_with_constructor(call_buckets),
            first_frame: Family::new_with_constructor(call_buckets),
            last_info_success: Family::default(),
            handshake_failures: Family::default(),
            server_certificate_expiry: Family::default(),
            client_certificate_expiry: Family::default(),
            breaker_open: Family::default(),
            breaker_opened: Family::default(),
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
        registry.register(
            "thanos_fanout_remote_series_received_bytes",
            "Bytes of encoded series received from a remote",
            families.series_bytes_received.clone(),
        );
        registry.register(
            "thanos_fanout_remote_chunks_received",
            "Chunks received from a remote",
            families.chunks_received.clone(),
        );
        registry.register(
            "thanos_fanout_remote_calls_in_flight",
            "Calls to a remote in progress, by gRPC method",
            families.in_flight.clone(),
        );
        registry.register(
            "thanos_fanout_remote_call_duration_seconds",
            "Time from a call to a remote until it ended (for streams, until the last frame), by gRPC method",
            families.duration.clone(),
        );
        registry.register(
            "thanos_fanout_remote_first_frame_seconds",
            "Time from a call to a remote until its first answer frame, by gRPC method",
            families.first_frame.clone(),
        );
        registry.register(
            "thanos_fanout_remote_endpoint_last_info_success_timestamp_seconds",
            "When the endpoint last answered Info (Unix time)",
            families.last_info_success.clone(),
        );
        registry.register(
            "thanos_fanout_remote_tls_handshake_failures",
            "TLS handshakes with an endpoint that failed, by reason (a client certificate the remote rejects after a TLS 1.3 handshake counts too)",
            families.handshake_failures.clone(),
        );
        registry.register(
            "thanos_fanout_remote_server_certificate_expiry_timestamp_seconds",
            "When the certificate the endpoint presented in its last successful handshake expires (Unix time)",
            families.server_certificate_expiry.clone(),
        );
        registry.register(
            "thanos_fanout_remote_client_certificate_expiry_timestamp_seconds",
            "When the client certificate configured for a remote expires (Unix time)",
            families.client_certificate_expiry.clone(),
        );
        registry.register(
            "thanos_fanout_remote_circuit_breaker_open",
            "Whether the endpoint's circuit breaker is open (1): it is skipped after failing calls in a row, until its back-off passes",
            families.breaker_open.clone(),
        );
        registry.register(
            "thanos_fanout_remote_circuit_breaker_opened",
            "Times the endpoint's circuit breaker opened",
            families.breaker_opened.clone(),
        );
        families
    }

    /// Sets (or, for a remote without one, removes) the expiry of the
    /// client certificate a remote presents.
    pub fn client_certificate_expiry(&self, remote: &str, not_after: Option<i64>) {
        let labels = RemoteLabels {
            remote: remote.to_owned(),
        };
        match not_after {
            Some(at) => {
                self.client_certificate_expiry
                    .get_or_create(&labels)
                    .set(at);
            }
            None => {
                self.client_certificate_expiry.remove(&labels);
            }
        }
    }

    /// Calls made to `remote` so far, one entry per method in
    /// [`Method::CALLED`] order, read from the families without creating
    /// label children.
    pub fn remote_calls(&self, remote: &str) -> Vec<MethodCalls> {
        Method::CALLED
            .iter()
            .map(|&method| {
                let count = |outcome| {
                    self.calls
                        .get(&CallLabels {
                            remote: remote.to_owned(),
                            method,
                            outcome,
                        })
                        .map_or(0, |counter| counter.get())
                };
                let by_method = RemoteMethodLabels {
                    remote: remote.to_owned(),
                    method,
                };
                let sum_count =
                    |family: &Family<RemoteMethodLabels, Histogram, fn() -> Histogram>| {
                        family
                            .get(&by_method)
                            .map_or((0.0, 0), |h| (h.sum(), h.count()))
                    };
                let (duration_seconds_sum, duration_count) = sum_count(&self.duration);
                let (first_frame_seconds_sum, first_frame_count) = sum_count(&self.first_frame);
                MethodCalls {
                    method,
                    success: count(Outcome::Success),
                    error: count(Outcome::Error),
                    timeout: count(Outcome::Timeout),
                    cancelled: count(Outcome::Cancelled),
                    in_flight: self.in_flight.get(&by_method).map_or(0, |g| g.get()),
                    duration_seconds_sum,
                    duration_count,
                    first_frame_seconds_sum,
                    first_frame_count,
                }
            })
            .collect()
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
        self.last_info_success.remove(&labels);
        self.server_certificate_expiry.remove(&labels);
        self.breaker_open.remove(&labels);
        self.breaker_opened.remove(&labels);
        for reason in crate::handshake::HANDSHAKE_FAILURE_REASONS {
            self.handshake_failures.remove(&HandshakeFailureLabels {
                remote: remote.to_owned(),
                endpoint: endpoint.to_owned(),
                reason,
            });
        }
    }

    /// Drops every label child of a remote that is no longer configured,
    /// and of its `endpoints`.
    pub fn forget_remote<'a>(&self, remote: &str, endpoints: impl IntoIterator<Item = &'a str>) {
        for endpoint in endpoints {
            self.forget_endpoint(remote, endpoint);
        }
        for method in Method::CALLED {
            for outcome in Outcome::ALL {
                self.calls.remove(&CallLabels {
                    remote: remote.to_owned(),
                    method,
                    outcome,
                });
            }
            let labels = RemoteMethodLabels {
                remote: remote.to_owned(),
                method,
            };
            self.in_flight.remove(&labels);
            self.duration.remove(&labels);
            self.first_frame.remove(&labels);
        }
        let labels = RemoteLabels {
            remote: remote.to_owned(),
        };
        self.series_received.remove(&labels);
        self.series_bytes_received.remove(&labels);
        self.chunks_received.remove(&labels);
        self.client_certificate_expiry.remove(&labels);
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
        let by_method = |method| RemoteMethodLabels {
            remote: remote.to_owned(),
            method,
        };
        let per_remote = RemoteLabels {
            remote: remote.to_owned(),
        };
        EndpointMetrics {
            up: self.up.get_or_create(&labels).clone(),
            connections: self.connections.get_or_create(&labels).clone(),
            info_failures: self.info_failures.get_or_create(&labels).clone(),
            last_info_success: self.last_info_success.get_or_create(&labels).clone(),
            breaker_open: self.breaker_open.get_or_create(&labels).clone(),
            breaker_opened: self.breaker_opened.get_or_create(&labels).clone(),
            calls,
            in_flight: Method::CALLED.map(|m| self.in_flight.get_or_create(&by_method(m)).clone()),
            duration: Method::CALLED.map(|m| self.duration.get_or_create(&by_method(m)).clone()),
            first_frame: Method::CALLED
                .map(|m| self.first_frame.get_or_create(&by_method(m)).clone()),
            series_received: self.series_received.get_or_create(&per_remote).clone(),
            series_bytes_received: self
                .series_bytes_received
                .get_or_create(&per_remote)
                .clone(),
            chunks_received: self.chunks_received.get_or_create(&per_remote).clone(),
            tls: TlsMetrics {
                handshake_failures: self.handshake_failures.clone(),
                server_certificate_expiry: self.server_certificate_expiry.clone(),
                remote: remote.to_owned(),
                endpoint: endpoint.to_owned(),
            },
        }
    }
}

/// TLS facts of one endpoint's connections. Its children appear with the
/// first handshake, so a plaintext endpoint has none.
#[derive(Clone, Debug)]
pub struct TlsMetrics {
    handshake_failures: Family<HandshakeFailureLabels, Counter>,
    server_certificate_expiry: Family<EndpointLabels, Gauge>,
    remote: String,
    endpoint: String,
}

impl TlsMetrics {
    /// Counts a failed handshake; `reason` is one of
    /// [`crate::handshake::HANDSHAKE_FAILURE_REASONS`].
    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&HandshakeFailureLabels {
                remote: self.remote.clone(),
                endpoint: self.endpoint.clone(),
                reason,
            })
            .inc();
    }

    /// Records the expiry (Unix seconds) of the certificate the endpoint
    /// just presented.
    pub fn server_certificate_expiry(&self, not_after: i64) {
        self.server_certificate_expiry
            .get_or_create(&EndpointLabels {
                remote: self.remote.clone(),
                endpoint: self.endpoint.clone(),
            })
            .set(not_after);
    }
}

/// One method's calls to one remote so far, as the metrics count them.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodCalls {
    pub method: Method,
    pub success: u64,
    pub error: u64,
    pub timeout: u64,
    /// Ended by the caller (or an abort) before the remote finished: not
    /// the remote's failure.
    pub cancelled: u64,
    pub in_flight: i64,
    /// Until the last frame.
    pub duration_seconds_sum: f64,
    pub duration_count: u64,
    /// Until the first answer frame.
    pub first_frame_seconds_sum: f64,
    pub first_frame_count: u64,
}

/// Handles for one endpoint.
#[derive(Clone, Debug)]
pub struct EndpointMetrics {
    pub up: Gauge,
    pub connections: Gauge,
    pub info_failures: Counter,
    /// Unix time of the last successful Info call.
    pub last_info_success: Gauge<f64, AtomicU64>,
    pub breaker_open: Gauge,
    pub breaker_opened: Counter,
    calls: [[Counter; 4]; 8],
    in_flight: [Gauge; 8],
    duration: [Histogram; 8],
    first_frame: [Histogram; 8],
    pub series_received: Counter,
    pub series_bytes_received: Counter,
    pub chunks_received: Counter,
    pub tls: TlsMetrics,
}

impl EndpointMetrics {
    fn index(method: Method) -> Option<usize> {
        Method::CALLED.iter().position(|c| *c == method)
    }

    /// Counts one finished call and how long it took.
    pub fn call(&self, method: Method, outcome: Outcome, seconds: f64) {
        let Some(m) = Self::index(method) else {
            return;
        };
        let o = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or_default();
        self.calls[m][o].inc();
        self.duration[m].observe(seconds);
    }

    /// Records the time to a call's first answer frame.
    pub fn first_frame(&self, method: Method, seconds: f64) {
        if let Some(m) = Self::index(method) {
            self.first_frame[m].observe(seconds);
        }
    }

    /// One more (`delta` 1) or one fewer (-1) call in progress.
    pub fn in_flight(&self, method: Method, delta: i64) {
        if let Some(m) = Self::index(method) {
            self.in_flight[m].inc_by(delta);
        }
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
