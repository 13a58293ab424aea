//! The discovery loop of one remote: resolves each target when its answer
//! expires (never later than `refresh_interval`), re-reads file_sd files when
//! they change, and publishes the union of endpoints on a `watch` channel.
//!
//! A failed lookup keeps the last good endpoints. A name that is gone
//! (NXDOMAIN, empty answer) keeps them too, until it has been gone for
//! `stale_after`: one blip never empties a remote.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Dns, LookupError, read_file_sd};
use crate::config::{DiscoveryConfig, RemoteConfig};
use crate::target::{EndpointSpec, Target, TargetError};

/// A remote's endpoints as discovery last saw them, sorted.
pub type EndpointSet = Arc<Vec<EndpointSpec>>;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
enum LookupResult {
    Success,
    /// NXDOMAIN or an empty answer.
    Missing,
    /// Timeout, SERVFAIL, network error.
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    remote: String,
    result: LookupResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemoteLabels {
    remote: String,
}

/// Discovery metric families, registered once.
#[derive(Clone, Default)]
pub struct DiscoveryMetrics {
    lookups: Family<LookupLabels, Counter>,
    endpoints: Family<RemoteLabels, Gauge>,
    file_errors: Family<RemoteLabels, Counter>,
}

impl DiscoveryMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "thanos_fanout_discovery_lookups",
            "DNS lookups of remote targets, by result (failed lookups keep the last good endpoints)",
            metrics.lookups.clone(),
        );
        registry.register(
            "thanos_fanout_remote_endpoints",
            "Endpoints currently known for a remote",
            metrics.endpoints.clone(),
        );
        registry.register(
            "thanos_fanout_discovery_file_errors",
            "file_sd files that could not be read or parsed (the last good targets are kept)",
            metrics.file_errors.clone(),
        );
        metrics
    }

    /// Drops the label children of a remote that is no longer configured.
    pub fn forget_remote(&self, remote: &str) {
        for result in [
            LookupResult::Success,
            LookupResult::Missing,
            LookupResult::Failed,
        ] {
            self.lookups.remove(&LookupLabels {
                remote: remote.to_owned(),
                result,
            });
        }
        let labels = RemoteLabels {
            remote: remote.to_owned(),
        };
        self.endpoints.remove(&labels);
        self.file_errors.remove(&labels);
    }

    fn lookup(&self, remote: &str, result: LookupResult) {
        self.lookups
            .get_or_create(&LookupLabels {
                remote: remote.to_owned(),
                result,
            })
            .inc();
    }
}

/// What we know about one target.
#[derive(Debug)]
struct TargetState {
    endpoints: Vec<EndpointSpec>,
    next_refresh: Instant,
    /// Since when the name has been reported gone, if it is.
    missing_since: Option<Instant>,
}

/// What one remote's discovery looks for, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoverySettings {
    targets: Vec<Target>,
    files: Vec<PathBuf>,
    config: DiscoveryConfig,
}

impl DiscoverySettings {
    /// `remote`'s targets (parsed) and file_sd files, found as `config` says.
    pub fn new(remote: &RemoteConfig, config: &DiscoveryConfig) -> Result<Self, TargetError> {
        Ok(Self {
            targets: remote
                .targets
                .iter()
                .map(|raw| Target::parse(raw))
                .collect::<Result<_, _>>()?,
            files: remote.file_sd.clone(),
            config: config.clone(),
        })
    }
}

/// Keeps one remote's endpoint set up to date.
pub struct RemoteDiscovery {
    name: Arc<str>,
    dns: Dns,
    settings: DiscoverySettings,
    /// Last good text and targets of each file.
    file_targets: HashMap<PathBuf, (String, Vec<Target>)>,
    next_file_check: Instant,
    targets: HashMap<Target, TargetState>,
    published: Option<BTreeSet<EndpointSpec>>,
    tx: watch::Sender<EndpointSet>,
    metrics: DiscoveryMetrics,
}

impl RemoteDiscovery {
    /// Discovery for the remote `name`, and the channel its endpoint sets
    /// come on (empty until the first [`RemoteDiscovery::refresh`]).
    pub fn new(
        name: &str,
        settings: DiscoverySettings,
        dns: Dns,
        metrics: DiscoveryMetrics,
    ) -> (Self, watch::Receiver<EndpointSet>) {
        let (tx, rx) = watch::channel(EndpointSet::default());
        let discovery = Self {
            name: name.into(),
            dns,
            settings,
            file_targets: HashMap::new(),
            next_file_check: Instant::now(),
            targets: HashMap::new(),
            published: None,
            tx,
            metrics,
        };
        (discovery, rx)
    }

    /// Takes new settings. Targets that stay keep what is known about them
    /// (their endpoints, and how long a name has been gone); new targets and
    /// files are looked at on the next pass.
    fn reconfigure(&mut self, settings: DiscoverySettings) {
        let now = Instant::now();
        self.file_targets
            .retain(|path, _| settings.files.contains(path));
        if settings.files != self.settings.files
            || settings.config.file_interval != self.settings.config.file_interval
        {
            self.next_file_check = now;
        }
        let latest = now + settings.config.refresh_interval;
        for state in self.targets.values_mut() {
            state.next_refresh = state.next_refresh.min(latest);
        }
        tracing::info!(remote = %self.name, targets = settings.targets.len(), files = settings.files.len(), "discovery settings changed");
        self.settings = settings;
    }

    fn name(&self) -> &str {
        &self.name
    }

    /// Re-reads file_sd files whose content changed; a file that cannot be
    /// read or parsed keeps its last good targets.
    fn check_files(&mut self, now: Instant) {
        if now < self.next_file_check {
            return;
        }
        self.next_file_check = now + self.settings.config.file_interval;
        for path in &self.settings.files {
            match read_file_sd(path) {
                Ok((text, targets)) => {
                    let changed = self
                        .file_targets
                        .get(path)
                        .is_none_or(|(old, _)| *old != text);
                    if changed {
                        tracing::info!(remote = %self.name, file = %path.display(), targets = targets.len(), "file_sd targets loaded");
                        self.file_targets.insert(path.clone(), (text, targets));
                    }
                }
                Err(error) => {
                    tracing::warn!(remote = %self.name, %error, "file_sd unreadable; keeping its last targets");
                    self.metrics
                        .file_errors
                        .get_or_create(&RemoteLabels {
                            remote: self.name.to_string(),
                        })
                        .inc();
                }
            }
        }
    }

    fn all_targets(&self) -> BTreeSet<Target> {
        self.settings
            .targets
            .iter()
            .chain(self.file_targets.values().flat_map(|(_, t)| t))
            .cloned()
            .collect()
    }

    /// One pass: files, due lookups, publication of a changed set.
    pub async fn refresh(&mut self) {
        let now = Instant::now();
        self.check_files(now);
        let wanted = self.all_targets();
        self.targets.retain(|t, _| wanted.contains(t));
        let due: Vec<Target> = wanted
            .into_iter()
            .filter(|t| self.targets.get(t).is_none_or(|s| s.next_refresh <= now))
            .collect();
        let dns = &self.dns;
        let answers =
            futures::future::join_all(due.iter().map(|t| async move { dns.resolve(t).await }))
                .await;
        for (target, answer) in due.into_iter().zip(answers) {
            self.apply(target, answer, Instant::now());
        }
        self.publish()
    }

    fn apply(
        &mut self,
        target: Target,
        answer: Result<super::dns::Answer, LookupError>,
        now: Instant,
    ) {
        let refresh = self.settings.config.refresh_interval;
        let name = self.name().to_owned();
        let state = self.targets.entry(target.clone()).or_insert(TargetState {
            endpoints: Vec::new(),
            next_refresh: now,
            missing_since: None,
        });
        match answer {
            Ok(answer) => {
                if !target.is_ip() {
                    self.metrics.lookup(&name, LookupResult::Success);
                }
                if state.missing_since.take().is_some() {
                    tracing::info!(remote = %name, %target, "name resolves again");
                }
                // Honour short TTLs, but never hammer the server nor wait
                // longer than the refresh interval (which may itself be
                // under a second).
                let ttl = answer.valid_until.saturating_duration_since(now);
                let floor = Duration::from_secs(1).min(refresh);
                state.next_refresh = now + ttl.clamp(floor, refresh);
                state.endpoints = answer.endpoints;
            }
            Err(LookupError::Failed(error)) => {
                self.metrics.lookup(&name, LookupResult::Failed);
                tracing::warn!(remote = %name, %target, %error, kept = state.endpoints.len(), "lookup failed; keeping the last good endpoints");
                state.next_refresh = now + refresh.min(Duration::from_secs(5));
            }
            Err(LookupError::Missing(error)) => {
                self.metrics.lookup(&name, LookupResult::Missing);
                let since = *state.missing_since.get_or_insert(now);
                let gone_for = now.saturating_duration_since(since);
                if state.endpoints.is_empty() {
                    tracing::warn!(remote = %name, %target, %error, "name has no endpoints");
                } else if gone_for >= self.settings.config.stale_after {
                    tracing::warn!(remote = %name, %target, %error, gone_for = ?gone_for, removed = state.endpoints.len(), "name gone for longer than stale_after; removing its endpoints");
                    state.endpoints.clear();
                } else {
                    tracing::warn!(remote = %name, %target, %error, gone_for = ?gone_for, stale_after = ?self.settings.config.stale_after, "name reported gone; keeping its endpoints until stale_after");
                }
                state.next_refresh = now + refresh.min(Duration::from_secs(5));
            }
        }
    }

    fn publish(&mut self) {
        let set: BTreeSet<EndpointSpec> = self
            .targets
            .values()
            .flat_map(|s| s.endpoints.iter().cloned())
            .collect();
        if self.published.as_ref() == Some(&set) {
            return;
        }
        let specs: Vec<EndpointSpec> = set.iter().cloned().collect();
        self.metrics
            .endpoints
            .get_or_create(&RemoteLabels {
                remote: self.name.to_string(),
            })
            .set(specs.len() as i64);
        tracing::info!(
            remote = %self.name,
            endpoints = %specs.iter().map(|s| s.dial.to_string()).collect::<Vec<_>>().join(","),
            "endpoint set changed"
        );
        self.tx.send_replace(Arc::new(specs));
        self.published = Some(set);
    }

    /// When the next pass is due.
    fn next_due(&self) -> Instant {
        self.targets
            .values()
            .map(|s| s.next_refresh)
            .chain((!self.settings.files.is_empty()).then_some(self.next_file_check))
            .min()
            .unwrap_or_else(|| Instant::now() + self.settings.config.refresh_interval)
    }

    /// Runs until nobody follows the endpoint sets any more, or nobody can
    /// send new settings; takes settings sent on `updates` at once.
    pub async fn run(mut self, mut updates: watch::Receiver<DiscoverySettings>) {
        loop {
            let wake = self
                .next_due()
                .max(Instant::now() + Duration::from_millis(100));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                changed = updates.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let settings = updates.borrow_and_update().clone();
                    self.reconfigure(settings);
                }
                _ = self.tx.closed() => return,
            }
            self.refresh().await;
        }
    }
}
