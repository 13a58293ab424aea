//! Requests the querier compressed. tonic reads gzip and zstd itself. A
//! Thanos querier set to `compression: snappy` (or `--grpc-compression=snappy`)
//! sends Thanos's `snappy` encoding, snappy's framing format, on every call,
//! Info included; tonic does not know it and would answer `Unimplemented`,
//! and the querier would drop us as a store. This layer decompresses such
//! requests before tonic reads them. Answers go out uncompressed, which every
//! gRPC client accepts.

use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

const GRPC_ENCODING: &str = "grpc-encoding";
const SNAPPY: &str = "snappy";

/// Decompresses `grpc-encoding: snappy` requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnappyRequests;

impl<S> Layer<S> for SnappyRequests {
    type Service = Unsnappy<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Unsnappy { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Unsnappy<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for Unsnappy<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let snappy = request
            .headers()
            .get(GRPC_ENCODING)
            .is_some_and(|v| v == SNAPPY);
        if !snappy {
            return Box::pin(self.inner.call(request));
        }
        // Call the service that was made ready, keep a fresh clone for later.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            // StoreAPI requests are single small messages; read them whole.
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    return Ok(
                        Status::internal(format!("reading the request: {error}")).into_http()
                    );
                }
            };
            match decompress(&body) {
                Ok(plain) => {
                    parts.headers.remove(GRPC_ENCODING);
                    let request = http::Request::from_parts(parts, Body::new(Full::new(plain)));
                    inner.call(request).await
                }
                Err(reason) => Ok(Status::internal(format!(
                    "cannot decompress the snappy-encoded request: {reason}"
                ))
                .into_http()),
            }
        })
    }
}

/// Rewrites gRPC length-prefixed messages with every compressed one
/// decompressed (snappy framing format) and flagged uncompressed.
pub fn decompress(mut body: &[u8]) -> Result<Bytes, String> {
    let mut out = BytesMut::with_capacity(body.len() * 2);
    while !body.is_empty() {
        let header = body.get(..5).ok_or("truncated gRPC message header")?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let message = body.get(5..5 + len).ok_or("truncated gRPC message")?;
        match header[0] {
            0 => put_message(&mut out, message),
            1 => {
                let mut plain = Vec::with_capacity(len * 2);
                snap::read::FrameDecoder::new(message)
                    .read_to_end(&mut plain)
                    .map_err(|e| e.to_string())?;
                put_message(&mut out, &plain);
            }
            flag => return Err(format!("invalid compression flag {flag}")),
        }
        body = &body[5 + len..];
    }
    Ok(out.freeze())
}

fn put_message(out: &mut BytesMut, message: &[u8]) {
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.extend_from_slice(message);
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn snappy_frames_become_plain_frames() {
        let message = b"a Series request, repeated a Series request, repeated".repeat(20);
        let mut encoder = snap::write::FrameEncoder::new(Vec::new());
        encoder.write_all(&message).expect("encode");
        let compressed = encoder.into_inner().expect("flush");
        assert!(compressed.len() < message.len());
        let mut body = framed(1, &compressed);
        body.extend(framed(0, b"plain"));
        let out = decompress(&body).expect("decompresses");
        let mut want = framed(0, &message);
        want.extend(framed(0, b"plain"));
        assert_eq!(&out[..], &want[..]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decompress(&[1, 0, 0, 0, 3, 1, 2, 3]).is_err());
        assert!(decompress(&[0, 0, 0, 0, 9, 1]).is_err());
        assert!(decompress(&[2, 0, 0, 0, 0]).is_err());
        assert!(decompress(&[0, 0]).is_err());
    }
}
