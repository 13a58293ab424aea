//! Turning what a failed check saw into the likely cause and fix, in words an
//! operator can act on: the certificate's names and issuer, the alert the
//! server sent, what the peer speaks instead of TLS or gRPC.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustls::{AlertDescription, CertificateError};

use super::certificate::{Certificate, unix_now};
use super::sniff::{Peer, sniff};
use super::{EndpointReport, Stage};
use crate::config::RemoteConfig;
use crate::target::{Dial, EndpointSpec, Target};
use crate::timefmt::{in_words, rfc3339, seconds};
use crate::tls::{self, HandshakeError};
use crate::upstream::{ConnectError, DialFacts, UpstreamError};

/// How long the extra connection that identifies a peer may take.
const SNIFF_WAIT: Duration = Duration::from_secs(2);

/// Certificates expiring sooner than this get a note.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// The likely cause of a failure, and what to do.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    pub stage: Stage,
    pub problem: String,
    pub fix: Option<String>,
}

impl Diagnosis {
    fn new(stage: Stage, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            stage,
            problem: problem.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What went wrong with the Info call.
pub enum Failure {
    Status(tonic::Status),
    InfoTimedOut(Duration),
    InvalidInfo(String),
}

/// What is known about an endpoint whose check failed.
pub struct Evidence<'a> {
    pub config: &'a RemoteConfig,
    pub spec: &'a EndpointSpec,
    /// The SNI name; `None` for plaintext.
    pub server_name: Option<&'a str>,
    pub authority: &'a str,
    pub facts: &'a DialFacts,
    pub certificate: Option<&'a Certificate>,
}

impl Evidence<'_> {
    fn address(&self) -> String {
        self.spec.dial.to_string()
    }

    /// Where the connection went, for a second look at the peer.
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.facts.peer.or(match self.spec.dial {
            Dial::Addr(addr) => Some(addr),
            Dial::Name(..) => None,
        })
    }

    fn tls(&self) -> bool {
        self.server_name.is_some()
    }

    fn ca_file(&self) -> String {
        self.config
            .tls
            .as_ref()
            .and_then(|t| t.ca_file.as_ref())
            .map_or_else(|| "not set".into(), |p| p.display().to_string())
    }

    fn client_cert_requested_unanswered(&self) -> bool {
        self.facts
            .tls
            .as_ref()
            .is_some_and(|t| t.client_certificate_requested && !t.client_certificate_sent)
    }

    fn client_cert_sent(&self) -> bool {
        self.facts
            .tls
            .as_ref()
            .is_some_and(|t| t.client_certificate_sent)
    }

    /// Where the verified name comes from, in words.
    fn name_origin(&self) -> String {
        let from_config = self
            .config
            .tls
            .as_ref()
            .is_some_and(|t| t.server_name.is_some());
        if from_config {
            "tls.server_name".into()
        } else if self.spec.host_is_ip() {
            "the target's IP address; tls.server_name is not set".into()
        } else {
            "the host name the endpoint was discovered under; tls.server_name is not set".into()
        }
    }
}

/// A remote whose TLS settings could not be loaded.
pub fn remote_config(error: &UpstreamError) -> Diagnosis {
    let UpstreamError::Tls { source, .. } = error;
    let fix = match source {
        tls::TlsError::Read { .. } => "check the path and that this user may read the file",
        tls::TlsError::Pem { .. } => {
            "the file must hold PEM blocks (-----BEGIN CERTIFICATE----- or -----BEGIN PRIVATE KEY-----)"
        }
        tls::TlsError::Rustls { .. } => {
            "tls.cert_file and tls.key_file must be a certificate and its own private key"
        }
        tls::TlsError::Verifier(_) => "check tls.ca_file",
    };
    Diagnosis::new(
        Stage::Config,
        format!("the remote's TLS settings cannot be used: {source}"),
        fix,
    )
}

/// A target that did not resolve.
pub fn lookup(target: &Target, missing: bool) -> Diagnosis {
    let name = match target {
        Target::Static { host, .. } | Target::Dns { host, .. } => host.clone(),
        Target::Srv { name } | Target::SrvNoA { name } => name.clone(),
    };
    let records = match target {
        Target::Srv { .. } | Target::SrvNoA { .. } => "SRV records",
        _ => "addresses",
    };
    if missing {
        Diagnosis::new(
            Stage::Dns,
            format!("the name {name} does not resolve: DNS has no {records} for it"),
            "check the target's spelling (and, for dnssrv+, the _port._proto prefix), or that the records exist on the DNS server this machine asks (discovery.nameservers, else /etc/resolv.conf)",
        )
    } else {
        Diagnosis::new(
            Stage::Dns,
            format!("the DNS lookup of {name} failed: the DNS server did not answer it"),
            "check that the DNS server is reachable from here (discovery.nameservers, else /etc/resolv.conf)",
        )
    }
}

/// Why the Info call (and the dial under it) failed.
pub async fn failure(evidence: &Evidence<'_>, failure: &Failure) -> Diagnosis {
    match failure {
        Failure::Status(status) => match connect_error(status) {
            Some(error) => connect(evidence, error).await,
            None => status_failure(evidence, status).await,
        },
        Failure::InfoTimedOut(timeout) => timed_out(evidence, *timeout),
        Failure::InvalidInfo(why) => Diagnosis::new(
            Stage::Info,
            format!("it answered Info, but the answer cannot be used: {why}"),
            "check that this is a Thanos StoreAPI server (sidecar, store gateway, ruler, receiver or querier)",
        ),
    }
}

/// The dial's own error, if the call failed dialling.
pub fn connect_error(status: &tonic::Status) -> Option<&ConnectError> {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(found) = error.downcast_ref::<ConnectError>() {
            return Some(found);
        }
        source = error.source();
    }
    None
}

async fn connect(evidence: &Evidence<'_>, error: &ConnectError) -> Diagnosis {
    let address = evidence.address();
    match error {
        ConnectError::Tcp { source, .. } => {
            if let (Dial::Name(host, _), None) = (&evidence.spec.dial, evidence.facts.peer)
                && source.kind() == io::ErrorKind::Other
            {
                return Diagnosis::new(
                    Stage::Dns,
                    format!("the name {host} (an SRV target) does not resolve: {source}"),
                    "check the SRV records' targets and their A/AAAA records",
                );
            }
            match source.kind() {
                io::ErrorKind::ConnectionRefused => Diagnosis::new(
                    Stage::Connect,
                    format!("nothing accepts connections on {address} (connection refused)"),
                    "check the port in the target, and that the remote (or the load balancer or ingress in front of it) is running",
                ),
                _ => Diagnosis::new(
                    Stage::Connect,
                    format!("cannot connect to {address}: {source}"),
                    "check the address, and routes and firewalls between here and the remote",
                ),
            }
        }
        ConnectError::Timeout { timeout, .. } if evidence.facts.tcp_time.is_some() => {
            let peer = identify(evidence).await;
            Diagnosis::new(
                Stage::Tls,
                format!(
                    "the TLS handshake did not finish within connect_timeout ({}): the server accepted the connection but did not answer our TLS hello{}",
                    seconds(*timeout),
                    peer.map(|p| format!("; on a second look it {}", p.describe()))
                        .unwrap_or_default()
                ),
                "check that the port serves TLS; if it serves plaintext gRPC, remove the remote's tls section",
            )
        }
        ConnectError::Timeout { timeout, .. } => Diagnosis::new(
            Stage::Connect,
            format!(
                "no TCP connection to {address} within connect_timeout ({}): packets are dropped on the way (a firewall?) or nothing is at that address",
                seconds(*timeout)
            ),
            "check the address, and routes and firewalls between here and the remote; raise remotes[].connect_timeout only for very slow links",
        ),
        ConnectError::Handshake { source, .. } => handshake(evidence, source).await,
    }
}

async fn handshake(evidence: &Evidence<'_>, error: &HandshakeError) -> Diagnosis {
    match error {
        HandshakeError::ClientCertificateRequired(why) => {
            client_certificate_required(&format!("failed the handshake: {why}"))
        }
        HandshakeError::NoAlpn => Diagnosis::new(
            Stage::Tls,
            "the TLS handshake completed but the server did not agree to HTTP/2 (ALPN h2): this is an HTTP server, not a gRPC StoreAPI (or a TLS proxy that does not pass HTTP/2 on)",
            "check the target's port (a sidecar's gRPC port is 10901, its HTTP port 10902); a proxy in front of it must offer h2 and pass gRPC on (nginx: `listen ... ssl http2` and grpc_pass)",
        ),
        HandshakeError::Tls(error) => rustls_error(evidence, error).await,
        HandshakeError::Io(error) => {
            if evidence.client_cert_requested_unanswered() {
                return client_certificate_required(&format!("closed the connection ({error})"));
            }
            not_tls(
                evidence,
                format!("it closed the connection during the TLS handshake ({error})"),
            )
            .await
        }
    }
}

async fn rustls_error(evidence: &Evidence<'_>, error: &rustls::Error) -> Diagnosis {
    use rustls::Error as E;
    match error {
        E::InvalidCertificate(error) => certificate(evidence, error),
        E::AlertReceived(alert) => alert_received(evidence, *alert, &error.to_string()),
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. } => {
            not_tls(
                evidence,
                format!("it answered our TLS hello with something else ({error})"),
            )
            .await
        }
        other => Diagnosis::new(
            Stage::Tls,
            format!("the TLS handshake failed: {}", tls::explain_rustls(other)),
            "compare the remote's TLS settings with this remote's tls section",
        ),
    }
}

/// The server's certificate failed verification.
fn certificate(evidence: &Evidence<'_>, error: &CertificateError) -> Diagnosis {
    use CertificateError as C;
    let cert = evidence.certificate;
    match error {
        C::UnknownIssuer => {
            let ca_file = evidence.ca_file();
            let holds = ca_subjects(evidence)
                .map(|s| format!(", which holds {s}"))
                .unwrap_or_default();
            let (problem, fix) = match cert {
                Some(cert) if cert.self_signed => (
                    format!(
                        "the server's certificate ({}) is self-signed, and it is not in tls.ca_file ({ca_file}{holds})",
                        cert.subject
                    ),
                    "put the server's certificate, or the CA that should have signed it, into tls.ca_file".to_owned(),
                ),
                Some(cert) => (
                    format!(
                        "the server's certificate is signed by {}, which is not in tls.ca_file ({ca_file}{holds})",
                        cert.issuer
                    ),
                    format!(
                        "put the CA certificate of {} into tls.ca_file (if it is an intermediate CA, the server must send it along, or tls.ca_file must hold it)",
                        cert.issuer
                    ),
                ),
                None => (
                    format!(
                        "the server's certificate is signed by a CA that is not in tls.ca_file ({ca_file}{holds})"
                    ),
                    "put the CA that signed the server's certificate into tls.ca_file".to_owned(),
                ),
            };
            Diagnosis::new(Stage::Tls, problem, fix)
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => wrong_name(evidence),
        C::Expired | C::ExpiredContext { .. } => {
            let now = unix_now();
            let (whose, not_after) = match (cert, error) {
                (Some(cert), _) if cert.expired_at(now) => {
                    ("the server's certificate", cert.not_after_unix)
                }
                (_, C::ExpiredContext { not_after, .. }) => (
                    "a CA certificate in the server's chain",
                    i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX),
                ),
                _ => ("the server's certificate", now),
            };
            Diagnosis::new(
                Stage::Tls,
                format!(
                    "{whose} expired on {} ({})",
                    rfc3339(not_after),
                    in_words(not_after, now)
                ),
                "renew the server's certificate on the remote (if that date looks wrong, check this machine's clock)",
            )
        }
        C::NotValidYet | C::NotValidYetContext { .. } => {
            let from = cert
                .map(|c| format!(" until {}", c.not_before))
                .unwrap_or_default();
            Diagnosis::new(
                Stage::Tls,
                format!("the server's certificate is not valid yet{from}"),
                "check the clocks of this machine and of whatever issued the certificate",
            )
        }
        other => Diagnosis::new(
            Stage::Tls,
            format!(
                "the server's certificate was rejected: {}",
                tls::explain_rustls(&rustls::Error::InvalidCertificate(other.clone()))
            ),
            "check the server's certificate (it must be a TLS server certificate signed by the CA in tls.ca_file)",
        ),
    }
}

/// The certificate is not for the name we verified.
fn wrong_name(evidence: &Evidence<'_>) -> Diagnosis {
    let name = evidence.server_name.unwrap_or_default();
    let origin = evidence.name_origin();
    let Some(cert) = evidence.certificate else {
        return Diagnosis::new(
            Stage::Tls,
            format!("the server's certificate is not valid for {name} ({origin})"),
            "set tls.server_name to a name on the server's certificate",
        );
    };
    let dns = list(&cert.dns_names);
    let fix = match cert.dns_names.first().or(cert.ip_addresses.first()) {
        Some(on_cert) => format!("set tls.server_name: {}", plain_name(on_cert)),
        None => {
            format!("reissue the server's certificate with a subject alternative name for {name}")
        }
    };
    let problem = if name.parse::<IpAddr>().is_ok() {
        match (cert.ip_addresses.is_empty(), cert.dns_names.is_empty()) {
            (true, false) => format!(
                "the certificate has no IP SANs and none of its DNS names ({dns}) match {name} ({origin})"
            ),
            (true, true) => format!(
                "the certificate has no subject alternative names at all, so it is valid for no name, {name} included"
            ),
            (false, _) => format!(
                "the certificate's IP SANs ({}) do not include {name} ({origin}){}",
                list(&cert.ip_addresses),
                if cert.dns_names.is_empty() {
                    String::new()
                } else {
                    format!(", and its DNS names are {dns}")
                }
            ),
        }
    } else if cert.names().is_empty() {
        format!(
            "the certificate has no subject alternative names at all, so it is valid for no name, {name} included"
        )
    } else {
        format!(
            "the certificate is not valid for {name} ({origin}): it is for {}",
            list(&cert.names())
        )
    };
    Diagnosis::new(Stage::Tls, problem, fix)
}

/// A wildcard name is no name to set; suggest its form with a label.
fn plain_name(name: &str) -> String {
    match name.strip_prefix("*.") {
        Some(rest) => format!("<name>.{rest} (the certificate is a wildcard for *.{rest})"),
        None => name.to_owned(),
    }
}

/// The server sent a TLS alert, during or right after the handshake.
fn alert_received(evidence: &Evidence<'_>, alert: AlertDescription, text: &str) -> Diagnosis {
    use AlertDescription as A;
    let unanswered = evidence.client_cert_requested_unanswered();
    let refused = format!("refused the connection with alert {}", alert_name(alert));
    match alert {
        A::CertificateRequired => client_certificate_required(&refused),
        A::HandshakeFailure
        | A::BadCertificate
        | A::UnknownCA
        | A::CertificateUnknown
        | A::AccessDenied
            if unanswered =>
        {
            client_certificate_required(&refused)
        }
        A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::AccessDenied
            if evidence.client_cert_sent() =>
        {
            let ours = client_certificate(evidence)
                .map(|c| format!(" ({}, issued by {})", c.subject, c.issuer))
                .unwrap_or_default();
            Diagnosis::new(
                Stage::Tls,
                format!(
                    "the server rejected our client certificate{ours} with alert {}: it does not trust the CA that issued it",
                    alert_name(alert)
                ),
                "use a client certificate (tls.cert_file, tls.key_file) signed by a CA the remote trusts, or add its CA to the remote's client CAs",
            )
        }
        A::CertificateExpired => {
            let when = client_certificate(evidence)
                .map(|c| format!(" (it expires {})", c.not_after))
                .unwrap_or_default();
            Diagnosis::new(
                Stage::Tls,
                format!("the server says our client certificate has expired{when}"),
                "renew the client certificate in tls.cert_file and tls.key_file",
            )
        }
        A::NoApplicationProtocol => Diagnosis::new(
            Stage::Tls,
            "the server does not speak HTTP/2 (it refused ALPN h2): this is an HTTP server, not a gRPC StoreAPI",
            "check the target's port (a sidecar's gRPC port is 10901, its HTTP port 10902); a proxy in front of it must offer h2 and pass gRPC on",
        ),
        A::ProtocolVersion => Diagnosis::new(
            Stage::Tls,
            "the server speaks no TLS version we do (we offer TLS 1.2 and 1.3)",
            "enable TLS 1.2 or 1.3 on the remote",
        ),
        A::HandshakeFailure => Diagnosis::new(
            Stage::Tls,
            format!(
                "the server aborted the TLS handshake (alert handshake_failure): no cipher suite or key exchange in common, or it refuses our client certificate ({text})"
            ),
            "compare the remote's TLS settings with ours (TLS 1.2/1.3, ring's cipher suites)",
        ),
        other => Diagnosis::new(
            Stage::Tls,
            format!(
                "the server ended the TLS handshake with alert {}",
                alert_name(other)
            ),
            "see the remote's logs for why it refused the connection",
        ),
    }
}

fn client_certificate_required(how: &str) -> Diagnosis {
    Diagnosis::new(
        Stage::Tls,
        format!(
            "the server requires a client certificate, and none is configured (it asked for one, then {how})"
        ),
        "set tls.cert_file and tls.key_file to a client certificate signed by a CA the remote trusts",
    )
}

/// The peer did not speak TLS (`what` it did instead): find out what it
/// speaks.
async fn not_tls(evidence: &Evidence<'_>, what: String) -> Diagnosis {
    let peer = identify(evidence).await;
    let seen = peer
        .as_ref()
        .map(|p| format!(", and {}", p.describe()))
        .unwrap_or_default();
    match peer {
        Some(Peer::Http2) => Diagnosis::new(
            Stage::Tls,
            format!(
                "the server does not speak TLS, it is a plaintext server: {what}{seen}, as a gRPC server without TLS does"
            ),
            "if the remote serves plaintext gRPC on this port, remove the remote's tls section; otherwise dial its TLS port",
        ),
        Some(Peer::Http1(_)) => Diagnosis::new(
            Stage::Tls,
            format!(
                "the server does not speak TLS, and it is an HTTP/1 server, not a gRPC StoreAPI: {what}{seen}"
            ),
            "check the target's port (a sidecar's gRPC port is 10901, its HTTP port 10902)",
        ),
        _ => Diagnosis::new(
            Stage::Tls,
            format!("the server does not speak TLS as we expect: {what}{seen}"),
            "check that the port serves TLS; if it serves plaintext gRPC, remove the remote's tls section",
        ),
    }
}

/// Info failed with the connection up: a gRPC error, an HTTP answer that is
/// not gRPC, an HTTP/2 failure, or a TLS alert right after the handshake.
async fn status_failure(evidence: &Evidence<'_>, status: &tonic::Status) -> Diagnosis {
    let text = format!("{}: {}", status.message(), tls::describe(status));
    if evidence.tls()
        && let Some(alert) = tls::alert_in_text(&text)
    {
        return alert_received(evidence, alert, status.message());
    }
    if let Some(http) = http_status(status.message()) {
        return not_grpc(
            evidence,
            format!("it answered Info with HTTP {http} and no gRPC status"),
        );
    }
    if status.message().contains("invalid compression flag: 60") {
        return not_grpc(
            evidence,
            format!(
                "it answered Info with an HTML page ({})",
                status
                    .message()
                    .rsplit("with status: ")
                    .next()
                    .unwrap_or("")
            ),
        );
    }
    if status.message().contains("missing grpc-status trailer") {
        return not_grpc(
            evidence,
            "it answered Info with HTTP 200 but without a gRPC status".into(),
        );
    }
    if status.code() == tonic::Code::Unimplemented {
        return Diagnosis::new(
            Stage::Info,
            format!(
                "the server speaks gRPC but has no thanos.info.Info service ({})",
                status.message()
            ),
            "point the target at a Thanos StoreAPI (sidecar, store gateway, ruler, receiver or querier) of Thanos v0.23 or newer",
        );
    }
    if evidence.tls() && evidence.client_cert_requested_unanswered() && connection_level(status) {
        return client_certificate_required(&format!(
            "closed the connection ({})",
            root_cause(status)
        ));
    }
    if connection_level(status) {
        return http2_failure(evidence, status).await;
    }
    Diagnosis::new(
        Stage::Info,
        format!(
            "the Info call failed with {:?}: {}",
            status.code(),
            status.message()
        ),
        "see the remote's logs for this error",
    )
}

/// `N` of tonic's "mapped from HTTP status code N".
fn http_status(message: &str) -> Option<u16> {
    message
        .split("mapped from HTTP status code ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn not_grpc(evidence: &Evidence<'_>, what: String) -> Diagnosis {
    Diagnosis::new(
        Stage::Info,
        format!("this is an HTTP server, not a gRPC StoreAPI: {what}"),
        format!(
            "check the target's port (a sidecar's gRPC port is 10901, its HTTP port 10902); behind an ingress, check that it routes gRPC for :authority {} to the StoreAPI",
            evidence.authority
        ),
    )
}

/// Whether the call failed below gRPC: the connection or HTTP/2 itself.
fn connection_level(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        || std::error::Error::source(status).is_some()
        || status.message().contains("transport error")
}

/// HTTP/2 failed over a connection that did open.
async fn http2_failure(evidence: &Evidence<'_>, status: &tonic::Status) -> Diagnosis {
    let cause = root_cause(status);
    let peer = identify(evidence).await;
    let seen = peer
        .as_ref()
        .map(|p| format!(", and {}", p.describe()))
        .unwrap_or_default();
    match (peer, evidence.tls()) {
        (Some(Peer::Tls), false) => Diagnosis::new(
            Stage::Connect,
            format!(
                "the server expects TLS, and this remote has no tls section: it dropped our plaintext HTTP/2 ({cause}){seen}"
            ),
            "add a tls section to the remote (tls.ca_file, and tls.cert_file and tls.key_file if it wants a client certificate)",
        ),
        (Some(Peer::Http1(_)), _) => Diagnosis::new(
            Stage::Info,
            format!(
                "this is an HTTP/1 server, not a gRPC StoreAPI: it does not speak HTTP/2 ({cause}){seen}"
            ),
            "check the target's port (a sidecar's gRPC port is 10901, its HTTP port 10902)",
        ),
        _ => Diagnosis::new(
            Stage::Info,
            format!("the connection failed before Info was answered ({cause}){seen}"),
            "check that the target is a gRPC StoreAPI port, and the remote's logs",
        ),
    }
}

/// The innermost error under a failed call, in its own words.
fn root_cause(status: &tonic::Status) -> String {
    let mut last: Option<&(dyn std::error::Error + 'static)> = None;
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        last = Some(error);
        source = error.source();
    }
    last.map_or_else(|| status.message().to_owned(), tls::describe)
}

fn timed_out(evidence: &Evidence<'_>, timeout: Duration) -> Diagnosis {
    let facts = evidence.facts;
    if facts.tcp_time.is_none() {
        return Diagnosis::new(
            Stage::Connect,
            format!(
                "no connection to {} within info.timeout ({})",
                evidence.address(),
                seconds(timeout)
            ),
            "check the address, and routes and firewalls between here and the remote",
        );
    }
    if evidence.tls() && facts.tls_time.is_none() {
        return Diagnosis::new(
            Stage::Tls,
            format!(
                "the TLS handshake did not finish within info.timeout ({})",
                seconds(timeout)
            ),
            "check that the port serves TLS",
        );
    }
    Diagnosis::new(
        Stage::Info,
        format!(
            "connected, but no Info answer within info.timeout ({})",
            seconds(timeout)
        ),
        "check that the remote is healthy (its logs); a loaded remote may need a longer info.timeout",
    )
}

/// A second, plain look at the peer, when the first one failed oddly.
async fn identify(evidence: &Evidence<'_>) -> Option<Peer> {
    Some(sniff(evidence.peer_addr()?, SNIFF_WAIT).await)
}

/// The subjects of the certificates in tls.ca_file, for messages.
fn ca_subjects(evidence: &Evidence<'_>) -> Option<String> {
    let path = evidence.config.tls.as_ref()?.ca_file.as_ref()?;
    let subjects: Vec<String> = tls::load_certs(path)
        .ok()?
        .iter()
        .filter_map(|c| Certificate::parse(c))
        .map(|c| c.subject)
        .collect();
    (!subjects.is_empty()).then(|| subjects.join("; "))
}

/// Our client certificate, for messages.
fn client_certificate(evidence: &Evidence<'_>) -> Option<Certificate> {
    let path = evidence.config.tls.as_ref()?.cert_file.as_ref()?;
    let certs = tls::load_certs(path).ok()?;
    Certificate::parse(certs.first()?)
}

/// Things about a working endpoint worth a look.
pub fn notes(config: &RemoteConfig, report: &EndpointReport) -> Vec<String> {
    let mut notes = Vec::new();
    let now = unix_now();
    if let Some(cert) = &report.server_certificate {
        let left = cert.not_after_unix - now;
        if left < EXPIRY_WARNING_DAYS * 86_400 {
            notes.push(format!(
                "the server's certificate expires {} ({})",
                in_words(cert.not_after_unix, now),
                cert.not_after
            ));
        }
    }
    if let Some(tls) = &config.tls {
        if tls.insecure_skip_verify {
            notes.push(
                "the server's certificate is not verified (tls.insecure_skip_verify: true)".into(),
            );
        }
        if report
            .handshake
            .as_ref()
            .is_some_and(|h| h.client_certificate_requested && !h.client_certificate_sent)
        {
            notes.push("the server asks for a client certificate but does not require one; none is configured".into());
        }
    }
    if report
        .info
        .as_ref()
        .is_some_and(|i| i.label_sets.is_empty())
    {
        notes.push(
            "it has no external labels: every query reaches it, and its series carry no label that tells which cluster they came from".into(),
        );
    }
    notes
}

/// `a, b and c`.
fn list(items: &[String]) -> String {
    match items {
        [] => "none".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// `certificate_required` for an alert.
fn alert_name(alert: AlertDescription) -> String {
    let name = format!("{alert:?}");
    let mut out = String::with_capacity(name.len() + 4);
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
        }
        previous_lower = c.is_ascii_lowercase();
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            alert_name(AlertDescription::CertificateRequired),
            "certificate_required"
        );
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
        assert_eq!(list(&["a".into(), "b".into(), "c".into()]), "a, b and c");
        assert_eq!(
            http_status("grpc-status header missing, mapped from HTTP status code 404"),
            Some(404)
        );
        assert_eq!(http_status("other"), None);
    }
}
