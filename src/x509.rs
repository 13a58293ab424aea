//! Reading X.509 certificates: the one place DER is parsed into the facts
//! the rest of the project shows or acts on (names, issuer, validity). The
//! status page, `check` and the expiry metrics all read certificates here.

use std::net::IpAddr;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What a certificate says, with its validity in Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    pub subject: String,
    pub issuer: String,
    /// Subject alternative names of type DNS, in certificate order.
    pub dns_names: Vec<String>,
    /// Subject alternative names of type IP; malformed ones are left out.
    pub ip_addresses: Vec<IpAddr>,
    pub not_before: i64,
    pub not_after: i64,
    /// Subject and issuer are the same name.
    pub self_signed: bool,
}

/// Bytes that are not a DER certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable: {0}")]
pub struct Unreadable(String);

impl CertificateFacts {
    pub fn parse(der: &[u8]) -> Result<Self, Unreadable> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| Unreadable(e.to_string()))?;
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        // A certificate whose SAN extension is malformed still has a
        // subject and dates worth showing.
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => ip_addresses.extend(ip_from_bytes(bytes)),
                    _ => {}
                }
            }
        }
        let validity = cert.validity();
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            dns_names,
            ip_addresses,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        })
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_issuer_and_validity() {
        use rcgen::{CertificateParams, CertifiedIssuer, DnType, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
        let mut leaf =
            CertificateParams::new(vec!["a.remote.test".to_owned(), "10.0.3.7".to_owned()])
                .expect("params");
        leaf.distinguished_name
            .push(DnType::CommonName, "a.remote.test");
        leaf.not_before = rcgen::date_time_ymd(2029, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2031, 1, 1);
        let leaf = leaf
            .signed_by(&KeyPair::generate().expect("key"), &ca)
            .expect("leaf");

        let cert = CertificateFacts::parse(leaf.der()).expect("parses");
        assert_eq!(cert.subject, "CN=a.remote.test");
        assert_eq!(cert.issuer, "CN=test CA");
        assert_eq!(cert.dns_names, ["a.remote.test"]);
        assert_eq!(
            cert.ip_addresses,
            ["10.0.3.7".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(cert.not_before, 1_861_920_000);
        assert_eq!(cert.not_after, 1_924_992_000);
        assert!(!cert.self_signed);
        assert!(
            CertificateFacts::parse(ca.der())
                .expect("parses")
                .self_signed
        );
    }

    #[test]
    fn garbage_is_unreadable() {
        let error = CertificateFacts::parse(b"not a certificate").expect_err("not DER");
        assert!(error.to_string().starts_with("unreadable: "), "{error}");
    }
}
