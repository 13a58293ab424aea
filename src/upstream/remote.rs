//! A configured remote and its endpoint set, kept in step with the sets
//! discovery publishes; and [`Upstreams`], every remote, the set a config
//! reload swaps whole.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::{DialRecorder, Endpoint};
use crate::config::{InfoConfig, RemoteConfig};
use crate::discovery::{Dns, EndpointSet};
use crate::metrics::{MethodCalls, RemoteFamilies};
use crate::target::EndpointSpec;
use crate::tls::{ClientTls, TlsError};

/// A remote that could not be set up from its config.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("remote {remote}: TLS: {source}")]
    Tls { remote: String, source: TlsError },
}

/// A configured remote: its TLS identity and its current endpoints, which
/// follow the endpoint sets discovery publishes.
pub struct Remote {
    pub name: Arc<str>,
    /// Replaced when only where its endpoints are found changes.
    pub(super) config: ArcSwap<RemoteConfig>,
    pub(super) client_tls: Option<ClientTls>,
    pub(super) dns: Dns,
    pub(super) families: RemoteFamilies,
    pub(super) streams_per_connection: usize,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Its calls in progress, when `max_concurrent_calls` limits them.
    pub(super) calls: Option<Arc<tokio::sync::Semaphore>>,
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
            config: ArcSwap::from_pointee(config.clone()),
            client_tls,
            dns: dns.clone(),
            families: families.clone(),
            streams_per_connection,
            endpoints: ArcSwap::default(),
            calls: (config.max_concurrent_calls > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_calls))),
        }
    }

    /// The configuration it was built from, with the latest targets and
    /// file_sd files.
    pub fn config(&self) -> Arc<RemoteConfig> {
        self.config.load_full()
    }

    /// Takes a config that differs from the one it was built from only in
    /// where its endpoints are found (`targets`, `file_sd`), which
    /// discovery follows.
    pub fn set_config(&self, config: &RemoteConfig) {
        self.config.store(Arc::new(config.clone()));
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
        self.endpoints.load_full()
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
            match Endpoint::build(self, spec.clone(), None) {
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
        self.endpoints.store(Arc::new(next));
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
        let endpoint = Endpoint::build(self, spec, Some(recorder.clone()))?;
        Ok((endpoint, recorder))
    }
}

/// Every remote, in config order. The set is replaced as a whole when the
/// config is reloaded; a request reads one snapshot of it, and calls in
/// flight keep the endpoints they were started on.
#[derive(Debug, Default)]
pub struct Upstreams {
    remotes: ArcSwap<Vec<Arc<Remote>>>,
}

impl Upstreams {
    /// The current remotes.
    pub fn remotes(&self) -> Arc<Vec<Arc<Remote>>> {
        self.remotes.load_full()
    }

    /// Makes `remotes` the current set.
    pub fn replace(&self, remotes: Vec<Arc<Remote>>) {
        self.remotes.store(Arc::new(remotes));
    }

    /// A snapshot of every endpoint of every remote.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.remotes()
            .iter()
            .flat_map(|r| r.endpoints().iter().cloned().collect::<Vec<_>>())
            .collect()
    }
}
