//! What the status page says about a remote's client certificate: who it
//! names, who issued it, and when it stops being valid.

use serde::Serialize;

use crate::timefmt;
use crate::x509::CertificateFacts;

/// Longest warning ahead of expiry; shorter-lived certificates are warned
/// about in their last third.
const WARN_BEFORE_SECONDS: i64 = 14 * 86_400;

/// Where a certificate stands at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    Valid,
    /// Valid, but in its last 14 days (or last third, for short-lived ones).
    Expiring,
    Expired,
    NotYetValid,
}

/// The parts of an X.509 certificate an operator needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertificateStatus {
    pub subject: String,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub not_before_text: String,
    pub not_after_text: String,
    /// Negative once expired.
    pub expires_in_seconds: i64,
    pub validity: Validity,
}

/// Reads a DER certificate as of `now` (Unix seconds).
pub fn inspect(der: &[u8], now: i64) -> Result<CertificateStatus, String> {
    let cert = CertificateFacts::parse(der).map_err(|e| e.to_string())?;
    let (not_before, not_after) = (cert.not_before, cert.not_after);
    let lifetime = (not_after - not_before).max(0);
    let warn_before = WARN_BEFORE_SECONDS.min(lifetime / 3);
    let state = if now < not_before {
        Validity::NotYetValid
    } else if now >= not_after {
        Validity::Expired
    } else if not_after - now <= warn_before {
        Validity::Expiring
    } else {
        Validity::Valid
    };
    Ok(CertificateStatus {
        subject: cert.subject,
        issuer: cert.issuer,
        not_before,
        not_after,
        not_before_text: timefmt::rfc3339(not_before),
        not_after_text: timefmt::rfc3339(not_after),
        expires_in_seconds: not_after - now,
        validity: state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn certificate(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["client.test".to_owned()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "thanos-fanout");
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    const JAN_1_2030: i64 = 1_893_456_000;

    #[test]
    fn reads_names_and_dates() {
        let der = certificate((2029, 1, 1), (2031, 1, 1));
        let status = inspect(&der, JAN_1_2030).expect("parses");
        assert_eq!(status.subject, "CN=thanos-fanout");
        assert_eq!(status.issuer, "CN=thanos-fanout");
        assert_eq!(status.not_after_text, "2031-01-01T00:00:00Z");
        assert_eq!(status.expires_in_seconds, 365 * 86_400);
        assert_eq!(status.validity, Validity::Valid);
    }

    #[test]
    fn warns_ahead_of_expiry() {
        let der = certificate((2029, 1, 1), (2030, 1, 10));
        assert_eq!(
            inspect(&der, JAN_1_2030).expect("parses").validity,
            Validity::Expiring
        );
        let der = certificate((2029, 1, 1), (2029, 12, 31));
        let status = inspect(&der, JAN_1_2030).expect("parses");
        assert_eq!(status.validity, Validity::Expired);
        assert_eq!(status.expires_in_seconds, -86_400);
        let der = certificate((2030, 2, 1), (2031, 1, 1));
        assert_eq!(
            inspect(&der, JAN_1_2030).expect("parses").validity,
            Validity::NotYetValid
        );
        // A three-day certificate with two days left is fine.
        let der = certificate((2029, 12, 30), (2030, 1, 2));
        assert_eq!(
            inspect(&der, JAN_1_2030 - 86_400).expect("parses").validity,
            Validity::Valid
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(inspect(b"not a certificate", 0).is_err());
    }
}
