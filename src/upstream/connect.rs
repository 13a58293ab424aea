//! Dialling one endpoint: TCP to the address, then (for TLS remotes) a rustls
//! handshake that verifies and sends SNI for the configured name, which may
//! differ from the address dialled.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::discovery::Dns;
use crate::metrics::TlsMetrics;
use crate::target::Dial;
use crate::tls::{self, ClientTls, HandshakeError, HandshakeFacts, HandshakeRecorder};

/// Why a connection to an endpoint could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {address}: {source}")]
    Tcp { address: String, source: io::Error },
    #[error("connect to {address}: timed out after {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("TLS handshake with {address} (verifying as {server_name}): {source}")]
    Handshake {
        address: String,
        server_name: String,
        source: HandshakeError,
    },
}

/// A tower service tonic calls whenever it needs a (new) connection.
#[derive(Clone, Debug)]
pub struct Connector {
    dial: Dial,
    dns: Dns,
    tls: Option<(ClientTls, ServerName<'static>)>,
    timeout: Duration,
    /// Whether the last handshake was asked for a client certificate that
    /// we do not have (see [`ClientTls::connect`]).
    unanswered_certificate_request: Arc<AtomicBool>,
    /// Where to write what each dial showed (`thanos-fanout check`).
    recorder: Option<DialRecorder>,
    /// Where handshake failures and server certificates are counted.
    metrics: Option<TlsMetrics>,
}

/// What the last dial of an endpoint showed.
#[derive(Debug, Clone, Default)]
pub struct DialFacts {
    /// The address the TCP connection reached (for a name, the address of
    /// it that answered).
    pub peer: Option<SocketAddr>,
    pub tcp_time: Option<Duration>,
    pub tls_time: Option<Duration>,
    /// Set once a TLS handshake started.
    pub tls: Option<HandshakeFacts>,
}

/// Where a [`Connector`] writes [`DialFacts`]; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct DialRecorder {
    facts: Arc<Mutex<DialFacts>>,
    tls: HandshakeRecorder,
}

impl DialRecorder {
    /// What the last dial showed.
    pub fn facts(&self) -> DialFacts {
        let mut facts = match self.facts.lock() {
            Ok(facts) => facts.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if facts.tls.is_some() {
            facts.tls = Some(self.tls.facts());
        }
        facts
    }

    fn update(&self, f: impl FnOnce(&mut DialFacts)) {
        match self.facts.lock() {
            Ok(mut facts) => f(&mut facts),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

impl Connector {
    pub fn new(
        dial: Dial,
        dns: Dns,
        tls: Option<(ClientTls, ServerName<'static>)>,
        timeout: Duration,
    ) -> Self {
        Self {
            dial,
            dns,
            tls,
            timeout,
            unanswered_certificate_request: Arc::default(),
            recorder: None,
            metrics: None,
        }
    }

    /// Counts handshake failures and records server certificates' expiry in `metrics`.
    pub fn observed(mut self, metrics: TlsMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn handshake_failed(&self, reason: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.handshake_failed(reason);
        }
    }

    /// Records what each dial shows into `recorder`.
    pub fn recorded(mut self, recorder: DialRecorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Shared with the endpoint, to explain failures after the handshake.
    pub fn unanswered_certificate_request(&self) -> Arc<AtomicBool> {
        self.unanswered_certificate_request.clone()
    }

    /// TCP to the address, or to the first address of the name that answers.
    async fn tcp(&self, address: &str) -> Result<TcpStream, ConnectError> {
        let err = |source| ConnectError::Tcp {
            address: address.to_owned(),
            source,
        };
        match &self.dial {
            Dial::Addr(addr) => TcpStream::connect(addr).await.map_err(err),
            Dial::Name(host, port) => {
                let (ips, _) = self
                    .dns
                    .lookup_ip(host)
                    .await
                    .map_err(|e| err(io::Error::other(e.to_string())))?;
                let mut last = io::Error::other("no addresses");
                for ip in ips {
                    match TcpStream::connect((ip, *port)).await {
                        Ok(tcp) => return Ok(tcp),
                        Err(e) => last = e,
                    }
                }
                Err(err(last))
            }
        }
    }

    async fn connect(self) -> Result<TokioIo<Conn>, ConnectError> {
        let address = self.dial.to_string();
        if let Some(recorder) = &self.recorder {
            recorder.update(|facts| *facts = DialFacts::default());
        }
        let started = Instant::now();
        let tcp = tokio::time::timeout(self.timeout, self.tcp(&address))
            .await
            .map_err(|_| ConnectError::Timeout {
                address: address.clone(),
                timeout: self.timeout,
            })??;
        if let Some(recorder) = &self.recorder {
            recorder.update(|facts| {
                facts.peer = tcp.peer_addr().ok();
                facts.tcp_time = Some(started.elapsed());
            });
        }
        // gRPC frames are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let Some((tls, server_name)) = self.tls.clone() else {
            return Ok(TokioIo::new(Conn::Plain(tcp)));
        };
        let started = Instant::now();
        let tls_recorder = self.recorder.as_ref().map(|r| {
            r.update(|facts| facts.tls = Some(HandshakeFacts::default()));
            &r.tls
        });
        let handshake = tls.connect_recorded(server_name.clone(), tcp, tls_recorder);
        // A handshake abandoned because the call it was for gave up first
        // counts as timed out too.
        let mut unfinished = Unfinished(self.metrics.clone());
        let result = tokio::time::timeout(self.timeout, handshake).await;
        unfinished.0 = None;
        if let Some(recorder) = &self.recorder {
            recorder.update(|facts| facts.tls_time = Some(started.elapsed()));
        }
        let stream = match result {
            Ok(Ok((stream, unanswered))) => {
                self.unanswered_certificate_request
                    .store(unanswered, Ordering::Relaxed);
                let presented = stream.get_ref().1.peer_certificates();
                let expiry = presented.and_then(|chain| tls::not_after(chain.first()?));
                if let (Some(metrics), Some(not_after)) = (&self.metrics, expiry) {
                    metrics.server_certificate_expiry(not_after);
                }
                stream
            }
            Ok(Err(source)) => {
                self.handshake_failed(source.reason());
                return Err(ConnectError::Handshake {
                    address,
                    server_name: server_name.to_str().into_owned(),
                    source,
                });
            }
            Err(_) => {
                self.handshake_failed("timeout");
                return Err(ConnectError::Timeout {
                    address,
                    timeout: self.timeout,
                });
            }
        };
        Ok(TokioIo::new(Conn::Tls(Box::new(TlsConn {
            stream,
            metrics: self.metrics,
            accepted: false,
        }))))
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<Conn>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    // The URI only carries the `:authority` for requests; we dial our target.
    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        Box::pin(self.clone().connect())
    }
}

/// Counts a handshake as timed out if dropped while still holding metrics.
struct Unfinished(Option<TlsMetrics>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(metrics) = &self.0 {
            metrics.handshake_failed("timeout");
        }
    }
}

/// A plaintext or TLS connection.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

/// A TLS connection that still watches for the remote rejecting it: with
/// TLS 1.3 the client finishes its handshake before the server has checked
/// the client certificate, so a rejection arrives as an alert in place of
/// the first data.
pub struct TlsConn {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    metrics: Option<TlsMetrics>,
    /// Data has arrived: the remote took the handshake.
    accepted: bool,
}

impl TlsConn {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let filled = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if !self.accepted {
            match &poll {
                Poll::Ready(Ok(())) => self.accepted = buf.filled().len() > filled,
                Poll::Ready(Err(err)) => {
                    self.accepted = true;
                    let alert = err
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                        .filter(|e| matches!(e, rustls::Error::AlertReceived(_)));
                    if let (Some(metrics), Some(alert)) = (&self.metrics, alert) {
                        metrics.handshake_failed(crate::handshake::rustls_reason(alert));
                    }
                }
                Poll::Pending => {}
            }
        }
        poll
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => s.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(&mut s.stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(&mut s.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(&mut s.stream).poll_shutdown(cx),
        }
    }
}
