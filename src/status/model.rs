//! The status as data: one [`Snapshot`] of the service and every remote,
//! read at one moment from upstream's endpoint states, the loaded TLS
//! identities and the metric families. The HTML page and `/status.json` both
//! render it, so they cannot disagree; its field names are the JSON's and
//! stay stable.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::cert::{self, CertificateStatus, Validity};
use super::recent::CallsByRemote;
use super::text;
use crate::config::{Compression, Config, RemoteMode};
use crate::metrics::MethodCalls;
use crate::proto::thanos::Label;
use crate::timefmt;
use crate::upstream::{Api, Availability, Endpoint, Remote, RemoteInfo};

/// The configuration in force, as the header summarises it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// The addresses actually bound (the config may say port 0).
    pub grpc_listen: String,
    pub http_listen: String,
    pub info_interval_seconds: f64,
    pub info_timeout_seconds: f64,
    pub grace_period_seconds: f64,
    pub discovery_refresh_interval_seconds: f64,
    pub discovery_stale_after_seconds: f64,
    /// Empty: the system's resolv.conf.
    pub discovery_nameservers: Vec<String>,
    pub prefetch_bytes: usize,
    pub prefetch_bytes_total: usize,
    pub streams_per_connection: usize,
    pub log_level: String,
}

impl Settings {
    pub fn new(config: &Config, grpc: SocketAddr, http: SocketAddr) -> Self {
        Self {
            grpc_listen: grpc.to_string(),
            http_listen: http.to_string(),
            info_interval_seconds: config.info.interval.as_secs_f64(),
            info_timeout_seconds: config.info.timeout.as_secs_f64(),
            grace_period_seconds: config.grpc.grace_period.as_secs_f64(),
            discovery_refresh_interval_seconds: config.discovery.refresh_interval.as_secs_f64(),
            discovery_stale_after_seconds: config.discovery.stale_after.as_secs_f64(),
            discovery_nameservers: config.discovery.nameservers.clone(),
            prefetch_bytes: config.fanout.prefetch_bytes,
            prefetch_bytes_total: config.fanout.prefetch_bytes_total,
            streams_per_connection: config.fanout.streams_per_connection,
            log_level: config.log.level.clone(),
        }
    }
}

/// The whole status at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    pub generated_at: String,
    pub generated_at_unix: i64,
    pub started_at: String,
    pub uptime_seconds: f64,
    /// Whether the first Info round is done, so queries are answered, and
    /// shutdown has not begun.
    pub ready: bool,
    /// Shutdown began: still serving until `grpc.shutdown_delay` has
    /// passed, then finishing calls in flight.
    pub shutting_down: bool,
    pub config: Settings,
    pub summary: Summary,
    /// Those that need attention first (down, degraded, pending, with
    /// warnings), then the healthy ones; config order within each group.
    pub remotes: Vec<RemoteStatus>,
}

/// Counts over all remotes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub remotes: usize,
    pub remotes_healthy: usize,
    pub remotes_degraded: usize,
    pub remotes_down: usize,
    pub remotes_pending: usize,
    /// Remotes with at least one warning, whatever their health.
    pub remotes_with_warnings: usize,
    pub endpoints: usize,
    pub endpoints_healthy: usize,
}

/// A remote's health, from its endpoints' last Info calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Every endpoint answered its last Info call.
    Healthy,
    /// Some endpoints did, some did not: queries reach only part of it.
    Degraded,
    /// No endpoint answered, or discovery found none: not queried at all.
    Down,
    /// Not asked for Info yet.
    Pending,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Down => "down",
            Health::Pending => "pending",
        }
    }
}

/// One remote.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteStatus {
    pub name: String,
    pub health: Health,
    /// Things to look at even when it answers: an expiring client
    /// certificate, failed calls, stale Info.
    pub warnings: Vec<String>,
    /// The error that best explains its state: a failing endpoint's Info
    /// error, else the most recent failed call.
    pub last_error: Option<LastError>,
    pub targets: Vec<String>,
    pub file_sd: Vec<String>,
    pub mode: RemoteMode,
    pub compression: Compression,
    pub timeout_seconds: f64,
    pub connect_timeout_seconds: f64,
    pub authority: Option<String>,
    /// Absent for a plaintext remote.
    pub tls: Option<TlsStatus>,
    pub endpoints_total: usize,
    pub endpoints_healthy: usize,
    /// The union of its endpoints' external label sets (last known ones for
    /// endpoints that are down).
    pub label_sets: Vec<BTreeMap<String, String>>,
    /// The union of its endpoints' time ranges.
    pub time_range: Option<TimeRange>,
    /// The APIs any of its endpoints offers.
    pub apis: Vec<&'static str>,
    pub endpoints: Vec<EndpointStatus>,
    pub calls: Calls,
}

impl RemoteStatus {
    /// How urgently it needs a look: lower first.
    pub fn rank(&self) -> u8 {
        match self.health {
            Health::Down => 0,
            Health::Degraded => 1,
            Health::Pending => 2,
            Health::Healthy if !self.warnings.is_empty() => 3,
            Health::Healthy => 4,
        }
    }
}

/// Where an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorSource {
    /// The background Info call: the endpoint is not queried.
    Info,
    /// A query the remote failed, timed out on, or cut short.
    Call,
    /// No endpoint to call.
    Discovery,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub source: ErrorSource,
    /// Empty for discovery.
    pub endpoint: String,
    /// The gRPC method, for calls.
    pub method: Option<String>,
    pub message: String,
    pub at: Option<Moment>,
}

/// A point in time and how long ago it was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Moment {
    pub at: String,
    pub age_seconds: f64,
}

/// A StoreAPI time range; a bound far outside years 0 to 9999 is no bound.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeRange {
    /// Milliseconds since the epoch, as advertised.
    pub min_time: i64,
    pub max_time: i64,
    /// The bounds as dates; null when unbounded.
    pub min: Option<String>,
    pub max: Option<String>,
}

impl TimeRange {
    fn new(min_time: i64, max_time: i64) -> Self {
        let date = |ms: i64| text::is_bounded_ms(ms).then(|| timefmt::rfc3339(ms.div_euclid(1000)));
        Self {
            min_time,
            max_time,
            min: date(min_time),
            max: date(max_time),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TlsStatus {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    /// The certificate loaded from `cert_file` and presented to the remote.
    pub client_certificate: Option<CertificateStatus>,
    /// Why it could not be read.
    pub client_certificate_error: Option<String>,
}

/// An endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointHealth {
    Healthy,
    Down,
    Pending,
}

impl EndpointHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointHealth::Healthy => "healthy",
            EndpointHealth::Down => "down",
            EndpointHealth::Pending => "pending",
        }
    }
}

/// One discovered endpoint of a remote.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    /// What is dialled.
    pub address: String,
    /// The name it was discovered under (the default TLS name).
    pub host: String,
    pub health: EndpointHealth,
    /// Why its last Info call failed, while it is down.
    pub info_error: Option<String>,
    /// The last Info call, successful or not.
    pub last_check: Option<Moment>,
    pub last_info_success: Option<Moment>,
    pub info_latency_seconds: Option<f64>,
    pub info_failures: u64,
    pub connections: i64,
    /// Its last successful Info answer (kept while it is down).
    pub info: Option<InfoStatus>,
    pub last_failed_call: Option<FailedCall>,
    /// Set while its circuit breaker is open: it is skipped until then.
    pub circuit_open: Option<CircuitOpen>,
}

/// An open circuit breaker.
#[derive(Debug, Clone, Serialize)]
pub struct CircuitOpen {
    pub until: Moment,
    pub failures: u32,
    pub last_error: String,
}

/// What an endpoint said about itself.
#[derive(Debug, Clone, Serialize)]
pub struct InfoStatus {
    pub component: String,
    pub label_sets: Vec<BTreeMap<String, String>>,
    /// Only for the StoreAPI.
    pub time_range: Option<TimeRange>,
    pub apis: Vec<&'static str>,
    pub supports_sharding: bool,
    pub supports_without_replica_labels: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedCall {
    pub method: String,
    pub error: String,
    pub at: Moment,
}

/// Calls made to a remote, from the metrics: since start and over the
/// recent window.
#[derive(Debug, Clone, Serialize)]
pub struct Calls {
    pub recent_window_seconds: f64,
    pub in_flight: i64,
    /// Over all methods (means are per method only).
    pub total: CallCounts,
    pub recent: CallCounts,
    pub methods: Vec<MethodStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MethodStatus {
    pub method: String,
    pub in_flight: i64,
    pub total: CallCounts,
    pub recent: CallCounts,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallCounts {
    pub success: u64,
    pub error: u64,
    pub timeout: u64,
    /// Ended by the caller first: not counted as failures.
    pub cancelled: u64,
    /// (error + timeout) / (success + error + timeout); null without calls.
    pub error_ratio: Option<f64>,
    pub mean_duration_seconds: Option<f64>,
    pub mean_first_frame_seconds: Option<f64>,
}

impl CallCounts {
    /// Calls that ended on the remote's side, well or not.
    pub fn finished(&self) -> u64 {
        self.success + self.error + self.timeout
    }

    pub fn failed(&self) -> u64 {
        self.error + self.timeout
    }

    /// `now` minus `before` (counters only grow).
    fn between(now: &MethodCalls, before: Option<&MethodCalls>) -> Self {
        let zero = MethodCalls {
            method: now.method,
            success: 0,
            error: 0,
            timeout: 0,
            cancelled: 0,
            in_flight: 0,
            duration_seconds_sum: 0.0,
            duration_count: 0,
            first_frame_seconds_sum: 0.0,
            first_frame_count: 0,
        };
        let before = before.unwrap_or(&zero);
        let mean = |sum: f64, count: u64| (count > 0).then(|| sum / count as f64);
        let mut counts = Self {
            success: now.success.saturating_sub(before.success),
            error: now.error.saturating_sub(before.error),
            timeout: now.timeout.saturating_sub(before.timeout),
            cancelled: now.cancelled.saturating_sub(before.cancelled),
            error_ratio: None,
            mean_duration_seconds: mean(
                now.duration_seconds_sum - before.duration_seconds_sum,
                now.duration_count.saturating_sub(before.duration_count),
            ),
            mean_first_frame_seconds: mean(
                now.first_frame_seconds_sum - before.first_frame_seconds_sum,
                now.first_frame_count
                    .saturating_sub(before.first_frame_count),
            ),
        };
        counts.set_ratio();
        counts
    }

    fn add(&mut self, other: &CallCounts) {
        self.success += other.success;
        self.error += other.error;
        self.timeout += other.timeout;
        self.cancelled += other.cancelled;
        self.set_ratio();
    }

    fn set_ratio(&mut self) {
        let finished = self.finished();
        self.error_ratio = (finished > 0).then(|| self.failed() as f64 / finished as f64);
    }
}

/// The API names of the JSON, as in Thanos's Info message.
pub fn api_name(api: Api) -> &'static str {
    match api {
        Api::Rules => "rules",
        Api::Targets => "targets",
        Api::MetricMetadata => "metric_metadata",
        Api::Exemplars => "exemplars",
        Api::Status => "status",
    }
}

/// Every API name, in the order the page lists them.
pub const API_NAMES: [&str; 6] = [
    "store",
    "rules",
    "targets",
    "metric_metadata",
    "exemplars",
    "status",
];

fn apis_of(info: &RemoteInfo) -> Vec<&'static str> {
    let mut apis = Vec::new();
    if info.store {
        apis.push("store");
    }
    apis.extend(
        Api::ALL
            .iter()
            .filter(|a| info.offers(**a))
            .map(|a| api_name(*a)),
    );
    apis
}

fn label_map(set: &[Label]) -> BTreeMap<String, String> {
    set.iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

/// The moment everything in one snapshot is measured against.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: SystemTime,
    pub now_instant: Instant,
}

impl Clock {
    pub fn now() -> Self {
        Self {
            now: SystemTime::now(),
            now_instant: Instant::now(),
        }
    }

    pub fn unix(&self) -> f64 {
        self.now
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    fn moment_of_instant(&self, at: Instant) -> Moment {
        let age = self.now_instant.saturating_duration_since(at);
        self.moment_at_unix(self.unix() - age.as_secs_f64())
    }

    fn moment_of(&self, at: SystemTime) -> Moment {
        let unix = at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.moment_at_unix(unix)
    }

    fn moment_at_unix(&self, unix: f64) -> Moment {
        Moment {
            at: timefmt::rfc3339(unix.floor() as i64),
            age_seconds: (self.unix() - unix).max(0.0),
        }
    }
}

/// Call counts per remote at a past moment, the start of the recent window.
pub struct Baseline<'a> {
    pub window: Duration,
    pub calls: Option<&'a CallsByRemote>,
}

/// Everything a snapshot is built from.
pub struct Inputs<'a> {
    pub remotes: &'a [Arc<Remote>],
    pub settings: &'a Settings,
    pub ready: bool,
    pub shutting_down: bool,
    pub started: SystemTime,
    pub started_instant: Instant,
    pub baseline: Baseline<'a>,
}

impl Snapshot {
    pub fn build(inputs: &Inputs<'_>, clock: Clock) -> Self {
        let mut remotes: Vec<RemoteStatus> = inputs
            .remotes
            .iter()
            .map(|remote| remote_status(remote, inputs, clock))
            .collect();
        // Stable: config order within a rank.
        remotes.sort_by_key(RemoteStatus::rank);
        let mut summary = Summary {
            remotes: remotes.len(),
            ..Summary::default()
        };
        for remote in &remotes {
            match remote.health {
                Health::Healthy => summary.remotes_healthy += 1,
                Health::Degraded => summary.remotes_degraded += 1,
                Health::Down => summary.remotes_down += 1,
                Health::Pending => summary.remotes_pending += 1,
            }
            summary.remotes_with_warnings += usize::from(!remote.warnings.is_empty());
            summary.endpoints += remote.endpoints_total;
            summary.endpoints_healthy += remote.endpoints_healthy;
        }
        let uptime = clock
            .now_instant
            .saturating_duration_since(inputs.started_instant);
        Self {
            version: env!("CARGO_PKG_VERSION"),
            generated_at: timefmt::rfc3339(clock.unix().floor() as i64),
            generated_at_unix: clock.unix().floor() as i64,
            started_at: clock.moment_of(inputs.started).at,
            uptime_seconds: uptime.as_secs_f64(),
            ready: inputs.ready,
            shutting_down: inputs.shutting_down,
            config: inputs.settings.clone(),
            summary,
            remotes,
        }
    }
}

fn remote_status(remote: &Remote, inputs: &Inputs<'_>, clock: Clock) -> RemoteStatus {
    let config = remote.config();
    let mut endpoints: Vec<EndpointStatus> = remote
        .endpoints()
        .iter()
        .map(|e| endpoint_status(e, clock))
        .collect();
    endpoints.sort_by(|a, b| a.address.cmp(&b.address));
    let total = endpoints.len();
    let count = |h| endpoints.iter().filter(|e| e.health == h).count();
    let (healthy, down) = (count(EndpointHealth::Healthy), count(EndpointHealth::Down));
    let health = match (total, healthy, down) {
        (0, _, _) => Health::Down,
        (_, 0, 0) => Health::Pending,
        (_, 0, _) => Health::Down,
        (_, _, 0) => Health::Healthy,
        _ => Health::Degraded,
    };

    let mut label_sets = BTreeSet::new();
    let mut range: Option<(i64, i64)> = None;
    let mut apis = BTreeSet::new();
    for info in endpoints.iter().filter_map(|e| e.info.as_ref()) {
        label_sets.extend(info.label_sets.iter().cloned());
        if let Some(r) = &info.time_range {
            range = Some(match range {
                Some((min, max)) => (min.min(r.min_time), max.max(r.max_time)),
                None => (r.min_time, r.max_time),
            });
        }
        apis.extend(info.apis.iter().copied());
    }
    let apis = API_NAMES.into_iter().filter(|a| apis.contains(a)).collect();

    let last_error = if total == 0 {
        Some(LastError {
            source: ErrorSource::Discovery,
            endpoint: String::new(),
            method: None,
            message: no_endpoints_message(remote),
            at: None,
        })
    } else if let Some(e) = endpoints.iter().find(|e| e.info_error.is_some()) {
        Some(LastError {
            source: ErrorSource::Info,
            endpoint: e.address.clone(),
            method: None,
            message: e.info_error.clone().unwrap_or_default(),
            at: e.last_check.clone(),
        })
    } else {
        endpoints
            .iter()
            .filter_map(|e| e.last_failed_call.as_ref().map(|c| (e, c)))
            .min_by(|(_, a), (_, b)| a.at.age_seconds.total_cmp(&b.at.age_seconds))
            .map(|(e, call)| LastError {
                source: ErrorSource::Call,
                endpoint: e.address.clone(),
                method: Some(call.method.clone()),
                message: call.error.clone(),
                at: Some(call.at.clone()),
            })
    };

    let calls = calls_status(remote, &inputs.baseline);
    let tls = config.tls.as_ref().map(|tls| {
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let inspected = remote
            .client_certificate()
            .map(|der| cert::inspect(der.as_ref(), clock.unix().floor() as i64));
        TlsStatus {
            ca_file: path(&tls.ca_file),
            cert_file: path(&tls.cert_file),
            key_file: path(&tls.key_file),
            server_name: tls.server_name.clone(),
            insecure_skip_verify: tls.insecure_skip_verify,
            client_certificate: inspected.as_ref().and_then(|r| r.as_ref().ok()).cloned(),
            client_certificate_error: inspected.and_then(Result::err),
        }
    });
    let warnings = warnings(
        tls.as_ref(),
        &calls,
        &endpoints,
        last_error.as_ref(),
        inputs.settings,
    );

    RemoteStatus {
        name: remote.name.to_string(),
        health,
        warnings,
        last_error,
        targets: config.targets.clone(),
        file_sd: config
            .file_sd
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        mode: config.mode,
        compression: config.compression,
        timeout_seconds: config.timeout.as_secs_f64(),
        connect_timeout_seconds: config.connect_timeout.as_secs_f64(),
        authority: config.authority.clone(),
        tls,
        endpoints_total: total,
        endpoints_healthy: healthy,
        label_sets: label_sets.into_iter().collect(),
        time_range: range.map(|(min, max)| TimeRange::new(min, max)),
        apis,
        endpoints,
        calls,
    }
}

fn no_endpoints_message(remote: &Remote) -> String {
    let config = remote.config();
    let mut sources: Vec<String> = config.targets.clone();
    sources.extend(
        config
            .file_sd
            .iter()
            .map(|p| format!("file_sd {}", p.display())),
    );
    format!(
        "no endpoints: discovery found none for {} (a name that does not resolve, an SRV record without targets, or an empty file_sd file?)",
        sources.join(", ")
    )
}

fn endpoint_status(endpoint: &Endpoint, clock: Clock) -> EndpointStatus {
    let state = endpoint.state();
    let (health, info_error) = match endpoint.availability() {
        Availability::Queryable(_) => (EndpointHealth::Healthy, None),
        Availability::Down { why, .. } => (EndpointHealth::Down, Some(why)),
        Availability::Unknown => (EndpointHealth::Pending, None),
    };
    let last_success = endpoint.metrics.last_info_success.get();
    EndpointStatus {
        address: endpoint.address.clone(),
        host: endpoint.spec.host.clone(),
        health,
        info_error,
        last_check: state.last_check.map(|at| clock.moment_of_instant(at)),
        last_info_success: (last_success > 0.0).then(|| clock.moment_at_unix(last_success)),
        info_latency_seconds: state.info_latency.map(|d| d.as_secs_f64()),
        info_failures: endpoint.metrics.info_failures.get(),
        connections: endpoint.metrics.connections.get(),
        info: state.info.as_deref().map(|info| InfoStatus {
            component: info.component.clone(),
            label_sets: info.label_sets.iter().map(|s| label_map(s)).collect(),
            time_range: info
                .store
                .then(|| TimeRange::new(info.min_time, info.max_time)),
            apis: apis_of(info),
            supports_sharding: info.supports_sharding,
            supports_without_replica_labels: info.supports_without_replica_labels,
        }),
        last_failed_call: endpoint.last_failure().map(|failure| FailedCall {
            method: format!("{:?}", failure.method),
            error: failure.error.to_string(),
            at: clock.moment_of(failure.at),
        }),
        circuit_open: endpoint.breaker.admits().err().map(|open| CircuitOpen {
            until: clock.moment_of(open.until),
            failures: open.failures,
            last_error: open.last_error,
        }),
    }
}

fn calls_status(remote: &Remote, baseline: &Baseline<'_>) -> Calls {
    let now = remote.calls();
    let before = baseline.calls.and_then(|calls| calls.get(&remote.name));
    let mut total = CallCounts::default();
    let mut recent = CallCounts::default();
    let mut in_flight = 0;
    let methods = now
        .iter()
        .map(|current| {
            let earlier = before.and_then(|b| b.iter().find(|m| m.method == current.method));
            let method = MethodStatus {
                method: format!("{:?}", current.method),
                in_flight: current.in_flight,
                total: CallCounts::between(current, None),
                recent: CallCounts::between(current, earlier),
            };
            total.add(&method.total);
            recent.add(&method.recent);
            in_flight += current.in_flight;
            method
        })
        .collect();
    Calls {
        recent_window_seconds: baseline.window.as_secs_f64(),
        in_flight,
        total,
        recent,
        methods,
    }
}

fn warnings(
    tls: Option<&TlsStatus>,
    calls: &Calls,
    endpoints: &[EndpointStatus],
    last_error: Option<&LastError>,
    settings: &Settings,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(tls) = tls {
        if let Some(c) = &tls.client_certificate {
            let when = format!(
                "{} ({})",
                timefmt::human_date(c.not_after),
                timefmt::relative(-(c.expires_in_seconds as f64))
            );
            match c.validity {
                Validity::Valid => {}
                Validity::Expiring => {
                    warnings.push(format!("client certificate expires {when}"));
                }
                Validity::Expired => {
                    warnings.push(format!("client certificate expired {when}"));
                }
                Validity::NotYetValid => warnings.push(format!(
                    "client certificate is not valid before {} (clock skew?)",
                    timefmt::human_date(c.not_before)
                )),
            }
        }
        if let Some(error) = &tls.client_certificate_error {
            warnings.push(format!("client certificate: {error}"));
        }
    }
    let recent = &calls.recent;
    if recent.failed() > 0 {
        let mut warning = format!(
            "{} of {} calls failed in the last {}",
            recent.failed(),
            recent.finished(),
            timefmt::span(calls.recent_window_seconds)
        );
        if let Some(ratio) = recent.error_ratio {
            warning.push_str(&format!(" ({})", text::percent(ratio)));
        }
        if let Some(e) = last_error.filter(|e| e.source == ErrorSource::Call) {
            warning.push_str(&format!(
                "; the last, {} on {}: {}",
                e.method.as_deref().unwrap_or("a call"),
                e.endpoint,
                e.message
            ));
        }
        warnings.push(warning);
    }
    // Each endpoint is asked every interval, within the timeout: a last
    // check much older than that means polling has stalled.
    let overdue = 3.0 * (settings.info_interval_seconds + settings.info_timeout_seconds);
    for e in endpoints {
        if let Some(check) = &e.last_check
            && check.age_seconds > overdue
        {
            warnings.push(format!(
                "endpoint {}: Info last checked {} (polled every {})",
                e.address,
                timefmt::relative(check.age_seconds),
                timefmt::span(settings.info_interval_seconds)
            ));
        }
    }
    warnings
}
