//! TLS servers for the demo's remotes and for tests: a server config from PEM
//! text, and an accept loop tonic can serve from.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use futures::Stream;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};

pub use crate::listener::TlsConn;

use crate::config::DEFAULT_MAX_HANDSHAKES;
use crate::listener::{Protocol, build_server_config};
use crate::tls::{TlsError, parse_certs, parse_key};

/// A gRPC server TLS config from PEM text, requiring client certificates
/// signed by `client_ca_pem` when given.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let pem_err = |reason| TlsError::Pem {
        path: PathBuf::from("<inline PEM>"),
        reason,
    };
    let chain = parse_certs(cert_pem.as_bytes()).map_err(pem_err)?;
    let key = parse_key(key_pem.as_bytes()).map_err(pem_err)?;
    let client_cas = client_ca_pem
        .map(|ca| parse_certs(ca.as_bytes()).map_err(pem_err))
        .transpose()?;
    build_server_config(chain, key, client_cas, Protocol::Grpc)
}

/// Accepts TCP connections on `listener` and completes TLS handshakes.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = Result<TlsConn, io::Error>> {
    accept(crate::server::incoming(listener), config)
}

/// Completes TLS handshakes on accepted TCP connections with `config`
/// (see [`crate::listener::accept`]). Takes any stream of connections, so a
/// test can count them.
pub fn accept<S>(
    tcp: S,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = Result<TlsConn, io::Error>>
where
    S: Stream<Item = io::Result<TcpStream>> + Send + Unpin + 'static,
{
    // The receiver keeps the config after the sender is gone.
    let (_, configs) = tokio::sync::watch::channel(config);
    crate::listener::accept(tcp, configs, DEFAULT_MAX_HANDSHAKES, "demo")
}
