//! The Info poller: asks every endpoint for Info every `info.interval`, as a
//! querier does, and records the answer, or why there is none, as the
//! endpoint's state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Endpoint, EndpointState, RemoteInfo, Upstreams};
use crate::config::InfoConfig;
use crate::labelset;
use crate::proto::thanos::info::{InfoRequest, InfoResponse};

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

impl Endpoint {
    /// Calls Info once, bounded by `timeout`.
    pub async fn call_info(&self, timeout: Duration) -> Result<InfoResponse, InfoCallError> {
        let mut request = tonic::Request::new(InfoRequest {});
        request.set_timeout(timeout);
        let mut client = self.info_client();
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

impl Upstreams {
    /// Polls Info on every endpoint concurrently, once.
    pub async fn refresh_all(&self, timeout: Duration) {
        futures::future::join_all(self.endpoints().iter().map(|e| e.refresh_info(timeout))).await;
    }
}
