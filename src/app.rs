//! Wires the components together: builds remotes from the config (loading
//! certificates) before binding any port, owns the metrics registry, starts
//! the Info poller, config reloads and both listeners, and drives shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{ConfigSource, ValidConfig};
use crate::discovery::DiscoveryMetrics;
use crate::fanout::{Fanout, Prefetch};
use crate::listener::{ListenerCerts, TlsListener};
use crate::metrics::{RemoteFamilies, ServerMetrics};
pub use crate::readiness::{Phase, Readiness};
use crate::reload::{Hangups, ReloadMetrics, ReloadStatus, Reloader};
use crate::remotes::{RemoteSet, RemotesError};
use crate::server::{self, ApiService, InfoService, Services, StoreService};
use crate::status::{Settings, StatusPage};
use crate::tls;
use crate::upstream::{self, Upstreams};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Remotes(#[from] RemotesError),
    #[error("listen on {what} address {address}: {source}")]
    Bind {
        what: &'static str,
        address: String,
        source: std::io::Error,
    },
    #[error("listener TLS: {0}")]
    ListenerTls(#[from] tls::TlsError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// A started service; dropping it without `shutdown` leaves tasks to the runtime.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub upstreams: Arc<Upstreams>,
    pub registry: Arc<Registry>,
    pub ready: Readiness,
    /// How config reloads go.
    pub reloads: watch::Receiver<ReloadStatus>,
    stop: watch::Sender<bool>,
    servers: JoinSet<Result<(), AppError>>,
    background: JoinSet<()>,
    health: tonic_health::server::HealthReporter,
    grace: Duration,
    shutdown_delay: Duration,
}

impl Running {
    /// Stops accepting connections, tells connected clients to go (HTTP/2
    /// GOAWAY), lets calls in flight finish within the grace period, then
    /// stops. At once: [`Running::run_until`] waits `grpc.shutdown_delay`
    /// first.
    pub async fn shutdown(mut self) -> Result<(), AppError> {
        self.not_ready().await;
        let _ = self.stop.send(true);
        self.background.abort_all();
        let drain = async {
            while let Some(joined) = self.servers.join_next().await {
                if let Ok(Err(e)) = joined {
                    return Err(e);
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.grace, drain).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "in-flight calls did not finish within the grace period; stopping");
                Ok(())
            }
        }
    }

    /// Reports not ready on `/-/ready` and gRPC health; everything else
    /// is still served.
    async fn not_ready(&self) {
        self.ready.set_draining();
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    }

    /// Waits until a server stops on its own (an error) or `signal` resolves,
    /// then shuts down the way a rolling update needs: first not ready while
    /// still serving, new connections included, for `grpc.shutdown_delay`
    /// (the time load balancers such as Kubernetes endpoints and kube-proxy
    /// take to stop sending new connections here; `signal` again cuts it
    /// short), then [`Running::shutdown`].
    pub async fn run_until<F>(mut self, mut signal: impl FnMut() -> F) -> Result<(), AppError>
    where
        F: std::future::Future<Output = ()>,
    {
        tokio::select! {
            _ = signal() => {
                self.not_ready().await;
                if !self.shutdown_delay.is_zero() {
                    tracing::info!(
                        delay = ?self.shutdown_delay,
                        grace = ?self.grace,
                        "shutting down: not ready, serving on until load balancers stop sending new connections (signal again to skip)"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(self.shutdown_delay) => {}
                        _ = signal() => tracing::info!("second signal: not waiting any longer"),
                    }
                }
                tracing::info!(grace = ?self.grace, "shutting down: closing listeners, asking clients to go, finishing calls in flight");
                self.shutdown().await
            }
            Some(joined) = self.servers.join_next() => {
                let _ = self.stop.send(true);
                match joined {
                    Ok(result) => result,
                    Err(e) => Err(AppError::Http(std::io::Error::other(e))),
                }
            }
        }
    }
}

/// Binds a listener and reports the address it got (the port may be 0 in config).
async fn bind(what: &'static str, address: &str) -> Result<(TcpListener, SocketAddr), AppError> {
    let err = |source| AppError::Bind {
        what,
        address: address.to_owned(),
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// How the running config is read again, and whether SIGHUP asks for it.
#[derive(Debug, Clone)]
pub struct ReloadFrom {
    pub source: ConfigSource,
    pub sighup: bool,
}

/// Builds everything from a validated `config` and starts serving. The
/// certificate files `config` names are reloaded when they change.
pub async fn start(config: ValidConfig) -> Result<Running, AppError> {
    let reload = ReloadFrom {
        source: ConfigSource::Fixed(Box::new((*config).clone())),
        sighup: false,
    };
    start_with(config, reload).await
}

/// Like [`start`], for a `config` that was loaded from `reload.source`:
/// when that source's files change (or on SIGHUP, if asked), it is read
/// again and applied.
pub async fn start_with(config: ValidConfig, reload: ReloadFrom) -> Result<Running, AppError> {
    tls::install_crypto_provider();
    let mut registry = Registry::default();
    crate::metrics::register_build_info(&mut registry);
    let families = RemoteFamilies::register(&mut registry);
    let server_metrics = ServerMetrics::register(&mut registry);
    let discovery_metrics = DiscoveryMetrics::register(&mut registry);
    let reload_metrics = ReloadMetrics::register(&mut registry);
    let hangups = match reload.sighup {
        true => Hangups::listen(),
        false => Hangups::ignored(),
    };
    // Hashes the files before the certificates are first read.
    let reloader = Reloader::new(reload.source, &config, reload_metrics);
    tls::warn_about(&config);
    let listener_certs = ListenerCerts::load(config.grpc.tls.as_ref(), config.http.tls.as_ref())?;
    let reloader = reloader.with_listeners(listener_certs.clone());
    let upstreams = Arc::new(Upstreams::default());
    let mut remotes = RemoteSet::new(&config, upstreams.clone(), families, discovery_metrics)?;
    // Certificates and targets are checked here, before any port is bound.
    let first = remotes.prepare(&config)?;
    let prefetch = Prefetch::new(
        config.fanout.prefetch_bytes,
        config.fanout.prefetch_bytes_total,
    );
    prefetch.register(&mut registry);
    let fanout = Arc::new(
        Fanout::new(upstreams.clone(), prefetch, config.fanout.buffer_frames)
            .with_limits(config.limits.clone()),
    );

    let (grpc_listener, grpc_addr) = bind("gRPC", &config.grpc.listen).await?;
    let (http_listener, http_addr) = bind("HTTP", &config.http.listen).await?;

    let ready = Readiness::default();
    let health_reporter = tonic_health::server::HealthReporter::new();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;

    let reloads = reloader.status();
    let mut background = JoinSet::new();
    {
        let health_reporter = health_reporter.clone();
        let upstreams = upstreams.clone();
        let ready = ready.clone();
        background.spawn(async move {
            // First every remote's endpoints, then their Info, then ready.
            remotes.apply(first).await;
            let endpoints = upstreams.endpoints();
            let healthy = endpoints.iter().filter(|e| e.queryable().is_some()).count();
            tracing::info!(
                healthy,
                endpoints = endpoints.len(),
                "first Info round done; ready"
            );
            ready.set_ready();
            if ready.is_ready() {
                health_reporter
                    .set_service_status("", tonic_health::ServingStatus::Serving)
                    .await;
            }
            // Discovery, the remotes following it, Info polling and reloads
            // live as long as this task: shutdown aborts it, and them with it.
            let poll = upstream::poll_info(upstreams.clone(), remotes.info());
            tokio::join!(poll, reloader.run(remotes, hangups));
        });
    }

    let registry = Arc::new(registry);
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut servers = JoinSet::new();
    let services = Services {
        apis: ApiService::new(fanout.clone(), server_metrics.clone()),
        store: StoreService::new(fanout, server_metrics)
            .with_concurrent_series_calls(config.limits.concurrent_series_calls),
        info: InfoService::new(upstreams.clone(), ready.subscribe()),
        health: health_reporter.clone(),
        max_message_bytes: config.grpc.max_message_bytes,
        connections: server::ConnectionLimits {
            max_concurrent_streams: config.grpc.max_concurrent_streams,
            max_header_list_bytes: config.grpc.max_header_list_bytes,
            keepalive_interval: Some(config.grpc.keepalive_interval)
                .filter(|interval| !interval.is_zero()),
            keepalive_timeout: config.grpc.keepalive_timeout,
        },
    };
    servers.spawn({
        let shutdown = until_stopped(stopped.clone());
        let tls = TlsListener::new(listener_certs.grpc.as_ref(), config.grpc.tls.as_ref());
        async move { Ok(server::serve(grpc_listener, tls, services, shutdown).await?) }
    });
    let status = StatusPage::new(
        upstreams.clone(),
        ready.subscribe(),
        Settings::new(&config, grpc_addr, http_addr),
    );
    servers.spawn({
        let shutdown = until_stopped(stopped);
        let registry = registry.clone();
        let ready = ready.clone();
        let tls = TlsListener::new(listener_certs.http.as_ref(), config.http.tls.as_ref());
        async move {
            crate::admin::serve(
                http_listener,
                tls,
                registry,
                ready.subscribe(),
                status,
                shutdown,
            )
            .await
            .map_err(AppError::Http)
        }
    });
    tracing::info!(grpc = %grpc_addr, http = %http_addr, remotes = config.remotes.len(), "listening");
    Ok(Running {
        grpc_addr,
        http_addr,
        upstreams,
        registry,
        ready,
        reloads,
        stop,
        servers,
        background,
        health: health_reporter,
        grace: config.grpc.grace_period,
        shutdown_delay: config.grpc.shutdown_delay,
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
