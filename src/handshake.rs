//! Why a TLS handshake with an endpoint failed, as the metric label value it
//! is counted under: the list of reasons (so the metric family can create
//! every child up front) and which reason a rustls error is. Metrics and TLS
//! both import it from here.

/// Every reason a handshake failure is counted under, for
/// `thanos_fanout_remote_tls_handshake_failures_total`.
pub const HANDSHAKE_FAILURE_REASONS: [&str; 14] = [
    "unknown_authority",
    "name_mismatch",
    "expired",
    "not_yet_valid",
    "bad_certificate",
    "client_certificate_required",
    "client_certificate_rejected",
    "no_alpn",
    "version_mismatch",
    "alert",
    "not_tls",
    "protocol_error",
    "connection_lost",
    "timeout",
];

/// Which of [`HANDSHAKE_FAILURE_REASONS`] a rustls error is.
pub fn rustls_reason(err: &rustls::Error) -> &'static str {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match err {
        E::InvalidCertificate(C::UnknownIssuer) => "unknown_authority",
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "name_mismatch"
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "expired",
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => "not_yet_valid",
        E::InvalidCertificate(_) | E::NoCertificatesPresented => "bad_certificate",
        E::AlertReceived(A::CertificateRequired) => "client_certificate_required",
        E::AlertReceived(
            A::UnknownCA
            | A::BadCertificate
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::CertificateRevoked
            | A::AccessDenied,
        ) => "client_certificate_rejected",
        E::AlertReceived(A::NoApplicationProtocol) => "no_alpn",
        E::AlertReceived(A::ProtocolVersion) | E::PeerIncompatible(_) => "version_mismatch",
        E::AlertReceived(_) => "alert",
        // Bytes that are not TLS records: usually a plaintext server.
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => "not_tls",
        _ => "protocol_error",
    }
}
