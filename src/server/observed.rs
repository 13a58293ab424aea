//! A response stream that records how it ended, once: its gRPC code, or
//! `Cancelled` when it is dropped before its end (the querier went away).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::Stream;
use tonic::{Code, Status};

use super::status;
use crate::fanout::FanoutError;
use crate::metrics::{Method, ServerMetrics};

type Inner<T> = Pin<Box<dyn Stream<Item = Result<T, FanoutError>> + Send>>;

pub struct Observed<T> {
    inner: Inner<T>,
    method: Method,
    metrics: ServerMetrics,
    started: Instant,
    code: Option<Code>,
    /// Counts what a response carries, if anything.
    on_item: fn(&T, &ServerMetrics),
    /// The call's span, entered while the stream is polled and closed
    /// when it is dropped.
    span: tracing::Span,
}

impl<T> Observed<T> {
    pub fn new(
        inner: Inner<T>,
        method: Method,
        metrics: ServerMetrics,
        started: Instant,
        on_item: fn(&T, &ServerMetrics),
        span: tracing::Span,
    ) -> Self {
        Self {
            inner,
            method,
            metrics,
            started,
            code: None,
            on_item,
            span,
        }
    }
}

impl<T> Stream for Observed<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let span = self.span.clone();
        let _entered = span.enter();
        let item = match self.inner.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        Poll::Ready(match item {
            None => {
                self.code.get_or_insert(Code::Ok);
                None
            }
            Some(Err(e)) => {
                let e = status(e);
                self.code = Some(e.code());
                Some(Err(e))
            }
            Some(Ok(response)) => {
                (self.on_item)(&response, &self.metrics);
                Some(Ok(response))
            }
        })
    }
}

impl<T> Drop for Observed<T> {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled);
        self.span.record("code", tracing::field::debug(code));
        self.metrics
            .observe(self.method, code, self.started.elapsed().as_secs_f64());
    }
}
