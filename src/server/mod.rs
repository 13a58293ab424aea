//! The gRPC services a querier calls: `thanos.Store`, `thanos.info.Info`,
//! `thanos.Rules`, `thanos.Targets`, `thanos.Metadata`, `thanos.Exemplars`,
//! `thanos.Status`, `grpc.health.v1.Health` and reflection, served in
//! plaintext (h2c).

mod apis;
mod info;
mod observed;
mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tonic::Status;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::transport::Server;

pub use apis::ApiService;
pub use info::InfoService;
pub use store::StoreService;

use crate::fanout::{FanoutError, RequestContext};
use crate::listener::{Acceptor, TlsListener};
use crate::metrics::Method;
use crate::proto::relay::store_server::StoreServer;
use crate::proto::thanos::exemplars_server::ExemplarsServer;
use crate::proto::thanos::info::info_server::InfoServer;
use crate::proto::thanos::metadata_server::MetadataServer;
use crate::proto::thanos::rules_server::RulesServer;
use crate::proto::thanos::status_server::StatusServer;
use crate::proto::thanos::targets_server::TargetsServer;
use crate::snappy::{self, SnappyRequests};
use crate::telemetry::TraceHeaders;

/// Longest status message we send. It travels in an HTTP/2 trailer, and
/// clients refuse trailers over a few KiB (grpc-go: 8 KiB, failing the call
/// with `RESOURCE_EXHAUSTED` in place of our error).
pub const MAX_STATUS_MESSAGE: usize = 1024;

/// The one place fan-out errors become gRPC statuses.
pub fn status(err: FanoutError) -> Status {
    let bounded = |msg: String| crate::labelset::bounded(&msg, MAX_STATUS_MESSAGE - 32);
    match err {
        FanoutError::InvalidArgument(msg) => Status::invalid_argument(bounded(msg)),
        FanoutError::Aborted(error) => Status::aborted(bounded(error.to_string())),
        FanoutError::LimitExceeded(msg) => Status::resource_exhausted(bounded(msg)),
    }
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit
/// (H, M, S, m, u, n). Any other text is None, which the caller takes as
/// no deadline: tonic's own server reads the header the same way (grpc-go's
/// refuses the call instead), so we never disagree with the deadline tonic
/// applies to the same call.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    // The unit is the last character, which in text we did not write may
    // be longer than a byte.
    let mut chars = value.chars();
    let unit = chars.next_back()?;
    let digits = chars.as_str();
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    // At most 8 digits: no product below overflows.
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Reads tenant, request id and deadline from the caller's metadata.
pub fn request_context(metadata: &MetadataMap) -> RequestContext {
    let text = |key: &str| {
        metadata
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    RequestContext {
        trace: TraceHeaders::from_metadata(metadata),
        tenant: text("thanos-tenant"),
        request_id: text("request-id"),
        deadline: text("grpc-timeout")
            .as_deref()
            .and_then(parse_grpc_timeout)
            .map(|d| tokio::time::Instant::now() + d),
    }
}

/// The span of one incoming call: a child of the querier's span when it
/// sent a trace context, covering the call until its last frame.
pub fn call_span(method: Method, ctx: &RequestContext) -> tracing::Span {
    let span = tracing::info_span!(
        "call",
        otel.name = method.path(),
        otel.kind = "server",
        ?method,
        tenant = ctx.tenant.as_deref().unwrap_or(""),
        request_id = ctx.request_id.as_deref().unwrap_or(""),
        code = tracing::field::Empty,
    );
    ctx.trace.set_parent(&span);
    span
}

/// Everything the gRPC listener serves.
pub struct Services {
    pub store: StoreService,
    /// Rules, Targets, Metadata, Exemplars and Status.
    pub apis: ApiService,
    pub info: InfoService,
    pub health: tonic_health::server::HealthReporter,
    /// Largest request message accepted (compressed, and inflated), and
    /// largest answer message sent.
    pub max_message_bytes: usize,
    pub connections: ConnectionLimits,
}

/// What one querier connection may hold, beside `max_message_bytes` per
/// message. The listener is unauthenticated unless `grpc.tls` asks for
/// client certificates, so none of this is left unbounded.
///
/// - `grpc.max_concurrent_streams` (1024): calls open at once; the client
///   holds more back until one ends (HTTP/2 flow, no error).
/// - `grpc.max_header_list_bytes` (16 KiB): a call with a larger header
///   block is refused with HTTP 431 before it reaches a service.
/// - `grpc.keepalive_interval` (30 s) and `grpc.keepalive_timeout` (20 s): a
///   connection silent for the interval is pinged; unanswered within the
///   timeout, it is closed, and every call on it is cancelled with the
///   remote calls under them, as when the querier cancels.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_concurrent_streams: u32,
    pub max_header_list_bytes: u32,
    /// `None` sends no pings.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
}

/// Connections accepted on `listener` (see [`Acceptor`]), for tonic, which
/// on its own retries a failing accept at once, spinning while the process
/// is out of descriptors, and whose `tcp_nodelay` only reaches sockets it
/// accepts itself.
pub fn incoming(
    listener: TcpListener,
) -> impl Stream<Item = std::io::Result<TcpStream>> + Send + Unpin + 'static {
    Acceptor::new(listener, "gRPC").into_stream()
}

/// Serves until `shutdown` resolves, then closes the port (new connections
/// are refused, so they go to another replica), tells connected clients to
/// go (HTTP/2 GOAWAY) and lets in-flight calls finish; over TLS with the
/// config `tls` holds when a connection arrives, if given.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsListener>,
    services: Services,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .ok();
    let max_message = services.max_message_bytes;
    // gzip and zstd from the querier are tonic's own; snappy is the layer's.
    macro_rules! configured {
        ($server:expr) => {
            $server
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message)
        };
    }
    let store = configured!(StoreServer::from_arc(Arc::new(services.store)));
    let info = configured!(InfoServer::new(services.info));
    let apis = services.apis;
    let rules = configured!(RulesServer::new(apis.clone()));
    let targets = configured!(TargetsServer::new(apis.clone()));
    let metadata = configured!(MetadataServer::new(apis.clone()));
    let exemplars = configured!(ExemplarsServer::new(apis.clone()));
    let status = configured!(StatusServer::new(apis));
    let health = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(services.health),
    );
    let limits = services.connections;
    let router = Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_bytes)
        .http2_keepalive_interval(limits.keepalive_interval)
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .layer(SnappyRequests::new(snappy::Limit {
            bytes: max_message,
            key: "grpc.max_message_bytes",
        }))
        .add_service(health)
        .add_optional_service(reflection)
        .add_service(info)
        .add_service(store)
        .add_service(rules)
        .add_service(targets)
        .add_service(metadata)
        .add_service(exemplars)
        .add_service(status);
    let (incoming, closer) = crate::listener::closable(incoming(listener));
    let shutdown = async move {
        shutdown.await;
        closer.close();
    };
    match tls {
        Some(tls) => {
            let accepted =
                crate::listener::accept(incoming, tls.configs, tls.max_handshakes, "gRPC");
            router
                .serve_with_incoming_shutdown(accepted, shutdown)
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(
            parse_grpc_timeout("120000m"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }

    #[test]
    fn any_grpc_timeout_text_parses_or_is_none() {
        // Multi-byte characters where the unit or a digit should be.
        for odd in ["1é", "é", "éS", "1€", "12€", "€", "1\u{1F600}", "\u{1F600}"] {
            assert_eq!(parse_grpc_timeout(odd), None, "{odd:?}");
        }
        for odd in ["", "-1S", "1.5S", "1 S", " 1S", "1s", "999999999S"] {
            assert_eq!(parse_grpc_timeout(odd), None, "{odd:?}");
        }
        // As tonic's own server reads it: a leading `+` and zeros are digits'.
        assert_eq!(parse_grpc_timeout("+5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_grpc_timeout("00000001S"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            parse_grpc_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(parse_grpc_timeout("0n"), Some(Duration::ZERO));
    }
}
