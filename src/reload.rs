//! Reloading the configuration while running: the config file and every
//! certificate file it names are checked for changed content every
//! `reload.interval`, and SIGHUP reloads at once. A new config is loaded,
//! validated and built in full before it replaces the running one; one that
//! fails (a parse error, an unreadable certificate) is logged and counted,
//! and the running config stays.
//!
//! A file is compared by a hash of its content taken before it is read for
//! loading, so a change while it is loaded (a file still being written) is
//! seen as a change at the next check and loaded again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::{Config, ConfigError, ConfigSource, ValidConfig};
use crate::listener::ListenerCerts;
use crate::remotes::{RemoteSet, RemotesError};

/// Why a new config was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Remotes(#[from] RemotesError),
    #[error("listener TLS: {0}")]
    ListenerTls(#[from] crate::tls::TlsError),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Reload metric families, registered once.
#[derive(Clone)]
pub struct ReloadMetrics {
    successful: Gauge,
    last_success: Gauge<f64, AtomicU64>,
    reloads: Family<ResultLabels, Counter>,
    restart_required: Gauge,
}

impl ReloadMetrics {
    /// Registers the families, as after a successful load at start.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            successful: Gauge::default(),
            last_success: Gauge::default(),
            reloads: Family::default(),
            restart_required: Gauge::default(),
        };
        registry.register(
            "thanos_fanout_config_last_reload_successful",
            "Whether the last attempt to reload the config (and the certificates it names) succeeded (1) or left the running config in place (0)",
            metrics.successful.clone(),
        );
        registry.register(
            "thanos_fanout_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully, at start or by a reload (Unix time)",
            metrics.last_success.clone(),
        );
        registry.register(
            "thanos_fanout_config_reloads",
            "Attempts to reload the config, by result",
            metrics.reloads.clone(),
        );
        registry.register(
            "thanos_fanout_config_restart_required",
            "Whether the loaded config changes settings that only take effect after a restart (1)",
            metrics.restart_required.clone(),
        );
        for result in ["success", "failure"] {
            let _ = metrics.reloads.get_or_create(&ResultLabels { result });
        }
        metrics.succeeded();
        metrics
    }

    fn succeeded(&self) {
        self.successful.set(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success.set(now.as_secs_f64());
    }

    fn count(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }
}

/// How reloading has gone so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReloadStatus {
    /// Reloads attempted since start.
    pub attempts: u64,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// Keys changed in the config that only take effect after a restart.
    pub needs_restart: Vec<String>,
}

/// A file's content hash, or `None` if it could not be read.
fn fingerprint(path: &Path) -> Option<u64> {
    std::fs::read(path)
        .ok()
        .map(|bytes| xxhash_rust::xxh64::xxh64(&bytes, 0))
}

/// The files a config was read from, with their content hashes as of
/// before they were read.
#[derive(Debug, Default)]
struct Watched(BTreeMap<PathBuf, Option<u64>>);

impl Watched {
    /// The files' current hashes.
    fn now(&self) -> Vec<Option<u64>> {
        self.0.keys().map(|path| fingerprint(path)).collect()
    }

    /// Whether any file's content differs from when it was last read.
    fn changed(&self) -> bool {
        self.now()
            .into_iter()
            .zip(self.0.values())
            .any(|(now, seen)| now != *seen)
    }

    /// Waits until the files have not changed for [`SETTLE`] (within a
    /// bound): a file written in place, truncated first, may be seen empty
    /// or cut short, and still be a valid config.
    async fn settle(&self) {
        let mut last = self.now();
        for _ in 0..20 {
            tokio::time::sleep(SETTLE).await;
            let now = self.now();
            if now == last {
                return;
            }
            last = now;
        }
    }
}

/// How long changed files must stay unchanged before they are loaded.
const SETTLE: Duration = Duration::from_millis(250);

/// What reloading needs and keeps between attempts.
pub struct Reloader {
    source: ConfigSource,
    /// The config the service started with; what differs from it in
    /// settings a reload cannot change needs a restart.
    started: Config,
    /// The config running now.
    running: ValidConfig,
    watched: Watched,
    metrics: ReloadMetrics,
    status: watch::Sender<ReloadStatus>,
    /// The listeners' certificates, reloaded with the rest.
    listeners: ListenerCerts,
}

impl Reloader {
    /// Watches the files `config` (loaded from `source`) was read from.
    /// Create it before the certificates are loaded for the first time, so
    /// that nothing changed after that goes unnoticed.
    pub fn new(source: ConfigSource, config: &ValidConfig, metrics: ReloadMetrics) -> Self {
        let watched = Watched(
            source
                .file()
                .map(Path::to_owned)
                .into_iter()
                .chain(config.certificate_files())
                .map(|path| {
                    let seen = fingerprint(&path);
                    (path, seen)
                })
                .collect(),
        );
        Self {
            source,
            started: (**config).clone(),
            running: config.clone(),
            watched,
            metrics,
            status: watch::Sender::new(ReloadStatus::default()),
            listeners: ListenerCerts::default(),
        }
    }

    /// Also reloads the certificates of our own listeners.
    pub fn with_listeners(mut self, listeners: ListenerCerts) -> Self {
        self.listeners = listeners;
        self
    }

    /// How reloading goes, as it goes.
    pub fn status(&self) -> watch::Receiver<ReloadStatus> {
        self.status.subscribe()
    }

    /// Checks the files every `reload.interval` and reloads `remotes` when
    /// one changed, or at once on a SIGHUP; runs until dropped.
    pub async fn run(mut self, mut remotes: RemoteSet, mut hangups: Hangups) {
        loop {
            let interval = self.running.reload.interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {
                    if !self.watched.changed() {
                        continue;
                    }
                    self.watched.settle().await;
                }
                () = hangups.next() => {
                    tracing::info!("SIGHUP received; reloading the config");
                }
            }
            self.reload(&mut remotes).await;
        }
    }

    /// Loads the config again and applies it, or keeps the running one.
    async fn reload(&mut self, remotes: &mut RemoteSet) {
        let mut seen = BTreeMap::new();
        match self.attempt(remotes, &mut seen).await {
            Ok(config) => {
                let needs_restart = self.started.needs_restart(&config);
                if !needs_restart.is_empty() {
                    tracing::warn!(keys = %needs_restart.join(","), "config changes settings that need a restart to take effect; running without them");
                }
                self.metrics.succeeded();
                self.metrics.count("success");
                self.metrics
                    .restart_required
                    .set(i64::from(!needs_restart.is_empty()));
                self.running = config;
                self.watched = Watched(seen);
                self.status.send_modify(|status| {
                    status.attempts += 1;
                    status.last_error = None;
                    status.needs_restart = needs_restart;
                });
            }
            Err(error) => {
                tracing::error!(%error, "config reload failed; keeping the running config");
                self.metrics.successful.set(0);
                self.metrics.count("failure");
                // Also watch what this attempt read, so that repairing a
                // file the running config does not name is noticed too.
                self.watched.0.extend(seen);
                self.status.send_modify(|status| {
                    status.attempts += 1;
                    status.last_error = Some(error.to_string());
                });
            }
        }
    }

    /// Reads, validates and builds the config, then applies it. `seen`
    /// collects the hashes of the files read, each taken before reading.
    async fn attempt(
        &mut self,
        remotes: &mut RemoteSet,
        seen: &mut BTreeMap<PathBuf, Option<u64>>,
    ) -> Result<ValidConfig, ReloadError> {
        if let Some(file) = self.source.file() {
            seen.insert(file.to_owned(), fingerprint(file));
        }
        let config = self.source.load()?;
        for path in config.certificate_files() {
            let hash = fingerprint(&path);
            seen.insert(path, hash);
        }
        let change = remotes.prepare(&config)?;
        self.listeners
            .reload(config.grpc.tls.as_ref(), config.http.tls.as_ref())?;
        crate::tls::warn_about(&config);
        let applied = remotes.apply(change).await;
        if applied.is_empty() {
            tracing::info!(remotes = applied.kept, "config reloaded; remotes unchanged");
        } else {
            tracing::info!(
                added = %applied.added.join(","),
                changed = %applied.changed.join(","),
                removed = %applied.removed.join(","),
                kept = applied.kept,
                "config reloaded"
            );
        }
        Ok(config)
    }
}

/// SIGHUPs, listened for from creation on, so that none sent afterwards
/// is missed (or ends the process).
pub struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// SIGHUP keeps its default action (the process ends).
    pub fn ignored() -> Self {
        Self {
            #[cfg(unix)]
            signal: None,
        }
    }

    /// Listens for SIGHUP; must be called within the runtime.
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(signal) => Self {
                    signal: Some(signal),
                },
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGHUP; reloads follow file changes only");
                    Self::ignored()
                }
            }
        }
        #[cfg(not(unix))]
        Self::ignored()
    }

    /// Resolves on the next SIGHUP; never if not listening.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal
            && signal.recv().await.is_some()
        {
            return;
        }
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_content_and_files_that_appear_are_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let there = dir.path().join("there.pem");
        let later = dir.path().join("later.pem");
        std::fs::write(&there, "one").expect("write");
        let watched = Watched(
            [&there, &later]
                .into_iter()
                .map(|p| (p.clone(), fingerprint(p)))
                .collect(),
        );
        assert!(!watched.changed());
        // The same content written again is no change.
        std::fs::write(&there, "one").expect("write");
        assert!(!watched.changed());
        std::fs::write(&there, "two").expect("write");
        assert!(watched.changed());
        std::fs::write(&there, "one").expect("write");
        std::fs::write(&later, "").expect("write");
        assert!(watched.changed());
    }
}
