//! Where a remote's endpoints are: the `targets` syntax of the config.
//!
//! A target is `host:port` (a name is resolved by the system resolver each
//! time a connection is made) or `[v6]:port`. The host a target was written
//! with is kept, because it is the default name for TLS verification and SNI.

use std::fmt;
use std::net::IpAddr;

/// A `targets` entry that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("target {target:?}: {reason}")]
pub struct TargetError {
    target: String,
    reason: &'static str,
}

/// One dialable address as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
}

impl Target {
    /// Parses `host:port` or `[ipv6]:port`.
    pub fn parse(s: &str) -> Result<Self, TargetError> {
        let err = |reason| TargetError {
            target: s.to_owned(),
            reason,
        };
        if s.contains("://") {
            return Err(err("expected host:port, not a URL"));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| err("missing :port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| err("port is not a number 1-65535"))?;
        if port == 0 {
            return Err(err("port must not be 0"));
        }
        let host = match host.strip_prefix('[') {
            Some(rest) => {
                let inner = rest.strip_suffix(']').ok_or_else(|| err("unclosed '['"))?;
                inner
                    .parse::<std::net::Ipv6Addr>()
                    .map_err(|_| err("invalid IPv6 address in brackets"))?;
                inner
            }
            None if host.contains(':') => return Err(err("IPv6 addresses need brackets")),
            None => host,
        };
        if host.is_empty() {
            return Err(err("missing host"));
        }
        if host.parse::<IpAddr>().is_err()
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(err("host is neither an IP address nor a DNS name"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// The host as an IP address, if it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(_)) => write!(f, "[{}]:{}", self.host, self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_addresses() {
        let t = Target::parse("thanos-a.example.com:443").expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("thanos-a.example.com", 443));
        let t = Target::parse("[::1]:10901").expect("valid");
        assert_eq!(t.host, "::1");
        assert_eq!(t.to_string(), "[::1]:10901");
        assert_eq!(
            Target::parse("10.1.2.3:443").expect("valid").to_string(),
            "10.1.2.3:443"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "host",
            "host:",
            ":443",
            "host:99999",
            "::1:443",
            "http://h:1",
            "a b:1",
            "h:0",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
