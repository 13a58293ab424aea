//! Admission: everything that bounds a call, and what the caller sees when a
//! bound is reached. A call is admitted here at each stage of its life: at
//! the door ([`SeriesSlots`]), when its remotes are planned
//! ([`admit_endpoint`]: the circuit breaker and the remote's calls in
//! progress), and while its answer grows ([`answer_exceeds`],
//! [`BufferBudget`], [`remote_exceeds`]). Mechanisms that must live beside
//! what they guard are named here and reached from their owners: the
//! breaker's state machine (`upstream::breaker`), the read-ahead windows
//! (`fanout::prefetch`), the streams per connection (`upstream::pool`), the
//! TLS handshakes in progress (`listener`), and the HTTP/2 and message limits
//! of the querier's port (`server`).
//!
//! Every limit, its key, its default (0: no limit) and what the caller sees
//! when it is reached; README's Limits section carries the same table, and a
//! test keeps the two and `LIMITS` (the same rows as data) equal:
//!
//! | key | default | when reached, the caller sees |
//! | --- | --- | --- |
//! | `limits.concurrent_series_calls` | 1024 | the Series call refused at once: `ResourceExhausted` naming the key |
//! | `limits.series_per_request` | 0 | the Series call ends with `ResourceExhausted`: "the answer exceeds limits.series_per_request" |
//! | `limits.chunks_per_request` | 0 | the Series call ends with `ResourceExhausted`: "the answer exceeds limits.chunks_per_request" |
//! | `limits.bytes_per_request` | 0 | the Series call ends with `ResourceExhausted`: "the answer exceeds limits.bytes_per_request" |
//! | `limits.bytes_per_remote` | 0 | that remote's answer cut short: a warning naming the remote and the key (`Aborted` under ABORT) |
//! | `limits.buffered_bytes_per_request` | 128 MiB | the Series call ends with `ResourceExhausted` naming the key |
//! | `remotes[].max_concurrent_calls` | 256 | the remote not called: a warning "calls to this remote are in progress already" (`Aborted` under ABORT) |
//! | `remotes[].circuit_breaker.failures` | 5 | the endpoint skipped: a warning "circuit breaker open" (`Aborted` under ABORT); a replica takes over silently |
//! | `remotes[].circuit_breaker.backoff` | 1s | as `failures`: how long the endpoint is first skipped |
//! | `remotes[].circuit_breaker.max_backoff` | 1m | as `failures`: the longest it is skipped |
//! | `remotes[].timeout` | 30s | a warning "sent nothing for ... (its timeout)" or "no answer within" (`Aborted` under ABORT); before the first frame a replica takes over |
//! | `remotes[].connect_timeout` | 5s | a warning naming the connection failure (`Aborted` under ABORT); a replica takes over |
//! | `remotes[].max_message_bytes` | 256 MiB | the remote's call ends: a warning naming the remote and the key (`Aborted` under ABORT) |
//! | `info.timeout` | 5s | the endpoint marked down: a warning "not queried, its last Info call failed" |
//! | `fanout.prefetch_bytes` | 64 MiB | nothing: the call's remote streams wait to be read |
//! | `fanout.prefetch_bytes_total` | 256 MiB | nothing: each stream reads one frame ahead |
//! | `fanout.buffer_frames` | 64 | nothing: the streamed APIs' remote streams wait to be read |
//! | `fanout.streams_per_connection` | 16 | nothing: another connection to the endpoint is opened |
//! | `grpc.max_message_bytes` | 256 MiB | the request refused: `ResourceExhausted` naming the key (`OutOfRange` for an uncompressed one) |
//! | `grpc.max_concurrent_streams` | 1024 | nothing: the querier holds further calls on the connection back |
//! | `grpc.max_header_list_bytes` | 16 KiB | the call refused with HTTP 431 |
//! | `grpc.keepalive_interval` | 30s | nothing: a silent connection is pinged |
//! | `grpc.keepalive_timeout` | 20s | the connection closed, its calls and their remote calls cancelled |
//! | `grpc.tls.max_handshakes` | 256 | the oldest handshake in progress given up, its connection closed |
//! | `http.tls.max_handshakes` | 256 | as `grpc.tls.max_handshakes`, for the HTTP port |
//!
//! Above them all, the caller's deadline (`grpc-timeout`) bounds every call
//! as a whole and is forwarded to the remotes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::LimitsConfig;
use crate::upstream::{Endpoint, RemoteError, RemoteErrorKind};

#[cfg(test)]
/// One limit: its config key, its default as the README writes it, and what
/// the caller sees when it is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub key: &'static str,
    pub default: &'static str,
    pub reached: &'static str,
}

#[cfg(test)]
const fn limit(key: &'static str, default: &'static str, reached: &'static str) -> Limit {
    Limit {
        key,
        default,
        reached,
    }
}

/// The table of the module doc, as data.
#[cfg(test)]
const LIMITS: &[Limit] = &[
    limit(
        "limits.concurrent_series_calls",
        "1024",
        "the Series call refused at once: `ResourceExhausted` naming the key",
    ),
    limit(
        "limits.series_per_request",
        "0",
        "the Series call ends with `ResourceExhausted`: \"the answer exceeds limits.series_per_request\"",
    ),
    limit(
        "limits.chunks_per_request",
        "0",
        "the Series call ends with `ResourceExhausted`: \"the answer exceeds limits.chunks_per_request\"",
    ),
    limit(
        "limits.bytes_per_request",
        "0",
        "the Series call ends with `ResourceExhausted`: \"the answer exceeds limits.bytes_per_request\"",
    ),
    limit(
        "limits.bytes_per_remote",
        "0",
        "that remote's answer cut short: a warning naming the remote and the key (`Aborted` under ABORT)",
    ),
    limit(
        "limits.buffered_bytes_per_request",
        "128 MiB",
        "the Series call ends with `ResourceExhausted` naming the key",
    ),
    limit(
        "remotes[].max_concurrent_calls",
        "256",
        "the remote not called: a warning \"calls to this remote are in progress already\" (`Aborted` under ABORT)",
    ),
    limit(
        "remotes[].circuit_breaker.failures",
        "5",
        "the endpoint skipped: a warning \"circuit breaker open\" (`Aborted` under ABORT); a replica takes over silently",
    ),
    limit(
        "remotes[].circuit_breaker.backoff",
        "1s",
        "as `failures`: how long the endpoint is first skipped",
    ),
    limit(
        "remotes[].circuit_breaker.max_backoff",
        "1m",
        "as `failures`: the longest it is skipped",
    ),
    limit(
        "remotes[].timeout",
        "30s",
        "a warning \"sent nothing for ... (its timeout)\" or \"no answer within\" (`Aborted` under ABORT); before the first frame a replica takes over",
    ),
    limit(
        "remotes[].connect_timeout",
        "5s",
        "a warning naming the connection failure (`Aborted` under ABORT); a replica takes over",
    ),
    limit(
        "remotes[].max_message_bytes",
        "256 MiB",
        "the remote's call ends: a warning naming the remote and the key (`Aborted` under ABORT)",
    ),
    limit(
        "info.timeout",
        "5s",
        "the endpoint marked down: a warning \"not queried, its last Info call failed\"",
    ),
    limit(
        "fanout.prefetch_bytes",
        "64 MiB",
        "nothing: the call's remote streams wait to be read",
    ),
    limit(
        "fanout.prefetch_bytes_total",
        "256 MiB",
        "nothing: each stream reads one frame ahead",
    ),
    limit(
        "fanout.buffer_frames",
        "64",
        "nothing: the streamed APIs' remote streams wait to be read",
    ),
    limit(
        "fanout.streams_per_connection",
        "16",
        "nothing: another connection to the endpoint is opened",
    ),
    limit(
        "grpc.max_message_bytes",
        "256 MiB",
        "the request refused: `ResourceExhausted` naming the key (`OutOfRange` for an uncompressed one)",
    ),
    limit(
        "grpc.max_concurrent_streams",
        "1024",
        "nothing: the querier holds further calls on the connection back",
    ),
    limit(
        "grpc.max_header_list_bytes",
        "16 KiB",
        "the call refused with HTTP 431",
    ),
    limit(
        "grpc.keepalive_interval",
        "30s",
        "nothing: a silent connection is pinged",
    ),
    limit(
        "grpc.keepalive_timeout",
        "20s",
        "the connection closed, its calls and their remote calls cancelled",
    ),
    limit(
        "grpc.tls.max_handshakes",
        "256",
        "the oldest handshake in progress given up, its connection closed",
    ),
    limit(
        "http.tls.max_handshakes",
        "256",
        "as `grpc.tls.max_handshakes`, for the HTTP port",
    ),
];

/// The Series calls served at once (`limits.concurrent_series_calls`).
#[derive(Debug, Clone, Default)]
pub struct SeriesSlots {
    slots: Option<Arc<Semaphore>>,
}

impl SeriesSlots {
    /// At most `calls` at once (0: no limit).
    pub fn new(calls: usize) -> Self {
        Self {
            slots: (calls > 0).then(|| Arc::new(Semaphore::new(calls))),
        }
    }

    /// A place for one more Series call, held until its answer ends, or the
    /// refusal: refused at once rather than queued, so a querier with other
    /// stores tries them instead of timing out here.
    pub fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, tonic::Status> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        slots.clone().try_acquire_owned().map(Some).map_err(|_| {
            tonic::Status::resource_exhausted(
                "thanos-fanout is serving limits.concurrent_series_calls Series calls already; retry later or raise the limit",
            )
        })
    }
}

/// A call's place among its remote's calls in progress
/// (`remotes[].max_concurrent_calls`), shared by the replicas it may move
/// between.
pub type RemoteSlot = Option<Arc<OwnedSemaphorePermit>>;

/// Whether `endpoint`'s circuit breaker (`remotes[].circuit_breaker`, its
/// state machine in `upstream::breaker`) lets it be called now; the refusal
/// is the error the caller sees for it.
pub fn admit_breaker(endpoint: &Endpoint) -> Result<(), RemoteError> {
    endpoint.breaker.admits().map_err(|open| {
        endpoint.error(RemoteErrorKind::CircuitOpen {
            failures: open.failures,
            until: open.until,
            last_error: open.last_error,
        })
    })
}

/// A place among the calls in progress to `endpoint`'s remote
/// (`remotes[].max_concurrent_calls`), or the error the caller sees.
pub fn admit_endpoint(endpoint: &Endpoint) -> Result<RemoteSlot, RemoteError> {
    endpoint
        .admit()
        .map_err(|limit| endpoint.error(RemoteErrorKind::Busy { limit }))
}

/// Which of the per-request limits (`limits.series_per_request`,
/// `chunks_per_request`, `bytes_per_request`) an answer of `series` series,
/// `chunks` chunks and `bytes` bytes is over, as the caller is told.
pub fn answer_exceeds(
    limits: &LimitsConfig,
    series: u64,
    chunks: u64,
    bytes: u64,
) -> Option<String> {
    [
        ("series_per_request", "series", limits.series_per_request, series),
        ("chunks_per_request", "chunks", limits.chunks_per_request, chunks),
        ("bytes_per_request", "bytes", limits.bytes_per_request, bytes),
    ]
    .into_iter()
    .find(|&(_, _, limit, count)| limit > 0 && count > limit)
    .map(|(key, unit, limit, _)| {
        format!(
            "the answer exceeds limits.{key} ({limit} {unit}); narrow the query (fewer series or a shorter range)"
        )
    })
}

/// Whether one remote's `bytes` for one request are past
/// `limits.bytes_per_remote` (`limit`, 0: none); the error names the remote.
pub fn remote_exceeds(limit: u64, bytes: u64, received: u64) -> Option<RemoteErrorKind> {
    (limit > 0 && bytes > limit).then_some(RemoteErrorKind::TooManyBytes { limit, received })
}

/// The encoded bytes of series one request's endpoints hold to strip
/// replica labels (`limits.buffered_bytes_per_request`; 0: no limit).
/// Counted as they are taken and not given back when handed on, so the
/// count bounds what the call holds at any moment.
#[derive(Debug)]
pub struct BufferBudget {
    pub limit: u64,
    held: AtomicU64,
}

impl BufferBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            held: AtomicU64::new(0),
        }
    }

    /// Counts `bytes` more held; false once past the limit.
    pub fn hold(&self, bytes: u64) -> bool {
        let held = self.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.limit == 0 || held <= self.limit
    }

    /// What the caller is told when the budget is spent, naming the remote
    /// whose answer had to be held.
    pub fn exceeded(&self, remote: &str) -> String {
        format!(
            "the answer needs more than limits.buffered_bytes_per_request ({} bytes) held in memory: remote {remote} does not remove replica labels itself (without_replica_labels), so its answer is held here to be sorted again after they are removed; narrow the query (fewer series or a shorter range)",
            self.limit,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the first markdown table whose rows start with `prefix`
    /// and a backticked key: (key, default, reached).
    fn table(text: &str, prefix: &str) -> Vec<(String, String, String)> {
        text.lines()
            .filter_map(|line| line.trim_start().strip_prefix(prefix))
            .filter_map(|row| row.trim().strip_prefix("| `"))
            .filter_map(|row| {
                let (key, rest) = row.split_once('`')?;
                let cells: Vec<&str> = rest.split(" | ").map(str::trim).collect();
                match cells.as_slice() {
                    [_, default, reached] => Some((
                        key.to_owned(),
                        default.to_string(),
                        reached.trim_end_matches('|').trim().to_owned(),
                    )),
                    _ => None,
                }
            })
            .collect()
    }

    fn limits() -> Vec<(String, String, String)> {
        LIMITS
            .iter()
            .map(|l| (l.key.into(), l.default.into(), l.reached.into()))
            .collect()
    }

    /// The section of `markdown` under the heading titled `title`, whatever
    /// its level or place, up to the next heading.
    fn section<'a>(markdown: &'a str, title: &str) -> &'a str {
        let mut start = None;
        let mut offset = 0;
        for line in markdown.split_inclusive('\n') {
            let heading = line.starts_with('#') && line.trim_start_matches('#').starts_with(' ');
            if let Some(from) = start {
                if heading {
                    return &markdown[from..offset];
                }
            } else if heading && line.trim_start_matches('#').trim() == title {
                start = Some(offset + line.len());
            }
            offset += line.len();
        }
        match start {
            Some(from) => &markdown[from..],
            None => panic!("no heading titled {title:?}"),
        }
    }

    #[test]
    fn the_buffer_budget_counts_every_endpoint_of_the_request() {
        let budget = BufferBudget::new(100);
        assert!(budget.hold(60));
        assert!(budget.hold(40), "up to the limit");
        assert!(!budget.hold(1), "past it");
        let unlimited = BufferBudget::new(0);
        assert!(unlimited.hold(u64::MAX / 2) && unlimited.hold(1));
    }

    #[test]
    fn the_module_doc_is_the_table_of_limits() {
        let doc = table(include_str!("admission.rs"), "//!");
        assert_eq!(doc, limits());
    }

    #[test]
    fn readme_limits_section_lists_every_limit_with_its_default() {
        let readme = include_str!("../README.md");
        let rows = table(section(readme, "Limits"), "");
        let keys = |rows: &[(String, String, String)]| {
            rows.iter()
                .map(|(key, default, _)| (key.clone(), default.clone()))
                .collect::<Vec<_>>()
        };
        let ours = keys(&limits());
        for row in keys(&rows) {
            assert!(
                ours.contains(&row),
                "README's Limits has {row:?}, LIMITS does not"
            );
        }
        for row in &ours {
            assert!(
                keys(&rows).contains(row),
                "LIMITS has {row:?}, README's Limits section does not"
            );
        }
    }

    #[test]
    fn example_config_mentions_every_limit() {
        let example = include_str!("../config/example.yaml");
        for limit in LIMITS {
            let leaf = limit.key.rsplit('.').next().unwrap_or(limit.key);
            assert!(
                example.contains(&format!("{leaf}:")),
                "config/example.yaml does not mention {}",
                limit.key
            );
        }
    }

    /// The value of `key` in the serialized defaults, as the table writes it.
    fn default_of(defaults: &serde_yaml::Value, key: &str) -> String {
        let mut value = defaults;
        for part in key.split('.') {
            value = &value[part.trim_end_matches("[]")];
        }
        match value {
            serde_yaml::Value::Number(n) => {
                let n = n.as_u64().unwrap();
                // Sizes are written in KiB or MiB, counts (up to 1024) as
                // they are.
                match n {
                    n if n > 0 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
                    n if n > 1024 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
                    n => n.to_string(),
                }
            }
            serde_yaml::Value::String(s) => s.clone(),
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn the_defaults_in_the_table_are_the_configs() {
        let mut defaults = serde_yaml::to_value(crate::config::Config::default()).unwrap();
        let remote: crate::config::RemoteConfig =
            serde_yaml::from_str("{name: a, targets: ['a:1']}").unwrap();
        defaults["remotes"] = serde_yaml::to_value(remote).unwrap();
        let tls: crate::config::ListenerTls =
            serde_yaml::from_str("{cert_file: c, key_file: k}").unwrap();
        for port in ["grpc", "http"] {
            defaults[port]["tls"] = serde_yaml::to_value(&tls).unwrap();
        }
        for limit in LIMITS {
            assert_eq!(
                default_of(&defaults, limit.key),
                limit.default,
                "{}",
                limit.key
            );
        }
    }
}
