//! The running remotes: each built from its config section with its TLS
//! loaded, its discovery, and the task that follows it; and changing them to
//! a new config.
//!
//! A new config is first prepared in full (every target parsed, every
//! certificate loaded) without touching anything running, so a bad one
//! changes nothing. Applying it then: a remote whose settings and
//! certificate files are unchanged keeps its endpoints and connections; a
//! new or changed remote is built, its endpoints are found and asked for
//! Info, and only then is it published, together with the removal of the
//! remotes that went, in one swap of the set requests read. Calls in flight
//! keep the endpoints they started on, so replaced and removed remotes
//! finish them. Discovery belongs to the remote's name: it stays through a
//! rebuild (with its last good answers) and takes new targets and settings
//! as they come.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{DiscoveryConfig, InfoConfig, RemoteConfig, ValidConfig};
use crate::discovery::{DiscoveryMetrics, DiscoverySettings, Dns, EndpointSet, RemoteDiscovery};
use crate::metrics::RemoteFamilies;
use crate::target::TargetError;
use crate::tls::{ClientTls, TlsFiles};
use crate::upstream::{Remote, UpstreamError, Upstreams};

/// Why a config's remotes could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RemotesError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("discovery: {0}")]
    Resolver(String),
    #[error("remote {remote}: {source}")]
    Target { remote: String, source: TargetError },
}

/// What decides whether a remote's connections can stay: its settings
/// besides where its endpoints are found, and its certificate files'
/// contents.
#[derive(Debug, Clone, PartialEq)]
struct Identity {
    config: RemoteConfig,
    tls: Option<u64>,
}

impl Identity {
    fn new(config: &RemoteConfig, tls: Option<&TlsFiles>) -> Self {
        let mut config = config.clone();
        // Discovery follows these without new connections.
        config.targets.clear();
        config.file_sd.clear();
        Self {
            config,
            tls: tls.map(TlsFiles::fingerprint),
        }
    }
}

/// A spawned task, aborted when dropped.
struct Task(JoinHandle<()>);

impl Task {
    fn spawn(future: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(future))
    }

    /// Aborts the task and waits until it has stopped, so nothing it does
    /// (such as creating a metric child) comes after.
    async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One remote's discovery, running.
struct Discovery {
    settings: watch::Sender<DiscoverySettings>,
    /// Endpoint sets as they are published; also keeps discovery running.
    sets: watch::Receiver<EndpointSet>,
    task: Task,
}

impl Discovery {
    fn update(&self, settings: DiscoverySettings) {
        self.settings.send_if_modified(|current| {
            let changed = *current != settings;
            *current = settings;
            changed
        });
    }
}

/// One running remote.
struct Entry {
    remote: Arc<Remote>,
    identity: Identity,
    discovery: Discovery,
    /// The remote following discovery's endpoint sets.
    follow: Task,
}

/// What becomes of one remote of a new config.
enum Planned {
    /// Its connections stay; its discovery takes these settings.
    Keep {
        name: Arc<str>,
        settings: DiscoverySettings,
        /// Its new config, the same but for targets and file_sd.
        config: Box<RemoteConfig>,
    },
    /// New, or changed in a way its connections cannot follow: built, and
    /// started when the change is applied.
    Start(Box<Starting>),
}

/// A remote built from a new config.
struct Starting {
    remote: Arc<Remote>,
    identity: Identity,
    settings: DiscoverySettings,
}

/// A new config, checked and built, not applied yet.
pub struct Change {
    remotes: Vec<Planned>,
    discovery: DiscoveryConfig,
    /// A resolver for changed name servers or refresh interval.
    dns: Option<Dns>,
    info: InfoConfig,
}

/// What applying a change did, by remote name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub kept: usize,
}

impl Applied {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// The running remotes, published to requests through [`Upstreams`].
pub struct RemoteSet {
    upstreams: Arc<Upstreams>,
    entries: Vec<Entry>,
    /// Shared by every discovery and connection; reconfigured in place.
    dns: Dns,
    discovery: DiscoveryConfig,
    info: watch::Sender<InfoConfig>,
    families: RemoteFamilies,
    discovery_metrics: DiscoveryMetrics,
    /// Not reloaded: it sizes connection windows (`fanout` needs a restart).
    streams_per_connection: usize,
}

impl RemoteSet {
    /// No remotes yet, with `config`'s resolver and Info settings; see
    /// [`RemoteSet::prepare`] and [`RemoteSet::apply`].
    pub fn new(
        config: &ValidConfig,
        upstreams: Arc<Upstreams>,
        families: RemoteFamilies,
        discovery_metrics: DiscoveryMetrics,
    ) -> Result<Self, RemotesError> {
        Ok(Self {
            upstreams,
            entries: Vec::new(),
            dns: resolver(&config.discovery)?,
            discovery: config.discovery.clone(),
            info: watch::Sender::new(config.info.clone()),
            families,
            discovery_metrics,
            streams_per_connection: config.fanout.streams_per_connection,
        })
    }

    /// The Info settings, as they change.
    pub fn info(&self) -> watch::Receiver<InfoConfig> {
        self.info.subscribe()
    }

    /// Checks and builds everything `config` needs that can fail: targets,
    /// certificates, a new resolver. Touches nothing running.
    pub fn prepare(&self, config: &ValidConfig) -> Result<Change, RemotesError> {
        let dns = (config.discovery.nameservers != self.discovery.nameservers
            || config.discovery.refresh_interval != self.discovery.refresh_interval)
            .then(|| resolver(&config.discovery))
            .transpose()?;
        let mut remotes = Vec::with_capacity(config.remotes.len());
        for remote in &config.remotes {
            let settings = DiscoverySettings::new(remote, &config.discovery).map_err(|source| {
                RemotesError::Target {
                    remote: remote.name.clone(),
                    source,
                }
            })?;
            let tls_error = |source| UpstreamError::Tls {
                remote: remote.name.clone(),
                source,
            };
            let files = remote
                .tls
                .as_ref()
                .map(TlsFiles::read)
                .transpose()
                .map_err(tls_error)?;
            let identity = Identity::new(remote, files.as_ref());
            let running = self.entry(&remote.name);
            if let Some(entry) = running.filter(|e| e.identity == identity) {
                remotes.push(Planned::Keep {
                    name: entry.remote.name.clone(),
                    settings,
                    config: Box::new(remote.clone()),
                });
                continue;
            }
            let client_tls = files
                .as_ref()
                .map(ClientTls::from_files)
                .transpose()
                .map_err(tls_error)?;
            let built = Remote::new(
                remote,
                client_tls,
                &self.families,
                // The shared resolver, which a new one replaces on apply.
                &self.dns,
                self.streams_per_connection,
            );
            remotes.push(Planned::Start(Box::new(Starting {
                remote: Arc::new(built),
                identity,
                settings,
            })));
        }
        Ok(Change {
            remotes,
            discovery: config.discovery.clone(),
            dns,
            info: config.info.clone(),
        })
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| *e.remote.name == *name)
    }

    /// Applies a prepared change; returns once new and changed remotes are
    /// discovered, asked for Info and published.
    pub async fn apply(&mut self, change: Change) -> Applied {
        if let Some(dns) = &change.dns {
            self.dns.replace_with(dns);
        }
        self.discovery = change.discovery;
        self.info.send_if_modified(|info| {
            let changed = *info != change.info;
            *info = change.info;
            changed
        });
        let mut applied = Applied::default();
        let mut previous = std::mem::take(&mut self.entries);
        let mut take = |name: &str| {
            let at = previous.iter().position(|e| *e.remote.name == *name)?;
            Some(previous.swap_remove(at))
        };
        // Remotes replaced by a rebuilt one, with the task that follows
        // discovery for them.
        let mut replaced = Vec::new();
        // In config order: kept entries, and a place for each started one.
        let mut slots = Vec::with_capacity(change.remotes.len());
        let mut starting = Vec::new();
        for planned in change.remotes {
            match planned {
                Planned::Keep {
                    name,
                    settings,
                    config,
                } => {
                    if let Some(entry) = take(&name) {
                        entry.remote.set_config(&config);
                        entry.discovery.update(settings);
                        applied.kept += 1;
                        slots.push(Some(entry));
                    }
                }
                Planned::Start(new) => {
                    let Starting {
                        remote,
                        identity,
                        settings,
                    } = *new;
                    let name = remote.name.to_string();
                    let discovery = match take(&name) {
                        Some(old) => {
                            old.discovery.update(settings.clone());
                            replaced.push((old.remote, old.follow));
                            applied.changed.push(name);
                            Some(old.discovery)
                        }
                        None => {
                            applied.added.push(name);
                            None
                        }
                    };
                    starting.push(self.start(remote, identity, settings, discovery));
                    slots.push(None);
                }
            }
        }
        let mut started = futures::future::join_all(starting).await.into_iter();
        self.entries = slots
            .into_iter()
            .filter_map(|slot| slot.or_else(|| started.next()))
            .collect();
        self.upstreams
            .replace(self.entries.iter().map(|e| e.remote.clone()).collect());

        for (old, follow) in replaced {
            follow.stop().await;
            // Children the new endpoints share stay.
            let current = self
                .entry(&old.name)
                .map(|e| e.remote.endpoints())
                .unwrap_or_default();
            for endpoint in old.endpoints().iter() {
                if !current.iter().any(|e| e.address == endpoint.address) {
                    self.families.forget_endpoint(&old.name, &endpoint.address);
                }
            }
        }
        // What is left was removed.
        for old in previous {
            old.follow.stop().await;
            old.discovery.task.stop().await;
            let endpoints = old.remote.endpoints();
            self.families.forget_remote(
                &old.remote.name,
                endpoints.iter().map(|e| e.address.as_str()),
            );
            self.discovery_metrics.forget_remote(&old.remote.name);
            applied.removed.push(old.remote.name.to_string());
        }
        applied
    }

    /// Starts `remote`: discovers its endpoints (unless it takes over the
    /// `discovery` of the remote it replaces), asks them for Info, and
    /// leaves it following discovery.
    async fn start(
        &self,
        remote: Arc<Remote>,
        identity: Identity,
        settings: DiscoverySettings,
        discovery: Option<Discovery>,
    ) -> Entry {
        let discovery = match discovery {
            Some(discovery) => discovery,
            None => self.discover(&remote.name, settings).await,
        };
        let mut sets = discovery.sets.clone();
        let added = remote.set_endpoints(&sets.borrow_and_update());
        let timeout = self.info.borrow().timeout;
        futures::future::join_all(added.iter().map(|e| e.refresh_info(timeout))).await;
        let info = self.info.subscribe();
        let follow = Task::spawn({
            let remote = remote.clone();
            async move { remote.follow(sets, info).await }
        });
        Entry {
            remote,
            identity,
            discovery,
            follow,
        }
    }

    /// Discovery for a new remote, after its first pass.
    async fn discover(&self, name: &str, settings: DiscoverySettings) -> Discovery {
        let (updates, updated) = watch::channel(settings.clone());
        let (mut discovery, sets) = RemoteDiscovery::new(
            name,
            settings,
            self.dns.clone(),
            self.discovery_metrics.clone(),
        );
        discovery.refresh().await;
        Discovery {
            settings: updates,
            sets,
            task: Task::spawn(discovery.run(updated)),
        }
    }
}

fn resolver(config: &DiscoveryConfig) -> Result<Dns, RemotesError> {
    Dns::new(&config.nameserver_addrs(), config.refresh_interval).map_err(RemotesError::Resolver)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(targets: &[&str]) -> RemoteConfig {
        serde_yaml::from_str(&format!("{{name: a, targets: {targets:?}}}")).expect("remote")
    }

    #[test]
    fn where_endpoints_are_found_is_not_part_of_the_identity() {
        let running = Identity::new(&remote(&["h:1"]), None);
        let mut moved = remote(&["h:2", "dns+h:3"]);
        moved.file_sd.push("/etc/sd.yaml".into());
        assert_eq!(running, Identity::new(&moved, None));

        let mut slower = remote(&["h:1"]);
        slower.timeout = std::time::Duration::from_secs(1);
        assert_ne!(running, Identity::new(&slower, None));
    }
}
