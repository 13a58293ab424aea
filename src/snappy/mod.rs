//! Thanos's `snappy` gRPC encoding, which tonic does not have: each gRPC
//! message compressed on its own in snappy's framing format. Both ways go
//! through here: requests we send a remote are compressed whole
//! ([`compress`]); bodies we receive (a querier's requests, a remote's
//! answers) are decompressed message by message as they arrive
//! ([`Decompressing`]), bounded by a message size limit before anything is
//! buffered.
//!
//! The two ends that use it live beside it: [`SnappyRequests`] (`server.rs`)
//! hands the querier's snappy requests to tonic decompressed, and
//! [`RemoteChannel`] (`client.rs`) speaks snappy to a remote configured for it.
//!
//! What [`Decompressing`] holds at once, per body: one compressed snappy
//! chunk (at most 76 KiB), one message inflated so far (at most the
//! limit), and what one received data frame brought. A message announced
//! larger than the limit is refused from its 5-byte header; one that
//! inflates past it, as soon as it does, without waiting for the rest.

mod client;
mod server;

pub use client::RemoteChannel;
pub use server::SnappyRequests;

use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::Frame;
use tonic::Status;
use tonic::body::Body;

pub const GRPC_ENCODING: &str = "grpc-encoding";
pub const GRPC_ACCEPT_ENCODING: &str = "grpc-accept-encoding";
pub const SNAPPY: &str = "snappy";

/// gRPC's message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// Longest chunk body snappy's framing format allows: a compressed block of
/// 64 KiB at worst (`max_compress_len(65536)`), which `snap` also enforces.
const MAX_CHUNK: usize = 76_490;

/// Chunk header: a type byte and a 24-bit little-endian length.
const CHUNK_HEADER: usize = 4;

/// Whether `headers` say the body is in Thanos's `snappy` encoding.
pub fn is_snappy(headers: &HeaderMap) -> bool {
    headers.get(GRPC_ENCODING).is_some_and(|v| v == SNAPPY)
}

/// The largest message a body may carry, compressed or inflated, and the
/// config key that sets it, for the error.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub bytes: usize,
    pub key: &'static str,
}

/// What is wrong with a snappy-encoded body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SnappyError {
    #[error("a message of {len} bytes is larger than {key} ({limit} bytes)")]
    TooLarge {
        len: usize,
        limit: usize,
        key: &'static str,
    },
    #[error("a snappy-compressed message inflates past {key} ({limit} bytes)")]
    Inflates { limit: usize, key: &'static str },
    #[error("invalid gRPC compression flag {0}")]
    Flag(u8),
    #[error("a message already compressed")]
    AlreadyCompressed,
    #[error("the body ends inside a message")]
    Truncated,
    #[error("a snappy chunk of {0} bytes, more than the framing format allows")]
    ChunkTooLong(usize),
    #[error("a snappy chunk runs past the end of its message")]
    ChunkPastMessage,
    #[error("invalid snappy data: {0}")]
    Snappy(String),
}

impl From<SnappyError> for Status {
    /// The one place these become statuses: a limit is `ResourceExhausted`
    /// (as grpc-go says for a message over its limit), anything else a
    /// broken peer, `Internal`.
    fn from(error: SnappyError) -> Self {
        match error {
            SnappyError::TooLarge { .. } | SnappyError::Inflates { .. } => {
                Status::resource_exhausted(error.to_string())
            }
            _ => Status::internal(format!("snappy encoding: {error}")),
        }
    }
}

/// Compresses every message of a request body and flags it compressed.
pub fn compress(mut body: &[u8]) -> Result<Bytes, SnappyError> {
    let mut out = BytesMut::with_capacity(body.len());
    while !body.is_empty() {
        let (flag, message, rest) = split_message(body).ok_or(SnappyError::Truncated)?;
        if flag != 0 {
            return Err(SnappyError::AlreadyCompressed);
        }
        let mut encoder = snap::write::FrameEncoder::new(Vec::with_capacity(message.len()));
        encoder
            .write_all(message)
            .map_err(|e| SnappyError::Snappy(e.to_string()))?;
        let compressed = encoder
            .into_inner()
            .map_err(|e| SnappyError::Snappy(e.to_string()))?;
        out.put_u8(1);
        out.put_u32(compressed.len() as u32);
        out.extend_from_slice(&compressed);
        body = rest;
    }
    Ok(out.freeze())
}

/// `(flag, message, rest)` of the first length-prefixed message in `body`.
pub fn split_message(body: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let header = body.get(..PREFIX)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let message = body.get(PREFIX..PREFIX + len)?;
    Some((header[0], message, &body[PREFIX + len..]))
}

/// Where a body is between and inside its messages.
enum Message {
    /// Between messages: the next prefix is awaited.
    Prefix,
    /// An uncompressed message, passed on as it arrives: `remaining` bytes
    /// of it to come.
    Plain { remaining: usize },
    /// A compressed message: `remaining` bytes of it to come; whole chunks
    /// are inflated into `inflated` (whose first 5 bytes are left for the
    /// prefix) as they arrive.
    Snappy {
        remaining: usize,
        decoder: Box<snap::read::FrameDecoder<Chunks>>,
        inflated: BytesMut,
    },
}

/// The compressed bytes of one message, handed to the snappy decoder only
/// a whole chunk at a time, so that it never meets the end of what has
/// arrived inside a chunk (which it would take for a truncated stream).
#[derive(Default)]
struct Chunks {
    buffered: BytesMut,
    /// Bytes at the front of `buffered` that make whole chunks.
    whole: usize,
}

impl Chunks {
    fn push(&mut self, bytes: &[u8]) -> Result<(), SnappyError> {
        self.buffered.extend_from_slice(bytes);
        while let Some(header) = self.buffered.get(self.whole..self.whole + CHUNK_HEADER) {
            let len =
                usize::from(header[1]) | usize::from(header[2]) << 8 | usize::from(header[3]) << 16;
            if len > MAX_CHUNK {
                return Err(SnappyError::ChunkTooLong(len));
            }
            if self.buffered.len() < self.whole + CHUNK_HEADER + len {
                break;
            }
            self.whole += CHUNK_HEADER + len;
        }
        Ok(())
    }
}

impl Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = out.len().min(self.whole);
        out[..n].copy_from_slice(&self.buffered[..n]);
        self.buffered.advance(n);
        self.whole -= n;
        Ok(n)
    }
}

/// A body whose snappy-compressed messages come out inflated and flagged
/// uncompressed, each bounded by a [`Limit`]; trailers pass through.
pub struct Decompressing {
    inner: Body,
    limit: Limit,
    /// Received bytes not yet taken into a message.
    received: BytesMut,
    message: Message,
    trailers: Option<HeaderMap>,
    ended: bool,
    failed: bool,
}

impl Decompressing {
    pub fn new(inner: Body, limit: Limit) -> Self {
        Self {
            inner,
            limit,
            received: BytesMut::new(),
            message: Message::Prefix,
            trailers: None,
            ended: false,
            failed: false,
        }
    }

    /// The next frame to pass on from what has been received, if any.
    fn next_frame(&mut self) -> Result<Option<Bytes>, SnappyError> {
        loop {
            match &mut self.message {
                Message::Prefix => {
                    let Some(prefix) = self.received.get(..PREFIX) else {
                        return Ok(None);
                    };
                    let flag = prefix[0];
                    let len =
                        u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
                    if len > self.limit.bytes {
                        return Err(SnappyError::TooLarge {
                            len,
                            limit: self.limit.bytes,
                            key: self.limit.key,
                        });
                    }
                    match flag {
                        0 => {
                            // Passed on as it is, prefix first.
                            self.message = Message::Plain { remaining: len };
                            return Ok(Some(self.received.split_to(PREFIX).freeze()));
                        }
                        1 => {
                            self.received.advance(PREFIX);
                            let mut inflated = BytesMut::new();
                            inflated.put_bytes(0, PREFIX);
                            self.message = Message::Snappy {
                                remaining: len,
                                decoder: Box::new(snap::read::FrameDecoder::new(Chunks::default())),
                                inflated,
                            };
                        }
                        flag => return Err(SnappyError::Flag(flag)),
                    }
                }
                Message::Plain { remaining } => {
                    if *remaining == 0 {
                        self.message = Message::Prefix;
                        continue;
                    }
                    if self.received.is_empty() {
                        return Ok(None);
                    }
                    let n = (*remaining).min(self.received.len());
                    *remaining -= n;
                    return Ok(Some(self.received.split_to(n).freeze()));
                }
                Message::Snappy {
                    remaining,
                    decoder,
                    inflated,
                } => {
                    let n = (*remaining).min(self.received.len());
                    if n > 0 {
                        decoder.get_mut().push(&self.received[..n])?;
                        self.received.advance(n);
                        *remaining -= n;
                    }
                    inflate(decoder, inflated, self.limit)?;
                    if *remaining > 0 {
                        return Ok(None);
                    }
                    if !decoder.get_ref().buffered.is_empty() {
                        return Err(SnappyError::ChunkPastMessage);
                    }
                    let mut message = std::mem::take(inflated);
                    let len = (message.len() - PREFIX) as u32;
                    message[0] = 0;
                    message[1..PREFIX].copy_from_slice(&len.to_be_bytes());
                    self.message = Message::Prefix;
                    return Ok(Some(message.freeze()));
                }
            }
        }
    }
}

/// Inflates the whole chunks `decoder` has into `inflated`, failing as soon
/// as the message would pass `limit`.
fn inflate(
    decoder: &mut snap::read::FrameDecoder<Chunks>,
    inflated: &mut BytesMut,
    limit: Limit,
) -> Result<(), SnappyError> {
    let mut block = [0; 16 << 10];
    loop {
        let n = decoder
            .read(&mut block)
            .map_err(|e| SnappyError::Snappy(e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        if inflated.len() - PREFIX + n > limit.bytes {
            return Err(SnappyError::Inflates {
                limit: limit.bytes,
                key: limit.key,
            });
        }
        inflated.extend_from_slice(&block[..n]);
    }
}

impl http_body::Body for Decompressing {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        loop {
            match self.next_frame() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {}
                Err(error) => {
                    // Nothing more is read: the caller drops the body, and
                    // with it the rest of the stream.
                    self.failed = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
            if self.ended {
                if !self.received.is_empty() || !matches!(self.message, Message::Prefix) {
                    self.failed = true;
                    return Poll::Ready(Some(Err(SnappyError::Truncated.into())));
                }
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.ended = true,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.received.extend_from_slice(&data),
                    Err(frame) => {
                        // Trailers end the body; pass them on after the data.
                        self.trailers = frame.into_trailers().ok();
                        self.ended = true;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    const LIMIT: Limit = Limit {
        bytes: 1 << 20,
        key: "test.max_message_bytes",
    };

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    fn snappy(message: &[u8]) -> Vec<u8> {
        let mut encoder = snap::write::FrameEncoder::new(Vec::new());
        encoder.write_all(message).expect("encode");
        encoder.into_inner().expect("flush")
    }

    /// `wire` cut into data frames of `cut` bytes, then `trailers`.
    fn body(wire: &[u8], cut: usize, trailers: Option<HeaderMap>) -> Body {
        let mut frames: Vec<Result<Frame<Bytes>, Status>> = wire
            .chunks(cut)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        frames.extend(trailers.map(|t| Ok(Frame::trailers(t))));
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    async fn decompress(wire: &[u8], cut: usize) -> Result<Vec<u8>, Status> {
        let collected = Decompressing::new(body(wire, cut, None), LIMIT)
            .collect()
            .await?;
        Ok(collected.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn messages_come_out_inflated_across_any_frame_boundaries() {
        let messages = [b"first series".repeat(3000), b"second".to_vec(), Vec::new()];
        let mut wire = framed(1, &snappy(&messages[0]));
        wire.extend(framed(0, &messages[1]));
        wire.extend(framed(1, &snappy(&messages[2])));
        let mut want = Vec::new();
        for message in &messages {
            want.extend(framed(0, message));
        }
        for cut in [1, 3, 7, 4096, wire.len()] {
            assert_eq!(decompress(&wire, cut).await.expect("decompresses"), want);
        }
    }

    #[tokio::test]
    async fn trailers_follow_the_messages() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let wire = framed(1, &snappy(b"a series"));
        let collected = Decompressing::new(body(&wire, 3, Some(trailers)), LIMIT)
            .collect()
            .await
            .expect("body");
        assert_eq!(
            collected.trailers().and_then(|t| t.get("grpc-status")),
            Some(&http::HeaderValue::from_static("0"))
        );
        assert_eq!(&collected.to_bytes()[..], &framed(0, b"a series")[..]);
    }

    #[tokio::test]
    async fn a_message_announced_over_the_limit_is_refused_from_its_prefix() {
        for flag in [0, 1] {
            let mut wire = vec![flag];
            wire.extend_from_slice(&(LIMIT.bytes as u32 + 1).to_be_bytes());
            let err = decompress(&wire, 5).await.expect_err("too large");
            assert_eq!(err.code(), tonic::Code::ResourceExhausted);
            assert!(err.message().contains(LIMIT.key), "{}", err.message());
        }
    }

    #[tokio::test]
    async fn inflating_stops_at_the_limit() {
        let wire = framed(1, &snappy(&vec![0; LIMIT.bytes + 1]));
        assert!(wire.len() < LIMIT.bytes / 8);
        let err = decompress(&wire, 4096).await.expect_err("a bomb");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("inflates past"), "{}", err.message());
        // Exactly the limit is fine.
        let wire = framed(1, &snappy(&vec![0; LIMIT.bytes]));
        let out = decompress(&wire, 4096).await.expect("at the limit");
        assert_eq!(out.len(), PREFIX + LIMIT.bytes);
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let internal = |wire: Vec<u8>| async move {
            let err = decompress(&wire, 2).await.expect_err("garbage");
            assert_eq!(err.code(), tonic::Code::Internal, "{wire:?}: {err:?}");
        };
        internal(vec![1, 0, 0, 0, 3, 1, 2, 3]).await;
        internal(vec![0, 0, 0, 0, 9, 1]).await;
        internal(vec![2, 0, 0, 0, 0]).await;
        internal(vec![0, 0]).await;
        // A chunk header claiming more than the format allows.
        internal(framed(1, &[0, 0xff, 0xff, 0xff])).await;
        // A chunk running past its message's end.
        let chunk = snappy(b"abc");
        internal(framed(1, &chunk[..chunk.len() - 1])).await;
        // A corrupted checksum.
        let mut chunk = snappy(b"some data to check");
        let last = chunk.len() - 1;
        chunk[last] ^= 0xff;
        internal(framed(1, &chunk)).await;
    }

    #[test]
    fn compressed_requests_decompress_to_the_same_messages() {
        let message = b"matchers and a time range".repeat(10);
        let compressed = compress(&framed(0, &message)).expect("compress");
        assert_eq!(compressed[0], 1);
        let (_, framed, rest) = split_message(&compressed).expect("one message");
        assert!(rest.is_empty());
        let mut plain = Vec::new();
        snap::read::FrameDecoder::new(framed)
            .read_to_end(&mut plain)
            .expect("snappy framing format");
        assert_eq!(plain, message);
    }
}
