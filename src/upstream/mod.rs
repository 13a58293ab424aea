//! Remotes and their endpoints: the connections to each endpoint (TLS
//! identity, SNI name and `:authority` from the remote's config), its cached
//! Info, and whether it is healthy enough to be queried.

mod breaker;
mod connect;
mod error;
mod pool;
mod snappy;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::ServerName;
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint as ChannelEndpoint};

pub use breaker::{Breaker, Open};
use connect::Connector;
pub use connect::{ConnectError, DialFacts, DialRecorder};
pub use error::{RemoteError, RemoteErrorKind};
use pool::Pool;
pub use pool::{MAX_WINDOW, StreamLease, UNARY_HEADROOM, connection_window};
pub use snappy::RemoteChannel;

use crate::config::{Compression, InfoConfig, RemoteConfig, RemoteMode};
use crate::discovery::{Dns, EndpointSet};
use crate::labelset;
use crate::metrics::{EndpointMetrics, Method, MethodCalls, RemoteFamilies};
use crate::proto::MAX_MESSAGE_SIZE;
use crate::proto::relay::store_client::StoreClient as RelayStoreClient;
use crate::proto::thanos::Label;
use crate::proto::thanos::exemplars_client::ExemplarsClient;
use crate::proto::thanos::info::info_client::InfoClient;
use crate::proto::thanos::info::{InfoRequest, InfoResponse, TsdbInfo};
use crate::proto::thanos::metadata_client::MetadataClient;
use crate::proto::thanos::rules_client::RulesClient;
use crate::proto::thanos::status_client::StatusClient;
use crate::proto::thanos::store_client::StoreClient;
use crate::proto::thanos::targets_client::TargetsClient;
use crate::target::{Dial, EndpointSpec, join_host_port};
use crate::tls::{self, ClientTls, TlsError};

/// A remote that could not be set up from its config.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("remote {remote}: TLS: {source}")]
    Tls { remote: String, source: TlsError },
}

/// The APIs besides the StoreAPI that an endpoint may offer; its Info
/// answer says which, by the presence of each one's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Rules,
    Targets,
    MetricMetadata,
    Exemplars,
    Status,
}

impl Api {
    pub const ALL: [Api; 5] = [
        Api::Rules,
        Api::Targets,
        Api::MetricMetadata,
        Api::Exemplars,
        Api::Status,
    ];

    /// Which of these an Info answer advertises.
    fn offered_by(resp: &InfoResponse) -> Vec<Api> {
        let present = [
            (Api::Rules, resp.rules.is_some()),
            (Api::Targets, resp.targets.is_some()),
            (Api::MetricMetadata, resp.metric_metadata.is_some()),
            (Api::Exemplars, resp.exemplars.is_some()),
            (Api::Status, resp.status.is_some()),
        ];
        present
            .into_iter()
            .filter_map(|(api, present)| present.then_some(api))
            .collect()
    }
}

/// What an endpoint said about itself in its last successful Info answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteInfo {
    /// External label sets, each sorted; empty sets dropped as the querier does.
    pub label_sets: Vec<Vec<Label>>,
    /// Whether it offers the StoreAPI (Series and labels); the time range and
    /// the `supports_*` flags are only meaningful if so.
    pub store: bool,
    /// The other APIs it offers.
    pub apis: Vec<Api>,
    pub min_time: i64,
    pub max_time: i64,
    pub supports_sharding: bool,
    pub supports_without_replica_labels: bool,
    pub tsdb_infos: Vec<TsdbInfo>,
    pub component: String,
}

impl RemoteInfo {
    /// Checks and normalises an Info answer; an error says why it is unusable.
    pub fn from_response(resp: InfoResponse) -> Result<Self, String> {
        let apis = Api::offered_by(&resp);
        if resp.store.is_none() && apis.is_empty() {
            return Err("the endpoint offers none of the APIs we serve (its Info has no store, rules, targets, metric_metadata, exemplars or status)".into());
        }
        let has_store = resp.store.is_some();
        let store = resp.store.unwrap_or_default();
        let mut label_sets = Vec::with_capacity(resp.label_sets.len());
        for set in resp.label_sets {
            let mut set = set.labels;
            labelset::normalize(&mut set).map_err(|e| format!("external labels: {e}"))?;
            if !set.is_empty() {
                label_sets.push(set);
            }
        }
        Ok(Self {
            label_sets,
            store: has_store,
            apis,
            min_time: store.min_time,
            max_time: store.max_time,
            supports_sharding: store.supports_sharding,
            supports_without_replica_labels: store.supports_without_replica_labels,
            tsdb_infos: store.tsdb_infos,
            component: resp.component_type,
        })
    }

    /// Whether it offers `api`.
    pub fn offers(&self, api: Api) -> bool {
        self.apis.contains(&api)
    }

    /// Whether it serves data that external labels describe (series or
    /// exemplars), so its label sets say which requests it can answer.
    pub fn serves_data(&self) -> bool {
        self.store || self.offers(Api::Exemplars)
    }
}

/// The cached view of one endpoint, replaced as a whole after each Info poll.
#[derive(Debug, Clone, Default)]
pub struct EndpointState {
    /// Last successful Info, kept through failures for the status page.
    pub info: Option<Arc<RemoteInfo>>,
    /// Whether the last Info call succeeded; only healthy endpoints are queried.
    pub healthy: bool,
    pub last_error: Option<String>,
    pub last_check: Option<Instant>,
    /// How long the last Info call took, or took to fail.
    pub info_latency: Option<Duration>,
}

/// The last call to an endpoint that did not succeed, kept for the status
/// page: a remote can answer Info and still fail or time out on queries.
#[derive(Debug, Clone)]
pub struct CallFailure {
    pub at: SystemTime,
    pub method: Method,
    pub error: RemoteErrorKind,
}

/// Whether an endpoint may be queried; see [`Endpoint::availability`].
#[derive(Debug, Clone)]
pub enum Availability {
    /// Its last Info call succeeded: queried when a request matches this Info.
    Queryable(Arc<RemoteInfo>),
    /// Its last Info call failed (`why`): not queried, but reported to a
    /// request its last known Info matches (any request, if it never
    /// answered), as [`RemoteErrorKind::NotQueried`].
    Down {
        last_info: Option<Arc<RemoteInfo>>,
        why: String,
    },
    /// Not asked for Info yet: neither queried nor reported.
    Unknown,
}

/// One dialable address of a remote.
pub struct Endpoint {
    pub remote: Arc<str>,
    /// What it dials, as text (`ip:port`, or `name:port` for dnssrvnoa+).
    pub address: String,
    /// How discovery found it.
    pub spec: EndpointSpec,
    /// The name verified and sent as SNI; `None` for plaintext.
    pub server_name: Option<String>,
    /// The HTTP/2 `:authority` of its requests.
    pub authority: String,
    /// Longest wait for progress (see `RemoteConfig::timeout`).
    pub timeout: Duration,
    /// Whether this endpoint is one of interchangeable replicas.
    pub mode: RemoteMode,
    pool: Pool,
    /// tonic's own encodings; snappy is [`RemoteChannel`]'s.
    compression: Option<CompressionEncoding>,
    snappy: bool,
    /// Set while the remote asks for a client certificate we do not have.
    unanswered_certificate_request: Arc<AtomicBool>,
    state: RwLock<Arc<EndpointState>>,
    last_failure: Mutex<Option<Arc<CallFailure>>>,
    /// Largest message accepted from it.
    max_message_bytes: usize,
    /// The remote's calls in progress (`max_concurrent_calls`), shared by
    /// its endpoints.
    calls: Option<Arc<tokio::sync::Semaphore>>,
    max_concurrent_calls: usize,
    /// Skips the endpoint after calls failed in a row.
    pub breaker: Breaker,
    pub metrics: EndpointMetrics,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("remote", &self.remote)
            .field("address", &self.address)
            .finish()
    }
}

/// A generated client with our message limits and the remote's compression.
macro_rules! client {
    ($client:ident, $channel:expr, $compression:expr, $max_message:expr) => {{
        let client = $client::new($channel)
            .max_decoding_message_size($max_message)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        match $compression {
            Some(encoding) => client.send_compressed(encoding).accept_compressed(encoding),
            None => client,
        }
    }};
}

/// Clients for streaming calls: each on a connection with room for one more
/// stream; keep the lease until the stream is done.
macro_rules! stream_clients {
    ($($method:ident => $client:ident,)*) => {
        impl Endpoint {
            $(
                pub fn $method(&self) -> ($client<RemoteChannel>, StreamLease) {
                    let lease = self.pool.stream();
                    (
                        client!($client, self.channel(lease.channel()), self.compression, self.max_message_bytes),
                        lease,
                    )
                }
            )*
        }
    };
}

stream_clients! {
    series_client => RelayStoreClient,
    rules_client => RulesClient,
    targets_client => TargetsClient,
    metadata_client => MetadataClient,
    exemplars_client => ExemplarsClient,
    status_client => StatusClient,
}

impl Endpoint {
    /// A Store client for unary calls (LabelNames, LabelValues); cheap. The
    /// lease retires its connection if the remote turns a call away unread.
    pub fn store(&self) -> (StoreClient<RemoteChannel>, StreamLease) {
        let lease = self.pool.unary();
        let channel = self.channel(lease.channel());
        let client = client!(
            StoreClient,
            channel,
            self.compression,
            self.max_message_bytes
        );
        (client, lease)
    }

    fn channel(&self, channel: Channel) -> RemoteChannel {
        RemoteChannel::new(channel, self.snappy, self.max_message_bytes)
    }

    /// Connections open to this endpoint.
    pub fn connections(&self) -> usize {
        self.pool.connections()
    }

    /// This endpoint's error of `kind`.
    pub fn error(&self, kind: RemoteErrorKind) -> RemoteError {
        RemoteError {
            remote: self.remote.clone(),
            endpoint: self.address.clone(),
            kind,
        }
    }

    /// Classifies a failed call: no connection, a failed TLS handshake (or
    /// a TLS alert after it), or an error the remote answered with; the text
    /// carries everything known about the cause.
    pub fn failure(&self, status: &tonic::Status) -> RemoteError {
        let text = self.describe(status);
        let mut source = std::error::Error::source(status);
        let mut connect = None;
        while let Some(error) = source {
            if let Some(found) = error.downcast_ref::<ConnectError>() {
                connect = Some(found);
                break;
            }
            source = error.source();
        }
        let kind = match connect {
            Some(ConnectError::Handshake { .. }) => RemoteErrorKind::Tls(text),
            _ if text.contains("received fatal alert") => RemoteErrorKind::Tls(text),
            Some(_) => RemoteErrorKind::Connect(text),
            None if refused_unread(status) => RemoteErrorKind::Refused(text),
            None if unsent(status) => RemoteErrorKind::Unsent(text),
            None if closed_by_remote(status) => RemoteErrorKind::Closed(text),
            None => RemoteErrorKind::Status(text),
        };
        self.error(kind)
    }

    /// A failed call's status with everything known about its cause.
    pub fn describe(&self, status: &tonic::Status) -> String {
        let mut text = describe_status(status);
        if self.unanswered_certificate_request.load(Ordering::Relaxed)
            && !text.contains("client certificate")
        {
            text.push_str(
                " (the remote asked for a client certificate and none is configured: if it requires one, set tls.cert_file and tls.key_file)",
            );
        }
        text
    }

    /// The current cached state.
    pub fn state(&self) -> Arc<EndpointState> {
        match self.state.read() {
            Ok(state) => state.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Remembers a call that failed, timed out or was cut short.
    pub fn note_failure(&self, method: Method, error: &RemoteError) {
        let failure = Arc::new(CallFailure {
            at: SystemTime::now(),
            method,
            error: error.kind.clone(),
        });
        match self.last_failure.lock() {
            Ok(mut slot) => *slot = Some(failure),
            Err(poisoned) => *poisoned.into_inner() = Some(failure),
        }
    }

    /// The last call that did not succeed, if any.
    pub fn last_failure(&self) -> Option<Arc<CallFailure>> {
        match self.last_failure.lock() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A place among the remote's calls in progress for one more call, or
    /// the limit if there is none.
    pub fn admit(&self) -> Result<Option<Arc<tokio::sync::OwnedSemaphorePermit>>, usize> {
        match &self.calls {
            None => Ok(None),
            Some(calls) => calls
                .clone()
                .try_acquire_owned()
                .map(|permit| Some(Arc::new(permit)))
                .map_err(|_| self.max_concurrent_calls),
        }
    }

    /// The one health rule: whether the endpoint may be queried now, and if
    /// not, why.
    pub fn availability(&self) -> Availability {
        let state = self.state();
        match (&state.info, state.healthy, &state.last_error) {
            (Some(info), true, _) => Availability::Queryable(info.clone()),
            (last_info, false, Some(error)) => Availability::Down {
                last_info: last_info.clone(),
                why: error.clone(),
            },
            // Not asked yet (it appeared after the last poll).
            _ => Availability::Unknown,
        }
    }

    /// The cached Info if the endpoint may be queried now.
    pub fn queryable(&self) -> Option<Arc<RemoteInfo>> {
        match self.availability() {
            Availability::Queryable(info) => Some(info),
            _ => None,
        }
    }

    fn set_state(&self, state: EndpointState) {
        let state = Arc::new(state);
        match self.state.write() {
            Ok(mut slot) => *slot = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
    }

    /// Calls Info once, bounded by `timeout`.
    pub async fn call_info(&self, timeout: Duration) -> Result<InfoResponse, InfoCallError> {
        let mut request = tonic::Request::new(InfoRequest {});
        request.set_timeout(timeout);
        let mut client = client!(
            InfoClient,
            self.channel(self.pool.primary()),
            self.compression,
            self.max_message_bytes
        );
        match tokio::time::timeout(timeout, client.info(request)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(InfoCallError::Status(status)),
            Err(_) => Err(InfoCallError::TimedOut(timeout)),
        }
    }

    /// Calls Info once and updates the cached state.
    pub async fn refresh_info(&self, timeout: Duration) {
        let started = Instant::now();
        let result = self.call_info(timeout).await;
        let latency = started.elapsed();
        let outcome = match result {
            Ok(resp) => RemoteInfo::from_response(resp),
            Err(InfoCallError::Status(status)) => Err(self.describe(&status)),
            Err(InfoCallError::TimedOut(timeout)) => {
                Err(format!("Info timed out after {timeout:?}"))
            }
        };
        let previous = self.state();
        let state = match outcome {
            Ok(info) => {
                if !previous.healthy {
                    let label_sets: Vec<String> = info
                        .label_sets
                        .iter()
                        .map(|s| labelset::Display(s).to_string())
                        .collect();
                    tracing::info!(remote = %self.remote, endpoint = %self.address, label_sets = %label_sets.join(" "), "endpoint is healthy");
                }
                self.metrics.up.set(1);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                self.metrics.last_info_success.set(now.as_secs_f64());
                EndpointState {
                    info: Some(Arc::new(info)),
                    healthy: true,
                    last_error: None,
                    last_check: Some(Instant::now()),
                    info_latency: Some(latency),
                }
            }
            Err(error) => {
                if previous.healthy || previous.last_check.is_none() {
                    tracing::warn!(remote = %self.remote, endpoint = %self.address, %error, "endpoint is unhealthy, excluded from queries");
                } else {
                    tracing::debug!(remote = %self.remote, endpoint = %self.address, %error, "info failed again");
                }
                self.metrics.up.set(0);
                self.metrics.info_failures.inc();
                EndpointState {
                    info: previous.info.clone(),
                    healthy: false,
                    last_error: Some(error),
                    last_check: Some(Instant::now()),
                    info_latency: Some(latency),
                }
            }
        };
        self.set_state(state);
    }
}

/// A configured remote: its TLS identity and its current endpoints, which
/// follow the endpoint sets discovery publishes.
pub struct Remote {
    pub name: Arc<str>,
    /// Replaced when only where its endpoints are found changes.
    config: RwLock<Arc<RemoteConfig>>,
    client_tls: Option<ClientTls>,
    dns: Dns,
    families: RemoteFamilies,
    streams_per_connection: usize,
    endpoints: RwLock<Arc<Vec<Arc<Endpoint>>>>,
    /// Its calls in progress, when `max_concurrent_calls` limits them.
    calls: Option<Arc<tokio::sync::Semaphore>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("name", &self.name).finish()
    }
}

impl Remote {
    /// Loads certificates, so problems surface before any port is bound.
    /// Endpoints come from discovery.
    pub fn build(
        config: &RemoteConfig,
        families: &RemoteFamilies,
        dns: &Dns,
        streams_per_connection: usize,
    ) -> Result<Self, UpstreamError> {
        let client_tls = config
            .tls
            .as_ref()
            .map(ClientTls::from_config)
            .transpose()
            .map_err(|source| UpstreamError::Tls {
                remote: config.name.clone(),
                source,
            })?;
        Ok(Self::new(
            config,
            client_tls,
            families,
            dns,
            streams_per_connection,
        ))
    }

    /// A remote with TLS already loaded (when `config.tls` is set).
    pub fn new(
        config: &RemoteConfig,
        client_tls: Option<ClientTls>,
        families: &RemoteFamilies,
        dns: &Dns,
        streams_per_connection: usize,
    ) -> Self {
        let client_certificate = client_tls.as_ref().and_then(ClientTls::client_certificate);
        families.client_certificate_expiry(
            &config.name,
            client_certificate.and_then(|der| crate::tls::not_after(der)),
        );
        Self {
            name: config.name.as_str().into(),
            config: RwLock::new(Arc::new(config.clone())),
            client_tls,
            dns: dns.clone(),
            families: families.clone(),
            streams_per_connection,
            endpoints: RwLock::new(Arc::new(Vec::new())),
            calls: (config.max_concurrent_calls > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_calls))),
        }
    }

    /// The configuration it was built from, with the latest targets and
    /// file_sd files.
    pub fn config(&self) -> Arc<RemoteConfig> {
        match self.config.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Takes a config that differs from the one it was built from only in
    /// where its endpoints are found (`targets`, `file_sd`), which
    /// discovery follows.
    pub fn set_config(&self, config: &RemoteConfig) {
        let config = Arc::new(config.clone());
        match self.config.write() {
            Ok(mut slot) => *slot = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    /// The client certificate it presents, if one is configured.
    pub fn client_certificate(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        self.client_tls.as_ref()?.client_certificate()
    }

    /// Calls made to it so far, per method (see [`RemoteFamilies::remote_calls`]).
    pub fn calls(&self) -> Vec<MethodCalls> {
        self.families.remote_calls(&self.name)
    }

    /// The current endpoints.
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        match self.endpoints.read() {
            Ok(e) => e.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the endpoint set. Endpoints that stay keep their connection
    /// (and their in-flight calls); calls on removed ones run to their end.
    /// Returns the endpoints that are new.
    pub fn set_endpoints(&self, specs: &[EndpointSpec]) -> Vec<Arc<Endpoint>> {
        let added = self.new_endpoints(specs);
        self.install(specs, &added);
        added
    }

    /// Endpoints for the specs that have none yet, not yet in use.
    fn new_endpoints(&self, specs: &[EndpointSpec]) -> Vec<Arc<Endpoint>> {
        let current = self.endpoints();
        let mut added: Vec<Arc<Endpoint>> = Vec::new();
        for spec in specs {
            if current.iter().chain(&added).any(|e| e.spec == *spec) {
                continue;
            }
            match self.build_endpoint(spec.clone()) {
                Ok(endpoint) => added.push(Arc::new(endpoint)),
                Err(error) => {
                    tracing::error!(remote = %self.name, endpoint = %spec.dial, %error, "cannot use endpoint");
                }
            }
        }
        added
    }

    /// Makes `specs` the endpoint set: the current endpoints that stay, and
    /// `added` for the rest.
    fn install(&self, specs: &[EndpointSpec], added: &[Arc<Endpoint>]) {
        let current = self.endpoints();
        let next: Vec<Arc<Endpoint>> = specs
            .iter()
            .filter_map(|spec| {
                current
                    .iter()
                    .chain(added)
                    .find(|e| e.spec == *spec)
                    .cloned()
            })
            .collect();
        for gone in current.iter().filter(|e| !specs.contains(&e.spec)) {
            // A new endpoint at the same address shares its label children.
            if !added.iter().any(|e| e.address == gone.address) {
                self.families.forget_endpoint(&self.name, &gone.address);
            }
        }
        let next = Arc::new(next);
        match self.endpoints.write() {
            Ok(mut slot) => *slot = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    /// Follows discovery's endpoint sets until discovery stops. Endpoints
    /// that appear are asked for Info (within `info`'s timeout) before the
    /// set changes, so while a remote moves (a DNS record now names another
    /// pod) queries keep going to the endpoints it had instead of finding
    /// none that has answered yet.
    pub async fn follow(
        &self,
        mut sets: watch::Receiver<EndpointSet>,
        info: watch::Receiver<InfoConfig>,
    ) {
        while sets.changed().await.is_ok() {
            let set = sets.borrow_and_update().clone();
            let added = self.new_endpoints(&set);
            let timeout = info.borrow().timeout;
            futures::future::join_all(added.iter().map(|e| e.refresh_info(timeout))).await;
            self.install(&set, &added);
        }
    }

    /// An endpoint for `spec` built exactly as the service builds it, whose
    /// dials are recorded: for `thanos-fanout check`.
    pub fn probe(&self, spec: EndpointSpec) -> Result<(Endpoint, DialRecorder), String> {
        let recorder = DialRecorder::default();
        let endpoint = self.build_endpoint_with(spec, Some(recorder.clone()))?;
        Ok((endpoint, recorder))
    }

    fn build_endpoint(&self, spec: EndpointSpec) -> Result<Endpoint, String> {
        self.build_endpoint_with(spec, None)
    }

    fn build_endpoint_with(
        &self,
        spec: EndpointSpec,
        recorder: Option<DialRecorder>,
    ) -> Result<Endpoint, String> {
        let config = self.config();
        let server_name_override = config.tls.as_ref().and_then(|t| t.server_name.clone());
        // Verify and SNI by the configured name, else by the host the endpoint
        // was found under (a name for dns+/dnssrv+), never a resolved IP.
        let server_name = server_name_override
            .clone()
            .unwrap_or_else(|| spec.host.clone());
        let tls = match &self.client_tls {
            Some(tls) => Some((
                tls.clone(),
                ServerName::try_from(server_name.clone()).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        let port = match &spec.dial {
            Dial::Addr(addr) => addr.port(),
            Dial::Name(_, port) => *port,
        };
        let authority = config
            .authority
            .clone()
            .or(server_name_override)
            .unwrap_or_else(|| join_host_port(&spec.host, port));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let channel = ChannelEndpoint::from_shared(format!("{scheme}://{authority}"))
            .map_err(|e| format!("authority {authority:?}: {e}"))?
            // Pings only while streams are open and no more often than grpc-go
            // servers permit (10 s), or they answer with GOAWAY too_many_pings.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(false);
        let server_name = tls.is_some().then_some(server_name);
        let address = spec.dial.to_string();
        let metrics = self.families.endpoint(&self.name, &address);
        metrics.up.set(0);
        let mut connector = Connector::new(
            spec.dial.clone(),
            self.dns.clone(),
            tls,
            config.connect_timeout,
        )
        .observed(metrics.tls.clone());
        if let Some(recorder) = recorder {
            connector = connector.recorded(recorder);
        }
        let unanswered_certificate_request = connector.unanswered_certificate_request();
        let pool = Pool::new(
            channel,
            connector,
            self.streams_per_connection,
            config.http2.stream_window,
            metrics.connections.clone(),
        );
        Ok(Endpoint {
            remote: self.name.clone(),
            address,
            spec,
            server_name,
            authority,
            timeout: config.timeout,
            mode: config.mode,
            pool,
            compression: match config.compression {
                Compression::None | Compression::Snappy => None,
                Compression::Gzip => Some(CompressionEncoding::Gzip),
                Compression::Zstd => Some(CompressionEncoding::Zstd),
            },
            snappy: config.compression == Compression::Snappy,
            unanswered_certificate_request,
            state: RwLock::new(Arc::new(EndpointState::default())),
            last_failure: Mutex::new(None),
            max_message_bytes: config.max_message_bytes,
            calls: self.calls.clone(),
            max_concurrent_calls: config.max_concurrent_calls,
            breaker: Breaker::new(
                config.circuit_breaker.clone(),
                metrics.breaker_open.clone(),
                metrics.breaker_opened.clone(),
            ),
            metrics,
        })
    }
}

/// Every remote, in config order. The set is replaced as a whole when the
/// config is reloaded; a request reads one snapshot of it, and calls in
/// flight keep the endpoints they were started on.
#[derive(Debug, Default)]
pub struct Upstreams {
    remotes: RwLock<Arc<Vec<Arc<Remote>>>>,
}

impl Upstreams {
    /// The current remotes.
    pub fn remotes(&self) -> Arc<Vec<Arc<Remote>>> {
        match self.remotes.read() {
            Ok(remotes) => remotes.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Makes `remotes` the current set.
    pub fn replace(&self, remotes: Vec<Arc<Remote>>) {
        let remotes = Arc::new(remotes);
        match self.remotes.write() {
            Ok(mut slot) => *slot = remotes,
            Err(poisoned) => *poisoned.into_inner() = remotes,
        }
    }

    /// A snapshot of every endpoint of every remote.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.remotes()
            .iter()
            .flat_map(|r| r.endpoints().iter().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Polls Info on every endpoint concurrently, once.
    pub async fn refresh_all(&self, timeout: Duration) {
        futures::future::join_all(self.endpoints().iter().map(|e| e.refresh_info(timeout))).await;
    }
}

/// Polls Info on every endpoint every `info.interval`, like a querier does,
/// the first time one interval from now.
pub async fn poll_info(upstreams: Arc<Upstreams>, mut info: watch::Receiver<InfoConfig>) {
    let mut started = tokio::time::Instant::now();
    let mut watching = true;
    loop {
        let (interval, timeout) = {
            let info = info.borrow_and_update();
            (info.interval, info.timeout)
        };
        // A round that overran its interval is followed by the next at once.
        let due = tokio::time::sleep_until(started + interval);
        if watching {
            tokio::select! {
                _ = due => {}
                // A new interval counts from the last round.
                changed = info.changed() => {
                    watching = changed.is_ok();
                    continue;
                }
            }
        } else {
            due.await;
        }
        started = tokio::time::Instant::now();
        upstreams.refresh_all(timeout).await;
    }
}

/// Why an Info call gave no answer.
#[derive(Debug)]
pub enum InfoCallError {
    Status(tonic::Status),
    TimedOut(Duration),
}

/// Whether a call failed because its connection ended under it: the remote
/// (or an ingress or load balancer in front of it) closed or reset the
/// connection before or during the call. Such a status comes from our own
/// transport, never from the remote's answer, so it carries the transport's
/// error as its source; the caller cancelling never produces one (its call
/// is dropped, not failed).
fn closed_by_remote(status: &tonic::Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(error) = next {
        if let Some(error) = error.downcast_ref::<hyper::Error>()
            && (error.is_canceled() || error.is_incomplete_message() || error.is_closed())
        {
            return true;
        }
        // h2 keeps the socket's error inside, not as its source.
        let io = match error.downcast_ref::<h2::Error>() {
            Some(error) => error.get_io(),
            None => error.downcast_ref::<std::io::Error>(),
        };
        if io.is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        }) {
            return true;
        }
        next = error.source();
    }
    false
}

/// Whether the remote turned the call's stream away before reading it: the
/// stream was opened after the remote's GOAWAY (h2 fails exactly the streams
/// above the GOAWAY's last stream id with the GOAWAY's error), or the remote
/// reset it with REFUSED_STREAM.
fn refused_unread(status: &tonic::Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(error) = next {
        if let Some(error) = error.downcast_ref::<h2::Error>() {
            return (error.is_go_away() && error.is_remote())
                || error.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        next = error.source();
    }
    false
}

/// Whether the call's connection closed before its request was sent
/// (hyper's "canceled").
fn unsent(status: &tonic::Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(error) = next {
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// A gRPC status with everything known about its cause, for warnings and logs.
fn describe_status(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    // An ingress or proxy error page instead of a gRPC answer: the first
    // byte of HTML ('<' = 60) is read as the gRPC compression flag.
    if status.message().contains("message length too large") {
        text.push_str(" (a frame larger than remotes[].max_message_bytes)");
    }
    if status.message().contains("invalid compression flag: 60") {
        text.push_str(" (the remote answered with HTML, not gRPC: an error page from a proxy or ingress in front of it?)");
    }
    // Each cause the message does not already say, once: tonic's message
    // is often its source's text, under a "transport error" wrapper.
    let mut next = std::error::Error::source(status);
    while let Some(error) = next {
        let cause = tls::describe_one(error);
        if !cause.is_empty() && cause != "transport error" && !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        next = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_error_pages_are_called_out() {
        let status = tonic::Status::internal(
            "protocol error: received message with invalid compression flag: 60 (valid flags are 0 and 1) while receiving response with status: 502 Bad Gateway",
        );
        let text = describe_status(&status);
        assert!(
            text.contains("502 Bad Gateway") && text.contains("answered with HTML"),
            "{text}"
        );
        assert!(!describe_status(&tonic::Status::unavailable("down")).contains("HTML"));
    }

    #[test]
    fn streams_refused_unread_are_told_apart() {
        let h2_status = |reason| tonic::Status::from_error(Box::new(h2::Error::from(reason)));
        assert!(refused_unread(&h2_status(h2::Reason::REFUSED_STREAM)));
        assert!(!refused_unread(&h2_status(h2::Reason::CANCEL)));
        assert!(!refused_unread(&h2_status(h2::Reason::INTERNAL_ERROR)));
        assert!(!refused_unread(&tonic::Status::unavailable("down")));
    }
}
