//! Thanos's `snappy` gRPC encoding towards a remote ([`crate::snappy`]):
//! requests (single small messages) are compressed whole; answers, which
//! stream, are decompressed message by message as they arrive, each bounded
//! by the remote's `max_message_bytes` compressed and inflated.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use tonic::body::Body;
use tonic::codegen::StdError;
use tonic::transport::Channel;
use tower::Service;

use super::{self as snappy, Decompressing, GRPC_ACCEPT_ENCODING, GRPC_ENCODING, Limit, SNAPPY};

/// The key that bounds a remote's answer messages, named in refusals.
const LIMIT_KEY: &str = "remotes[].max_message_bytes";

/// A connection to a remote, speaking snappy when configured to.
#[derive(Clone, Debug)]
pub struct RemoteChannel {
    channel: Channel,
    snappy: bool,
    limit: Limit,
}

impl RemoteChannel {
    /// `max_message_bytes` bounds each message of a snappy answer; tonic
    /// bounds the others.
    pub fn new(channel: Channel, snappy: bool, max_message_bytes: usize) -> Self {
        Self {
            channel,
            snappy,
            limit: Limit {
                bytes: max_message_bytes,
                key: LIMIT_KEY,
            },
        }
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
        let limit = self.limit;
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            // Our own request: one message, as large as tonic let us encode.
            let body = body.collect().await?.to_bytes();
            let body = snappy::compress(&body)?;
            parts
                .headers
                .insert(GRPC_ENCODING, HeaderValue::from_static(SNAPPY));
            parts
                .headers
                .insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static(SNAPPY));
            let request = http::Request::from_parts(parts, Body::new(Full::new(body)));
            let response = channel.call(request).await?;
            let (mut parts, body) = response.into_parts();
            let body = if snappy::is_snappy(&parts.headers) {
                parts.headers.remove(GRPC_ENCODING);
                Body::new(Decompressing::new(body, limit))
            } else {
                body
            };
            Ok(http::Response::from_parts(parts, body))
        })
    }
}
