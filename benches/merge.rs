//! Throughput of the k-way merge with identical-series merging, in process:
//! the same total number of series split over 1, 3 and 10 sources, and the
//! replica case where every source holds the same series.

// A benchmark stops at the first thing it did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::stream;
use thanos_fanout::demo::synthetic::encode_chunks;
use thanos_fanout::fanout::merge::{Frame, Merge};
use thanos_fanout::labelset::from_pairs;
use thanos_fanout::proto::thanos::{AggrChunk, Series};
use thanos_fanout::wire::RawSeries;

const TOTAL: usize = 30_000;

fn chunks() -> Vec<AggrChunk> {
    let samples: Vec<(i64, f64)> = (0..1440).map(|i| (i * 15_000, (i % 97) as f64)).collect();
    encode_chunks(&samples).expect("chunks")
}

/// `k` sorted sources; `replicas`: every source has all series, else they are interleaved.
fn sources(k: usize, replicas: bool) -> Vec<Vec<Frame>> {
    let chunks = chunks();
    let per_source = if replicas { TOTAL / k } else { TOTAL };
    let mut out = vec![Vec::new(); k];
    for i in 0..per_source {
        let name = format!("{i:08}");
        let series = RawSeries::encode(&Series {
            labels: from_pairs([("__name__", "load"), ("i", name.as_str()), ("job", "bench")]),
            chunks: chunks.clone(),
        });
        if replicas {
            for source in out.iter_mut() {
                source.push(Frame::Series(series.clone()));
            }
        } else {
            out[i % k].push(Frame::Series(series));
        }
    }
    out
}

fn run(sources: Vec<Vec<Frame>>) -> usize {
    let mut merge = Merge::new(sources.into_iter().map(stream::iter).collect());
    futures::executor::block_on(async {
        let mut n = 0;
        while let Some(frame) = merge.next().await {
            if let Frame::Series(s) = frame {
                n += s.chunks();
            }
        }
        n
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge");
    group.sample_size(10);
    group.throughput(Throughput::Elements(TOTAL as u64));
    for k in [1usize, 3, 10] {
        group.bench_with_input(BenchmarkId::new("distinct", k), &k, |b, &k| {
            b.iter_batched(|| sources(k, false), run, criterion::BatchSize::LargeInput)
        });
    }
    group.bench_with_input(BenchmarkId::new("replicas", 3), &3, |b, &k| {
        b.iter_batched(|| sources(k, true), run, criterion::BatchSize::LargeInput)
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
