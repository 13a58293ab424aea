//! Our own listeners: accepting connections without spinning when that
//! fails ([`Acceptor`]), and TLS on them: server configs from the
//! files `grpc.tls` and `http.tls` name, swapped on reload, and an accept
//! loop that completes each handshake on its own task so a slow or failing
//! client never holds up the others, with a bounded number in progress.

mod accept;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

pub use accept::{Acceptor, closable};

use crate::config::ListenerTls;
use crate::tls::{ALPN_H2, TlsError, install_crypto_provider, load_certs, load_key, root_store};

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a listener speaks over TLS, for ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// The HTTP port: HTTP/2 or HTTP/1.1 (Prometheus, kubelet probes).
    Http,
}

/// A server config from the files `tls` names.
pub fn server_config(tls: &ListenerTls, protocol: Protocol) -> Result<Arc<ServerConfig>, TlsError> {
    let client_cas = tls.client_ca_file.as_deref().map(load_certs).transpose()?;
    build_server_config(
        load_certs(&tls.cert_file)?,
        load_key(&tls.key_file)?,
        client_cas,
        protocol,
    )
}

/// A server config presenting `chain`, requiring client certificates
/// signed by one of `client_cas` when given.
pub fn build_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_cas: Option<Vec<CertificateDer<'static>>>,
    protocol: Protocol,
) -> Result<Arc<ServerConfig>, TlsError> {
    install_crypto_provider();
    let builder = ServerConfig::builder();
    let builder = match client_cas {
        Some(cas) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder(Arc::new(root_store(cas)?)).build()?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Rustls {
            what: "server certificate and key",
            source,
        })?;
    config.alpn_protocols = match protocol {
        Protocol::Grpc => vec![ALPN_H2.to_vec()],
        Protocol::Http => vec![ALPN_H2.to_vec(), b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

/// A server-side TLS connection.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
}

impl TlsConn {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Completes TLS handshakes on accepted TCP connections, each on its own
/// task and within [`HANDSHAKE_TIMEOUT`], with the config `configs` holds
/// at that moment (so a reloaded certificate serves the next connection).
/// At most `max_handshakes` are in progress (see [`Handshakes`]). Failed
/// handshakes are logged and dropped. `what` names the listener in logs.
pub fn accept<S>(
    tcp: S,
    configs: watch::Receiver<Arc<ServerConfig>>,
    max_handshakes: usize,
    what: &'static str,
) -> impl Stream<Item = Result<TlsConn, io::Error>>
where
    S: Stream<Item = io::Result<TcpStream>> + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut tcp = tcp;
        let mut handshakes = Handshakes::new(max_handshakes, what);
        loop {
            let conn = tokio::select! {
                next = tcp.next() => match next {
                    Some(Ok(conn)) => conn,
                    // An [`Acceptor`] waits out its failures and yields
                    // none; other streams (the demo's, tests') are theirs.
                    Some(Err(error)) => {
                        tracing::debug!(listener = what, %error, "accept failed");
                        continue;
                    }
                    None => return,
                },
                _ = tx.closed() => return,
            };
            // Small gRPC frames must not wait for ACKs.
            let _ = conn.set_nodelay(true);
            let Ok(peer) = conn.peer_addr() else {
                continue;
            };
            let Some(mut slot) = handshakes.admit().await else {
                return;
            };
            let acceptor = TlsAcceptor::from(configs.borrow().clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::select! {
                    handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)) => handshake,
                    _ = &mut slot.given_up => {
                        tracing::debug!(listener = what, %peer, "TLS handshake given up for a newer connection");
                        return;
                    }
                };
                // Done with the handshake: its place is free before the
                // connection waits to be served.
                drop(slot);
                match handshake {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(TlsConn { stream, peer })).await;
                    }
                    Ok(Err(error)) => {
                        tracing::info!(listener = what, %peer, %error, "TLS handshake with a client failed");
                    }
                    Err(_) => {
                        tracing::info!(listener = what, %peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake with a client timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The TLS handshakes in progress on one listener, at most `max`
/// (`grpc.tls.max_handshakes`, `http.tls.max_handshakes`): each holds a
/// descriptor and a task, so a flood of connections that never finish
/// their handshake must not collect them without bound. A connection
/// arriving when all places are taken is never made to wait: the oldest
/// handshake still in progress is given up (its connection closed) to make
/// room. A client that completes its handshake promptly is served however
/// many stalled connections arrive before it; one that stalls longer than
/// `max` newer connections take to arrive is closed, where it would have
/// timed out anyway. Each episode at the cap is logged once.
struct Handshakes {
    places: Arc<Semaphore>,
    /// One per handshake started, oldest first: sending on it gives that
    /// handshake up; a closed one has finished.
    started: VecDeque<oneshot::Sender<()>>,
    max: usize,
    /// Handshakes given up in the current episode at the cap.
    given_up: u64,
    what: &'static str,
}

/// A place among the handshakes in progress, held until the handshake ends.
struct Slot {
    _place: OwnedSemaphorePermit,
    /// Resolves when a newer connection takes the place.
    given_up: oneshot::Receiver<()>,
}

impl Handshakes {
    fn new(max: usize, what: &'static str) -> Self {
        let max = max.max(1);
        Self {
            places: Arc::new(Semaphore::new(max)),
            started: VecDeque::new(),
            max,
            given_up: 0,
            what,
        }
    }

    /// A place for the next handshake, giving up the oldest one in
    /// progress if there is none; None if the places are gone (never).
    async fn admit(&mut self) -> Option<Slot> {
        let place = match self.places.clone().try_acquire_owned() {
            Ok(place) => {
                if self.given_up > 0 {
                    tracing::info!(
                        listener = self.what,
                        given_up = self.given_up,
                        "TLS handshakes in progress back under the cap"
                    );
                    self.given_up = 0;
                }
                place
            }
            Err(_) => {
                // The first one still listening is the oldest in progress.
                while let Some(oldest) = self.started.pop_front() {
                    if oldest.send(()).is_ok() {
                        break;
                    }
                }
                if self.given_up == 0 {
                    tracing::warn!(
                        listener = self.what,
                        max_handshakes = self.max,
                        "TLS handshakes in progress at the cap; giving up the oldest for each new connection (a flood of connections that never finish their handshake?)"
                    );
                }
                self.given_up += 1;
                // Freed as soon as the given-up task notices.
                self.places.clone().acquire_owned().await.ok()?
            }
        };
        // Finished ones are dropped from time to time, so this stays
        // within twice the cap.
        if self.started.len() >= 2 * self.max {
            self.started.retain(|s| !s.is_closed());
        }
        let (give_up, given_up) = oneshot::channel();
        self.started.push_back(give_up);
        Some(Slot {
            _place: place,
            given_up,
        })
    }
}

/// TLS connections accepted on `listener`, for axum.
pub struct HttpsListener {
    local: SocketAddr,
    accepted: Pin<Box<dyn Stream<Item = io::Result<TlsConn>> + Send>>,
}

impl HttpsListener {
    pub fn new(
        listener: TcpListener,
        configs: watch::Receiver<Arc<ServerConfig>>,
        max_handshakes: usize,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let tcp = Acceptor::new(listener, "HTTP").into_stream();
        Ok(Self {
            local,
            accepted: Box::pin(accept(tcp, configs, max_handshakes, "HTTP")),
        })
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.accepted.next().await {
                Some(Ok(conn)) => {
                    let peer = conn.peer();
                    return (conn, peer);
                }
                Some(Err(_)) => continue,
                // The accept loop only ends with its listener, which we own.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// What a listener serving TLS needs.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// The server config of the moment, replaced on reload.
    pub configs: watch::Receiver<Arc<ServerConfig>>,
    /// See [`Handshakes`].
    pub max_handshakes: usize,
}

impl TlsListener {
    /// The settings of a listener serving TLS with `configs` as `tls` says
    /// (None for one in plaintext).
    pub fn new(
        configs: Option<&watch::Sender<Arc<ServerConfig>>>,
        tls: Option<&ListenerTls>,
    ) -> Option<Self> {
        Some(Self {
            configs: configs?.subscribe(),
            max_handshakes: tls?.max_handshakes,
        })
    }
}

/// The TLS configs of both listeners, replaced on reload.
#[derive(Debug, Clone, Default)]
pub struct ListenerCerts {
    pub grpc: Option<watch::Sender<Arc<ServerConfig>>>,
    pub http: Option<watch::Sender<Arc<ServerConfig>>>,
}

impl ListenerCerts {
    /// Loads the configs `grpc` and `http` name.
    pub fn load(grpc: Option<&ListenerTls>, http: Option<&ListenerTls>) -> Result<Self, TlsError> {
        let load = |tls: Option<&ListenerTls>, protocol| {
            tls.map(|tls| server_config(tls, protocol).map(watch::Sender::new))
                .transpose()
        };
        Ok(Self {
            grpc: load(grpc, Protocol::Grpc)?,
            http: load(http, Protocol::Http)?,
        })
    }

    /// Reads the files again and, if every one loads, serves new
    /// connections with them. A listener started without TLS stays so
    /// (that takes a restart).
    pub fn reload(
        &self,
        grpc: Option<&ListenerTls>,
        http: Option<&ListenerTls>,
    ) -> Result<(), TlsError> {
        let next = [
            (&self.grpc, grpc, Protocol::Grpc),
            (&self.http, http, Protocol::Http),
        ]
        .map(|(running, tls, protocol)| match (running, tls) {
            (Some(_), Some(tls)) => server_config(tls, protocol).map(Some),
            _ => Ok(None),
        });
        let [grpc_next, http_next] = next;
        let (grpc_next, http_next) = (grpc_next?, http_next?);
        for (running, next) in [(&self.grpc, grpc_next), (&self.http, http_next)] {
            if let (Some(running), Some(next)) = (running, next) {
                running.send_replace(next);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handshake_beyond_the_cap_gives_up_the_oldest_in_progress() {
        let mut handshakes = Handshakes::new(2, "test");
        let first = handshakes.admit().await.expect("a place");
        let mut second = handshakes.admit().await.expect("a place");
        // The first finishes; its place is free without giving anyone up.
        drop(first);
        let mut third = handshakes.admit().await.expect("a place");
        assert!(second.given_up.try_recv().is_err());
        // At the cap: the oldest still in progress is given up.
        let fourth = tokio::spawn(async move { handshakes.admit().await.map(|_| ()) });
        (&mut second.given_up).await.expect("given up");
        assert!(third.given_up.try_recv().is_err(), "not the newer one");
        drop(second);
        fourth.await.expect("task").expect("a place");
    }
}
