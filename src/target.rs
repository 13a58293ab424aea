//! Where a remote is: the `targets` syntax, and the endpoints discovery finds
//! for it and upstream dials. Discovery and upstream both speak these types;
//! neither needs the other for them.
//!
//! Every endpoint remembers the host name it was discovered under: that name,
//! never a resolved IP, is the default for TLS verification and SNI.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A `targets` entry that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("target {target:?}: {reason}")]
pub struct TargetError {
    target: String,
    reason: &'static str,
}

/// One `targets` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `host:port`: an IP is one endpoint; a name is resolved like `dns+`.
    Static { host: String, port: u16 },
    /// `dns+host:port`: every A and AAAA address is an endpoint.
    Dns { host: String, port: u16 },
    /// `dnssrv+name`: every SRV record's target, resolved to addresses, on the record's port.
    Srv { name: String },
    /// `dnssrvnoa+name`: every SRV record's target name itself, on the record's port.
    SrvNoA { name: String },
}

impl Target {
    /// Parses one entry of `targets`.
    pub fn parse(s: &str) -> Result<Self, TargetError> {
        let err = |reason| TargetError {
            target: s.to_owned(),
            reason,
        };
        if let Some(name) = s.strip_prefix("dnssrvnoa+") {
            return Ok(Self::SrvNoA {
                name: srv_name(name).map_err(err)?,
            });
        }
        if let Some(name) = s.strip_prefix("dnssrv+") {
            return Ok(Self::Srv {
                name: srv_name(name).map_err(err)?,
            });
        }
        if let Some(rest) = s.strip_prefix("dns+") {
            let (host, port) = host_port(rest).map_err(err)?;
            if host.parse::<IpAddr>().is_ok() {
                return Err(err("dns+ needs a name, not an IP address"));
            }
            return Ok(Self::Dns { host, port });
        }
        if s.contains('+')
            && !s.starts_with('[')
            && s.split(':').next().is_some_and(|p| p.contains('+'))
        {
            return Err(err("unknown prefix (use dns+, dnssrv+ or dnssrvnoa+)"));
        }
        let (host, port) = host_port(s).map_err(err)?;
        Ok(Self::Static { host, port })
    }

    /// Whether this target needs DNS at all.
    pub fn is_ip(&self) -> bool {
        matches!(self, Target::Static { host, .. } if host.parse::<IpAddr>().is_ok())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Static { host, port } => write!(f, "{}", join_host_port(host, *port)),
            Target::Dns { host, port } => write!(f, "dns+{}", join_host_port(host, *port)),
            Target::Srv { name } => write!(f, "dnssrv+{name}"),
            Target::SrvNoA { name } => write!(f, "dnssrvnoa+{name}"),
        }
    }
}

fn srv_name(name: &str) -> Result<String, &'static str> {
    if name.is_empty() {
        return Err("missing SRV name");
    }
    if name.contains(':') {
        return Err("SRV names carry no port (the records give it)");
    }
    valid_name(name)?;
    Ok(name.trim_end_matches('.').to_owned())
}

fn valid_name(host: &str) -> Result<(), &'static str> {
    if host
        .trim_end_matches('.')
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        Ok(())
    } else {
        Err("host is neither an IP address nor a DNS name")
    }
}

fn host_port(s: &str) -> Result<(String, u16), &'static str> {
    if s.contains("://") {
        return Err("expected host:port, not a URL");
    }
    let (host, port) = s.rsplit_once(':').ok_or("missing :port")?;
    let port: u16 = port.parse().map_err(|_| "port is not a number 1-65535")?;
    if port == 0 {
        return Err("port must not be 0");
    }
    let host = match host.strip_prefix('[') {
        Some(rest) => {
            let inner = rest.strip_suffix(']').ok_or("unclosed '['")?;
            inner
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| "invalid IPv6 address in brackets")?;
            inner
        }
        None if host.contains(':') => return Err("IPv6 addresses need brackets"),
        None => host,
    };
    if host.is_empty() {
        return Err("missing host");
    }
    if host.parse::<IpAddr>().is_err() {
        valid_name(host)?;
    }
    Ok((host.trim_end_matches('.').to_owned(), port))
}

/// `host:port`, bracketing IPv6 literals.
pub fn join_host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// How to reach one discovered endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dial {
    /// A resolved address.
    Addr(SocketAddr),
    /// A name resolved at connect time (`dnssrvnoa+`).
    Name(String, u16),
}

impl fmt::Display for Dial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dial::Addr(addr) => write!(f, "{addr}"),
            Dial::Name(host, port) => write!(f, "{}", join_host_port(host, *port)),
        }
    }
}

/// One endpoint of a remote, as discovery found it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointSpec {
    pub dial: Dial,
    /// The host it was found under (the name of `dns+host:port`, the SRV
    /// target, or the IP of a literal target): the default TLS name.
    pub host: String,
}

impl EndpointSpec {
    /// The endpoint of an IP-literal target.
    pub fn literal(ip: IpAddr, port: u16) -> Self {
        Self {
            dial: Dial::Addr(SocketAddr::new(ip, port)),
            host: ip.to_string(),
        }
    }

    /// Whether the default TLS name is an IP (no host name to verify).
    pub fn host_is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Target::parse("thanos-a.example.com:443").expect("valid"),
            Target::Static {
                host: "thanos-a.example.com".into(),
                port: 443
            }
        );
        assert!(Target::parse("10.1.2.3:443").expect("valid").is_ip());
        assert_eq!(
            Target::parse("[::1]:10901").expect("valid").to_string(),
            "[::1]:10901"
        );
        assert_eq!(
            Target::parse("dns+sidecar.ns.svc:10901").expect("valid"),
            Target::Dns {
                host: "sidecar.ns.svc".into(),
                port: 10901
            }
        );
        assert_eq!(
            Target::parse("dnssrv+_grpc._tcp.sidecar.ns.svc.").expect("valid"),
            Target::Srv {
                name: "_grpc._tcp.sidecar.ns.svc".into()
            }
        );
        assert_eq!(
            Target::parse("dnssrvnoa+_grpc._tcp.x").expect("valid"),
            Target::SrvNoA {
                name: "_grpc._tcp.x".into()
            }
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
            "dns+10.0.0.1:443",
            "dns+host",
            "dnssrv+",
            "dnssrv+_grpc._tcp.x:443",
            "dnsfoo+host:1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
