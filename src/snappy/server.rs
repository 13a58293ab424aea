//! Requests the querier compressed. tonic reads gzip and zstd itself. A
//! Thanos querier set to `compression: snappy` (or `--grpc-compression=snappy`)
//! sends Thanos's `snappy` encoding, snappy's framing format, on every call,
//! Info included; tonic does not know it and would answer `Unimplemented`,
//! and the querier would drop us as a store. This layer hands tonic such
//! requests decompressed as they arrive ([`crate::snappy::Decompressing`]),
//! each message bounded by `grpc.max_message_bytes` compressed and
//! inflated. Answers go out uncompressed, which every gRPC client accepts.

use std::task::{Context, Poll};

use tonic::body::Body;
use tower::{Layer, Service};

use super::{self as snappy, Decompressing, Limit};

/// Decompresses `grpc-encoding: snappy` requests, refusing a message over
/// `limit` with `ResourceExhausted` as soon as it shows.
#[derive(Clone, Copy, Debug)]
pub struct SnappyRequests {
    limit: Limit,
}

impl SnappyRequests {
    pub fn new(limit: Limit) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for SnappyRequests {
    type Service = Unsnappy<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Unsnappy {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Unsnappy<S> {
    inner: S,
    limit: Limit,
}

impl<S> Service<http::Request<Body>> for Unsnappy<S>
where
    S: Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if !snappy::is_snappy(request.headers()) {
            return self.inner.call(request);
        }
        let (mut parts, body) = request.into_parts();
        // tonic reads what comes out as uncompressed messages, and refuses
        // the call with the body's error if there is one.
        parts.headers.remove(snappy::GRPC_ENCODING);
        let body = Body::new(Decompressing::new(body, self.limit));
        self.inner.call(http::Request::from_parts(parts, body))
    }
}
