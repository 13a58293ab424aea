//! The running remotes: each built from its config section with its TLS
//! loaded, its discovery, and the task that follows it; and changing them to
//! a new config.
//!
//! A new config is first prepared in full (every target parsed, every
//! certificate loaded) without touching anything running, so a bad one
//! changes nothing. Applying it then: a remote whose settings and
//! certificate files are unchanged keeps its endpoints, connections and
//! discovery (which takes new targets or discovery settings as they come);
//! a new or changed remote is built, its endpoints discovered and asked for
//! Info, and only then published, together with the removal of the remotes
//! that went, in one swap of the set requests read. Calls in flight keep
//! the endpoints they started on, so replaced and removed remotes finish
//! them.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{DiscoveryConfig, InfoConfig, RemoteConfig, ValidConfig};
use crate::discovery::{DiscoveryMetrics, DiscoverySettings, Dns, RemoteDiscovery};
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

/// One running remote.
struct Entry {
    remote: Arc<Remote>,
    identity: Identity,
    settings: watch::Sender<DiscoverySettings>,
    /// Discovery and the remote following it.
    task: JoinHandle<()>,
}

impl Entry {
    /// Stops discovery and waits until it has, so nothing it does (such as
    /// counting a lookup) follows.
    async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What becomes of one remote of a new config.
enum Planned {
    /// Its connections stay; its discovery takes these settings.
    Keep {
        name: Arc<str>,
        settings: DiscoverySettings,
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
    /// Whether a remote of that name runs now.
    replaces: bool,
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
                replaces: running.is_some(),
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
        let starting = change.remotes.iter().filter_map(|planned| match planned {
            Planned::Start(starting) => {
                let name = starting.remote.name.to_string();
                match starting.replaces {
                    true => applied.changed.push(name),
                    false => applied.added.push(name),
                }
                Some(self.start(
                    starting.remote.clone(),
                    starting.identity.clone(),
                    starting.settings.clone(),
                ))
            }
            Planned::Keep { .. } => None,
        });
        let mut started = futures::future::join_all(starting).await.into_iter();
        let mut previous = std::mem::take(&mut self.entries);
        for planned in change.remotes {
            let entry = match planned {
                Planned::Keep { name, settings } => {
                    let Some(at) = previous.iter().position(|e| e.remote.name == name) else {
                        continue;
                    };
                    let entry = previous.swap_remove(at);
                    entry.settings.send_if_modified(|current| {
                        let changed = *current != settings;
                        *current = settings;
                        changed
                    });
                    applied.kept += 1;
                    entry
                }
                Planned::Start(_) => match started.next() {
                    Some(entry) => entry,
                    None => continue,
                },
            };
            self.entries.push(entry);
        }
        self.upstreams
            .replace(self.entries.iter().map(|e| e.remote.clone()).collect());
        // What is left was replaced or removed.
        for mut old in previous {
            old.stop().await;
            let name = old.remote.name.clone();
            let addresses: Vec<String> = old
                .remote
                .endpoints()
                .iter()
                .map(|e| e.address.clone())
                .collect();
            match self.entry(&name) {
                Some(new) => {
                    // Children the new endpoints share stay.
                    let current = new.remote.endpoints();
                    for address in &addresses {
                        if !current.iter().any(|e| e.address == *address) {
                            self.families.forget_endpoint(&name, address);
                        }
                    }
                }
                None => {
                    self.families
                        .forget_remote(&name, addresses.iter().map(String::as_str));
                    self.discovery_metrics.forget_remote(&name);
                    applied.removed.push(name.to_string());
                }
            }
        }
        applied
    }

    /// Discovers `remote`'s endpoints and asks them for Info, then leaves
    /// discovery and the remote following it running.
    async fn start(
        &self,
        remote: Arc<Remote>,
        identity: Identity,
        settings: DiscoverySettings,
    ) -> Entry {
        let (updates, updated) = watch::channel(settings.clone());
        let (mut discovery, mut sets) = RemoteDiscovery::new(
            &remote.name,
            settings,
            self.dns.clone(),
            self.discovery_metrics.clone(),
        );
        discovery.refresh().await;
        let added = remote.set_endpoints(&sets.borrow_and_update());
        let timeout = self.info.borrow().timeout;
        futures::future::join_all(added.iter().map(|e| e.refresh_info(timeout))).await;
        let info = self.info.subscribe();
        let task = tokio::spawn({
            let remote = remote.clone();
            async move {
                tokio::join!(discovery.run(updated), remote.follow(sets, info));
            }
        });
        Entry {
            remote,
            identity,
            settings: updates,
            task,
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
