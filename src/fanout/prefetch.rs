//! Read-ahead for the Series streams of one call, bounded in bytes.
//!
//! The merge emits series in label order, and remotes usually differ in an
//! external label (`cluster="a"` < `cluster="b"`), so it reads all of one
//! remote before the next. The others would stall once their HTTP/2 window
//! is full, and the answer would arrive at one remote's speed. Instead each
//! remote stream of a call may read ahead into an equal share of the call's
//! budget (`fanout.prefetch_bytes`), and all calls together into at most
//! `fanout.prefetch_bytes_total`. When that is spent, a stream holds one frame
//! ahead, as with no budget: every stream can always hand the merge its next
//! series, so calls cannot wait on each other's budget.
//!
//! Its metrics show how much of the process-wide budget is in use and how
//! many remote calls wait for room, so an operator can tell a budget that is
//! too small (calls waiting on the process's budget) from readers that are
//! slow (calls waiting on their own call's share).
//!
//! Listed, with every other limit on a call, in [`crate::admission`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc};

use super::merge::Frame;
use crate::wire::RawSeries;

/// The memory a queued series holds: its encoded bytes (a slice of the
/// frame it arrived in, which stays allocated while any of it is queued)
/// and its handle.
pub fn memory_size(series: &RawSeries) -> usize {
    size_of::<RawSeries>() + series.len()
}

/// Which budget a remote call waits for.
#[derive(Clone, Copy, Debug)]
enum Budget {
    /// Its share of its call's budget is full: the merge (or the querier
    /// behind it) has not taken what it read ahead.
    Call,
    /// The process's budget is spent: it may hold one frame ahead, and
    /// waits until that is taken.
    Process,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget: &'static str,
}

/// What the read-ahead holds and who waits for it.
#[derive(Debug, Clone)]
struct PrefetchMetrics {
    /// Bytes of the process-wide budget in use.
    in_use: Gauge,
    limit: Gauge,
    /// Remote calls waiting for room, by budget, and its two children.
    waiting: Family<BudgetLabels, Gauge>,
    waiting_call: Gauge,
    waiting_process: Gauge,
}

impl PrefetchMetrics {
    fn new(limit: usize) -> Self {
        let waiting: Family<BudgetLabels, Gauge> = Family::default();
        let child = |budget| waiting.get_or_create(&BudgetLabels { budget }).clone();
        let (waiting_call, waiting_process) = (child("call"), child("process"));
        let metrics = Self {
            in_use: Gauge::default(),
            limit: Gauge::default(),
            waiting,
            waiting_call,
            waiting_process,
        };
        metrics.limit.set(i64::try_from(limit).unwrap_or(i64::MAX));
        metrics
    }

    fn waiting(&self, budget: Budget) -> &Gauge {
        match budget {
            Budget::Call => &self.waiting_call,
            Budget::Process => &self.waiting_process,
        }
    }
}

/// The read-ahead budgets: per call, and for the whole process.
#[derive(Debug, Clone)]
pub struct Prefetch {
    per_call: usize,
    total: Arc<Semaphore>,
    metrics: PrefetchMetrics,
}

impl Prefetch {
    pub fn new(per_call: usize, total: usize) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS);
        Self {
            per_call,
            total: Arc::new(Semaphore::new(total)),
            metrics: PrefetchMetrics::new(total),
        }
    }

    /// Registers the read-ahead's metrics.
    pub fn register(&self, registry: &mut Registry) {
        let metrics = &self.metrics;
        registry.register(
            "thanos_fanout_series_read_ahead_bytes",
            "Bytes of fanout.prefetch_bytes_total in use: remote series read ahead of the merge, by all Series calls together",
            metrics.in_use.clone(),
        );
        registry.register(
            "thanos_fanout_series_read_ahead_limit_bytes",
            "The most all Series calls together may read ahead of the merge (fanout.prefetch_bytes_total)",
            metrics.limit.clone(),
        );
        registry.register(
            "thanos_fanout_series_read_ahead_waiting_calls",
            "Series calls to remotes waiting for read-ahead room: budget=call, their share of the call's fanout.prefetch_bytes is full (the merge or the querier is behind); budget=process, fanout.prefetch_bytes_total is spent and they hold one frame ahead",
            metrics.waiting.clone(),
        );
    }

    /// A channel for each of `streams` streams of one call, each with an
    /// equal share of the call's budget (at least one byte, which holds one
    /// frame).
    pub fn channels(&self, streams: usize) -> Vec<(Sender, Receiver)> {
        let share = (self.per_call / streams.max(1)).clamp(1, u32::MAX as usize) as u32;
        (0..streams)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let sender = Sender {
                    tx,
                    share: Arc::new(Semaphore::new(share as usize)),
                    share_size: share,
                    total: self.total.clone(),
                    outside: AtomicBool::new(false),
                    metrics: self.metrics.clone(),
                };
                let receiver = Receiver {
                    rx,
                    current: Vec::new().into_iter(),
                    held: None,
                };
                (sender, receiver)
            })
            .collect()
    }

    /// Bytes of the process-wide budget not in use.
    pub fn available(&self) -> usize {
        self.total.available_permits()
    }
}

/// What a queued frame holds of the budgets, given back when it is taken.
struct Held {
    _share: OwnedSemaphorePermit,
    _total: Option<InUse>,
}

/// Bytes of the process-wide budget, counted in use while held.
struct InUse {
    _permit: OwnedSemaphorePermit,
    bytes: i64,
    gauge: Gauge,
}

impl InUse {
    fn new(permit: OwnedSemaphorePermit, bytes: u32, gauge: &Gauge) -> Self {
        let bytes = i64::from(bytes);
        gauge.inc_by(bytes);
        Self {
            _permit: permit,
            bytes,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes);
    }
}

/// One remote call counted as waiting while this lives (also when the
/// wait is given up because the reader went away).
struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The reader of the channel went away.
#[derive(Debug)]
pub struct Closed;

/// The pump's end of one stream's channel.
pub struct Sender {
    tx: mpsc::UnboundedSender<(Vec<Frame>, Held)>,
    share: Arc<Semaphore>,
    share_size: u32,
    total: Arc<Semaphore>,
    /// Whether the last frame queued went outside the process-wide budget.
    outside: AtomicBool,
    metrics: PrefetchMetrics,
}

impl Sender {
    /// Queues a frame taking `bytes` of memory once the stream's share has room for
    /// it (a frame larger than the share waits until the queue is empty).
    pub async fn send(&self, frame: Frame, bytes: usize) -> Result<(), Closed> {
        self.send_all(vec![frame], bytes).await
    }

    /// Queues frames taking `bytes` of memory together, as one: what one
    /// frame from a remote held. Their bytes are given back once the
    /// reader has taken the last of them.
    pub async fn send_all(&self, frames: Vec<Frame>, bytes: usize) -> Result<(), Closed> {
        let want = bytes.clamp(1, self.share_size as usize) as u32;
        let held = tokio::select! {
            held = self.reserve(want) => held?,
            () = self.tx.closed() => return Err(Closed),
        };
        self.tx.send((frames, held)).map_err(|_| Closed)
    }

    async fn reserve(&self, want: u32) -> Result<Held, Closed> {
        // A frame queued outside the budget holds the whole share, and is
        // all the queue holds: what limits the stream then is the spent
        // process-wide budget, not its share.
        let limit = match self.outside.load(Ordering::Relaxed) {
            true => Budget::Process,
            false => Budget::Call,
        };
        let share = self.share_of(want, limit).await?;
        match self.total.clone().try_acquire_many_owned(want) {
            Ok(total) => {
                self.outside.store(false, Ordering::Relaxed);
                Ok(Held {
                    _share: share,
                    _total: Some(InUse::new(total, want, &self.metrics.in_use)),
                })
            }
            // The process-wide budget is spent: queue this frame only once
            // the queue is empty, outside that budget.
            Err(_) => {
                drop(share);
                let whole = self.share_of(self.share_size, Budget::Process).await?;
                self.outside.store(true, Ordering::Relaxed);
                Ok(Held {
                    _share: whole,
                    _total: None,
                })
            }
        }
    }

    /// Takes `want` bytes of the stream's share, counted as waiting for
    /// `budget` while they are not free.
    async fn share_of(&self, want: u32, budget: Budget) -> Result<OwnedSemaphorePermit, Closed> {
        match self.share.clone().try_acquire_many_owned(want) {
            Ok(share) => Ok(share),
            Err(TryAcquireError::Closed) => Err(Closed),
            Err(TryAcquireError::NoPermits) => {
                let _waiting = Waiting::new(self.metrics.waiting(budget));
                self.share
                    .clone()
                    .acquire_many_owned(want)
                    .await
                    .map_err(|_| Closed)
            }
        }
    }

    /// Resolves when the reader has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// The merge's end of one stream's channel.
pub struct Receiver {
    rx: mpsc::UnboundedReceiver<(Vec<Frame>, Held)>,
    /// The frames of the batch being taken, and what it holds.
    current: std::vec::IntoIter<Frame>,
    held: Option<Held>,
}

impl Stream for Receiver {
    type Item = Frame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        loop {
            if let Some(frame) = self.current.next() {
                if self.current.len() == 0 {
                    // Taking a batch's last frame gives its bytes back.
                    self.held = None;
                }
                return Poll::Ready(Some(frame));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some((frames, held))) => {
                    self.current = frames.into_iter();
                    self.held = Some(held);
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;

    fn frame() -> Frame {
        Frame::Series(RawSeries::encode(&Default::default()))
    }

    async fn sends_now(tx: &Sender, bytes: usize) -> bool {
        tokio::time::timeout(Duration::from_millis(50), tx.send(frame(), bytes))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_stream_reads_ahead_up_to_its_share() {
        let prefetch = Prefetch::new(1000, 10_000);
        let mut channels = prefetch.channels(2);
        let (tx, mut rx) = channels.remove(0);
        // A share of 500 bytes: four frames of 120, not a fifth.
        for _ in 0..4 {
            assert!(sends_now(&tx, 120).await);
        }
        assert!(!sends_now(&tx, 120).await);
        assert_eq!(prefetch.available(), 10_000 - 480);
        // Taking one makes room for one.
        assert!(rx.next().await.is_some());
        assert!(sends_now(&tx, 120).await);
        // A frame larger than the share waits for an empty queue.
        for _ in 0..4 {
            assert!(rx.next().await.is_some());
        }
        assert!(sends_now(&tx, 5000).await);
        assert!(!sends_now(&tx, 1).await);
    }

    #[tokio::test]
    async fn a_spent_total_leaves_one_frame_ahead_per_stream() {
        let prefetch = Prefetch::new(1000, 300);
        let (a, mut a_rx) = prefetch.channels(1).remove(0);
        let (b, mut b_rx) = prefetch.channels(1).remove(0);
        assert!(sends_now(&a, 200).await);
        assert_eq!(prefetch.available(), 100);
        // b's first frame goes in although the total is spent...
        assert!(sends_now(&b, 200).await);
        assert_eq!(prefetch.available(), 100);
        // ...but nothing more, for either stream, until they are read.
        assert!(!sends_now(&b, 200).await);
        assert!(!sends_now(&a, 200).await);
        assert!(b_rx.next().await.is_some());
        assert!(sends_now(&b, 200).await);
        assert!(a_rx.next().await.is_some());
        assert!(sends_now(&a, 200).await);
    }

    #[tokio::test]
    async fn a_batch_holds_its_bytes_until_its_last_frame_is_taken() {
        let prefetch = Prefetch::new(1000, 10_000);
        let (tx, mut rx) = prefetch.channels(1).remove(0);
        tx.send_all(vec![frame(), frame(), frame()], 900)
            .await
            .expect("sent");
        assert!(!sends_now(&tx, 200).await);
        assert!(rx.next().await.is_some());
        assert!(rx.next().await.is_some());
        assert_eq!(prefetch.available(), 10_000 - 900);
        assert!(rx.next().await.is_some());
        assert_eq!(prefetch.available(), 10_000);
        assert!(sends_now(&tx, 200).await);
    }

    #[tokio::test]
    async fn the_budget_in_use_and_the_streams_waiting_are_measured() {
        let prefetch = Prefetch::new(1000, 300);
        let metrics = prefetch.metrics.clone();
        let waiting = || (metrics.waiting_call.get(), metrics.waiting_process.get());
        let settle = || tokio::time::sleep(Duration::from_millis(20));
        assert_eq!(metrics.limit.get(), 300);
        let (a, mut a_rx) = prefetch.channels(1).remove(0);
        let (b, mut b_rx) = prefetch.channels(1).remove(0);
        assert!(sends_now(&a, 200).await);
        assert!(sends_now(&a, 100).await);
        assert_eq!(metrics.in_use.get(), 300);
        // Queued outside the spent budget: not in use.
        assert!(sends_now(&b, 200).await);
        assert_eq!(metrics.in_use.get(), 300);
        assert_eq!(waiting(), (0, 0));
        // a's share is too full for 800 bytes; b holds its one frame ahead.
        let a_sends = tokio::spawn(async move { a.send(frame(), 800).await.map(|()| a) });
        let b_sends = tokio::spawn(async move { b.send(frame(), 200).await.map(|()| b) });
        settle().await;
        assert_eq!(waiting(), (1, 1));
        assert!(b_rx.next().await.is_some());
        let _b = b_sends.await.expect("no panic").expect("sent");
        assert_eq!(waiting(), (1, 0));
        // Room in a's share, but not in the budget: a waits for its queue
        // to empty.
        assert!(a_rx.next().await.is_some());
        settle().await;
        assert_eq!(waiting(), (0, 1));
        assert_eq!(metrics.in_use.get(), 100);
        assert!(a_rx.next().await.is_some());
        let _a = a_sends.await.expect("no panic").expect("sent");
        assert_eq!(waiting(), (0, 0));
        assert_eq!(metrics.in_use.get(), 0);
    }

    #[tokio::test]
    async fn a_vanished_reader_ends_a_waiting_send() {
        let prefetch = Prefetch::new(100, 1000);
        let (tx, rx) = prefetch.channels(1).remove(0);
        assert!(sends_now(&tx, 100).await);
        let waiting = tokio::spawn(async move { tx.send(frame(), 100).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        let result = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the send ends")
            .expect("no panic");
        assert!(result.is_err());
        // Queued frames gave their bytes back.
        assert_eq!(prefetch.available(), 1000);
    }
}
