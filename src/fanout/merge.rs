//! Streaming k-way merge of sorted series streams.
//!
//! Each source yields series sorted by label set, with warnings anywhere.
//! The merge holds one head per source and emits series in label order;
//! warnings go out as soon as they reach the head of their source. Series
//! stay encoded (see [`crate::wire`]): labels are compared in place, and a
//! series only one source sent leaves as it came. Equal label sets
//! (replicas, or one series split over frames) are combined into one
//! series: their chunks are decoded, chunks seen twice (same hash) dropped
//! and the rest sorted by time. Memory is one head per source plus the
//! series being combined.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::future::poll_fn;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use xxhash_rust::xxh64::xxh64;

use crate::proto::thanos::{AggrChunk, Chunk};
use crate::upstream::RemoteError;
use crate::wire::{self, RawSeries};

/// One item of a per-remote stream.
#[derive(Debug, Clone)]
pub enum Frame {
    Series(RawSeries),
    /// A remote's failure or warning, for the partial-response strategy.
    Warning(RemoteError),
    /// The request went past one of `limits`: the call fails with this
    /// message, whatever the partial-response strategy.
    Exceeded(String),
}

struct Head {
    series: RawSeries,
    source: usize,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        wire::compare(&self.series, &other.series).then(self.source.cmp(&other.source))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

/// Merges sorted sources into one sorted stream of unique label sets.
pub struct Merge<S> {
    sources: Vec<S>,
    /// Sources whose next series we are waiting for.
    waiting: Vec<usize>,
    heap: BinaryHeap<Reverse<Head>>,
    /// Warnings and limits exceeded, passed on before any series.
    warnings: VecDeque<Frame>,
    run: Option<Run>,
}

impl<S: Stream<Item = Frame> + Unpin> Merge<S> {
    pub fn new(sources: Vec<S>) -> Self {
        let waiting = (0..sources.len()).collect();
        Self {
            sources,
            waiting,
            heap: BinaryHeap::new(),
            warnings: VecDeque::new(),
            run: None,
        }
    }

    /// Polls every source that has no head yet. Ready when all of them have a
    /// head or have ended, or as soon as a warning is queued (so an ABORT is
    /// not held up by a slow remote).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut i = 0;
        while i < self.waiting.len() {
            let source = self.waiting[i];
            match self.sources[source].poll_next_unpin(cx) {
                Poll::Ready(Some(Frame::Series(series))) => {
                    self.heap.push(Reverse(Head { series, source }));
                    self.waiting.swap_remove(i);
                }
                Poll::Ready(Some(notice @ (Frame::Warning(_) | Frame::Exceeded(_)))) => {
                    self.warnings.push_back(notice)
                }
                Poll::Ready(None) => {
                    self.waiting.swap_remove(i);
                }
                Poll::Pending => i += 1,
            }
        }
        if self.waiting.is_empty() || !self.warnings.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The next warning or merged series; `None` when every source has ended.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(notice) = self.warnings.pop_front() {
                return Some(notice);
            }
            poll_fn(|cx| self.poll_fill(cx)).await;
            if !self.warnings.is_empty() {
                continue;
            }
            let continues_run = match (&self.run, self.heap.peek()) {
                (Some(run), Some(Reverse(top))) => {
                    wire::compare(&top.series, &run.first) == Ordering::Equal
                }
                _ => false,
            };
            if !continues_run && let Some(run) = self.run.take() {
                return Some(Frame::Series(run.finish()));
            }
            let Reverse(head) = self.heap.pop()?;
            self.waiting.push(head.source);
            match &mut self.run {
                Some(run) => run.push(head.series),
                None => self.run = Some(Run::new(head.series)),
            }
        }
    }
}

/// Consecutive frames with equal label sets, combined into one series.
struct Run {
    first: RawSeries,
    more: Vec<RawSeries>,
}

impl Run {
    fn new(first: RawSeries) -> Self {
        Self {
            first,
            more: Vec::new(),
        }
    }

    fn push(&mut self, series: RawSeries) {
        self.more.push(series);
    }

    fn finish(self) -> RawSeries {
        let Run { first, more } = self;
        if more.is_empty() {
            // Sent once, by one remote: nothing to combine.
            return first;
        }
        if first.chunks() == 0 && more.iter().all(|s| s.chunks() == 0) {
            // Labels only (skip_chunks): the first frame says it all.
            return first;
        }
        if more.iter().all(|s| s.as_bytes() == first.as_bytes()) {
            // The same block seen through two stores (a sidecar and the
            // store gateway it uploaded to): the copies are identical.
            return first;
        }
        let mut seen = HashSet::new();
        let mut chunks: Vec<AggrChunk> = std::iter::once(&first)
            .chain(&more)
            .flat_map(RawSeries::decode_chunks)
            .filter(|c| is_new(c, &mut seen))
            .collect();
        chunks.sort_by(compare_chunks);
        first.with_chunks(&chunks)
    }
}

fn chunk_hash(chunk: &Chunk) -> u64 {
    if chunk.hash != 0 {
        chunk.hash
    } else {
        xxh64(&chunk.data, 0)
    }
}

/// Keeps an aggregate chunk if any of its parts has not been seen yet
/// (checked in the order raw, count, max, min, sum, counter).
pub(super) fn is_new(chunk: &AggrChunk, seen: &mut HashSet<u64>) -> bool {
    [
        chunk.raw.as_ref(),
        chunk.count.as_deref(),
        chunk.max.as_deref(),
        chunk.min.as_deref(),
        chunk.sum.as_deref(),
        chunk.counter.as_deref(),
    ]
    .into_iter()
    .flatten()
    .any(|part| seen.insert(chunk_hash(part)))
}

pub(super) fn compare_chunks(a: &AggrChunk, b: &AggrChunk) -> Ordering {
    let part = |x: Option<&Chunk>, y: Option<&Chunk>| match (x, y) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.r#type.cmp(&y.r#type).then_with(|| x.data.cmp(&y.data)),
    };
    a.min_time
        .cmp(&b.min_time)
        .then(a.max_time.cmp(&b.max_time))
        .then_with(|| part(a.raw.as_ref(), b.raw.as_ref()))
        .then_with(|| part(a.count.as_deref(), b.count.as_deref()))
        .then_with(|| part(a.sum.as_deref(), b.sum.as_deref()))
        .then_with(|| part(a.min.as_deref(), b.min.as_deref()))
        .then_with(|| part(a.max.as_deref(), b.max.as_deref()))
        .then_with(|| part(a.counter.as_deref(), b.counter.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labelset::{self, from_pairs};
    use crate::proto::thanos::Series;
    use futures::stream;
    use proptest::prelude::*;

    fn chunk(min: i64, data: &[u8]) -> AggrChunk {
        AggrChunk {
            min_time: min,
            max_time: min + 10,
            raw: Some(Chunk {
                r#type: 0,
                data: bytes::Bytes::copy_from_slice(data),
                hash: 0,
            }),
            ..Default::default()
        }
    }

    fn series(name: &str, chunks: Vec<AggrChunk>) -> Frame {
        Frame::Series(RawSeries::encode(&Series {
            labels: from_pairs([("__name__", name)]),
            chunks,
        }))
    }

    fn warning(remote: &str, text: &str) -> RemoteError {
        RemoteError {
            remote: remote.into(),
            endpoint: format!("{remote}:1"),
            kind: crate::upstream::RemoteErrorKind::Warning(text.into()),
        }
    }

    fn merge_all(sources: Vec<Vec<Frame>>) -> Vec<Frame> {
        let sources = sources.into_iter().map(stream::iter).collect();
        let mut merge = Merge::new(sources);
        futures::executor::block_on(async {
            let mut out = Vec::new();
            while let Some(frame) = merge.next().await {
                out.push(frame);
            }
            out
        })
    }

    #[test]
    fn merges_identical_series_and_drops_duplicate_chunks() {
        let a = vec![series("m", vec![chunk(0, b"x"), chunk(20, b"y")])];
        let b = vec![series("m", vec![chunk(20, b"y"), chunk(40, b"z")])];
        let out = series_only(merge_all(vec![a, b]));
        assert_eq!(out.len(), 1);
        let s = &out[0];
        let mins: Vec<i64> = s.chunks.iter().map(|c| c.min_time).collect();
        assert_eq!(mins, vec![0, 20, 40]);
    }

    #[test]
    fn warnings_come_first_and_series_are_sorted() {
        let a = vec![
            series("b", vec![chunk(0, b"1")]),
            Frame::Warning(warning("x", "boom")),
        ];
        let b = vec![
            Frame::Warning(warning("y", "slow")),
            series("a", vec![chunk(0, b"2")]),
            series("c", vec![chunk(0, b"3")]),
        ];
        let out = merge_all(vec![a, b]);
        let names: Vec<String> = out
            .iter()
            .map(|f| match f {
                Frame::Series(s) => s.decode_labels()[0].value.clone(),
                Frame::Warning(w) => w.to_string(),
                Frame::Exceeded(e) => e.clone(),
            })
            .collect();
        // A warning is emitted as soon as it reaches the head of its source.
        assert_eq!(names[0], "remote y (y:1): slow");
        assert!(names.contains(&"remote x (x:1): boom".to_string()));
        let series: Vec<&String> = names.iter().filter(|n| n.len() == 1).collect();
        assert_eq!(series, ["a", "b", "c"]);
    }

    fn arb_source() -> impl Strategy<Value = Vec<Series>> {
        // Few names and chunk contents, so collisions (merges, duplicate chunks) are common.
        prop::collection::vec(
            (0u8..12, prop::collection::vec((0i64..6, 0u8..4), 0..4)),
            0..20,
        )
        .prop_map(|items| {
            let mut out: Vec<Series> = items
                .into_iter()
                .map(|(n, chunks)| Series {
                    labels: from_pairs([("__name__", "m"), ("i", &format!("{n:02}"))]),
                    // A remote sends a chunk once per series; it may send it
                    // again in another frame, or another remote may.
                    chunks: chunks
                        .into_iter()
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .map(|(t, d)| chunk(t * 10, &[d, t as u8]))
                        .collect(),
                })
                .collect();
            out.sort_by(|a, b| labelset::compare(&a.labels, &b.labels));
            out
        })
    }

    fn frames(series: &[Series]) -> Vec<Frame> {
        series
            .iter()
            .map(|s| Frame::Series(RawSeries::encode(s)))
            .collect()
    }

    fn series_only(frames: Vec<Frame>) -> Vec<Series> {
        frames
            .into_iter()
            .filter_map(|f| match f {
                Frame::Series(s) => Some(s.decode().unwrap()),
                Frame::Warning(_) | Frame::Exceeded(_) => None,
            })
            .collect()
    }

    proptest! {
        #[test]
        fn merge_output_is_sorted_complete_and_idempotent(
            sources in prop::collection::vec(arb_source(), 0..5)
        ) {
            let merged = series_only(merge_all(sources.iter().map(|s| frames(s)).collect()));

            // Strictly increasing label sets: sorted and no label set twice.
            for w in merged.windows(2) {
                prop_assert_eq!(labelset::compare(&w[0].labels, &w[1].labels), Ordering::Less);
            }
            // Nothing lost: every input label set and every distinct chunk is there.
            let input: Vec<&Series> = sources.iter().flatten().collect();
            for s in &input {
                let out = merged
                    .iter()
                    .find(|m| m.labels == s.labels)
                    .expect("label set present in output");
                for c in &s.chunks {
                    prop_assert!(out.chunks.contains(c), "chunk lost");
                }
            }
            for m in &merged {
                prop_assert!(input.iter().any(|s| s.labels == m.labels), "invented series");
                let hashes: HashSet<u64> =
                    m.chunks.iter().filter_map(|c| c.raw.as_ref()).map(chunk_hash).collect();
                prop_assert_eq!(hashes.len(), m.chunks.len(), "duplicate chunk kept");
            }
            // Idempotent: merging the output with itself changes nothing.
            let again = series_only(merge_all(vec![frames(&merged), frames(&merged)]));
            prop_assert_eq!(again, merged);
        }
    }
}
