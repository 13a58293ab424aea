//! TLS servers for the demo's remotes and for tests: a server config from PEM
//! text, and an accept loop tonic can serve from.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use futures::Stream;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};

pub use crate::listener::TlsConn;

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
    crate::listener::accept(tcp, configs, "demo")
}
