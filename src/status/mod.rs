//! The status page: `GET /` renders, for an operator, every remote with its
//! endpoints, health, errors, Info, client certificate and calls, those that
//! need attention first; `GET /status.json` is the same data for scripts.
//!
//! Everything is read from state other components keep (upstream's endpoint
//! states, the loaded TLS identities, the metric families); this module
//! changes none of it. It owns only a short history of call counters, for
//! the error rates of the last minutes.

mod cert;
mod html;
mod model;
mod recent;
pub(crate) mod text;

use std::sync::{Arc, Mutex, Weak};
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

pub use cert::{CertificateStatus, Validity};
pub use model::{Settings, Snapshot};

use crate::readiness::Phase;
use crate::upstream::Upstreams;
use model::{Baseline, Clock, Inputs};
use recent::History;

/// What the page reads, shared by its handlers.
#[derive(Clone)]
pub struct StatusPage {
    inner: Arc<Inner>,
}

struct Inner {
    upstreams: Arc<Upstreams>,
    ready: watch::Receiver<Phase>,
    settings: Settings,
    started: SystemTime,
    started_instant: Instant,
    history: Mutex<History>,
}

impl StatusPage {
    pub fn new(
        upstreams: Arc<Upstreams>,
        ready: watch::Receiver<Phase>,
        settings: Settings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstreams,
                ready,
                settings,
                started: SystemTime::now(),
                started_instant: Instant::now(),
                history: Mutex::new(History::default()),
            }),
        }
    }

    /// The status now.
    pub fn snapshot(&self) -> Snapshot {
        let inner = &self.inner;
        let clock = Clock::now();
        let history = match inner.history.lock() {
            Ok(history) => history,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (window, calls) = match history.baseline(clock.now_instant) {
            Some((window, calls)) => (window, Some(calls)),
            None => (
                clock
                    .now_instant
                    .saturating_duration_since(inner.started_instant),
                None,
            ),
        };
        let remotes = inner.upstreams.remotes();
        let inputs = Inputs {
            remotes: &remotes,
            settings: &inner.settings,
            ready: *inner.ready.borrow() == Phase::Serving,
            shutting_down: *inner.ready.borrow() == Phase::Draining,
            started: inner.started,
            started_instant: inner.started_instant,
            baseline: Baseline { window, calls },
        };
        Snapshot::build(&inputs, clock)
    }

    fn sample(&self) {
        let mut history = match self.inner.history.lock() {
            Ok(history) => history,
            Err(poisoned) => poisoned.into_inner(),
        };
        history.record(Instant::now(), &self.inner.upstreams.remotes());
    }

    /// `GET /` and `GET /status.json`. Also starts sampling call counters
    /// for as long as the routes are served.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        self.sample();
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(sample_while_served(weak));
        Router::new()
            .route("/", get(page))
            .route("/status.json", get(json))
            .with_state(self)
    }
}

async fn sample_while_served(page: Weak<Inner>) {
    let mut ticker = tokio::time::interval(recent::EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match page.upgrade() {
            Some(inner) => StatusPage { inner }.sample(),
            None => return,
        }
    }
}

/// `?refresh=N` asks the page to reload itself every N seconds (2 to 3600).
fn refresh_seconds(uri: &Uri) -> Option<u32> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.strip_prefix("refresh="))
        .find_map(|n| n.parse::<u32>().ok())
        .map(|n| n.clamp(2, 3600))
}

async fn page(State(page): State<StatusPage>, uri: Uri) -> impl IntoResponse {
    let body = html::render(&page.snapshot(), refresh_seconds(&uri));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}

async fn json(State(page): State<StatusPage>) -> impl IntoResponse {
    match serde_json::to_string_pretty(&page.snapshot()) {
        Ok(mut body) => {
            body.push('\n');
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                body,
            )
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            format!("encoding the status: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_bounded() {
        let uri = |s: &str| s.parse::<Uri>().expect("uri");
        assert_eq!(refresh_seconds(&uri("/")), None);
        assert_eq!(refresh_seconds(&uri("/?refresh=10")), Some(10));
        assert_eq!(refresh_seconds(&uri("/?x=1&refresh=0")), Some(2));
        assert_eq!(refresh_seconds(&uri("/?refresh=abc")), None);
    }
}
