//! TLS on our own listeners: server configs from the files `grpc.tls` and
//! `http.tls` name, swapped on reload, and an accept loop that completes
//! each handshake on its own task so a slow or failing client never holds
//! up the others.

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
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

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
/// Failed handshakes are logged and dropped. `what` names the listener in
/// logs.
pub fn accept<S>(
    tcp: S,
    configs: watch::Receiver<Arc<ServerConfig>>,
    what: &'static str,
) -> impl Stream<Item = Result<TlsConn, io::Error>>
where
    S: Stream<Item = io::Result<TcpStream>> + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut tcp = tcp;
        loop {
            let conn = tokio::select! {
                next = tcp.next() => match next {
                    Some(Ok(conn)) => conn,
                    Some(Err(error)) => {
                        tracing::warn!(listener = what, %error, "accept failed");
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
            let acceptor = TlsAcceptor::from(configs.borrow().clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
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

/// TLS connections accepted on `listener`, for axum.
pub struct HttpsListener {
    local: SocketAddr,
    accepted: Pin<Box<dyn Stream<Item = io::Result<TlsConn>> + Send>>,
}

impl HttpsListener {
    pub fn new(
        listener: TcpListener,
        configs: watch::Receiver<Arc<ServerConfig>>,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let tcp = tokio_stream::wrappers::TcpListenerStream::new(listener);
        Ok(Self {
            local,
            accepted: Box::pin(accept(tcp, configs, "HTTP")),
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
