//! Accepting TCP connections on our listeners, plaintext or TLS, without
//! spinning when accepting fails. An error about one connection (reset or
//! aborted before we took it) is skipped; any other (`EMFILE` and `ENFILE`
//! out of descriptors, `ENOBUFS`, `ENOMEM`) recurs until something is freed,
//! so the next attempt waits: 5 ms, doubling to 1 s, back to none once a
//! connection is accepted. Connections arriving meanwhile wait in the
//! kernel's backlog. Each such episode is logged once as it starts and once
//! as it ends, not per failure.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// First wait after a failed accept.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// Longest wait between two attempts: how long a listener may stay deaf
/// after descriptors free up.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One listener's accepted connections, with `TCP_NODELAY` set: small gRPC
/// frames (the end of a Series answer, its trailers) must not wait for the
/// peer's delayed ACK.
pub struct Acceptor {
    listener: TcpListener,
    /// Names the listener in logs.
    what: &'static str,
    backoff: Backoff,
}

impl Acceptor {
    pub fn new(listener: TcpListener, what: &'static str) -> Self {
        Self {
            listener,
            what,
            backoff: Backoff::default(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection; waits out failures as the module says.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((conn, peer)) => {
                    if let Some((failures, lasted)) = self.backoff.succeeded() {
                        tracing::info!(listener = self.what, failures, lasted = ?lasted, "accepting connections again");
                    }
                    let _ = conn.set_nodelay(true);
                    return (conn, peer);
                }
                Err(error) if about_one_connection(&error) => {}
                Err(error) => {
                    let (wait, first) = self.backoff.failed();
                    if first {
                        tracing::warn!(
                            listener = self.what,
                            %error,
                            max_backoff = ?MAX_BACKOFF,
                            "accepting connections failed; retrying with back-off (out of file descriptors? see the process's RLIMIT_NOFILE)"
                        );
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The connections as a stream, for tonic; it never ends nor fails.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<TcpStream>> + Send + Unpin + 'static {
        Box::pin(futures::stream::unfold(self, |mut acceptor| async move {
            let (conn, _) = acceptor.accept().await;
            Some((Ok(conn), acceptor))
        }))
    }
}

type Connections = Pin<Box<dyn Stream<Item = io::Result<TcpStream>> + Send>>;

/// A stream of connections whose listener [`Closer::close`] drops, so the
/// port refuses new connections at once. A server draining its connections
/// after shutdown began keeps its incoming stream until the last call ends;
/// connections made meanwhile would wait in the kernel's backlog, unserved,
/// instead of being refused and going to another replica.
pub struct Closable(Arc<Mutex<Option<Connections>>>);

/// Closes a [`Closable`]'s listener.
pub struct Closer(Arc<Mutex<Option<Connections>>>);

/// `connections`, and the handle that closes their listener.
pub fn closable(
    connections: impl Stream<Item = io::Result<TcpStream>> + Send + 'static,
) -> (Closable, Closer) {
    let slot = Arc::new(Mutex::new(Some(Box::pin(connections) as Connections)));
    (Closable(slot.clone()), Closer(slot))
}

impl Closer {
    /// Drops the listener; the stream ends.
    pub fn close(self) {
        let listener = match self.0.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(listener);
    }
}

impl Stream for Closable {
    type Item = io::Result<TcpStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut slot = match self.0.lock() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        match slot.as_mut() {
            Some(connections) => connections.poll_next_unpin(cx),
            None => Poll::Ready(None),
        }
    }
}

impl axum::serve::Listener for Acceptor {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        Acceptor::accept(self).await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Acceptor::local_addr(self)
    }
}

/// Errors that concern one connection only: the next accept may succeed.
fn about_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// The wait before the next attempt, through one episode of failures.
#[derive(Debug, Default)]
struct Backoff {
    next: Option<Duration>,
    failures: u64,
    since: Option<Instant>,
}

impl Backoff {
    /// How long to wait after a failure, and whether it starts an episode.
    fn failed(&mut self) -> (Duration, bool) {
        let first = self.next.is_none();
        let wait = self.next.unwrap_or(FIRST_BACKOFF);
        self.next = Some((wait * 2).min(MAX_BACKOFF));
        self.failures += 1;
        if first {
            self.since = Some(Instant::now());
        }
        (wait, first)
    }

    /// Ends an episode, if one was going on: how many attempts failed and
    /// for how long.
    fn succeeded(&mut self) -> Option<(u64, Duration)> {
        self.next.take()?;
        let failures = std::mem::take(&mut self.failures);
        Some((
            failures,
            self.since.take().map_or(Duration::ZERO, |s| s.elapsed()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second_and_resets_on_success() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.succeeded(), None);
        let waits: Vec<_> = (0..10).map(|_| backoff.failed()).collect();
        assert_eq!(waits[0], (Duration::from_millis(5), true));
        assert_eq!(waits[1], (Duration::from_millis(10), false));
        assert_eq!(waits[7], (Duration::from_millis(640), false));
        assert_eq!(waits[8], (MAX_BACKOFF, false));
        assert_eq!(waits[9], (MAX_BACKOFF, false));
        assert_eq!(backoff.succeeded().map(|(n, _)| n), Some(10));
        assert_eq!(backoff.succeeded(), None);
        assert_eq!(backoff.failed(), (FIRST_BACKOFF, true));
    }

    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_acks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut accepted = Acceptor::new(listener, "test").into_stream();
        let _client = TcpStream::connect(addr).await.expect("connect");
        let conn = futures::StreamExt::next(&mut accepted)
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(conn.nodelay().expect("read TCP_NODELAY"));
    }
}
