//! The HTTP/2 connections to one endpoint, sized so that no stream can stall
//! another.
//!
//! HTTP/2 flow control has two levels: data a stream has received but its
//! reader has not taken yet holds both that stream's window and the whole
//! connection's. A Series stream stops being read whenever its merge waits on
//! another remote or its caller reads slowly, so a few stalled streams could
//! hold a connection's entire window, and then nothing reaches any stream on
//! it: not the streams other merges are waiting for (which then wait on each
//! other across connections, for ever), not Info.
//!
//! So every connection carries at most `streams_per_connection` Series
//! streams, and its window is those streams' windows together plus
//! [`UNARY_HEADROOM`] (arithmetic in [`crate::http2_window`]). However many of its streams stall, a stream that is
//! being read, and every unary call (Info, label calls, always read at once),
//! still gets data. When every connection is full, another one is opened;
//! connections beyond the first close after [`IDLE_CLOSE`] without streams.
//!
//! The stream window (`remotes[].http2.stream_window`) caps one stream at a
//! window per round trip, so long-haul remotes want it large; it is also what
//! a stalled stream holds in memory. Windows are fixed: hyper's adaptive
//! (BDP) windows set the connection window to the same size as each stream's,
//! so one stalled stream could take all of it.
//!
//! Listed, with every other limit on a call, in [`crate::admission`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tonic::transport::{Channel, Endpoint as ChannelEndpoint};

use super::connect::Connector;
use crate::http2_window::{MAX_WINDOW, UNARY_HEADROOM, connection_window};

/// How long an extra connection may sit without streams before it is closed.
pub const IDLE_CLOSE: Duration = Duration::from_secs(60);

/// The stream and connection windows for `per_connection` streams of (at
/// most) `stream_window`: the invariant holds even for a config that skipped
/// validation.
fn windows(stream_window: u32, per_connection: usize) -> (u32, u32) {
    match connection_window(stream_window, per_connection) {
        Some(window) => (stream_window, window),
        None => {
            let streams = u32::try_from(per_connection).unwrap_or(u32::MAX).max(1);
            let stream_window = (MAX_WINDOW - UNARY_HEADROOM) / streams;
            (stream_window, stream_window * streams + UNARY_HEADROOM)
        }
    }
}

struct Connection {
    id: u64,
    channel: Channel,
    streams: usize,
    idle_since: Instant,
}

struct Connections {
    next_id: u64,
    /// The first is the primary: never closed (only replaced when retired),
    /// it carries the unary calls.
    list: Vec<Connection>,
}

struct Shared {
    endpoint: ChannelEndpoint,
    connector: Connector,
    per_connection: usize,
    connections: Mutex<Connections>,
    gauge: Gauge,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Connections> {
        match self.connections.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn open(&self, connections: &mut Connections) -> usize {
        let id = connections.next_id;
        connections.next_id += 1;
        connections.list.push(Connection {
            id,
            channel: self
                .endpoint
                .clone()
                .connect_with_connector_lazy(self.connector.clone()),
            streams: 0,
            idle_since: Instant::now(),
        });
        self.gauge.set(connections.list.len() as i64);
        connections.list.len() - 1
    }

    /// Closes extra connections that have carried no stream for a while.
    fn close_idle(&self, connections: &mut Connections, now: Instant) {
        let before = connections.list.len();
        let mut index = 0;
        connections.list.retain(|c| {
            index += 1;
            index == 1 || c.streams > 0 || now.duration_since(c.idle_since) < IDLE_CLOSE
        });
        if connections.list.len() != before {
            self.gauge.set(connections.list.len() as i64);
        }
    }
}

/// The connections to one endpoint; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let connections = self.shared.lock();
        f.debug_struct("Pool")
            .field("connections", &connections.list.len())
            .field(
                "streams",
                &connections
                    .list
                    .iter()
                    .map(|c| c.streams)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Pool {
    /// `endpoint` must not dial by itself; `connector` does. Nothing is dialled
    /// until the first call. A `stream_window` too large for `per_connection`
    /// streams (which validation rejects) is shrunk until they fit.
    pub fn new(
        endpoint: ChannelEndpoint,
        connector: Connector,
        per_connection: usize,
        stream_window: u32,
        gauge: Gauge,
    ) -> Self {
        let per_connection = per_connection.max(1);
        let (stream_window, window) = windows(stream_window, per_connection);
        let endpoint = endpoint
            .initial_stream_window_size(stream_window)
            .initial_connection_window_size(window)
            // Fixed windows: the invariant above depends on their sizes.
            .http2_adaptive_window(false);
        let shared = Arc::new(Shared {
            endpoint,
            connector,
            per_connection,
            connections: Mutex::new(Connections {
                next_id: 0,
                list: Vec::new(),
            }),
            gauge,
        });
        shared.open(&mut shared.lock());
        Self { shared }
    }

    /// The connection for unary calls.
    pub fn primary(&self) -> Channel {
        let mut connections = self.shared.lock();
        if connections.list.is_empty() {
            self.shared.open(&mut connections);
        }
        connections.list[0].channel.clone()
    }

    /// A place for one Series stream, held until the lease is dropped.
    pub fn stream(&self) -> StreamLease {
        let shared = &self.shared;
        let mut connections = shared.lock();
        let now = Instant::now();
        shared.close_idle(&mut connections, now);
        let index = match connections
            .list
            .iter()
            .position(|c| c.streams < shared.per_connection)
        {
            Some(index) => index,
            None => shared.open(&mut connections),
        };
        let connection = &mut connections.list[index];
        connection.streams += 1;
        StreamLease {
            shared: self.shared.clone(),
            id: connection.id,
            channel: connection.channel.clone(),
            counted: true,
        }
    }

    /// The connection for one unary call, as a lease that takes no stream's
    /// place (a unary answer is read at once) but can retire the connection
    /// if the remote turns the call away unread.
    pub fn unary(&self) -> StreamLease {
        let mut connections = self.shared.lock();
        if connections.list.is_empty() {
            self.shared.open(&mut connections);
        }
        let primary = &connections.list[0];
        StreamLease {
            shared: self.shared.clone(),
            id: primary.id,
            channel: primary.channel.clone(),
            counted: false,
        }
    }

    /// Open connections, for the status page and tests.
    pub fn connections(&self) -> usize {
        self.shared.lock().list.len()
    }
}

/// One stream's place on a connection (or, from [`Pool::unary`], a unary
/// call's use of the primary).
pub struct StreamLease {
    shared: Arc<Shared>,
    id: u64,
    channel: Channel,
    /// Whether it holds one of the connection's stream places.
    counted: bool,
}

impl StreamLease {
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Replaces this lease's connection in the pool with a new one: the
    /// remote is closing it (GOAWAY) or it closed under a request not sent
    /// yet, and until its last stream ends it would take new requests only
    /// to turn them away. Calls already on it go on there.
    pub fn retire(&self) {
        let shared = &self.shared;
        let mut connections = shared.lock();
        let next_id = connections.next_id;
        if let Some(connection) = connections.list.iter_mut().find(|c| c.id == self.id) {
            *connection = Connection {
                id: next_id,
                channel: shared
                    .endpoint
                    .clone()
                    .connect_with_connector_lazy(shared.connector.clone()),
                streams: 0,
                idle_since: Instant::now(),
            };
            connections.next_id += 1;
        }
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let mut connections = self.shared.lock();
        let now = Instant::now();
        if let Some(connection) = connections.list.iter_mut().find(|c| c.id == self.id) {
            connection.streams = connection.streams.saturating_sub(1);
            if connection.streams == 0 {
                connection.idle_since = now;
            }
        }
        self.shared.close_idle(&mut connections, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{DEFAULT_STREAM_WINDOW, MAX_STREAMS_PER_CONNECTION, MIN_STREAM_WINDOW};

    #[test]
    fn stalled_streams_never_exhaust_the_connection_window() {
        for stream_window in [MIN_STREAM_WINDOW, 2 << 20, DEFAULT_STREAM_WINDOW, 64 << 20] {
            for streams in [1, 16, 255, MAX_STREAMS_PER_CONNECTION] {
                let (granted, window) = windows(stream_window, streams);
                assert!(granted <= stream_window);
                let stalled = u64::from(granted) * streams as u64;
                assert!(
                    u64::from(window) >= stalled + u64::from(UNARY_HEADROOM),
                    "{streams} stalled streams of {granted} leave less than the headroom"
                );
                assert!(window <= MAX_WINDOW);
            }
        }
    }

    #[test]
    fn a_window_that_skipped_validation_is_shrunk_to_fit() {
        let (stream_window, window) = windows(8 << 20, MAX_STREAMS_PER_CONNECTION);
        assert!(stream_window < 8 << 20);
        assert!(window <= MAX_WINDOW);
        assert_eq!(windows(8 << 20, 16), (8 << 20, 132 << 20));
    }
}
