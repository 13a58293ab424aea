//! A certificate as `check` reports it: [`crate::x509`]'s facts with its
//! dates in RFC 3339 for the JSON report.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::timefmt;
use crate::x509::CertificateFacts;

/// A certificate as `check` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Certificate {
    pub subject: String,
    pub issuer: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    #[serde(skip)]
    pub not_before_unix: i64,
    #[serde(skip)]
    pub not_after_unix: i64,
    pub self_signed: bool,
}

impl Certificate {
    /// Reads a DER certificate; `None` if it is not one.
    pub fn parse(der: &[u8]) -> Option<Self> {
        let cert = CertificateFacts::parse(der).ok()?;
        Some(Self {
            subject: cert.subject,
            issuer: cert.issuer,
            dns_names: cert.dns_names,
            ip_addresses: cert.ip_addresses.iter().map(IpAddr::to_string).collect(),
            not_before: timefmt::rfc3339(cert.not_before),
            not_after: timefmt::rfc3339(cert.not_after),
            not_before_unix: cert.not_before,
            not_after_unix: cert.not_after,
            self_signed: cert.self_signed,
        })
    }

    /// Every name on the certificate, DNS names first, for messages.
    pub fn names(&self) -> Vec<String> {
        self.dns_names
            .iter()
            .chain(&self.ip_addresses)
            .cloned()
            .collect()
    }

    /// Whether it has expired at `now` (Unix seconds).
    pub fn expired_at(&self, now: i64) -> bool {
        now > self.not_after_unix
    }
}

/// Seconds since the epoch now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_issuer_and_validity() {
        let ca = crate::demo::certs::Authority::new("test CA").expect("CA");
        let pem = ca.server(&["a.remote.test", "10.0.3.7"]).expect("cert");
        let der = crate::tls::parse_certs(pem.cert.as_bytes()).expect("pem");
        let cert = Certificate::parse(&der[0]).expect("parses");
        assert_eq!(cert.subject, "CN=a.remote.test");
        assert_eq!(cert.issuer, "CN=test CA");
        assert_eq!(cert.dns_names, ["a.remote.test"]);
        assert_eq!(cert.ip_addresses, ["10.0.3.7"]);
        assert!(!cert.self_signed);
        assert!(!cert.expired_at(unix_now()));
        assert!(Certificate::parse(b"not a certificate").is_none());
    }
}
