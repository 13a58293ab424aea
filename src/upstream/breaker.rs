//! Circuit breaking per endpoint: after `failures` calls in a row fail the
//! way an unhealthy endpoint fails (no connection, TLS, no answer or no
//! progress in time, Unavailable), the endpoint is skipped for a back-off
//! that doubles on each failed retry up to `max_backoff`. Once the back-off
//! has passed, calls go to it again; the first to succeed closes the
//! breaker, the first to fail opens it for the next, longer back-off.
//! Skipping is reported as a warning naming the endpoint and until when.
//!
//! Listed, with every other limit on a call, in [`crate::admission`].

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::CircuitBreakerConfig;

/// Why an endpoint is skipped: its breaker is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Calls that failed in a row.
    pub failures: u32,
    /// When calls go to it again.
    pub until: SystemTime,
    /// The failure that opened it (or kept it open).
    pub last_error: String,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    /// While open: when calls go to it again, by both clocks (the system
    /// clock's for messages).
    open_until: Option<(Instant, SystemTime)>,
    /// The back-off the next opening uses.
    backoff: Duration,
    last_error: String,
}

/// One endpoint's breaker.
#[derive(Debug)]
pub struct Breaker {
    config: CircuitBreakerConfig,
    state: Mutex<State>,
    open: Gauge,
    opened: Counter,
}

impl Breaker {
    /// `open` shows whether it is open now (1), `opened` counts openings.
    pub fn new(config: CircuitBreakerConfig, open: Gauge, opened: Counter) -> Self {
        open.set(0);
        let state = State {
            backoff: config.backoff,
            ..State::default()
        };
        Self {
            config,
            state: Mutex::new(state),
            open,
            opened,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether a call may go to the endpoint now; if not, why.
    pub fn admits(&self) -> Result<(), Open> {
        let state = self.state();
        match state.open_until {
            Some((until, wall)) if Instant::now() < until => Err(Open {
                failures: state.failures,
                until: wall,
                last_error: state.last_error.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// A call succeeded: the endpoint works.
    pub fn success(&self) {
        let mut state = self.state();
        if state.failures == 0 {
            return;
        }
        if state.open_until.is_some() {
            tracing::info!(
                failures = state.failures,
                "circuit breaker closed: the endpoint answers again"
            );
            self.open.set(0);
        }
        *state = State {
            backoff: self.config.backoff,
            ..State::default()
        };
    }

    /// A call failed the way an unhealthy endpoint fails.
    pub fn failure(&self, error: &str) {
        if self.config.failures == 0 {
            return;
        }
        let mut state = self.state();
        state.failures = state.failures.saturating_add(1);
        state.last_error = error.to_owned();
        let now = Instant::now();
        let retrying = state.open_until.is_some_and(|(until, _)| now >= until);
        let opens =
            retrying || (state.open_until.is_none() && state.failures >= self.config.failures);
        if !opens {
            return;
        }
        let backoff = state.backoff;
        state.open_until = Some((now + backoff, SystemTime::now() + backoff));
        state.backoff = (backoff * 2).min(self.config.max_backoff);
        self.open.set(1);
        self.opened.inc();
        tracing::warn!(
            failures = state.failures,
            backoff = ?backoff,
            %error,
            "circuit breaker open: the endpoint is skipped for the back-off"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, backoff_ms: u64, max_ms: u64) -> Breaker {
        Breaker::new(
            CircuitBreakerConfig {
                failures,
                backoff: Duration::from_millis(backoff_ms),
                max_backoff: Duration::from_millis(max_ms),
            },
            Gauge::default(),
            Counter::default(),
        )
    }

    #[test]
    fn opens_after_n_failures_in_a_row_and_a_success_resets_the_count() {
        let b = breaker(3, 60_000, 60_000);
        b.failure("x");
        b.failure("x");
        b.success();
        b.failure("x");
        b.failure("x");
        assert!(b.admits().is_ok(), "a success in between resets the count");
        b.failure("refused");
        let open = b.admits().expect_err("open after 3 in a row");
        assert_eq!(open.failures, 3);
        assert_eq!(open.last_error, "refused");
        assert_eq!(b.open.get(), 1);
        assert_eq!(b.opened.get(), 1);
    }

    #[test]
    fn back_off_doubles_up_to_the_maximum_and_a_success_closes() {
        let b = breaker(1, 20, 50);
        b.failure("x");
        assert!(b.admits().is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.admits().is_ok(), "retried after the back-off");
        // A failed retry opens it for twice as long (40 ms), then the cap.
        b.failure("x");
        let until = b.admits().expect_err("open again").until;
        let left = until.duration_since(SystemTime::now()).unwrap_or_default();
        assert!(left > Duration::from_millis(25), "{left:?}");
        std::thread::sleep(Duration::from_millis(45));
        b.failure("x");
        let until = b.admits().expect_err("open again").until;
        let left = until.duration_since(SystemTime::now()).unwrap_or_default();
        assert!(left <= Duration::from_millis(50), "capped: {left:?}");
        std::thread::sleep(Duration::from_millis(55));
        b.success();
        assert!(b.admits().is_ok());
        assert_eq!(b.open.get(), 0);
        assert_eq!(b.opened.get(), 3);
        // Closed: the back-off starts over.
        b.failure("x");
        let left = b
            .admits()
            .expect_err("open")
            .until
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        assert!(left <= Duration::from_millis(20), "{left:?}");
    }

    #[test]
    fn zero_failures_turns_it_off() {
        let b = breaker(0, 1000, 1000);
        for _ in 0..100 {
            b.failure("x");
        }
        assert!(b.admits().is_ok());
    }
}
