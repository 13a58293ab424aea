//! Configuration: built-in defaults < YAML file < `FANOUT_` environment
//! variables (`__` nests) < command-line flags, layered with figment.
//!
//! Unknown keys are errors. [`Config::validate`] checks everything that can be
//! checked without touching the network and returns a [`ValidConfig`], the
//! only form the service starts from, so a bad config exits before any port is
//! bound; certificates are loaded when the remotes are built, also before
//! binding.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Yaml};
use serde::{Deserialize, Serialize};

use crate::http2_window::{MAX_WINDOW, UNARY_HEADROOM, connection_window};
use crate::target::Target;

/// Top-level sections, the only names `FANOUT_*` variables may start with.
const SECTIONS: &[&str] = &[
    "grpc",
    "http",
    "log",
    "tracing",
    "info",
    "fanout",
    "discovery",
    "reload",
    "remotes",
];

/// Sections a reload applies while running; a change anywhere else is
/// logged as needing a restart.
const RELOADABLE: &[&str] = &["info", "discovery", "reload", "remotes"];

/// Upper bound for `fanout.streams_per_connection`.
pub const MAX_STREAMS_PER_CONNECTION: usize = 1000;

/// Default of `remotes[].http2.stream_window`.
pub const DEFAULT_STREAM_WINDOW: u32 = 8 << 20;

/// Smallest `remotes[].http2.stream_window`: HTTP/2's initial window.
pub const MIN_STREAM_WINDOW: u32 = 65_535;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub grpc: GrpcConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub tracing: TracingConfig,
    pub info: InfoConfig,
    pub fanout: FanoutConfig,
    pub discovery: DiscoveryConfig,
    pub reload: ReloadConfig,
    pub limits: LimitsConfig,
    pub remotes: Vec<RemoteConfig>,
}

/// What one caller, or one request, may take. 0 is no limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Series calls served at once; one more is refused at once with
    /// `ResourceExhausted`, so queriers retry elsewhere instead of queueing.
    pub concurrent_series_calls: usize,
    /// Series one Series answer may carry; beyond it the call fails with
    /// `ResourceExhausted` (like a Thanos store's `--store.limits.request-series`).
    pub series_per_request: u64,
    /// Chunks one Series answer may carry.
    pub chunks_per_request: u64,
    /// Encoded bytes of series one Series answer may carry.
    pub bytes_per_request: u64,
    /// Encoded bytes of series one remote may send for one Series request;
    /// beyond it, that remote's answer is cut with a warning naming it (an
    /// error under ABORT), and the other remotes' answers go on.
    pub bytes_per_remote: u64,
    /// Encoded bytes of series one Series request may hold in memory to
    /// strip replica labels for remotes that do not (their whole answers
    /// are held to be sorted again); beyond it the call fails with
    /// `ResourceExhausted`.
    pub buffered_bytes_per_request: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            concurrent_series_calls: 1024,
            series_per_request: 0,
            chunks_per_request: 0,
            bytes_per_request: 0,
            bytes_per_remote: 0,
            buffered_bytes_per_request: DEFAULT_BUFFERED_BYTES_PER_REQUEST,
        }
    }
}

/// Default of `limits.buffered_bytes_per_request`: 128 MiB.
pub const DEFAULT_BUFFERED_BYTES_PER_REQUEST: u64 = 128 << 20;

/// The StoreAPI listener the querier connects to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// `host:port` to listen on, plaintext gRPC (h2c).
    pub listen: String,
    /// How long in-flight calls may run after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// After SIGTERM, how long to go on serving, new connections included,
    /// while `/-/ready` and gRPC health say not ready, before the listeners
    /// close and clients are told to go (HTTP/2 GOAWAY): the time load
    /// balancers (Kubernetes endpoints and kube-proxy) take to stop sending
    /// new connections here.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// TLS (and, with `client_ca_file`, mutual TLS) for the querier's
    /// connections; plaintext (h2c) when absent.
    pub tls: Option<ListenerTls>,
    /// Largest request message accepted from a querier (compressed, and
    /// again once decompressed), and largest answer message sent to it.
    pub max_message_bytes: usize,
    /// Calls one querier connection may have open at once (HTTP/2
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`); its client holds more back until
    /// one ends.
    pub max_concurrent_streams: u32,
    /// Largest header block of a call, decoded (HTTP/2
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`); a call with more is refused (HTTP
    /// 431).
    pub max_header_list_bytes: u32,
    /// How long a querier connection may stay silent before it is pinged;
    /// 0s sends no pings.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection, and every
    /// call on it with the remote calls under them, is dropped.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:10901".into(),
            grace_period: Duration::from_secs(30),
            shutdown_delay: Duration::from_secs(5),
            tls: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_header_list_bytes: DEFAULT_MAX_HEADER_LIST_BYTES,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Default of `grpc.max_concurrent_streams`. A querier multiplexes every
/// call of every query onto one connection, and grpc-go queues calls beyond
/// the limit without a word, so it sits at `limits.concurrent_series_calls`'
/// default: a busy querier meets that limit's `ResourceExhausted` (and tries
/// another store) before it would wait here. grpc-go servers set none.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Default of `grpc.max_header_list_bytes`: hyper's own, 16 KiB; a
/// querier's call carries a few hundred bytes of headers.
pub const DEFAULT_MAX_HEADER_LIST_BYTES: u32 = 16 << 10;

/// The smallest `grpc.max_header_list_bytes` allowed.
pub const MIN_MAX_HEADER_LIST_BYTES: u32 = 4 << 10;

/// The HTTP listener for metrics and probes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: String,
    /// HTTPS for metrics, probes and the status page; plain HTTP when absent.
    pub tls: Option<ListenerTls>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:10902".into(),
            tls: None,
        }
    }
}

/// Server-side TLS for one of our listeners. The files are reloaded when
/// they change, like the remotes' certificates.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain the listener presents.
    pub cert_file: PathBuf,
    /// Its PEM private key.
    pub key_file: PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate it signed.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// TLS handshakes in progress at once; at the cap a new connection
    /// gives up the oldest one still in progress (see `listener`).
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
}

/// Default of `grpc.tls.max_handshakes` and `http.tls.max_handshakes`.
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;

fn default_max_handshakes() -> usize {
    DEFAULT_MAX_HANDSHAKES
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`, or a tracing filter directive.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Logfmt,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Logfmt,
    Json,
}

/// OpenTelemetry tracing, exported over OTLP/gRPC. Off unless `endpoint` is
/// set here or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set; `OTEL_SDK_DISABLED=true` turns it
/// off. Settings here win over the `OTEL_*` variables.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector's OTLP/gRPC address, e.g. `http://otel-collector:4317`.
    pub endpoint: Option<String>,
    /// Share of the traces we start that are sampled, 0 to 1 (default 1,
    /// or `OTEL_TRACES_SAMPLER_ARG`). A call whose querier sampled its trace
    /// is always followed, one it did not sample never is.
    pub sampling_ratio: Option<f64>,
    /// `service.name` (default `thanos-fanout`, or `OTEL_SERVICE_NAME`).
    pub service_name: Option<String>,
    /// More resource attributes, added to `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: std::collections::BTreeMap<String, String>,
}

/// Background Info polling of every remote endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InfoConfig {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for InfoConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }
}

/// How streams from remotes are buffered and merged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutConfig {
    /// Memory (bytes) one Series call may fill reading ahead of its merge,
    /// shared equally by its remote streams, so that remotes the merge is not
    /// reading yet keep downloading. 0: one frame ahead per stream.
    pub prefetch_bytes: usize,
    /// Memory (bytes) all calls together may fill reading ahead; beyond it
    /// each stream holds one frame ahead.
    pub prefetch_bytes_total: usize,
    /// Frames queued per call of Rules, Targets, Metadata, Exemplars and
    /// TSDB status ahead of the caller.
    pub buffer_frames: usize,
    /// Series streams one connection to an endpoint carries at most; more
    /// concurrent streams open more connections. Keep it below the remote's
    /// (or its ingress's) HTTP/2 max concurrent streams.
    pub streams_per_connection: usize,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            prefetch_bytes: 64 << 20,
            prefetch_bytes_total: 256 << 20,
            buffer_frames: 64,
            streams_per_connection: 16,
        }
    }
}

/// How remote targets are resolved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// `ip:port` name servers (asked over UDP and TCP); empty: the system's resolv.conf.
    pub nameservers: Vec<String>,
    /// Longest time between two lookups of a name; shorter TTLs are honoured.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// How long a name must keep answering NXDOMAIN (or nothing) before its
    /// endpoints are removed. Failed lookups never remove endpoints.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// How often file_sd files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub file_interval: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            refresh_interval: Duration::from_secs(30),
            stale_after: Duration::from_secs(300),
            file_interval: Duration::from_secs(5),
        }
    }
}

impl DiscoveryConfig {
    /// The configured name servers (validated by [`Config::validate`]).
    pub fn nameserver_addrs(&self) -> Vec<SocketAddr> {
        self.nameservers
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect()
    }
}

/// How changes to the config file and the certificate files it names are noticed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// How often the files are checked for changed content (SIGHUP reloads at once).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
        }
    }
}

/// One remote StoreAPI (usually a sidecar behind an ingress in another cluster).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Unique; names the remote in warnings, logs and metric labels.
    pub name: String,
    /// `host:port`, `dns+host:port`, `dnssrv+name`, `dnssrvnoa+name`; every
    /// endpoint they stand for is queried.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Prometheus file_sd files (JSON or YAML) listing more targets; re-read on change.
    #[serde(default)]
    pub file_sd: Vec<PathBuf>,
    /// Longest wait for the remote to make progress: for a Series stream, from
    /// the request or the last frame to the next frame, counted only while we
    /// are ready to take it; for Info, LabelNames and LabelValues, the whole
    /// call. The caller's own deadline bounds every call as a whole.
    #[serde(with = "humantime_serde", default = "default_remote_timeout")]
    pub timeout: Duration,
    /// Limit for establishing a connection (TCP and TLS handshake).
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// TLS towards the remote; plaintext when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// HTTP/2 `:authority`; defaults to `tls.server_name`, else the target.
    #[serde(default)]
    pub authority: Option<String>,
    /// Compression of the calls to this remote, both ways.
    #[serde(default)]
    pub compression: Compression,
    /// Which of its endpoints a request goes to.
    #[serde(default)]
    pub mode: RemoteMode,
    /// HTTP/2 flow control towards this remote.
    #[serde(default)]
    pub http2: Http2Config,
    /// When its endpoints are skipped after failing calls in a row.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// Calls to its endpoints in progress at once; a request that would
    /// start one more gets a warning in its place (an error under ABORT).
    /// 0: no limit.
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: usize,
    /// Largest message (one Series frame, one Info answer) accepted from it;
    /// a larger one ends that call with an error naming the limit.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

fn default_max_concurrent_calls() -> usize {
    256
}

fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

/// Default largest message accepted, from a remote or from the querier.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 << 20;

/// The smallest `max_message_bytes` allowed.
pub const MIN_MAX_MESSAGE_BYTES: usize = 2 << 20;

/// Circuit breaking per endpoint of a remote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Calls that must fail in a row (no connection, TLS, no answer or no
    /// progress within `timeout`, Unavailable) before the endpoint is
    /// skipped; 0 turns circuit breaking off.
    pub failures: u32,
    /// How long it is skipped the first time; doubled each time a call
    /// after the back-off fails again.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// The longest back-off.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// HTTP/2 flow control towards one remote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Config {
    /// Bytes one stream may receive ahead of its reader: a stream carries at
    /// most this much per round trip, so a long-haul remote needs it at
    /// least bandwidth x RTT. Each connection's window is this times
    /// `fanout.streams_per_connection` plus headroom for unary calls, so it
    /// must fit HTTP/2's largest window (2 GiB).
    pub stream_window: u32,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            stream_window: DEFAULT_STREAM_WINDOW,
        }
    }
}

/// How a remote's endpoints share its requests.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RemoteMode {
    /// Every matching endpoint is called and their answers merged (shards,
    /// or replicas whose gaps the merge fills).
    #[default]
    All,
    /// The endpoints are replicas of each other (an HA pair of sidecars):
    /// one healthy endpoint is called, and the next one if it fails before
    /// its first frame. Half the bytes over the link for an HA pair.
    Any,
}

/// gRPC compression towards a remote. Thanos sidecars and stores accept
/// snappy (Thanos's encoding) and gzip; zstd needs a server that registered it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Snappy,
    Gzip,
    Zstd,
}

fn default_remote_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Client-side TLS for one remote.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM CA bundle; the system roots are not used, so set this unless skipping verification.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Name for SNI and certificate verification; defaults to the target's host.
    pub server_name: Option<String>,
    /// Turns certificate verification off. Only for tests.
    pub insecure_skip_verify: bool,
}

/// A configuration problem, naming the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("config{}: {key}: {reason}", origin(.file))]
    Invalid {
        file: Option<PathBuf>,
        key: String,
        reason: String,
    },
}

fn origin(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!(" file {}", f.display()))
        .unwrap_or_default()
}

/// Command-line values that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub grpc_listen: Option<String>,
    pub http_listen: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Loads and validates the layered configuration.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<ValidConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            // figment treats a missing file as empty; a typo'd path must fail.
            std::fs::metadata(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            figment = figment.merge(Yaml::file_exact(path));
        }
        // Only FANOUT_<section>__<key> is config: other FANOUT_* variables
        // (FANOUT_CONFIG for the flag, a tool's FANOUT_BIN, Kubernetes service
        // links for a Service named "fanout") must not fail start-up. Unknown
        // keys inside a known section are still errors.
        figment = figment.merge(Env::prefixed("FANOUT_").split("__").filter(|key| {
            // The key may or may not be split into dots yet; no
            // section name has an underscore.
            let section = key.as_str().split(['.', '_']).next().unwrap_or_default();
            SECTIONS.iter().any(|s| section.eq_ignore_ascii_case(s))
        }));
        let flags = [
            ("grpc.listen", overrides.grpc_listen.clone()),
            ("http.listen", overrides.http_listen.clone()),
            ("log.level", overrides.log_level.clone()),
        ];
        for (key, value) in flags {
            if let Some(value) = value {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        if let Some(format) = overrides.log_format {
            figment = figment.merge(Serialized::default("log.format", format));
        }
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate(file)
    }

    /// Checks what serde cannot: addresses, durations, names, targets, TLS key
    /// pairs. `file` only names the origin in errors.
    pub fn validate(self, file: Option<&Path>) -> Result<ValidConfig, ConfigError> {
        self.check(file)?;
        Ok(ValidConfig(self))
    }

    fn check(&self, file: Option<&Path>) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            file: file.map(Path::to_owned),
            key,
            reason,
        };
        for (key, addr) in [
            ("grpc.listen", &self.grpc.listen),
            ("http.listen", &self.http.listen),
        ] {
            addr.parse::<SocketAddr>()
                .map_err(|e| invalid(key.into(), format!("{addr:?} is not an ip:port ({e})")))?;
        }
        for (key, d) in [
            ("info.interval", self.info.interval),
            ("info.timeout", self.info.timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(key.into(), "must be greater than 0".into()));
            }
        }
        for (key, d) in [
            (
                "discovery.refresh_interval",
                self.discovery.refresh_interval,
            ),
            ("discovery.file_interval", self.discovery.file_interval),
            ("reload.interval", self.reload.interval),
        ] {
            if d.is_zero() {
                return Err(invalid(key.into(), "must be greater than 0".into()));
            }
        }
        // Batches of series go out in frames of up to 1 MiB.
        if self.grpc.max_message_bytes < MIN_MAX_MESSAGE_BYTES {
            return Err(invalid(
                "grpc.max_message_bytes".into(),
                format!("must be at least {MIN_MAX_MESSAGE_BYTES} (2 MiB)"),
            ));
        }
        if self.grpc.max_concurrent_streams == 0 {
            return Err(invalid(
                "grpc.max_concurrent_streams".into(),
                "must be at least 1".into(),
            ));
        }
        if self.grpc.max_header_list_bytes < MIN_MAX_HEADER_LIST_BYTES {
            return Err(invalid(
                "grpc.max_header_list_bytes".into(),
                format!("must be at least {MIN_MAX_HEADER_LIST_BYTES} (4 KiB)"),
            ));
        }
        if !self.grpc.keepalive_interval.is_zero() && self.grpc.keepalive_timeout.is_zero() {
            return Err(invalid(
                "grpc.keepalive_timeout".into(),
                "must be greater than 0 (grpc.keepalive_interval: 0s turns pings off)".into(),
            ));
        }
        for remote in &self.remotes {
            if remote.max_message_bytes < MIN_MAX_MESSAGE_BYTES {
                return Err(invalid(
                    format!("remotes[{}].max_message_bytes", remote.name),
                    format!("must be at least {MIN_MAX_MESSAGE_BYTES} (2 MiB)"),
                ));
            }
        }
        if let Some(ratio) = self.tracing.sampling_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            return Err(invalid(
                "tracing.sampling_ratio".into(),
                format!("{ratio} is not between 0 and 1"),
            ));
        }
        if let Some(endpoint) = &self.tracing.endpoint
            && endpoint
                .parse::<http::Uri>()
                .map_or(true, |u| u.scheme().is_none())
        {
            return Err(invalid(
                "tracing.endpoint".into(),
                format!("{endpoint:?} is not a URL such as http://otel-collector:4317"),
            ));
        }
        for ns in &self.discovery.nameservers {
            ns.parse::<SocketAddr>().map_err(|e| {
                invalid(
                    "discovery.nameservers".into(),
                    format!("{ns:?} is not an ip:port ({e})"),
                )
            })?;
        }
        for (key, tls) in [("grpc.tls", &self.grpc.tls), ("http.tls", &self.http.tls)] {
            if tls.as_ref().is_some_and(|tls| tls.max_handshakes == 0) {
                return Err(invalid(
                    format!("{key}.max_handshakes"),
                    "must be at least 1".into(),
                ));
            }
        }
        for (key, n) in [
            ("fanout.buffer_frames", self.fanout.buffer_frames),
            (
                "fanout.streams_per_connection",
                self.fanout.streams_per_connection,
            ),
        ] {
            if n == 0 {
                return Err(invalid(key.into(), "must be at least 1".into()));
            }
        }
        // Each connection's HTTP/2 window covers all its streams' windows,
        // and HTTP/2 windows end at 2 GiB.
        if self.fanout.streams_per_connection > MAX_STREAMS_PER_CONNECTION {
            return Err(invalid(
                "fanout.streams_per_connection".into(),
                format!("must be at most {MAX_STREAMS_PER_CONNECTION}"),
            ));
        }
        let mut names = HashSet::new();
        for (i, remote) in self.remotes.iter().enumerate() {
            let key = |field: &str| format!("remotes[{i}] ({}).{field}", remote.name);
            if remote.name.is_empty() {
                return Err(invalid(format!("remotes[{i}].name"), "must be set".into()));
            }
            if !names.insert(remote.name.as_str()) {
                return Err(invalid(
                    format!("remotes[{i}].name"),
                    format!("duplicate remote name {:?}", remote.name),
                ));
            }
            if remote.targets.is_empty() && remote.file_sd.is_empty() {
                return Err(invalid(
                    key("targets"),
                    "at least one target or file_sd file is required".into(),
                ));
            }
            for target in &remote.targets {
                Target::parse(target).map_err(|e| invalid(key("targets"), e.to_string()))?;
            }
            if remote.timeout.is_zero() {
                return Err(invalid(key("timeout"), "must be greater than 0".into()));
            }
            if remote.connect_timeout.is_zero() {
                return Err(invalid(
                    key("connect_timeout"),
                    "must be greater than 0".into(),
                ));
            }
            self.check_stream_window(remote.http2.stream_window)
                .map_err(|reason| invalid(key("http2.stream_window"), reason))?;
            if let Some(authority) = &remote.authority {
                authority
                    .parse::<http::uri::Authority>()
                    .map_err(|e| invalid(key("authority"), format!("{authority:?}: {e}")))?;
            }
            if let Some(tls) = &remote.tls {
                if tls.cert_file.is_some() != tls.key_file.is_some() {
                    return Err(invalid(
                        key("tls"),
                        "cert_file and key_file must be given together".into(),
                    ));
                }
                if tls.ca_file.is_none() && !tls.insecure_skip_verify {
                    return Err(invalid(
                        key("tls.ca_file"),
                        "a CA is required to verify the remote (or set insecure_skip_verify: true)"
                            .into(),
                    ));
                }
                if let Some(name) = &tls.server_name {
                    rustls::pki_types::ServerName::try_from(name.as_str())
                        .map_err(|e| invalid(key("tls.server_name"), format!("{name:?}: {e}")))?;
                }
            }
        }
        Ok(())
    }

    /// A remote's stream window must be one HTTP/2 accepts, and so must the
    /// connection window derived from it.
    fn check_stream_window(&self, stream_window: u32) -> Result<(), String> {
        if stream_window < MIN_STREAM_WINDOW {
            return Err(format!(
                "{stream_window} is below HTTP/2's initial window ({MIN_STREAM_WINDOW} bytes)"
            ));
        }
        let streams = self.fanout.streams_per_connection;
        if connection_window(stream_window, streams).is_none() {
            return Err(format!(
                "{stream_window} bytes x fanout.streams_per_connection ({streams}) + \
                 {UNARY_HEADROOM} bytes for unary calls exceeds HTTP/2's largest connection \
                 window ({MAX_WINDOW} bytes); lower one of them"
            ));
        }
        Ok(())
    }
}

/// A configuration that passed [`Config::validate`]. The service starts only
/// from this, so what validation accepts and what runs cannot disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig(Config);

impl ValidConfig {
    pub fn into_inner(self) -> Config {
        self.0
    }
}

impl Deref for ValidConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.0
    }
}

impl Config {
    /// Every CA, certificate and key file the remotes' TLS sections name, in
    /// config order.
    pub fn certificate_files(&self) -> Vec<PathBuf> {
        let listeners = [&self.grpc.tls, &self.http.tls]
            .into_iter()
            .flatten()
            .flat_map(|t| {
                [
                    Some(&t.cert_file),
                    Some(&t.key_file),
                    t.client_ca_file.as_ref(),
                ]
            });
        self.remotes
            .iter()
            .filter_map(|r| r.tls.as_ref())
            .flat_map(|t| {
                [
                    t.ca_file.as_ref(),
                    t.cert_file.as_ref(),
                    t.key_file.as_ref(),
                ]
            })
            .chain(listeners)
            .flatten()
            .cloned()
            .collect()
    }

    /// The keys that differ between `self` and `next` and only take effect
    /// after a restart (listen addresses, log settings, fan-out limits).
    pub fn needs_restart(&self, next: &Config) -> Vec<String> {
        let (Ok(serde_yaml::Value::Mapping(old)), Ok(serde_yaml::Value::Mapping(new))) =
            (serde_yaml::to_value(self), serde_yaml::to_value(next))
        else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        for (section, value) in &new {
            let name = section.as_str().unwrap_or_default();
            let before = old.get(section);
            if RELOADABLE.contains(&name) || before == Some(value) {
                continue;
            }
            match (before, value) {
                (Some(serde_yaml::Value::Mapping(before)), serde_yaml::Value::Mapping(after)) => {
                    keys.extend(
                        after
                            .iter()
                            .filter(|(key, value)| before.get(*key) != Some(*value))
                            .filter_map(|(key, value)| {
                                let key = key.as_str().unwrap_or_default();
                                // A listener's TLS files are reloaded; turning
                                // TLS on or off, or its handshake cap, needs a
                                // restart.
                                match before.get(key).filter(|b| !b.is_null()) {
                                    Some(running) if key == "tls" && !value.is_null() => {
                                        let cap = |tls: &serde_yaml::Value| {
                                            tls.get("max_handshakes").cloned()
                                        };
                                        (cap(running) != cap(value))
                                            .then(|| format!("{name}.tls.max_handshakes"))
                                    }
                                    _ => Some(format!("{name}.{key}")),
                                }
                            }),
                    );
                }
                _ => keys.push(name.to_owned()),
            }
        }
        keys
    }
}

/// Where the configuration comes from, so that it can be read again.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// Defaults, the file, `FANOUT_*` variables and these flags, layered as
    /// [`Config::load`] does.
    Layered {
        file: Option<PathBuf>,
        overrides: Overrides,
    },
    /// A config built in memory (the demo, tests): reading it again only
    /// reloads the certificate files it names.
    Fixed(Box<Config>),
}

impl ConfigSource {
    /// Reads and validates the configuration again.
    pub fn load(&self) -> Result<ValidConfig, ConfigError> {
        match self {
            Self::Layered { file, overrides } => Config::load(file.as_deref(), overrides),
            Self::Fixed(config) => config.clone().validate(None),
        }
    }

    /// The config file, if there is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::Layered { file, .. } => file.as_deref(),
            Self::Fixed(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loading reads the process environment (`FANOUT_*`), which one test
    /// sets: every load in these tests holds this lock, so none sees
    /// another test's variables.
    static ENVIRONMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn load(file: Option<&Path>, overrides: &Overrides) -> Result<ValidConfig, ConfigError> {
        let _environment = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
        Config::load(file, overrides)
    }

    fn load_str(yaml: &str) -> Result<ValidConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, yaml).expect("write");
        load(Some(&path), &Overrides::default())
    }

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml");
        let config = load(Some(&path), &Overrides::default()).expect("example loads");
        assert!(!config.remotes.is_empty());
    }

    /// The README's minimal config is config/minimal.yaml, and it loads.
    #[test]
    fn minimal_config_loads_and_is_the_readmes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = root.join("config/minimal.yaml");
        let config = load(Some(&path), &Overrides::default()).expect("minimal loads");
        assert_eq!(config.remotes.len(), 1);
        let minimal = std::fs::read_to_string(&path).expect("minimal.yaml");
        let readme = std::fs::read_to_string(root.join("README.md")).expect("readme");
        assert!(
            readme.contains(&format!("```yaml\n{minimal}```")),
            "README.md shows config/minimal.yaml verbatim"
        );
    }

    /// The configs shipped in deploy/ and shown in the README follow the schema.
    #[test]
    fn shipped_configs_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest =
            std::fs::read_to_string(root.join("deploy/configmap.yaml")).expect("configmap");
        let configmap: serde_yaml::Value = serde_yaml::from_str(&manifest).expect("yaml");
        let embedded = configmap["data"]["config.yaml"]
            .as_str()
            .expect("data.config.yaml");
        load_str(embedded).expect("deploy/configmap.yaml config loads");

        let readme = std::fs::read_to_string(root.join("README.md")).expect("readme");
        let section = &readme[readme.find("## Configuration").expect("section")..];
        let block = section
            .split("```yaml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a yaml block");
        load_str(block).expect("README config example loads");
    }

    #[test]
    fn querier_connection_limits_default_and_are_checked() {
        let config = load_str("").expect("defaults");
        assert_eq!(
            config.grpc.max_concurrent_streams,
            DEFAULT_MAX_CONCURRENT_STREAMS
        );
        assert_eq!(config.grpc.max_header_list_bytes, 16 << 10);
        assert_eq!(config.grpc.keepalive_interval, Duration::from_secs(30));
        assert_eq!(config.grpc.keepalive_timeout, Duration::from_secs(20));
        for (yaml, key) in [
            (
                "grpc:\n  max_concurrent_streams: 0\n",
                "grpc.max_concurrent_streams",
            ),
            (
                "grpc:\n  max_header_list_bytes: 1024\n",
                "grpc.max_header_list_bytes",
            ),
            ("grpc:\n  keepalive_timeout: 0s\n", "grpc.keepalive_timeout"),
        ] {
            let err = load_str(yaml).expect_err(yaml);
            assert!(err.to_string().contains(key), "{err}");
        }
        let config = load_str("grpc:\n  keepalive_interval: 0s\n  keepalive_timeout: 0s\n")
            .expect("no pings");
        assert!(config.grpc.keepalive_interval.is_zero());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_str("grpc:\n  lisen: \"0.0.0.0:1\"\n").expect_err("unknown key");
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn duplicate_remote_is_an_error() {
        let yaml =
            "remotes:\n  - {name: a, targets: [\"h:1\"]}\n  - {name: a, targets: [\"h:2\"]}\n";
        let err = load_str(yaml).expect_err("duplicate");
        assert!(
            err.to_string().contains("duplicate remote name \"a\""),
            "{err}"
        );
    }

    #[test]
    fn tracing_settings_are_checked() {
        let err = load_str("tracing:\n  sampling_ratio: 1.5\n").expect_err("ratio");
        assert!(err.to_string().contains("tracing.sampling_ratio"), "{err}");
        let err = load_str("tracing:\n  endpoint: collector:4317\n").expect_err("no scheme");
        assert!(err.to_string().contains("tracing.endpoint"), "{err}");
        let config =
            load_str("tracing:\n  endpoint: http://collector:4317\n  sampling_ratio: 0.25\n")
                .expect("valid");
        assert_eq!(config.tracing.sampling_ratio, Some(0.25));
    }

    #[test]
    fn bad_duration_is_an_error() {
        let err = load_str("info:\n  interval: fast\n").expect_err("bad duration");
        assert!(err.to_string().contains("interval"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load(
            Some(Path::new("/nonexistent/fanout.yaml")),
            &Overrides::default(),
        )
        .expect_err("missing");
        assert!(
            err.to_string().contains("/nonexistent/fanout.yaml"),
            "{err}"
        );
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "grpc:\n  listen: \"127.0.0.1:1\"\n").expect("write");
        let overrides = Overrides {
            grpc_listen: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let config = load(Some(&path), &overrides).expect("loads");
        assert_eq!(config.grpc.listen, "127.0.0.1:2");
        assert_eq!(config.http.listen, "0.0.0.0:10902");
    }

    #[test]
    // figment::Jail fixes the closure's error type; it is a test.
    #[allow(clippy::result_large_err)]
    fn environment_overrides_only_config_sections() {
        let _environment = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
        figment::Jail::expect_with(|jail| {
            jail.set_env("FANOUT_GRPC__LISTEN", "127.0.0.1:7");
            jail.set_env("FANOUT_DISCOVERY__STALE_AFTER", "1m");
            // Not config: must not fail start-up.
            jail.set_env("FANOUT_BIN", "/usr/bin/thanos-fanout");
            jail.set_env("FANOUT_CONFIG", "/etc/fanout.yaml");
            jail.set_env("FANOUT_SERVICE_HOST", "10.0.0.1");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(config.grpc.listen, "127.0.0.1:7");
            assert_eq!(config.discovery.stale_after, Duration::from_secs(60));
            // A typo inside a known section is still an error.
            jail.set_env("FANOUT_GRPC__LISEN", "x");
            let err = Config::load(None, &Overrides::default()).expect_err("unknown key");
            assert!(
                err.to_string().contains("LISEN") || err.to_string().contains("lisen"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn remote_with_only_file_sd_is_valid() {
        let config = load_str("remotes:\n  - {name: east, file_sd: [/etc/fanout/east.yaml]}\n")
            .expect("file_sd alone is enough");
        assert_eq!(config.remotes[0].file_sd.len(), 1);
    }

    #[test]
    fn remote_without_targets_or_file_sd_is_named() {
        let err = load_str("remotes:\n  - {name: east}\n").expect_err("nothing to query");
        let text = err.to_string();
        assert!(
            text.contains("remotes[0] (east).targets") && text.contains("file_sd"),
            "{text}"
        );
    }

    #[test]
    fn stream_window_defaults_and_is_set_per_remote() {
        let config = load_str(
            "remotes:\n  - {name: near, targets: [\"h:1\"]}\n  - {name: far, targets: [\"h:2\"], http2: {stream_window: 33554432}}\n",
        )
        .expect("loads");
        assert_eq!(config.remotes[0].http2.stream_window, DEFAULT_STREAM_WINDOW);
        assert_eq!(config.remotes[1].http2.stream_window, 32 << 20);
    }

    #[test]
    fn stream_window_whose_connection_window_overflows_names_both_keys() {
        // 255 streams of 8 MiB plus the headroom fit in 2 GiB; 256 do not.
        let remote =
            "remotes:\n  - {name: far, targets: [\"h:1\"], http2: {stream_window: 8388608}}\n";
        load_str(&format!("fanout:\n  streams_per_connection: 255\n{remote}")).expect("fits");
        let err = load_str(&format!("fanout:\n  streams_per_connection: 256\n{remote}"))
            .expect_err("does not fit");
        let text = err.to_string();
        assert!(
            text.contains("remotes[0] (far).http2.stream_window")
                && text.contains("fanout.streams_per_connection (256)"),
            "{text}"
        );
    }

    #[test]
    fn default_stream_window_with_the_most_streams_per_connection_is_an_error() {
        let err = load_str(&format!(
            "fanout:\n  streams_per_connection: {MAX_STREAMS_PER_CONNECTION}\nremotes:\n  - {{name: east, targets: [\"h:1\"]}}\n"
        ))
        .expect_err("1000 x 8 MiB exceeds 2 GiB");
        assert!(
            err.to_string().contains("(east).http2.stream_window"),
            "{err}"
        );
        load_str(&format!(
            "fanout:\n  streams_per_connection: {MAX_STREAMS_PER_CONNECTION}\nremotes:\n  - {{name: east, targets: [\"h:1\"], http2: {{stream_window: 2097152}}}}\n"
        ))
        .expect("1000 x 2 MiB fits");
    }

    #[test]
    fn stream_window_below_http2s_initial_window_is_an_error() {
        let err = load_str(
            "remotes:\n  - {name: east, targets: [\"h:1\"], http2: {stream_window: 1024}}\n",
        )
        .expect_err("too small");
        assert!(
            err.to_string().contains("(east).http2.stream_window"),
            "{err}"
        );
        load_str(&format!(
            "remotes:\n  - {{name: east, targets: [\"h:1\"], http2: {{stream_window: {MIN_STREAM_WINDOW}}}}}\n"
        ))
        .expect("the initial window itself is allowed");
    }

    #[test]
    fn stream_window_beyond_u32_or_unknown_http2_key_is_named() {
        let err = load_str(
            "remotes:\n  - {name: east, targets: [\"h:1\"], http2: {stream_window: 8589934592}}\n",
        )
        .expect_err("out of range");
        assert!(err.to_string().contains("stream_window"), "{err}");
        let err = load_str(
            "remotes:\n  - {name: east, targets: [\"h:1\"], http2: {adaptive_window: true}}\n",
        )
        .expect_err("unknown key");
        assert!(err.to_string().contains("adaptive_window"), "{err}");
    }

    #[test]
    fn malformed_target_names_the_remote() {
        let err = load_str("remotes:\n  - {name: east, targets: [\"no-port\"]}\n")
            .expect_err("bad target");
        let text = err.to_string();
        assert!(text.contains("east") && text.contains("no-port"), "{text}");
    }

    #[test]
    fn only_restart_settings_need_a_restart() {
        let running = load_str("remotes:\n  - {name: a, targets: [\"h:1\"]}\n")
            .expect("loads")
            .into_inner();
        let mut next = running.clone();
        next.remotes[0].targets.push("h:2".into());
        next.discovery.stale_after = Duration::from_secs(1);
        next.info.interval = Duration::from_secs(1);
        next.reload.interval = Duration::from_secs(1);
        assert!(running.needs_restart(&next).is_empty());
        next.grpc.listen = "127.0.0.1:1".into();
        next.fanout.buffer_frames = 1;
        assert_eq!(
            running.needs_restart(&next),
            vec!["grpc.listen".to_owned(), "fanout.buffer_frames".to_owned()]
        );
    }

    #[test]
    fn listener_tls_files_reload_and_its_handshake_cap_needs_a_restart() {
        let tls = |cert: &str, max: &str| {
            load_str(&format!(
                "grpc: {{tls: {{cert_file: {cert}, key_file: /k.pem{max}}}}}\nremotes:\n  - {{name: a, targets: [\"h:1\"]}}\n"
            ))
            .expect("loads")
            .into_inner()
        };
        let running = tls("/a.pem", "");
        assert_eq!(
            running.grpc.tls.as_ref().map(|t| t.max_handshakes),
            Some(DEFAULT_MAX_HANDSHAKES)
        );
        assert!(running.needs_restart(&tls("/b.pem", "")).is_empty());
        assert_eq!(
            running.needs_restart(&tls("/b.pem", ", max_handshakes: 8")),
            ["grpc.tls.max_handshakes"]
        );
        let err = load_str(
            "http: {tls: {cert_file: /c.pem, key_file: /k.pem, max_handshakes: 0}}\nremotes:\n  - {name: a, targets: [\"h:1\"]}\n",
        )
        .expect_err("no handshakes");
        assert!(err.to_string().contains("http.tls.max_handshakes"), "{err}");
    }

    #[test]
    fn certificate_files_are_listed() {
        let config = load_str(
            "remotes:\n  - {name: a, targets: [\"h:1\"], tls: {ca_file: /ca.pem, cert_file: /c.pem, key_file: /k.pem}}\n  - {name: b, targets: [\"h:2\"]}\n",
        )
        .expect("loads");
        assert_eq!(
            config.certificate_files(),
            ["/ca.pem", "/c.pem", "/k.pem"].map(PathBuf::from)
        );
    }
}
