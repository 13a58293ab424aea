//! Call counters sampled every few seconds over the last minutes, so the
//! page can say how a remote is doing now, not only since start.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::MethodCalls;
use crate::upstream::Remote;

/// How far back "recent" reaches.
pub const WINDOW: Duration = Duration::from_secs(300);
/// How often the counters are sampled.
pub const EVERY: Duration = Duration::from_secs(10);

/// Every remote's call counters, by remote name.
pub type CallsByRemote = HashMap<Arc<str>, Vec<MethodCalls>>;

/// One sample of every remote's call counters.
struct Sample {
    at: Instant,
    calls: CallsByRemote,
}

/// Samples covering a little more than [`WINDOW`].
#[derive(Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Samples the counters of `remotes` now, dropping samples too old to
    /// start a window.
    pub fn record(&mut self, at: Instant, remotes: &[Arc<Remote>]) {
        let calls = remotes
            .iter()
            .map(|r| (r.name.clone(), r.calls()))
            .collect();
        self.samples.push_back(Sample { at, calls });
        // Keep the newest sample at least WINDOW old, so the window is full.
        while self.samples.len() > 1
            && self
                .samples
                .get(1)
                .is_some_and(|next| at.saturating_duration_since(next.at) >= WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// The sample a window ending `now` starts at: the newest one at least
    /// [`WINDOW`] old, else the oldest (shortly after start); with its age.
    pub fn baseline(&self, now: Instant) -> Option<(Duration, &CallsByRemote)> {
        let start = self
            .samples
            .iter()
            .rev()
            .find(|s| now.saturating_duration_since(s.at) >= WINDOW)
            .or_else(|| self.samples.front())?;
        Some((now.saturating_duration_since(start.at), &start.calls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_starts_at_the_newest_sample_old_enough() {
        let mut history = History::default();
        let t0 = Instant::now();
        assert!(history.baseline(t0).is_none());
        history.record(t0, &[]);
        let (age, _) = history.baseline(t0 + EVERY).expect("a sample");
        assert_eq!(age, EVERY);
        for i in 1..=60 {
            history.record(t0 + EVERY * i, &[]);
        }
        let now = t0 + EVERY * 60;
        let (age, _) = history.baseline(now).expect("a sample");
        assert_eq!(age, WINDOW);
        // Nothing older than needed is kept.
        assert!(history.samples.len() <= (WINDOW.as_secs() / EVERY.as_secs()) as usize + 1);
    }
}
