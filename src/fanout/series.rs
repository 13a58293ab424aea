//! The Series call: one task per selected endpoint pumps its stream into a
//! channel bounded by its share of the read-ahead budget (see `prefetch`); a
//! merge feeds the output, which applies `limit`, batching
//! and the partial-response strategy. Series stay as the bytes they arrived
//! in unless local work needs them decoded (see [`crate::wire`]). With a single endpoint the merge only
//! combines consecutive equal series, which a remote that strips replica
//! labels may send. An endpoint whose replica labels must be stripped here
//! is held whole and sorted again when it ends, all such endpoints of a
//! request within `limits.buffered_bytes_per_request` (see [`BufferBudget`]).
//! Dropping the output (the querier went away, or an ABORT) aborts every
//! endpoint task, which cancels its remote call.
//!
//! A remote is given `timeout` to make progress, counted only while its pump
//! waits for it: time blocked on a full channel (a slow caller, or a merge
//! held back by another remote) is not the remote's fault. The caller's
//! deadline bounds the whole call. Getting the call under way (resending a
//! call turned away unread, moving to a replica) is [`super::fallback`]'s.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinSet;
use tonic::Streaming;
use tracing::Instrument;

use super::merge::{Frame, Merge};
use super::remote::{RemoteCall, Stop, settle, within_deadline};
use super::shard::ShardMatcher;
use super::{Fanout, FanoutError, RequestContext, Selected, aborts};
use super::{fallback, prefetch};
use crate::admission::{self, BufferBudget};
use crate::config::LimitsConfig;
use crate::labelset;
use crate::metrics::Method;
use crate::proto::thanos::{Series, SeriesRequest};
use crate::upstream::{RemoteErrorKind, StreamLease};
use crate::wire::{self, Labels, RawSeries, SeriesFrame};

/// The merged answer, as tonic wants it.
pub type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesFrame, FanoutError>> + Send>>;

/// What we must do locally for an endpoint that cannot do it itself.
#[derive(Debug, Clone, Default)]
struct LocalWork {
    /// Replica labels to strip (the endpoint does not honour `without_replica_labels`);
    /// the stream must then be buffered and re-sorted.
    strip: Vec<String>,
    /// Shard filter (the endpoint does not honour `shard_info`).
    shard: Option<ShardMatcher>,
}

impl LocalWork {
    fn for_endpoint(req: &SeriesRequest, selected: &Selected) -> Self {
        let info = &selected.info;
        Self {
            strip: if info.supports_without_replica_labels {
                Vec::new()
            } else {
                req.without_replica_labels.clone()
            },
            shard: if info.supports_sharding {
                None
            } else {
                ShardMatcher::new(req.shard_info.as_ref())
            },
        }
    }
}

/// Rejects Series requests no store could answer sensibly.
fn validate(req: &SeriesRequest) -> Result<(), FanoutError> {
    if req.matchers.is_empty() {
        // As a Thanos store answers: without one, every series of every
        // remote would be read.
        return Err(FanoutError::InvalidArgument(
            "no matchers specified: a Series request needs at least one".into(),
        ));
    }
    if let Some(shard) = &req.shard_info
        && shard.total_shards >= 1
        && !(0..shard.total_shards).contains(&shard.shard_index)
    {
        return Err(FanoutError::InvalidArgument(format!(
            "shard_info: shard_index {} is not one of the {} shards (0 to {})",
            shard.shard_index,
            shard.total_shards,
            shard.total_shards - 1
        )));
    }
    Ok(())
}

impl Fanout {
    /// Starts a Series call; errors here are about the request itself.
    pub fn series(
        &self,
        req: SeriesRequest,
        ctx: RequestContext,
    ) -> Result<SeriesStream, FanoutError> {
        validate(&req)?;
        let matchers = labelset::compile_all(&req.matchers)
            .map_err(|e| FanoutError::InvalidArgument(e.to_string()))?;
        let plan = self.plan(&matchers, req.min_time, req.max_time);
        let abort = aborts(req.partial_response_strategy, req.partial_response_disabled);
        plan.check_abort(abort)?;
        let selected = plan.selected;
        let output = Output {
            limit: req.limit.max(0) as u64,
            batch_size: usize::try_from(req.response_batch_size.clamp(1, MAX_BATCH_SERIES))
                .unwrap_or(1),
            pending_bytes: 0,
            limits: self.limits.clone(),
            chunks: 0,
            bytes: 0,
            abort,
            sent: 0,
            pending: Vec::new(),
            queued: plan.skipped.iter().map(ToString::to_string).collect(),
            done: false,
            source: Source::Empty,
            tasks: JoinSet::new(),
        };
        if selected.is_empty() {
            return Ok(output.into_stream());
        }

        // Forwarded as the querier's proxy does: everything but the opaque
        // store-specific hints and the deprecated step/range.
        let forward = SeriesRequest {
            hints: None,
            step: 0,
            range: 0,
            ..req
        };
        let mut tasks = JoinSet::new();
        let mut receivers = Vec::with_capacity(selected.len());
        let channels = self.prefetch.channels(selected.len());
        let buffered = Arc::new(BufferBudget::new(self.limits.buffered_bytes_per_request));
        for (endpoint, (tx, rx)) in selected.into_iter().zip(channels) {
            let intake = Intake::new(&forward, &endpoint);
            let span = super::remote::span(Method::Series, &endpoint.endpoint);
            let pump = Pump {
                forward: forward.clone(),
                ctx: ctx.clone(),
                call: RemoteCall::new(endpoint, Method::Series),
                intake,
                tx,
                received: 0,
                bytes: 0,
                bytes_limit: self.limits.bytes_per_remote,
                buffered: buffered.clone(),
                exceeded: None,
                ready: Vec::new(),
                ready_bytes: 0,
            };
            tasks.spawn(pump.run().instrument(span));
            receivers.push(rx);
        }
        Ok(Output {
            source: Source::Merge(Merge::new(receivers)),
            tasks,
            ..output
        }
        .into_stream())
    }
}

/// Reads one endpoint's stream into the merge's channel.
struct Pump {
    call: RemoteCall,
    /// The request, sent again to a fallback endpoint.
    forward: SeriesRequest,
    ctx: RequestContext,
    intake: Intake,
    tx: prefetch::Sender,
    /// Series received so far, for messages.
    received: u64,
    /// Their encoded bytes.
    bytes: u64,
    /// Most bytes it may send (0: no limit).
    bytes_limit: u64,
    /// What the request's endpoints hold to strip replica labels.
    buffered: Arc<BufferBudget>,
    /// Why the whole call must fail, once it must.
    exceeded: Option<String>,
    /// What the current remote frame yielded, passed on as one.
    ready: Vec<Frame>,
    ready_bytes: usize,
}

impl Pump {
    async fn run(mut self) {
        let result = within_deadline(self.ctx.deadline, self.stream())
            .await
            .unwrap_or_else(|| {
                Err(Stop::Failed(self.call.error(
                    RemoteErrorKind::CallerDeadline {
                        elapsed: self.call.elapsed(),
                        received: self.received,
                        unit: "series",
                    },
                )))
            });
        let span = tracing::Span::current();
        span.record("received", self.received);
        span.record("bytes", self.bytes);
        if let Some(error) = self.call.conclude(result) {
            let _ = self.tx.send(Frame::Warning(error), 0).await;
        }
        if let Some(exceeded) = self.exceeded.take() {
            let _ = self.tx.send(Frame::Exceeded(exceeded), 0).await;
        }
    }

    /// Waits for the remote, up to its `timeout`, unless the reader goes
    /// away.
    async fn wait<T>(
        &self,
        step: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, Stop> {
        let timeout = self.call.selected.endpoint.timeout;
        let silent = || RemoteErrorKind::NoProgress {
            timeout,
            received: self.received,
            unit: "series",
        };
        self.call
            .step(step, timeout, silent, self.tx.closed())
            .await
    }

    async fn stream(&mut self) -> Result<(), Stop> {
        // The lease is held until the stream ends: it keeps the connection's
        // windows large enough for every stream on it.
        let ((mut stream, first), _lease) = fallback::open(self).await?;
        let result = match first {
            Some(first) => match self.handle(first).await {
                Ok(()) => self.read(&mut stream).await,
                Err(stop) => Err(stop),
            },
            None => Ok(()),
        };
        // What arrived before a failure is kept.
        if let Some(last) = self.intake.take_last() {
            self.queue(Frame::Series(last));
        }
        self.flush().await?;
        result?;
        // Encoded one batch at a time, each decoded series dropped as it
        // goes, so the answer is not held twice.
        for series in self.intake.take_buffered() {
            self.queue(Frame::Series(series));
            if self.ready.len() >= BUFFERED_BATCH {
                self.flush().await?;
            }
        }
        self.flush().await
    }

    async fn read(&mut self, stream: &mut Streaming<SeriesFrame>) -> Result<(), Stop> {
        // Only time spent in `wait` counts against the remote's timeout.
        while let Some(frame) = self.wait(stream.message()).await? {
            self.handle(frame).await?;
        }
        Ok(())
    }

    /// Takes one frame from the remote and passes on what is ready, all of
    /// it at once.
    async fn handle(&mut self, frame: SeriesFrame) -> Result<(), Stop> {
        match frame {
            SeriesFrame::Series(series) => {
                self.count(std::slice::from_ref(&series))?;
                self.accept(series)?;
            }
            SeriesFrame::Batch(batch) => {
                self.count(&batch)?;
                for series in batch {
                    self.accept(series)?;
                }
            }
            SeriesFrame::Warning(warning) => {
                let warning = self.call.error(RemoteErrorKind::Warning(warning));
                self.queue(Frame::Warning(warning));
            }
            // Store-specific hints mean nothing to the querier behind us.
            SeriesFrame::Hints | SeriesFrame::Empty => {}
        }
        self.flush().await
    }

    /// Counts a frame's series and their bytes (chunks are counted as they
    /// are parsed); past `limits.bytes_per_remote`, the remote is cut off.
    fn count(&mut self, series: &[Bytes]) -> Result<(), Stop> {
        let metrics = &self.call.selected.endpoint.metrics;
        metrics.series_received.inc_by(series.len() as u64);
        let bytes = series.iter().map(Bytes::len).sum::<usize>() as u64;
        metrics.series_bytes_received.inc_by(bytes);
        self.bytes += bytes;
        match admission::remote_exceeds(self.bytes_limit, self.bytes, self.received) {
            Some(exceeded) => Err(Stop::Failed(self.call.error(exceeded))),
            None => Ok(()),
        }
    }

    fn accept(&mut self, series: Bytes) -> Result<(), Stop> {
        self.received += 1;
        let chunks = &self.call.selected.endpoint.metrics.chunks_received;
        let held = self.intake.buffered_bytes;
        match self.intake.accept(series, chunks) {
            Ok(Some(ready)) => self.queue(Frame::Series(ready)),
            Ok(None) => {}
            Err(kind) => return Err(Stop::Failed(self.call.error(kind))),
        }
        let added = self.intake.buffered_bytes - held;
        if added > 0 && !self.buffered.hold(added) {
            // Not the remote's failure: the call as asked cannot be
            // answered within the bound, whatever the strategy.
            self.exceeded = Some(self.buffered.exceeded(&self.call.selected.endpoint.remote));
            return Err(Stop::Cancelled);
        }
        Ok(())
    }

    fn queue(&mut self, frame: Frame) {
        if let Frame::Series(series) = &frame {
            self.ready_bytes += prefetch::memory_size(series);
        }
        self.ready.push(frame);
    }

    /// Hands what is queued to the merge, once the stream's share of the
    /// read-ahead budget has room for it.
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.ready.is_empty() {
            return Ok(());
        }
        let frames = std::mem::take(&mut self.ready);
        let bytes = std::mem::take(&mut self.ready_bytes);
        self.tx
            .send_all(frames, bytes)
            .await
            .map_err(|_| Stop::Cancelled)
    }
}

impl fallback::Attempts for Pump {
    /// The stream and its first frame (None: it ended at once).
    type Opened = (Streaming<SeriesFrame>, Option<SeriesFrame>);

    fn call(&mut self) -> &mut RemoteCall {
        &mut self.call
    }

    async fn attempt(&mut self) -> (Result<Self::Opened, Stop>, StreamLease) {
        let request = self.ctx.outgoing(self.forward.clone(), self.ctx.deadline);
        let (mut client, lease) = self.call.selected.endpoint.series_client();
        let opened = async {
            let mut stream = self.wait(client.series(request)).await?.into_inner();
            let first = self.wait(stream.message()).await?;
            Ok((stream, first))
        }
        .await;
        (opened, lease)
    }

    fn next(&mut self) -> Option<Selected> {
        let next = self.call.selected.next()?;
        self.intake = Intake::new(&self.forward, &next);
        Some(next)
    }
}

/// Series buffered to strip labels go to the merge this many at a time.
const BUFFERED_BATCH: usize = 64;

/// Takes one endpoint's series as they arrive: checks them, does the local
/// work, and hands back the ones ready to go, in order.
struct Intake {
    work: LocalWork,
    skip_chunks: bool,
    /// The last series taken, handed back once the next one has been checked
    /// against it: that keeps the order check free of copies.
    last: Option<Received>,
    /// Only used when labels are stripped, which may reorder: every series,
    /// sorted at the end.
    buffered: Vec<Series>,
    /// The encoded size of the series in `buffered`, as received.
    buffered_bytes: u64,
}

/// A series taken and checked, not handed back yet.
struct Received {
    series: RawSeries,
    /// Whether it passes the local shard filter.
    keep: bool,
}

impl Intake {
    fn new(req: &SeriesRequest, selected: &Selected) -> Self {
        Self {
            work: LocalWork::for_endpoint(req, selected),
            skip_chunks: req.skip_chunks,
            last: None,
            buffered: Vec::new(),
            buffered_bytes: 0,
        }
    }

    fn shard_keeps<'a>(&self, labels: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> bool {
        self.work.shard.as_ref().is_none_or(|s| s.matches(labels))
    }

    /// Takes one encoded series; gives back the previous one if it is ready.
    fn accept(
        &mut self,
        bytes: Bytes,
        chunks: &Counter,
    ) -> Result<Option<RawSeries>, RemoteErrorKind> {
        let size = bytes.len() as u64;
        let (mut series, labels) = RawSeries::parse(bytes).map_err(RemoteErrorKind::Invalid)?;
        chunks.inc_by(series.chunks() as u64);
        if series.chunks() == 0 && !self.skip_chunks {
            // A series without chunks breaks the querier's iterator.
            return Ok(None);
        }
        if labels == Labels::Unsorted || !self.work.strip.is_empty() {
            let mut decoded = series.decode().map_err(RemoteErrorKind::Invalid)?;
            labelset::normalize(&mut decoded.labels).map_err(RemoteErrorKind::Invalid)?;
            if !self.work.strip.is_empty() {
                labelset::strip(&mut decoded.labels, &self.work.strip);
                if self.shard_keeps(labelset::as_bytes(&decoded.labels)) {
                    self.buffered.push(decoded);
                    self.buffered_bytes += size;
                }
                return Ok(None);
            }
            series = RawSeries::encode(&decoded);
        }
        if let Some(last) = &self.last
            && wire::compare(&series, &last.series) == Ordering::Less
        {
            return Err(RemoteErrorKind::OutOfOrder {
                later: labelset::Display(&series.decode_labels()).to_string(),
                earlier: labelset::Display(&last.series.decode_labels()).to_string(),
            });
        }
        let keep = self.shard_keeps(series.labels());
        Ok(self
            .last
            .replace(Received { series, keep })
            .filter(|last| last.keep)
            .map(|last| last.series))
    }

    /// The last series taken, if it is to be sent.
    fn take_last(&mut self) -> Option<RawSeries> {
        self.last
            .take()
            .filter(|last| last.keep)
            .map(|last| last.series)
    }

    /// The series buffered to strip labels, sorted, encoded as they are
    /// taken.
    fn take_buffered(&mut self) -> impl Iterator<Item = RawSeries> + use<> {
        let mut buffered = std::mem::take(&mut self.buffered);
        self.buffered_bytes = 0;
        buffered.sort_by(|a, b| labelset::compare(&a.labels, &b.labels));
        buffered
            .into_iter()
            .map(|series| RawSeries::encode(&series))
    }
}

enum Source {
    Empty,
    Merge(Merge<prefetch::Receiver>),
}

impl Source {
    async fn next(&mut self) -> Option<Frame> {
        match self {
            Source::Empty => None,
            Source::Merge(merge) => merge.next().await,
        }
    }
}

/// Most series one batch frame carries, whatever the querier asks for.
const MAX_BATCH_SERIES: i64 = 65_536;

/// A batch frame is sent once its series reach this many bytes, so frames
/// stay far below the message size limit whatever the batch size.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Turns frames into responses: limit, batching, partial-response strategy.
struct Output {
    source: Source,
    limit: u64,
    batch_size: usize,
    abort: bool,
    sent: u64,
    pending: Vec<Bytes>,
    /// Bytes of the series in `pending`.
    pending_bytes: usize,
    limits: LimitsConfig,
    /// Chunks and bytes of the series sent (or pending).
    chunks: u64,
    bytes: u64,
    /// Warnings waiting to go out (before the next frame).
    queued: VecDeque<String>,
    done: bool,
    /// Owning the endpoint tasks: dropping the output aborts them.
    tasks: JoinSet<()>,
}

impl Output {
    fn into_stream(self) -> SeriesStream {
        Box::pin(futures::stream::unfold(self, |mut out| async move {
            out.next().await.map(|item| (item, out))
        }))
    }

    /// Which of the request limits the answer so far is over, if any.
    fn exceeded(&self) -> Option<String> {
        admission::answer_exceeds(&self.limits, self.sent, self.chunks, self.bytes)
    }

    fn flush(&mut self) -> Option<SeriesFrame> {
        if self.pending.is_empty() {
            return None;
        }
        let batch = std::mem::replace(
            &mut self.pending,
            Vec::with_capacity(self.batch_size.min(1024)),
        );
        self.pending_bytes = 0;
        Some(SeriesFrame::Batch(batch))
    }

    async fn next(&mut self) -> Option<Result<SeriesFrame, FanoutError>> {
        if let Some(warning) = self.queued.pop_front() {
            return Some(Ok(warning_frame(warning)));
        }
        while !self.done {
            let frame = if self.limit > 0 && self.sent >= self.limit {
                // Enough series: stop reading, which cancels the remotes.
                None
            } else {
                self.source.next().await
            };
            match frame {
                None => {
                    self.done = true;
                    self.source = Source::Empty;
                    self.tasks.abort_all();
                }
                Some(Frame::Warning(error)) => {
                    let warning = match settle(error, self.abort) {
                        Ok(warning) => warning,
                        Err(abort) => {
                            self.done = true;
                            self.tasks.abort_all();
                            return Some(Err(abort));
                        }
                    };
                    if let Some(batch) = self.flush() {
                        self.queued.push_back(warning);
                        return Some(Ok(batch));
                    }
                    return Some(Ok(warning_frame(warning)));
                }
                Some(Frame::Exceeded(exceeded)) => {
                    self.done = true;
                    self.tasks.abort_all();
                    return Some(Err(FanoutError::LimitExceeded(exceeded)));
                }
                Some(Frame::Series(series)) => {
                    self.sent += 1;
                    self.chunks += series.chunks() as u64;
                    self.bytes += series.len() as u64;
                    if let Some(exceeded) = self.exceeded() {
                        self.done = true;
                        self.tasks.abort_all();
                        return Some(Err(FanoutError::LimitExceeded(exceeded)));
                    }
                    if self.batch_size <= 1 {
                        return Some(Ok(SeriesFrame::Series(series.into_bytes())));
                    }
                    let series = series.into_bytes();
                    self.pending_bytes += series.len();
                    self.pending.push(series);
                    if self.pending.len() >= self.batch_size
                        || self.pending_bytes >= MAX_BATCH_BYTES
                    {
                        return self.flush().map(Ok);
                    }
                }
            }
        }
        self.flush().map(Ok)
    }
}

fn warning_frame(warning: String) -> SeriesFrame {
    SeriesFrame::Warning(warning)
}

#[cfg(test)]
mod tests {
    //! The relay against a plain decoded implementation of the same
    //! semantics: for any remote streams and request, byte-identical output.

    use std::collections::{BTreeMap, HashSet};

    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::fanout::merge::{compare_chunks, is_new};
    use crate::proto::thanos::{
        AggrChunk, Chunk, Label, SeriesBatch, SeriesResponse, ShardInfo, series_response,
    };

    #[derive(Debug, Clone)]
    struct Case {
        /// What each remote sends, in order.
        sources: Vec<Vec<Series>>,
        skip_chunks: bool,
        strip: Vec<String>,
        shard: Option<ShardInfo>,
        limit: u64,
        batch_size: usize,
    }

    /// Through the intake, the merge and the output, kept encoded.
    fn relay(case: &Case) -> Vec<Vec<u8>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let prefetch = prefetch::Prefetch::new(1 << 30, 1 << 30);
            let mut receivers = Vec::new();
            for (source, (tx, rx)) in case
                .sources
                .iter()
                .zip(prefetch.channels(case.sources.len()))
            {
                let mut intake = Intake {
                    work: LocalWork {
                        strip: case.strip.clone(),
                        shard: ShardMatcher::new(case.shard.as_ref()),
                    },
                    skip_chunks: case.skip_chunks,
                    last: None,
                    buffered: Vec::new(),
                    buffered_bytes: 0,
                };
                let mut ready = Vec::new();
                for series in source {
                    let counter = Counter::default();
                    ready.extend(
                        intake
                            .accept(series.encode_to_vec().into(), &counter)
                            .unwrap(),
                    );
                }
                ready.extend(intake.take_last());
                ready.extend(intake.take_buffered());
                for series in ready {
                    let bytes = prefetch::memory_size(&series);
                    tx.send(Frame::Series(series), bytes).await.unwrap();
                }
                receivers.push(rx);
            }
            let mut output = Output {
                source: Source::Merge(Merge::new(receivers)),
                limit: case.limit,
                batch_size: case.batch_size,
                abort: false,
                sent: 0,
                pending: Vec::new(),
                pending_bytes: 0,
                limits: LimitsConfig::default(),
                chunks: 0,
                bytes: 0,
                queued: VecDeque::new(),
                done: false,
                tasks: JoinSet::new(),
            };
            let mut frames = Vec::new();
            while let Some(frame) = output.next().await {
                frames.push(frame.unwrap().encode_to_vec());
            }
            frames
        })
    }

    /// The same semantics on decoded series, encoded by the generated types.
    fn decoded(case: &Case) -> Vec<Vec<u8>> {
        let shard = ShardMatcher::new(case.shard.as_ref());
        // Label set -> the chunks of each frame that sent it, in arrival order.
        type Key = Vec<(String, String)>;
        let mut merged: BTreeMap<Key, Vec<Vec<AggrChunk>>> = BTreeMap::new();
        for source in &case.sources {
            for series in source {
                if series.chunks.is_empty() && !case.skip_chunks {
                    continue;
                }
                let mut labels = series.labels.clone();
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                labels.retain(|l| !case.strip.contains(&l.name));
                if !shard
                    .as_ref()
                    .is_none_or(|s| s.matches(labelset::as_bytes(&labels)))
                {
                    continue;
                }
                let key = labels.into_iter().map(|l| (l.name, l.value)).collect();
                merged.entry(key).or_default().push(series.chunks.clone());
            }
        }
        let series: Vec<Series> = merged
            .into_iter()
            .map(|(labels, mut frames)| {
                // Copies that are all the same are one copy.
                frames.dedup();
                let mut chunks = frames.concat();
                if frames.len() > 1 {
                    let mut seen = HashSet::new();
                    chunks.retain(|c| is_new(c, &mut seen));
                    chunks.sort_by(compare_chunks);
                }
                Series {
                    labels: labels
                        .into_iter()
                        .map(|(name, value)| Label { name, value })
                        .collect(),
                    chunks,
                }
            })
            .take(if case.limit > 0 {
                case.limit as usize
            } else {
                usize::MAX
            })
            .collect();
        let result = |series: &[Series]| match series {
            [one] if case.batch_size <= 1 => series_response::Result::Series(one.clone()),
            many => series_response::Result::Batch(SeriesBatch {
                series: many.to_vec(),
            }),
        };
        series
            .chunks(case.batch_size.max(1))
            .map(|batch| {
                SeriesResponse {
                    result: Some(result(batch)),
                }
                .encode_to_vec()
            })
            .collect()
    }

    fn arb_series() -> impl Strategy<Value = Series> {
        // Few names, values and chunk contents, so that equal label sets
        // and duplicate chunks are common.
        let labels = prop::collection::btree_map(
            prop::sample::select(vec!["__name__", "a", "b", "replica"]),
            prop::sample::select(vec!["", "x", "y"]),
            0..4,
        );
        let chunks = prop::collection::vec((0i64..4, 0u8..3, prop::bool::ANY), 0..3);
        (labels, chunks, prop::bool::ANY).prop_map(|(labels, chunks, reverse)| {
            let mut labels: Vec<Label> = labels
                .into_iter()
                .map(|(name, value)| Label {
                    name: name.into(),
                    value: value.into(),
                })
                .collect();
            if reverse {
                // Sent out of order: the relay must sort them.
                labels.reverse();
            }
            Series {
                labels,
                chunks: chunks
                    .into_iter()
                    .map(|(t, d, hashed)| AggrChunk {
                        min_time: t * 10,
                        max_time: t * 10 + 9,
                        raw: Some(Chunk {
                            r#type: 0,
                            data: vec![d, t as u8].into(),
                            hash: if hashed { u64::from(d) + 1 } else { 0 },
                        }),
                        ..Default::default()
                    })
                    .collect(),
            }
        })
    }

    fn arb_source() -> impl Strategy<Value = Vec<Series>> {
        prop::collection::vec(arb_series(), 0..12).prop_map(|mut source| {
            // A remote sends series in order of their (sorted) label sets.
            let sorted = |s: &Series| {
                let mut labels = s.labels.clone();
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                labels
            };
            source.sort_by(|a, b| labelset::compare(&sorted(a), &sorted(b)));
            source
        })
    }

    fn arb_case() -> impl Strategy<Value = Case> {
        let shard = prop::option::of((0i64..3, prop::bool::ANY)).prop_map(|shard| {
            shard.map(|(index, by)| ShardInfo {
                shard_index: index,
                total_shards: 3,
                by,
                labels: vec!["a".into()],
            })
        });
        (
            prop::collection::vec(arb_source(), 0..4),
            prop::bool::ANY,
            prop::bool::ANY,
            prop::bool::ANY,
            shard,
            0u64..6,
            prop::sample::select(vec![0usize, 1, 2, 64]),
        )
            .prop_map(
                |(sources, replica, skip_chunks, strip, shard, limit, batch_size)| {
                    let mut sources = sources;
                    if replica && let Some(first) = sources.first().cloned() {
                        // An exact copy of a remote, as two stores serving one block.
                        sources.push(first);
                    }
                    Case {
                        sources,
                        skip_chunks,
                        strip: if strip {
                            vec!["replica".into()]
                        } else {
                            vec![]
                        },
                        shard,
                        limit,
                        batch_size: batch_size.max(1),
                    }
                },
            )
    }

    #[test]
    fn malformed_or_out_of_order_series_are_the_remotes_error() {
        let mut intake = Intake {
            work: LocalWork::default(),
            skip_chunks: true,
            last: None,
            buffered: Vec::new(),
            buffered_bytes: 0,
        };
        let series = |pairs: &[(&str, &str)]| -> Bytes {
            Series {
                labels: labelset::from_pairs(pairs.iter().copied()),
                chunks: vec![],
            }
            .encode_to_vec()
            .into()
        };
        let garbage = Bytes::from_static(&[0x0a, 0x05, 0x0a]);
        let chunks = Counter::default();
        match intake.accept(garbage, &chunks) {
            Err(RemoteErrorKind::Invalid(e)) => assert!(e.contains("beyond the end"), "{e}"),
            other => panic!("{other:?}"),
        }
        let twice = series(&[("a", "1"), ("a", "2")]);
        match intake.accept(twice, &chunks) {
            Err(RemoteErrorKind::Invalid(e)) => assert!(e.contains("duplicate label name"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(
            intake
                .accept(series(&[("a", "2")]), &chunks)
                .unwrap()
                .is_none()
        );
        match intake.accept(series(&[("a", "1")]), &chunks) {
            Err(RemoteErrorKind::OutOfOrder { later, earlier }) => {
                assert_eq!(
                    (later.as_str(), earlier.as_str()),
                    ("{a=\"1\"}", "{a=\"2\"}")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn relayed_and_decoded_output_are_byte_identical(case in arb_case()) {
            prop_assert_eq!(relay(&case), decoded(&case));
        }
    }
}
