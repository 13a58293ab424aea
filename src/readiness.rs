//! The service's phase (starting, serving, draining), which the app sets and
//! the probes, gRPC health, Info and the status page read.

use std::sync::Arc;

use tokio::sync::watch;

/// Where the service is in its life, as its probes and Info see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The first Info round to the remotes is running: Info is refused
    /// (a querier must not take an empty label set for the truth), not
    /// ready.
    Starting,
    /// Answering everything; ready.
    Serving,
    /// Shutting down: still answering everything, Info included, but not
    /// ready, so load balancers send new connections elsewhere before the
    /// listeners close (`grpc.shutdown_delay`).
    Draining,
}

/// The service's [`Phase`]. The app sets it; the HTTP probe, gRPC health,
/// Info and the status page read it through [`Readiness::subscribe`].
#[derive(Clone, Debug)]
pub struct Readiness(Arc<watch::Sender<Phase>>);

impl Default for Readiness {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(Phase::Starting)))
    }
}

impl Readiness {
    /// A receiver for a component that only reads the phase.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.0.subscribe()
    }

    pub fn is_ready(&self) -> bool {
        *self.0.borrow() == Phase::Serving
    }

    /// The first Info round is done (unless shutdown began meanwhile).
    pub fn set_ready(&self) {
        self.0.send_if_modified(|phase| {
            let starting = *phase == Phase::Starting;
            if starting {
                *phase = Phase::Serving;
            }
            starting
        });
    }

    /// Shutdown began: not ready from now on.
    pub fn set_draining(&self) {
        self.0.send_replace(Phase::Draining);
    }

    /// Resolves once the first Info round is done.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|phase| *phase != Phase::Starting).await;
    }
}
