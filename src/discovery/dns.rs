//! DNS lookups with hickory: A/AAAA and SRV, CNAMEs followed, answers with
//! their expiry so short TTLs are honoured, and failures split into "the name
//! is gone" (NXDOMAIN, empty answer) and "we could not ask" (timeout,
//! SERVFAIL, network), which callers treat very differently.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::RData;
use tokio::time::Instant;

use crate::target::{Dial, EndpointSpec, Target};

/// Why a lookup gave no endpoints.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// The name does not exist or has no records of the type (NXDOMAIN,
    /// empty answer). Endpoints go only if this persists.
    #[error("{0}")]
    Missing(String),
    /// The question could not be answered (timeout, SERVFAIL, network).
    /// The last good answer is kept.
    #[error("{0}")]
    Failed(String),
}

/// A successful lookup: endpoints and when the answer expires.
#[derive(Debug, Clone)]
pub struct Answer {
    pub endpoints: Vec<EndpointSpec>,
    pub valid_until: Instant,
}

/// The resolver shared by discovery and by connections to `dnssrvnoa+` names.
/// Clones share it, so [`Dns::replace_with`] reconfigures every user at once.
#[derive(Clone)]
pub struct Dns {
    resolver: Arc<ArcSwap<TokioResolver>>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dns")
    }
}

impl Dns {
    /// The system resolver (resolv.conf), or the given name servers over UDP and TCP.
    pub fn new(nameservers: &[SocketAddr], negative_ttl: Duration) -> Result<Self, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| format!("system resolver: {e}"))?
        } else {
            let servers = nameservers
                .iter()
                .map(|ns| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = ns.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = ns.port();
                    NameServerConfig::new(ns.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let opts = builder.options_mut();
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        // A vanished name should be noticed on the next refresh, not after
        // whatever negative TTL a zone advertises.
        opts.negative_max_ttl = Some(negative_ttl);
        let resolver = builder.build().map_err(|e| format!("resolver: {e}"))?;
        Ok(Self {
            resolver: Arc::new(ArcSwap::from_pointee(resolver)),
        })
    }

    /// From now on, every clone of this resolver asks as `other` does (its
    /// name servers and settings). Lookups in progress finish as they were.
    pub fn replace_with(&self, other: &Dns) {
        self.resolver.store(other.resolver());
    }

    fn resolver(&self) -> Arc<TokioResolver> {
        self.resolver.load_full()
    }

    /// Addresses of `host` (A and AAAA, CNAMEs followed).
    pub async fn lookup_ip(&self, host: &str) -> Result<(Vec<IpAddr>, Instant), LookupError> {
        let lookup = self
            .resolver()
            .lookup_ip(fqdn(host))
            .await
            .map_err(|e| classify(host, "A/AAAA", e))?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(LookupError::Missing(format!("{host}: no A/AAAA records")));
        }
        Ok((ips, Instant::from_std(lookup.valid_until())))
    }

    /// SRV records of `name` as (target without trailing dot, port).
    async fn lookup_srv(&self, name: &str) -> Result<(Vec<(String, u16)>, Instant), LookupError> {
        let lookup = self
            .resolver()
            .srv_lookup(fqdn(name))
            .await
            .map_err(|e| classify(name, "SRV", e))?;
        let mut records: Vec<(String, u16)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some((
                    srv.target.to_utf8().trim_end_matches('.').to_owned(),
                    srv.port,
                )),
                _ => None,
            })
            .collect();
        records.sort();
        records.dedup();
        if records.is_empty() {
            return Err(LookupError::Missing(format!("{name}: no SRV records")));
        }
        Ok((records, Instant::from_std(lookup.valid_until())))
    }

    /// The endpoints `target` stands for now.
    pub async fn resolve(&self, target: &Target) -> Result<Answer, LookupError> {
        let forever = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        match target {
            Target::Static { host, port } => match host.parse::<IpAddr>() {
                Ok(ip) => Ok(Answer {
                    endpoints: vec![EndpointSpec::literal(ip, *port)],
                    valid_until: forever,
                }),
                Err(_) => self.addresses(host, *port).await,
            },
            Target::Dns { host, port } => self.addresses(host, *port).await,
            Target::Srv { name } => {
                let (records, mut valid_until) = self.lookup_srv(name).await?;
                let mut endpoints = Vec::new();
                let mut missing = Vec::new();
                for (host, port) in records {
                    match self.addresses(&host, port).await {
                        Ok(answer) => {
                            valid_until = valid_until.min(answer.valid_until);
                            endpoints.extend(answer.endpoints);
                        }
                        // One target without addresses does not void the others.
                        Err(LookupError::Missing(e)) => missing.push(e),
                        Err(failed) => return Err(failed),
                    }
                }
                if endpoints.is_empty() {
                    return Err(LookupError::Missing(format!(
                        "{name}: no SRV target has addresses ({})",
                        missing.join("; ")
                    )));
                }
                if !missing.is_empty() {
                    tracing::warn!(srv = %name, missing = %missing.join("; "), "some SRV targets have no addresses");
                }
                Ok(Answer {
                    endpoints,
                    valid_until,
                })
            }
            Target::SrvNoA { name } => {
                let (records, valid_until) = self.lookup_srv(name).await?;
                Ok(Answer {
                    endpoints: records
                        .into_iter()
                        .map(|(host, port)| EndpointSpec {
                            dial: Dial::Name(host.clone(), port),
                            host,
                        })
                        .collect(),
                    valid_until,
                })
            }
        }
    }

    async fn addresses(&self, host: &str, port: u16) -> Result<Answer, LookupError> {
        let (ips, valid_until) = self.lookup_ip(host).await?;
        let mut endpoints: Vec<EndpointSpec> = ips
            .into_iter()
            .map(|ip| EndpointSpec {
                dial: Dial::Addr(SocketAddr::new(ip, port)),
                host: host.to_owned(),
            })
            .collect();
        endpoints.sort();
        endpoints.dedup();
        Ok(Answer {
            endpoints,
            valid_until,
        })
    }
}

/// Names from config are absolute: no search-domain guessing.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn classify(name: &str, kind: &str, err: NetError) -> LookupError {
    match &err {
        NetError::Dns(DnsError::NoRecordsFound(no)) => {
            LookupError::Missing(format!("{name}: no {kind} records ({})", no.response_code))
        }
        _ => LookupError::Failed(format!("{name}: {kind} lookup failed: {err}")),
    }
}
