//! The parts of an X.509 certificate an operator needs to see: who it is
//! for, who signed it, and when it is valid.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

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
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            ip_addresses.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        let validity = cert.validity();
        let not_before_unix = validity.not_before.timestamp();
        let not_after_unix = validity.not_after.timestamp();
        Some(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            dns_names,
            ip_addresses,
            not_before: rfc3339(not_before_unix),
            not_after: rfc3339(not_after_unix),
            not_before_unix,
            not_after_unix,
            self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
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

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Seconds since the epoch now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// `2026-01-02T03:04:05Z` for Unix seconds.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = crate::status::text::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `in 89 days`, `3 hours ago`: the distance from `now` to `then`.
pub fn relative(then: i64, now: i64) -> String {
    let delta = then - now;
    let abs = delta.unsigned_abs();
    let (n, unit) = match abs {
        0..120 => (abs, "second"),
        120..7_200 => (abs / 60, "minute"),
        7_200..172_800 => (abs / 3600, "hour"),
        172_800..63_115_200 => (abs / 86_400, "day"),
        _ => (abs / 31_557_600, "year"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if delta >= 0 {
        format!("in {n} {unit}{plural}")
    } else {
        format!("{n} {unit}{plural} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_323_045), "2026-01-02T03:04:05Z");
        assert_eq!(rfc3339(-86_400), "1969-12-31T00:00:00Z");
        assert_eq!(relative(100, 100 + 3 * 86_400), "3 days ago");
        assert_eq!(relative(100 + 3600 * 5, 100), "in 5 hours");
        assert_eq!(relative(160, 100), "in 60 seconds");
        assert_eq!(relative(100 * 31_557_600, 0), "in 100 years");
    }

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
