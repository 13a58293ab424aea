//! TLS servers for the demo's remotes and for tests: a server config from PEM
//! text, and an accept loop tonic can serve from.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::tls::{ALPN_H2, TlsError, install_crypto_provider, parse_certs, parse_key, root_store};

/// A gRPC server TLS config from PEM text, requiring client certificates
/// signed by `client_ca_pem` when given.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<Arc<ServerConfig>, TlsError> {
    install_crypto_provider();
    let pem_err = |reason| TlsError::Pem {
        path: PathBuf::from("<inline PEM>"),
        reason,
    };
    let chain = parse_certs(cert_pem.as_bytes()).map_err(pem_err)?;
    let key = parse_key(key_pem.as_bytes()).map_err(pem_err)?;
    let builder = ServerConfig::builder();
    let builder = match client_ca_pem {
        Some(ca) => {
            let roots = root_store(parse_certs(ca.as_bytes()).map_err(pem_err)?)?;
            builder
                .with_client_cert_verifier(WebPkiClientVerifier::builder(Arc::new(roots)).build()?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Rustls {
            what: "server certificate",
            source,
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A server-side TLS connection that tonic can serve.
pub struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts TCP connections on `listener` and completes TLS handshakes.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = Result<TlsConn, io::Error>> {
    accept(crate::server::incoming(listener), config)
}

/// Completes TLS handshakes on accepted TCP connections, concurrently, so a
/// slow or failing client never holds up the others. Failed handshakes are
/// logged and dropped. Takes any stream of connections, so a test can count
/// them.
pub fn accept<S>(
    tcp: S,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = Result<TlsConn, io::Error>>
where
    S: Stream<Item = io::Result<TcpStream>> + Send + Unpin + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        let mut tcp = tcp;
        loop {
            let conn = tokio::select! {
                next = tcp.next() => match next {
                    Some(Ok(conn)) => conn,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                    None => return,
                },
                _ = tx.closed() => return,
            };
            // Small gRPC frames must not wait for ACKs.
            let _ = conn.set_nodelay(true);
            let peer = conn.peer_addr().ok();
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(conn).await {
                    Ok(tls) => {
                        let _ = tx.send(Ok(TlsConn(tls))).await;
                    }
                    Err(error) => tracing::debug!(?peer, %error, "tls handshake failed"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
