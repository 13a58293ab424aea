//! The HTTP side: `/metrics` for Prometheus, `/-/healthy` for liveness,
//! `/-/ready` for readiness (ready once every remote was asked for Info once;
//! the app says when), and the status page (`/`, `/status.json`).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::listener::{Acceptor, HttpsListener, TlsListener};
use crate::readiness::Phase;
use crate::status::StatusPage;

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    ready: watch::Receiver<Phase>,
}

/// Serves the admin endpoints until `shutdown` resolves; over TLS with the
/// config `tls` holds when a connection arrives, if given.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsListener>,
    registry: Arc<Registry>,
    ready: watch::Receiver<Phase>,
    status: StatusPage,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "OK\n" }))
        .route("/-/ready", get(ready_probe))
        .with_state(AdminState { registry, ready })
        .merge(status.router());
    match tls {
        Some(tls) => {
            let listener = HttpsListener::new(listener, tls.configs, tls.max_handshakes)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            // axum's own accept loop logs every failed accept, a second apart.
            axum::serve(Acceptor::new(listener, "HTTP"), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics: {e}\n"),
        ),
    }
}

async fn ready_probe(State(state): State<AdminState>) -> impl IntoResponse {
    match *state.ready.borrow() {
        Phase::Serving => (StatusCode::OK, "OK\n"),
        Phase::Starting => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: first Info round to the remotes in progress\n",
        ),
        Phase::Draining => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down (still serving until grpc.shutdown_delay has passed)\n",
        ),
    }
}
