//! Fuzz targets, driven by proptest on the stable toolchain: arbitrary and
//! mutated inputs (seeded from `fuzz/corpus/<target>/`) through the code
//! that reads what queriers, remotes and operators send. None may panic;
//! each is also checked against what it must agree with.
//!
//! `cargo test --test fuzz` runs each target for `FUZZ_CASES` cases (4000 by
//! default, about 20 seconds in all on 2 cores); for a long run:
//! `FUZZ_CASES=200000 cargo test --release --test fuzz`. A failure is
//! shrunk and saved in `tests/fuzz.proptest-regressions`, which is kept
//! in the repository and replayed first on every run.

// A test stops at the first thing it did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;
use prost::Message;
use thanos_fanout::fanout::merge::{Frame, Merge};
use thanos_fanout::fanout::{Fanout, Prefetch, RequestContext};
use thanos_fanout::labelset::{self, Matcher};
use thanos_fanout::proto::thanos::{
    AggrChunk, Chunk, Label, LabelMatcher, LabelNamesRequest, LabelValuesRequest, Series,
    SeriesRequest, ShardInfo, label_matcher,
};
use thanos_fanout::upstream::Upstreams;
use thanos_fanout::wire::RawSeries;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2000,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fuzz.proptest-regressions"
            )),
        )),
        ..ProptestConfig::default()
    }
}

/// The seed inputs of a target, from `fuzz/corpus/<target>/`.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("read seed"))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// One change to a byte string, as a mutating fuzzer makes them.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::SetByte(at, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1usize..16).prop_map(|(at, n)| Mutation::Remove(at, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..32).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match m {
            Mutation::FlipBit(i, bit) if len > 0 => bytes[at(*i)] ^= 1 << bit,
            Mutation::SetByte(i, b) if len > 0 => bytes[at(*i)] = *b,
            Mutation::Insert(i, b) => {
                let i = if len == 0 { 0 } else { i % (len + 1) };
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::Remove(i, n) if len > 0 => {
                let i = at(*i);
                bytes.drain(i..(i + n).min(len));
            }
            Mutation::Truncate(n) if len > 0 => bytes.truncate(n % len),
            Mutation::Duplicate(i, n) if len > 0 => {
                let i = at(*i);
                let piece: Vec<u8> = bytes[i..(i + n).min(len)].to_vec();
                bytes.splice(i..i, piece);
            }
            _ => {}
        }
    }
    bytes
}

/// A seed from `target`'s corpus (or arbitrary bytes), mutated.
fn input(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus(target);
    prop_oneof![
        3 => (0..seeds.len(), prop::collection::vec(mutation(), 0..6))
            .prop_map(move |(i, ms)| mutate(seeds[i].clone(), &ms)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// Strings that stress names, values and regexes.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,6}",
        "[a-z.*+?|()\\[\\]{}^$\\\\0-9-]{0,12}",
        any::<String>(),
        Just(String::new()),
    ]
}

fn label_matcher() -> impl Strategy<Value = LabelMatcher> {
    (-1i32..5, text(), text()).prop_map(|(r#type, name, value)| LabelMatcher {
        r#type,
        name,
        value,
    })
}

fn series_request() -> impl Strategy<Value = SeriesRequest> {
    (
        (any::<i64>(), any::<i64>()),
        prop::collection::vec(label_matcher(), 0..5),
        (any::<i64>(), any::<i64>(), any::<bool>()),
        prop::option::of((
            any::<i64>(),
            any::<i64>(),
            any::<bool>(),
            prop::collection::vec(text(), 0..3),
        )),
        (-1i32..3, any::<bool>(), prop::collection::vec(text(), 0..3)),
    )
        .prop_map(
            |(
                (min_time, max_time),
                matchers,
                (limit, batch, skip_chunks),
                shard,
                (strategy, disabled, without),
            )| {
                SeriesRequest {
                    min_time,
                    max_time,
                    matchers,
                    limit,
                    response_batch_size: batch,
                    skip_chunks,
                    shard_info: shard.map(|(shard_index, total_shards, by, labels)| ShardInfo {
                        shard_index,
                        total_shards,
                        by,
                        labels,
                    }),
                    partial_response_strategy: strategy,
                    partial_response_disabled: disabled,
                    without_replica_labels: without,
                    ..Default::default()
                }
            },
        )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A fan-out with no remotes: the request path up to the remotes.
fn fanout() -> Fanout {
    Fanout::new(
        Arc::new(Upstreams::default()),
        Prefetch::new(1 << 20, 4 << 20),
        4,
    )
}

/// Runs a Series request through the fan-out; errors must be bounded.
async fn serve(fanout: &Fanout, req: SeriesRequest) {
    match fanout.series(req, RequestContext::default()) {
        Ok(mut stream) => while stream.next().await.is_some() {},
        Err(e) => assert!(
            e.to_string().len() < 4096,
            "{} bytes of error",
            e.to_string().len()
        ),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Target 1: Series, LabelNames and LabelValues requests as they arrive
    /// on the wire, decoded and served.
    #[test]
    fn requests(bytes in input("series_request"), structured in series_request()) {
        let rt = runtime();
        let fanout = fanout();
        rt.block_on(async {
            if let Ok(req) = SeriesRequest::decode(bytes.as_slice()) {
                serve(&fanout, req).await;
            }
            serve(&fanout, structured.clone()).await;
            if let Ok(req) = LabelNamesRequest::decode(bytes.as_slice()) {
                let _ = fanout.label_names(req, RequestContext::default()).await;
            }
            if let Ok(req) = LabelValuesRequest::decode(bytes.as_slice()) {
                let _ = fanout.label_values(req, RequestContext::default()).await;
            }
        });
    }

    /// Target 2: a remote's series, read in place, against prost's decoding.
    #[test]
    fn remote_series(bytes in input("remote_series")) {
        let bytes = Bytes::from(bytes);
        if let Ok((raw, order)) = RawSeries::parse(bytes.clone()) {
            // What the relay accepts, prost reads the same way.
            let decoded = Series::decode(bytes.as_ref()).expect("prost reads what the relay accepted");
            let relayed = raw.decode().expect("decodes");
            prop_assert_eq!(&relayed, &decoded);
            prop_assert_eq!(raw.decode_labels(), decoded.labels.clone());
            prop_assert_eq!(raw.chunks(), decoded.chunks.len());
            let sorted = decoded.labels.windows(2).all(|w| w[0].name < w[1].name);
            prop_assert_eq!(sorted, matches!(order, thanos_fanout::wire::Labels::Sorted), "order told right");
        }
    }

    /// Target 3: matchers compiled and applied, against a model: equality
    /// is string equality, a regex is anchored, negation negates.
    #[test]
    fn matchers(m in label_matcher(), values in prop::collection::vec(text(), 1..6)) {
        match Matcher::compile(&m) {
            Err(e) => prop_assert!(e.to_string().len() < 1024, "{} bytes of error", e.to_string().len()),
            Ok(compiled) => {
                let negated = LabelMatcher {
                    r#type: match label_matcher::Type::try_from(m.r#type) {
                        Ok(label_matcher::Type::Eq) => label_matcher::Type::Neq,
                        Ok(label_matcher::Type::Neq) => label_matcher::Type::Eq,
                        Ok(label_matcher::Type::Re) => label_matcher::Type::Nre,
                        _ => label_matcher::Type::Re,
                    } as i32,
                    ..m.clone()
                };
                let opposite = Matcher::compile(&negated).expect("the negation compiles too");
                for v in values.iter().chain([&m.value]) {
                    prop_assert_ne!(compiled.matches(v), opposite.matches(v));
                    match label_matcher::Type::try_from(m.r#type) {
                        Ok(label_matcher::Type::Eq) => prop_assert_eq!(compiled.matches(v), v == &m.value),
                        Ok(label_matcher::Type::Re) => {
                            // Anchored: a literal pattern matches itself only.
                            let literal = LabelMatcher { value: regex_syntax_escape(&m.value), ..m.clone() };
                            let literal = Matcher::compile(&literal).expect("an escaped literal compiles");
                            prop_assert_eq!(literal.matches(v), v == &m.value);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Target 4: the k-way merge of sorted remote streams: sorted, each
    /// label set once, nothing lost, chunks of equal series combined.
    #[test]
    fn merge(streams in prop::collection::vec(prop::collection::btree_map(label_set(), chunk_set(), 0..12), 1..5)) {
        let sources: Vec<_> = streams
            .iter()
            .map(|stream| {
                let frames: Vec<Frame> = stream
                    .iter()
                    .map(|(labels, chunks)| Frame::Series(RawSeries::encode(&series(labels, chunks))))
                    .collect();
                futures::stream::iter(frames)
            })
            .collect();
        let merged = runtime().block_on(async {
            let mut merge = Merge::new(sources);
            let mut out = Vec::new();
            while let Some(frame) = merge.next().await {
                if let Frame::Series(s) = frame {
                    out.push(s.decode().expect("decodes"));
                }
            }
            out
        });
        prop_assert!(merged.windows(2).all(|w| labelset::compare(&w[0].labels, &w[1].labels).is_lt()), "sorted, no duplicates");
        // Like a Thanos proxy: chunks are told apart by their data (its
        // hash) alone, the first copy kept.
        type Chunks = std::collections::BTreeSet<(i64, i64, Vec<u8>)>;
        let mut want: std::collections::BTreeMap<Vec<(String, String)>, Chunks> = Default::default();
        for stream in &streams {
            for (labels, chunks) in stream {
                want.entry(labels.clone()).or_default().extend(chunks.iter().cloned());
            }
        }
        prop_assert_eq!(merged.len(), want.len(), "every label set once");
        for s in &merged {
            let labels: Vec<(String, String)> = s.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
            let got: Vec<(i64, i64, Vec<u8>)> = s
                .chunks
                .iter()
                .map(|c| (c.min_time, c.max_time, c.raw.as_ref().map(|r| r.data.to_vec()).unwrap_or_default()))
                .collect();
            let sent = &want[&labels];
            prop_assert!(got.iter().all(|c| sent.contains(c)), "only chunks that were sent, for {:?}", labels);
            let data = |chunks: &mut dyn Iterator<Item = &(i64, i64, Vec<u8>)>| -> std::collections::BTreeSet<Vec<u8>> {
                chunks.map(|c| c.2.clone()).collect()
            };
            prop_assert_eq!(data(&mut got.iter()), data(&mut sent.iter()), "every chunk's data, for {:?}", labels);
            prop_assert_eq!(data(&mut got.iter()).len(), got.len(), "no data twice, for {:?}", labels);
            prop_assert!(got.windows(2).all(|w| (w[0].0, w[0].1) <= (w[1].0, w[1].1)), "chunks by time, for {:?}", labels);
        }
    }

    /// Target 5: config files: never a panic; an error names a key or the file.
    #[test]
    fn config_files(bytes in input("config")) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, &bytes).expect("write");
        if let Err(e) = thanos_fanout::config::Config::load(Some(&path), &Default::default()) {
            let text = e.to_string();
            prop_assert!(!text.is_empty());
        }
    }

    /// Target 6: file_sd documents: never a panic; what parses is targets.
    #[test]
    fn file_sd(bytes in input("file_sd")) {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(targets) = thanos_fanout::discovery::parse_file_sd(&text) {
            for t in targets {
                prop_assert!(!t.to_string().is_empty());
            }
        }
    }
}

/// A label set, sorted by name, names unique.
fn label_set() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map("[a-c]{1,2}", "[x-z]{0,2}", 1..4)
        .prop_map(|m| m.into_iter().collect())
}

/// One series' chunks from one store: each chunk's data different (a
/// store never repeats a chunk within a series; copies come from replicas).
fn chunk_set() -> impl Strategy<Value = std::collections::BTreeSet<(i64, i64, Vec<u8>)>> {
    prop::collection::btree_map(
        prop::collection::vec(any::<u8>(), 1..4),
        (0i64..4, 0i64..4),
        0..3,
    )
    .prop_map(|chunks| {
        chunks
            .into_iter()
            .map(|(data, (min, max))| (min, max, data))
            .collect()
    })
}

fn series(
    labels: &[(String, String)],
    chunks: &std::collections::BTreeSet<(i64, i64, Vec<u8>)>,
) -> Series {
    Series {
        labels: labels
            .iter()
            .map(|(name, value)| Label {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        chunks: chunks
            .iter()
            .map(|(min, max, data)| AggrChunk {
                min_time: *min,
                max_time: *max,
                raw: Some(Chunk {
                    r#type: 0,
                    data: Bytes::from(data.clone()),
                    hash: 0,
                }),
                ..Default::default()
            })
            .collect(),
    }
}

/// `text` as a regex that matches exactly it.
fn regex_syntax_escape(text: &str) -> String {
    regex::escape(text)
}
