//! One dialable address of a remote: how it is dialled (TLS server name,
//! `:authority`, keep-alive, its connection pool) as the remote's config
//! says, and the limits and breaker its calls pass.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::pki_types::ServerName;
use tonic::codec::CompressionEncoding;
use tonic::transport::Endpoint as ChannelEndpoint;

use super::connect::Connector;
use super::pool::Pool;
use super::{
    Breaker, CallFailure, DialRecorder, EndpointState, Remote, RemoteError, RemoteErrorKind,
};
use crate::config::{Compression, RemoteMode};
use crate::metrics::EndpointMetrics;
use crate::target::{Dial, EndpointSpec, join_host_port};

/// One dialable address of a remote.
pub struct Endpoint {
    pub remote: Arc<str>,
    /// What it dials, as text (`ip:port`, or `name:port` for dnssrvnoa+).
    pub address: String,
    /// How discovery found it.
    pub spec: EndpointSpec,
    /// The name verified and sent as SNI; `None` for plaintext.
    pub server_name: Option<String>,
    /// The HTTP/2 `:authority` of its requests.
    pub authority: String,
    /// Longest wait for progress (see `RemoteConfig::timeout`).
    pub timeout: Duration,
    /// Whether this endpoint is one of interchangeable replicas.
    pub mode: RemoteMode,
    pub(super) pool: Pool,
    /// tonic's own encodings; snappy is [`crate::snappy::RemoteChannel`]'s.
    pub(super) compression: Option<CompressionEncoding>,
    pub(super) snappy: bool,
    /// Set while the remote asks for a client certificate we do not have.
    pub(super) unanswered_certificate_request: Arc<AtomicBool>,
    pub(super) state: ArcSwap<EndpointState>,
    pub(super) last_failure: ArcSwapOption<CallFailure>,
    /// Largest message accepted from it.
    pub(super) max_message_bytes: usize,
    /// The remote's calls in progress (`max_concurrent_calls`), shared by
    /// its endpoints.
    pub(super) calls: Option<Arc<tokio::sync::Semaphore>>,
    pub(super) max_concurrent_calls: usize,
    /// Skips the endpoint after calls failed in a row.
    pub breaker: Breaker,
    pub metrics: EndpointMetrics,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("remote", &self.remote)
            .field("address", &self.address)
            .finish()
    }
}

impl Endpoint {
    /// Connections open to this endpoint.
    pub fn connections(&self) -> usize {
        self.pool.connections()
    }

    /// This endpoint's error of `kind`.
    pub fn error(&self, kind: RemoteErrorKind) -> RemoteError {
        RemoteError {
            remote: self.remote.clone(),
            endpoint: self.address.clone(),
            kind,
        }
    }

    /// A place among the remote's calls in progress for one more call, or
    /// the limit if there is none.
    pub fn admit(&self) -> Result<Option<Arc<tokio::sync::OwnedSemaphorePermit>>, usize> {
        match &self.calls {
            None => Ok(None),
            Some(calls) => calls
                .clone()
                .try_acquire_owned()
                .map(|permit| Some(Arc::new(permit)))
                .map_err(|_| self.max_concurrent_calls),
        }
    }

    /// An endpoint of `remote` for `spec`; its dials are recorded into
    /// `recorder` if given.
    pub(super) fn build(
        remote: &Remote,
        spec: EndpointSpec,
        recorder: Option<DialRecorder>,
    ) -> Result<Endpoint, String> {
        let config = remote.config();
        let server_name_override = config.tls.as_ref().and_then(|t| t.server_name.clone());
        // Verify and SNI by the configured name, else by the host the endpoint
        // was found under (a name for dns+/dnssrv+), never a resolved IP.
        let server_name = server_name_override
            .clone()
            .unwrap_or_else(|| spec.host.clone());
        let tls = match &remote.client_tls {
            Some(tls) => Some((
                tls.clone(),
                ServerName::try_from(server_name.clone()).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        let port = match &spec.dial {
            Dial::Addr(addr) => addr.port(),
            Dial::Name(_, port) => *port,
        };
        let authority = config
            .authority
            .clone()
            .or(server_name_override)
            .unwrap_or_else(|| join_host_port(&spec.host, port));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let channel = ChannelEndpoint::from_shared(format!("{scheme}://{authority}"))
            .map_err(|e| format!("authority {authority:?}: {e}"))?
            // Pings only while streams are open and no more often than grpc-go
            // servers permit (10 s), or they answer with GOAWAY too_many_pings.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(false);
        let server_name = tls.is_some().then_some(server_name);
        let address = spec.dial.to_string();
        let metrics = remote.families.endpoint(&remote.name, &address);
        metrics.up.set(0);
        let mut connector = Connector::new(
            spec.dial.clone(),
            remote.dns.clone(),
            tls,
            config.connect_timeout,
        )
        .observed(metrics.tls.clone());
        if let Some(recorder) = recorder {
            connector = connector.recorded(recorder);
        }
        let unanswered_certificate_request = connector.unanswered_certificate_request();
        let pool = Pool::new(
            channel,
            connector,
            remote.streams_per_connection,
            config.http2.stream_window,
            metrics.connections.clone(),
        );
        Ok(Endpoint {
            remote: remote.name.clone(),
            address,
            spec,
            server_name,
            authority,
            timeout: config.timeout,
            mode: config.mode,
            pool,
            compression: match config.compression {
                Compression::None | Compression::Snappy => None,
                Compression::Gzip => Some(CompressionEncoding::Gzip),
                Compression::Zstd => Some(CompressionEncoding::Zstd),
            },
            snappy: config.compression == Compression::Snappy,
            unanswered_certificate_request,
            state: ArcSwap::from_pointee(EndpointState::default()),
            last_failure: ArcSwapOption::empty(),
            max_message_bytes: config.max_message_bytes,
            calls: remote.calls.clone(),
            max_concurrent_calls: config.max_concurrent_calls,
            breaker: Breaker::new(
                config.circuit_breaker.clone(),
                metrics.breaker_open.clone(),
                metrics.breaker_opened.clone(),
            ),
            metrics,
        })
    }
}
