//! Thanos's `snappy` gRPC encoding towards a remote: snappy's framing format,
//! which tonic does not have. Requests (single small messages) are compressed
//! whole; answers, which stream, are decompressed message by message as they
//! arrive.

use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderValue;
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::StdError;
use tonic::transport::Channel;
use tower::Service;

const GRPC_ENCODING: &str = "grpc-encoding";
const GRPC_ACCEPT_ENCODING: &str = "grpc-accept-encoding";
const SNAPPY: &str = "snappy";

/// A connection to a remote, speaking snappy when configured to.
#[derive(Clone, Debug)]
pub struct RemoteChannel {
    channel: Channel,
    snappy: bool,
}

impl RemoteChannel {
    pub fn new(channel: Channel, snappy: bool) -> Self {
        Self { channel, snappy }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<http::Request<Body>> for RemoteChannel {
    type Response = http::Response<Body>;
    type Error = StdError;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if !self.snappy {
            let call = self.channel.call(request);
            return Box::pin(async move { call.await.map_err(Into::into) });
        }
        // Call the channel that was made ready, keep a fresh clone for later.
        let clone = self.channel.clone();
        let mut channel = std::mem::replace(&mut self.channel, clone);
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let body = compress(&body)?;
            parts
                .headers
                .insert(GRPC_ENCODING, HeaderValue::from_static(SNAPPY));
            parts
                .headers
                .insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static(SNAPPY));
            let request = http::Request::from_parts(parts, Body::new(Full::new(body)));
            let response = channel.call(request).await?;
            let (mut parts, body) = response.into_parts();
            let body = if parts
                .headers
                .get(GRPC_ENCODING)
                .is_some_and(|v| v == SNAPPY)
            {
                parts.headers.remove(GRPC_ENCODING);
                Body::new(Decompressing {
                    inner: body,
                    buffered: BytesMut::new(),
                    trailers: None,
                    ended: false,
                })
            } else {
                body
            };
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// Compresses every message of a request body and flags it compressed.
fn compress(mut body: &[u8]) -> Result<Bytes, StdError> {
    let mut out = BytesMut::with_capacity(body.len());
    while !body.is_empty() {
        let (flag, message, rest) = split_message(body).ok_or("truncated gRPC message")?;
        if flag != 0 {
            return Err("message already compressed".into());
        }
        let mut encoder = snap::write::FrameEncoder::new(Vec::with_capacity(message.len()));
        encoder.write_all(message)?;
        let compressed = encoder.into_inner().map_err(|e| e.to_string())?;
        out.put_u8(1);
        out.put_u32(compressed.len() as u32);
        out.extend_from_slice(&compressed);
        body = rest;
    }
    Ok(out.freeze())
}

/// `(flag, message, rest)` of the first length-prefixed message in `body`.
fn split_message(body: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let header = body.get(..5)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let message = body.get(5..5 + len)?;
    Some((header[0], message, &body[5 + len..]))
}

/// An answer body whose snappy-compressed messages come out decompressed.
struct Decompressing {
    inner: Body,
    buffered: BytesMut,
    trailers: Option<http::HeaderMap>,
    ended: bool,
}

impl Decompressing {
    /// The next whole message, decompressed and re-framed, if buffered.
    fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        let Some((flag, message, _)) = split_message(&self.buffered) else {
            return Ok(None);
        };
        let len = message.len();
        let plain = match flag {
            0 => message.to_vec(),
            1 => {
                let mut plain = Vec::with_capacity(len * 2);
                snap::read::FrameDecoder::new(message)
                    .read_to_end(&mut plain)
                    .map_err(|e| Status::internal(format!("snappy answer: {e}")))?;
                plain
            }
            flag => {
                return Err(Status::internal(format!(
                    "invalid gRPC compression flag {flag}"
                )));
            }
        };
        self.buffered.advance(5 + len);
        let mut out = BytesMut::with_capacity(5 + plain.len());
        out.put_u8(0);
        out.put_u32(plain.len() as u32);
        out.extend_from_slice(&plain);
        Ok(Some(out.freeze()))
    }
}

impl http_body::Body for Decompressing {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            if let Some(message) = self.next_message()? {
                return Poll::Ready(Some(Ok(Frame::data(message))));
            }
            if self.ended {
                if !self.buffered.is_empty() {
                    self.buffered.clear();
                    return Poll::Ready(Some(Err(Status::internal(
                        "the remote's answer ended inside a message",
                    ))));
                }
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.ended = true,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.buffered.extend_from_slice(&data),
                    Err(frame) => {
                        // Trailers end the answer; pass them on after the data.
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
    use super::*;

    #[tokio::test]
    async fn answers_are_decompressed_across_frame_boundaries() {
        let messages = [b"first series".repeat(30), b"second".to_vec()];
        let mut wire = Vec::new();
        for message in &messages {
            let mut encoder = snap::write::FrameEncoder::new(Vec::new());
            encoder.write_all(message).expect("encode");
            let compressed = encoder.into_inner().expect("flush");
            wire.push(1);
            wire.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
            wire.extend_from_slice(&compressed);
        }
        // Data frames that cut messages (and a header) anywhere, then trailers.
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames: Vec<Result<Frame<Bytes>, Status>> = vec![
            Ok(Frame::data(Bytes::copy_from_slice(&wire[..3]))),
            Ok(Frame::data(Bytes::copy_from_slice(&wire[3..40]))),
            Ok(Frame::data(Bytes::copy_from_slice(&wire[40..]))),
            Ok(Frame::trailers(trailers)),
        ];
        let inner = Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )));
        let body = Decompressing {
            inner,
            buffered: BytesMut::new(),
            trailers: None,
            ended: false,
        };
        let collected = body.collect().await.expect("body");
        assert_eq!(
            collected.trailers().and_then(|t| t.get("grpc-status")),
            Some(&HeaderValue::from_static("0"))
        );
        let mut out = &collected.to_bytes()[..];
        for message in &messages {
            let (flag, plain, rest) = split_message(out).expect("a message");
            assert_eq!((flag, plain), (0, &message[..]));
            out = rest;
        }
        assert!(out.is_empty());
    }

    #[test]
    fn compressed_requests_decompress_to_the_same_messages() {
        let message = b"matchers and a time range".repeat(10);
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(&message);
        let compressed = compress(&body).expect("compress");
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
