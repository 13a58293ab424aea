//! `thanos-fanout check`: every endpoint of every remote, dialled and asked
//! for Info once, with a report of what each step showed and, for each
//! failure, the likely cause and fix in plain words.
//!
//! It goes through the service's own code: discovery's lookups and file_sd
//! reader, [`Remote::build`] for the TLS identity, and [`Remote::probe`] for an
//! endpoint built exactly as the service builds it (SNI name, `:authority`,
//! verifier, timeouts), whose dial records what the handshake showed. So
//! check and service cannot disagree about an endpoint.

mod certificate;
mod diagnose;
mod render;
mod sniff;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::config::{RemoteConfig, ValidConfig};
use crate::discovery::{Dns, LookupError, read_file_sd};
use crate::labelset;
use crate::metrics::RemoteFamilies;
use crate::target::{EndpointSpec, Target};
use crate::upstream::{Api, InfoCallError, Remote, RemoteInfo};

pub use certificate::Certificate;
use diagnose::{Diagnosis, Evidence, Failure};
pub use render::{human, json};

/// How many endpoints are dialled at once.
const CONCURRENCY: usize = 16;

/// How the report is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned `key: value` lines per endpoint, for people.
    #[default]
    Human,
    /// One JSON object, for scripts.
    Json,
}

/// Everything `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The config file checked.
    pub config: Option<String>,
    pub endpoints: Vec<EndpointReport>,
    pub summary: Summary,
}

impl Report {
    /// Whether every endpoint passed.
    pub fn ok(&self) -> bool {
        self.summary.failed == 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub endpoints: usize,
    pub ok: usize,
    pub failed: usize,
}

/// Where an endpoint's check stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The remote's config could not be used (certificates, file_sd).
    Config,
    /// The target did not resolve.
    Dns,
    /// No TCP connection.
    Connect,
    /// The TLS handshake failed, or the server refused us right after it.
    Tls,
    /// Connected, but Info failed or its answer is unusable.
    Info,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Config => "config",
            Stage::Dns => "dns",
            Stage::Connect => "connect",
            Stage::Tls => "tls",
            Stage::Info => "info",
        }
    }
}

/// One endpoint (or, for failures before there is one, one remote or
/// target) and what checking it showed.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    pub remote: String,
    /// The `targets` entry (or `file_sd` file) this endpoint came from.
    pub target: Option<String>,
    /// What is dialled: `ip:port`, or `name:port` for dnssrvnoa+.
    pub address: Option<String>,
    /// The address the TCP connection reached.
    pub peer: Option<String>,
    /// The TLS settings used; `None` for plaintext.
    pub tls: Option<TlsSettings>,
    /// HTTP/2 `:authority` of the requests.
    pub authority: Option<String>,
    /// The certificate the server presented, even if it failed verification.
    pub server_certificate: Option<Certificate>,
    /// The subjects of the other certificates the server sent, in order.
    pub server_chain: Vec<String>,
    pub handshake: Option<Handshake>,
    pub info: Option<InfoSummary>,
    pub latency_ms: Latency,
    pub ok: bool,
    pub failed_at: Option<Stage>,
    /// What is wrong, in plain words.
    pub problem: Option<String>,
    /// The likely fix.
    pub fix: Option<String>,
    /// The error as the service reports it (logs, warnings).
    pub error: Option<String>,
    /// Things that work but deserve a look.
    pub notes: Vec<String>,
}

/// The TLS settings an endpoint is dialled with.
#[derive(Debug, Clone, Serialize)]
pub struct TlsSettings {
    /// The name sent as SNI and verified against the certificate.
    pub server_name: String,
    /// Where that name comes from: `tls.server_name`, `target host` or
    /// `target IP`.
    pub server_name_from: &'static str,
    pub verify: bool,
    pub ca_file: Option<String>,
    pub client_certificate: Option<String>,
}

/// How the TLS handshake went.
#[derive(Debug, Clone, Serialize)]
pub struct Handshake {
    pub ok: bool,
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: Option<String>,
    pub alpn: Option<String>,
    pub cipher_suite: Option<String>,
    /// The verifier's verdict on the server's certificate: `None` if it
    /// never got that far, or verification is off.
    pub verified: Option<bool>,
    pub client_certificate_requested: bool,
    pub client_certificate_sent: bool,
}

/// The endpoint's Info answer.
#[derive(Debug, Clone, Serialize)]
pub struct InfoSummary {
    pub component_type: String,
    /// External label sets, as `{name="value", ...}`.
    pub label_sets: Vec<String>,
    /// Milliseconds; `None` when it offers no StoreAPI.
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
    /// `store`, `rules`, `targets`, `metric_metadata`, `exemplars`, `status`.
    pub apis: Vec<&'static str>,
}

impl InfoSummary {
    fn new(info: &RemoteInfo) -> Self {
        let mut apis = Vec::new();
        if info.store {
            apis.push("store");
        }
        for api in &info.apis {
            apis.push(match api {
                Api::Rules => "rules",
                Api::Targets => "targets",
                Api::MetricMetadata => "metric_metadata",
                Api::Exemplars => "exemplars",
                Api::Status => "status",
            });
        }
        Self {
            component_type: info.component.clone(),
            label_sets: info
                .label_sets
                .iter()
                .map(|s| labelset::Display(s).to_string())
                .collect(),
            min_time: info.store.then_some(info.min_time),
            max_time: info.store.then_some(info.max_time),
            apis,
        }
    }
}

/// Milliseconds each step took; `None` for steps not taken or not measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub dns: Option<f64>,
    pub tcp: Option<f64>,
    pub tls: Option<f64>,
    pub info: Option<f64>,
    pub total: Option<f64>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl EndpointReport {
    fn new(remote: &str, target: Option<String>) -> Self {
        Self {
            remote: remote.to_owned(),
            target,
            address: None,
            peer: None,
            tls: None,
            authority: None,
            server_certificate: None,
            server_chain: Vec::new(),
            handshake: None,
            info: None,
            latency_ms: Latency::default(),
            ok: false,
            failed_at: None,
            problem: None,
            fix: None,
            error: None,
            notes: Vec::new(),
        }
    }

    fn fail(mut self, diagnosis: Diagnosis) -> Self {
        self.ok = false;
        self.failed_at = Some(diagnosis.stage);
        self.problem = Some(diagnosis.problem);
        self.fix = diagnosis.fix;
        self
    }
}

/// A target of a remote and where it was configured.
struct TargetEntry {
    target: Target,
    shown: String,
}

/// Checks every remote of `config`; `path` names the file in the report.
pub async fn run(config: &ValidConfig, path: Option<&Path>) -> Report {
    crate::tls::install_crypto_provider();
    let mut reports: Vec<EndpointReport> = Vec::new();
    let dns = match Dns::new(
        &config.discovery.nameserver_addrs(),
        config.discovery.refresh_interval,
    ) {
        Ok(dns) => dns,
        Err(error) => {
            for remote in &config.remotes {
                reports.push(EndpointReport::new(&remote.name, None).fail(Diagnosis {
                    stage: Stage::Dns,
                    problem: format!("no DNS resolver: {error}"),
                    fix: Some("set discovery.nameservers, or fix /etc/resolv.conf".into()),
                }));
            }
            return finish(path, reports);
        }
    };
    let families = RemoteFamilies::register(&mut Registry::default());
    // One job per target (resolve it, then check its endpoints) and one per
    // problem found on the way, in config order.
    let mut jobs: Vec<BoxFuture<'_, Vec<EndpointReport>>> = Vec::new();
    for remote_config in &config.remotes {
        let remote = match Remote::build(
            remote_config,
            &families,
            &dns,
            config.fanout.streams_per_connection,
        ) {
            Ok(remote) => Arc::new(remote),
            Err(error) => {
                let mut report = EndpointReport::new(&remote_config.name, None);
                report.error = Some(error.to_string());
                let report = report.fail(diagnose::remote_config(&error));
                jobs.push(futures::future::ready(vec![report]).boxed());
                continue;
            }
        };
        for entry in targets_of(remote_config) {
            match entry {
                Ok(entry) => jobs.push(
                    check_target(
                        remote.clone(),
                        remote_config,
                        &dns,
                        entry,
                        config.info.timeout,
                    )
                    .boxed(),
                ),
                Err(failure) => jobs.push(futures::future::ready(vec![*failure]).boxed()),
            }
        }
    }
    let checked: Vec<Vec<EndpointReport>> = futures::stream::iter(jobs)
        .buffered(CONCURRENCY)
        .collect()
        .await;
    reports.extend(checked.into_iter().flatten());
    finish(path, reports)
}

fn finish(path: Option<&Path>, endpoints: Vec<EndpointReport>) -> Report {
    let ok = endpoints.iter().filter(|e| e.ok).count();
    Report {
        config: path.map(|p| p.display().to_string()),
        summary: Summary {
            endpoints: endpoints.len(),
            ok,
            failed: endpoints.len() - ok,
        },
        endpoints,
    }
}

/// A remote's targets, from `targets` and its file_sd files, in order;
/// unreadable or empty files are failures of their own.
fn targets_of(remote: &RemoteConfig) -> Vec<Result<TargetEntry, Box<EndpointReport>>> {
    let failed = |shown: String, problem: String, fix: Option<&str>| {
        Err(Box::new(
            EndpointReport::new(&remote.name, Some(shown)).fail(Diagnosis {
                stage: Stage::Config,
                problem,
                fix: fix.map(str::to_owned),
            }),
        ))
    };
    let mut targets = Vec::new();
    for raw in &remote.targets {
        targets.push(match Target::parse(raw) {
            Ok(target) => Ok(TargetEntry {
                target,
                shown: raw.clone(),
            }),
            // Validation parsed every target already; kept for completeness.
            Err(error) => failed(raw.clone(), error.to_string(), None),
        });
    }
    for file in &remote.file_sd {
        let shown = format!("file_sd {}", file.display());
        match read_file_sd(file) {
            Ok((_, found)) if found.is_empty() => targets.push(failed(
                shown,
                format!("the file_sd file {} lists no targets", file.display()),
                Some("add targets to it, or remove it from file_sd"),
            )),
            Ok((_, found)) => targets.extend(found.into_iter().map(|target| {
                Ok(TargetEntry {
                    shown: format!("{target} (from {})", file.display()),
                    target,
                })
            })),
            Err(error) => targets.push(failed(
                shown,
                format!("the file_sd file cannot be used: {error}"),
                Some("fix the file: a JSON or YAML list of {targets: [...], labels: {...}}"),
            )),
        }
    }
    targets
}

/// Resolves one target as discovery does and checks each of its endpoints.
async fn check_target(
    remote: Arc<Remote>,
    config: &RemoteConfig,
    dns: &Dns,
    entry: TargetEntry,
    info_timeout: Duration,
) -> Vec<EndpointReport> {
    let started = Instant::now();
    let answer = dns.resolve(&entry.target).await;
    let dns_time = (!entry.target.is_ip()).then(|| ms(started.elapsed()));
    let endpoints = match answer {
        Ok(answer) => answer.endpoints,
        Err(error) => {
            let mut report = EndpointReport::new(&config.name, Some(entry.shown));
            report.latency_ms.dns = dns_time;
            report.error = Some(error.to_string());
            let missing = matches!(error, LookupError::Missing(_));
            return vec![report.fail(diagnose::lookup(&entry.target, missing))];
        }
    };
    futures::future::join_all(endpoints.into_iter().map(|spec| {
        let shown = entry.shown.clone();
        let remote = remote.clone();
        async move {
            let mut report = check_endpoint(&remote, config, shown, spec, info_timeout).await;
            report.latency_ms.dns = dns_time;
            report
        }
    }))
    .await
}

/// Dials one endpoint as the service would and asks it for Info.
async fn check_endpoint(
    remote: &Remote,
    config: &RemoteConfig,
    target: String,
    spec: EndpointSpec,
    info_timeout: Duration,
) -> EndpointReport {
    let mut report = EndpointReport::new(&config.name, Some(target));
    report.address = Some(spec.dial.to_string());
    let (endpoint, recorder) = match remote.probe(spec.clone()) {
        Ok(built) => built,
        Err(error) => {
            return report.fail(Diagnosis {
                stage: Stage::Config,
                problem: format!("the endpoint cannot be set up: {error}"),
                fix: Some("check tls.server_name and authority".into()),
            });
        }
    };
    report.authority = Some(endpoint.authority.clone());
    if let (Some(tls), Some(server_name)) = (&config.tls, &endpoint.server_name) {
        report.tls = Some(TlsSettings {
            server_name: server_name.clone(),
            server_name_from: if tls.server_name.is_some() {
                "tls.server_name"
            } else if spec.host_is_ip() {
                "target IP"
            } else {
                "target host"
            },
            verify: !tls.insecure_skip_verify,
            ca_file: tls.ca_file.as_ref().map(|p| p.display().to_string()),
            client_certificate: tls.cert_file.as_ref().map(|p| p.display().to_string()),
        });
    }

    let started = Instant::now();
    let outcome = endpoint.call_info(info_timeout).await;
    let total = started.elapsed();
    let facts = recorder.facts();

    report.peer = facts.peer.map(|p| p.to_string());
    report.latency_ms.tcp = facts.tcp_time.map(ms);
    report.latency_ms.tls = facts.tls_time.map(ms);
    report.latency_ms.total = Some(ms(total));
    if let Some(tls) = &facts.tls {
        report.server_certificate = tls.presented.first().and_then(|c| Certificate::parse(c));
        report.server_chain = tls
            .presented
            .iter()
            .skip(1)
            .filter_map(|c| Certificate::parse(c))
            .map(|c| c.subject)
            .collect();
        report.handshake = Some(Handshake {
            ok: tls.version.is_some(),
            version: tls.version.map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
                other => format!("{other:?}"),
            }),
            alpn: tls
                .alpn
                .as_ref()
                .map(|a| String::from_utf8_lossy(a).into_owned()),
            cipher_suite: tls.cipher_suite.map(|s| format!("{s:?}")),
            // With verification off the verifier accepts anything.
            verified: if config.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
                None
            } else {
                tls.verification.as_ref().map(Result::is_ok)
            },
            client_certificate_requested: tls.client_certificate_requested,
            client_certificate_sent: tls.client_certificate_sent,
        });
    }
    let connected = facts.tcp_time.is_some() && (facts.tls.is_none() || facts.tls_time.is_some());
    let info_time = connected.then(|| {
        total
            .saturating_sub(facts.tcp_time.unwrap_or_default())
            .saturating_sub(facts.tls_time.unwrap_or_default())
    });

    let failure = match outcome {
        Ok(response) => match RemoteInfo::from_response(response) {
            Ok(info) => {
                report.latency_ms.info = info_time.map(ms);
                report.info = Some(InfoSummary::new(&info));
                report.ok = true;
                report.notes = diagnose::notes(config, &report);
                return report;
            }
            Err(why) => {
                report.latency_ms.info = info_time.map(ms);
                report.error = Some(why.clone());
                Failure::InvalidInfo(why)
            }
        },
        Err(InfoCallError::TimedOut(timeout)) => {
            report.error = Some(format!("Info timed out after {timeout:?}"));
            Failure::InfoTimedOut(timeout)
        }
        Err(InfoCallError::Status(status)) => {
            // The dial's own error reads better than the status around it.
            report.error = Some(match diagnose::connect_error(&status) {
                Some(error) => error.to_string(),
                None => endpoint.describe(&status),
            });
            Failure::Status(status)
        }
    };
    let evidence = Evidence {
        config,
        spec: &spec,
        server_name: endpoint.server_name.as_deref(),
        authority: &endpoint.authority,
        facts: &facts,
        certificate: report.server_certificate.as_ref(),
    };
    let diagnosis = diagnose::failure(&evidence, &failure).await;
    match diagnosis.stage {
        Stage::Info => report.latency_ms.info = info_time.map(ms),
        // Refused during or right after the handshake (TLS 1.3 servers
        // reject a client certificate after the client has finished).
        Stage::Tls => {
            if let Some(handshake) = &mut report.handshake {
                handshake.ok = false;
            }
        }
        _ => {}
    }
    report.fail(diagnosis)
}
