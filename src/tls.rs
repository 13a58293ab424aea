//! TLS with rustls: PEM loading, client configs for remotes, and turning
//! handshake failures into sentences an operator can act on.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};

use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, CipherSuite, ClientConfig, DigitallySignedStruct, ProtocolVersion,
    RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;

use crate::config::TlsConfig;
use crate::handshake::rustls_reason;

/// gRPC peers (grpc-go in particular) refuse TLS without ALPN `h2`.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// A certificate or key file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{what}: {source}")]
    Rustls {
        what: &'static str,
        source: rustls::Error,
    },
    #[error("certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Logs what in `config` weakens TLS: remotes whose certificates are not
/// verified, and private keys other users can read. At start and on every
/// reload, so it is not lost in old logs.
pub fn warn_about(config: &crate::config::Config) {
    for remote in &config.remotes {
        if remote.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
            tracing::warn!(remote = %remote.name, "tls.insecure_skip_verify is on: the remote's certificate is not verified, so anyone on the path can impersonate it");
        }
    }
    let keys = config
        .remotes
        .iter()
        .filter_map(|r| r.tls.as_ref()?.key_file.as_ref())
        .chain(
            [&config.grpc.tls, &config.http.tls]
                .into_iter()
                .flatten()
                .map(|t| &t.key_file),
        );
    for key in keys {
        if let Some(mode) = world_readable(key) {
            tracing::warn!(file = %key.display(), mode = %format!("{mode:o}"), "private key file is readable by every user; chmod o-r it (in Kubernetes, a Secret volume's defaultMode)");
        }
    }
}

/// The file's permission bits, if every user may read it.
fn world_readable(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o004 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Installs ring as the process-wide rustls provider; idempotent.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses every certificate in a PEM file; none is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(&read(path)?).map_err(|reason| TlsError::Pem {
        path: path.to_owned(),
        reason,
    })
}

pub(crate) fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(certs)
}

/// Parses the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_key(&read(path)?).map_err(|reason| TlsError::Pem {
        path: path.to_owned(),
        reason,
    })
}

pub(crate) fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block found".into(),
        e => format!("invalid PEM: {e}"),
    })
}

pub(crate) fn root_store(certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|source| TlsError::Rustls {
            what: "CA certificate",
            source,
        })?;
    }
    Ok(roots)
}

/// One PEM file's path and contents.
#[derive(Clone)]
struct PemFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

/// Only the path and size: the contents may be a private key.
impl std::fmt::Debug for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemFile")
            .field("path", &self.path)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl PemFile {
    fn read(path: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            path: path.to_owned(),
            bytes: read(path)?,
        })
    }

    fn certs(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        parse_certs(&self.bytes).map_err(|reason| TlsError::Pem {
            path: self.path.clone(),
            reason,
        })
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        parse_key(&self.bytes).map_err(|reason| TlsError::Pem {
            path: self.path.clone(),
            reason,
        })
    }
}

/// The CA, certificate and key files a remote's TLS section names, read
/// once: what is compared to tell whether they changed is what is loaded.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// None when verification is off.
    ca: Option<PemFile>,
    cert: Option<PemFile>,
    key: Option<PemFile>,
}

impl TlsFiles {
    /// Reads the files `tls` names (not the CA when verification is off).
    pub fn read(tls: &TlsConfig) -> Result<Self, TlsError> {
        let ca = if tls.insecure_skip_verify {
            None
        } else {
            let path = tls.ca_file.as_deref().ok_or_else(|| TlsError::Pem {
                path: PathBuf::from("tls.ca_file"),
                reason: "not set".into(),
            })?;
            Some(PemFile::read(path)?)
        };
        let (cert, key) = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => (Some(PemFile::read(cert)?), Some(PemFile::read(key)?)),
            _ => (None, None),
        };
        Ok(Self { ca, cert, key })
    }

    /// A hash of the files' contents.
    pub fn fingerprint(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh64::Xxh64::new(0);
        for file in [&self.ca, &self.cert, &self.key] {
            match file {
                Some(file) => {
                    hasher.update(&[1]);
                    hasher.update(&(file.bytes.len() as u64).to_le_bytes());
                    hasher.update(&file.bytes);
                }
                None => hasher.update(&[0]),
            }
        }
        hasher.digest()
    }
}

/// Client TLS for one remote, with the name it verifies and sends as SNI.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// The verifier in `config`, kept so that a recorded handshake can wrap it.
    verifier: Arc<dyn ServerCertVerifier>,
    identity: Option<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Loads the CA, client certificate and key named in `tls`.
    pub fn from_config(tls: &TlsConfig) -> Result<Self, TlsError> {
        Self::from_files(&TlsFiles::read(tls)?)
    }

    /// Builds the client config from files already read.
    pub fn from_files(files: &TlsFiles) -> Result<Self, TlsError> {
        install_crypto_provider();
        let builder = ClientConfig::builder_with_protocol_versions(&[
            &rustls::version::TLS13,
            &rustls::version::TLS12,
        ]);
        // The same verifier `with_root_certificates` would build, held here
        // so that a recorded handshake can wrap it.
        let verifier: Arc<dyn ServerCertVerifier> = match &files.ca {
            Some(ca) => {
                let roots = root_store(ca.certs()?)?;
                WebPkiServerVerifier::builder(Arc::new(roots)).build()?
            }
            None => Arc::new(NoVerification::new()),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let identity = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let chain = cert.certs()?;
                let key = key.key()?;
                let provider = rustls::crypto::ring::default_provider();
                let certified =
                    CertifiedKey::from_der(chain, key, &provider).map_err(|source| {
                        TlsError::Rustls {
                            what: "client certificate and key do not match",
                            source,
                        }
                    })?;
                Some(Arc::new(certified))
            }
            _ => None,
        };
        let mut config = builder.with_no_client_auth();
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Self {
            config: Arc::new(config),
            verifier,
            identity,
        })
    }

    /// The client certificate presented to the remote (the first of its
    /// chain), if one is configured.
    pub fn client_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.identity.as_ref().and_then(|key| key.cert.first())
    }

    /// Runs the TLS handshake over `tcp`, verifying the peer as `server_name`.
    /// Also tells whether the server asked for a client certificate that we
    /// do not have: servers may ask without requiring one (nginx
    /// `ssl_verify_client optional`), so that alone is no failure, but it
    /// explains a later rejection.
    pub async fn connect(
        &self,
        server_name: ServerName<'static>,
        tcp: TcpStream,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, bool), HandshakeError> {
        self.connect_recorded(server_name, tcp, None).await
    }

    /// [`ClientTls::connect`], also writing what the handshake showed into
    /// `recorder` (the server's certificates even when they fail
    /// verification), for `thanos-fanout check`.
    pub async fn connect_recorded(
        &self,
        server_name: ServerName<'static>,
        tcp: TcpStream,
        recorder: Option<&HandshakeRecorder>,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, bool), HandshakeError> {
        // One resolver per connection, so we learn whether this server asked
        // for a client certificate.
        let resolver = Arc::new(ClientIdentity {
            key: self.identity.clone(),
            requested: AtomicBool::new(false),
        });
        let mut config = (*self.config).clone();
        config.client_auth_cert_resolver = resolver.clone();
        if let Some(recorder) = recorder {
            recorder.reset();
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(RecordingVerifier {
                    inner: self.verifier.clone(),
                    recorder: recorder.clone(),
                }));
        }
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let requested = || resolver.requested.load(Ordering::Relaxed);
        let unanswered = || requested() && self.identity.is_none();
        let result = connector.connect(server_name, tcp).await;
        if let Some(recorder) = recorder {
            recorder.update(|facts| {
                facts.client_certificate_requested = requested();
                facts.client_certificate_sent = requested() && self.identity.is_some();
                if let Ok(stream) = &result {
                    let session = stream.get_ref().1;
                    facts.version = session.protocol_version();
                    facts.alpn = session.alpn_protocol().map(<[u8]>::to_vec);
                    facts.cipher_suite = session.negotiated_cipher_suite().map(|s| s.suite());
                }
            });
        }
        let stream = match result {
            Ok(stream) => stream,
            // With TLS 1.2 a server that requires a certificate rejects our
            // empty one inside the handshake, with whatever alert it likes.
            Err(err) if unanswered() => {
                return Err(HandshakeError::ClientCertificateRequired(
                    HandshakeError::from_io(err).to_string(),
                ));
            }
            Err(err) => return Err(HandshakeError::from_io(err)),
        };
        if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
            return Err(HandshakeError::NoAlpn);
        }
        Ok((stream, unanswered()))
    }
}

/// Why a TLS handshake failed, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error(
        "the remote requires a client certificate, but none is configured (set tls.cert_file and tls.key_file): {0}"
    )]
    ClientCertificateRequired(String),
    #[error("the remote did not negotiate HTTP/2 (ALPN h2); is it a gRPC server?")]
    NoAlpn,
    #[error("{}", explain_rustls(.0))]
    Tls(rustls::Error),
    #[error("{0}")]
    Io(io::Error),
}

impl HandshakeError {
    fn from_io(err: io::Error) -> Self {
        match err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => Self::Tls(tls.clone()),
            None => Self::Io(err),
        }
    }
}

impl HandshakeError {
    /// The cause as a metric label value, one of
    /// [`crate::handshake::HANDSHAKE_FAILURE_REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ClientCertificateRequired(_) => "client_certificate_required",
            Self::NoAlpn => "no_alpn",
            Self::Tls(err) => rustls_reason(err),
            Self::Io(_) => "connection_lost",
        }
    }
}

/// When a DER certificate stops being valid (Unix seconds), if it parses.
pub fn not_after(der: &[u8]) -> Option<i64> {
    crate::x509::CertificateFacts::parse(der)
        .ok()
        .map(|cert| cert.not_after)
}

/// Adds the likely cause to rustls errors that operators meet in the field.
pub fn explain_rustls(err: &rustls::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    let hint = match err {
        E::InvalidCertificate(C::UnknownIssuer) => {
            Some("certificate signed by an unknown authority (check tls.ca_file)")
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            Some("certificate is not valid for the name we verify (check tls.server_name)")
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            Some("certificate has expired")
        }
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            Some("certificate is not valid yet (clock skew?)")
        }
        E::AlertReceived(alert) => alert_hint(*alert),
        _ => None,
    };
    match hint {
        Some(hint) => format!("{hint}: {err}"),
        None => err.to_string(),
    }
}

/// What a TLS alert from the remote most likely means.
fn alert_hint(alert: rustls::AlertDescription) -> Option<&'static str> {
    use rustls::AlertDescription as A;
    Some(match alert {
        A::CertificateRequired => {
            "the remote requires a client certificate (set tls.cert_file and tls.key_file)"
        }
        A::UnknownCA | A::BadCertificate => {
            "the remote rejected our client certificate (is it signed by a CA the remote trusts?)"
        }
        A::CertificateExpired => "the remote says our client certificate has expired",
        A::NoApplicationProtocol => "the remote does not offer HTTP/2 (ALPN h2)",
        A::ProtocolVersion => "no TLS version in common (we offer 1.2 and 1.3)",
        _ => return None,
    })
}

/// Alerts read after the handshake reach us only as text (hyper keeps the
/// message, not the rustls error), so recognise rustls' own wording.
fn explain_alert_text(text: &str) -> Option<String> {
    alert_in_text(text)
        .and_then(alert_hint)
        .map(|hint| format!("{hint}: {text}"))
}

/// The TLS alert an error text says the remote sent, if it is one operators
/// meet in the field.
pub fn alert_in_text(text: &str) -> Option<AlertDescription> {
    use rustls::AlertDescription as A;
    [
        A::CertificateRequired,
        A::UnknownCA,
        A::BadCertificate,
        A::CertificateExpired,
        A::CertificateUnknown,
        A::HandshakeFailure,
        A::AccessDenied,
        A::NoApplicationProtocol,
        A::ProtocolVersion,
    ]
    .into_iter()
    .find(|alert| text.contains(&format!("received fatal alert: {alert:?}")))
}

/// Describes an error with its whole source chain, explaining TLS failures
/// (including alerts that only surface after the handshake).
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = describe_one(e);
        // Wrappers often repeat their source's text; keep each sentence once.
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.retain(|p| !text.contains(p.as_str()));
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// One error's own text (not its sources'), explaining TLS failures.
pub fn describe_one(err: &(dyn std::error::Error + 'static)) -> String {
    match err.downcast_ref::<rustls::Error>() {
        Some(tls) => explain_rustls(tls),
        None => {
            let text = err.to_string();
            explain_alert_text(&text).unwrap_or(text)
        }
    }
}

/// What one handshake showed: the certificates the server presented and
/// what verifying them gave, what was negotiated, and whether the server
/// asked for a client certificate.
#[derive(Debug, Clone, Default)]
pub struct HandshakeFacts {
    /// The server's certificate first, then the intermediates it sent.
    pub presented: Vec<CertificateDer<'static>>,
    /// The verifier's verdict on `presented`, once it ran.
    pub verification: Option<Result<(), rustls::Error>>,
    pub client_certificate_requested: bool,
    pub client_certificate_sent: bool,
    pub version: Option<ProtocolVersion>,
    pub alpn: Option<Vec<u8>>,
    pub cipher_suite: Option<CipherSuite>,
}

/// Where a recorded handshake writes its [`HandshakeFacts`]; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct HandshakeRecorder(Arc<Mutex<HandshakeFacts>>);

impl HandshakeRecorder {
    /// What the last recorded handshake showed.
    pub fn facts(&self) -> HandshakeFacts {
        match self.0.lock() {
            Ok(facts) => facts.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut HandshakeFacts)) {
        match self.0.lock() {
            Ok(mut facts) => f(&mut facts),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    fn reset(&self) {
        self.update(|facts| *facts = HandshakeFacts::default());
    }
}

/// Records the chain the server presents and the verdict, then answers as
/// the verifier it wraps: the handshake succeeds or fails exactly as it
/// would without recording.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    recorder: HandshakeRecorder,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        self.recorder.update(|facts| {
            facts.presented = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.clone().into_owned())
                .collect();
            facts.verification = Some(verdict.as_ref().map(|_| ()).map_err(Clone::clone));
        });
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// Hands our certificate (if any) to the server and remembers that it asked.
#[derive(Debug)]
struct ClientIdentity {
    key: Option<Arc<CertifiedKey>>,
    requested: AtomicBool,
}

impl ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.requested.store(true, Ordering::Relaxed);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// Accepts any server certificate; only with `insecure_skip_verify: true`.
/// Handshake signatures are still checked, so the session keys are sound.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl NoVerification {
    fn new() -> Self {
        Self(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::certs::Authority;

    #[test]
    fn debug_never_shows_key_material() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::new("ca").expect("ca");
        let pem = ca.client("thanos-fanout").expect("client");
        let (cert, key) = pem.write(dir.path(), "client").expect("write");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).expect("write");
        let tls = TlsConfig {
            ca_file: Some(ca_file),
            cert_file: Some(cert),
            key_file: Some(key),
            server_name: None,
            insecure_skip_verify: false,
        };
        let files = TlsFiles::read(&tls).expect("read");
        let client = ClientTls::from_files(&files).expect("client");
        // The key as text (its base64 body) and as the bytes Debug prints.
        let body: String = pem
            .key
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let bytes = format!("{:?}", pem.key.as_bytes());
        for debug in [format!("{files:?}"), format!("{client:?}")] {
            assert!(!debug.contains(&body[..40]), "{debug}");
            assert!(!debug.contains(&bytes[..60]), "{debug}");
        }
    }
}
