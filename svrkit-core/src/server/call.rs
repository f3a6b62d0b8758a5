//! The future of one handler invocation: context, deadline and nothing else.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::time::Sleep;

use crate::context::Context;
use crate::status::Status;

pin_project_lite::pin_project! {
    /// Runs a handler future with its request context current, and stops it at the
    /// request's deadline.
    ///
    /// The deadline timer is created only if the handler does not finish on its first
    /// poll, so the common fast handler registers no timer at all.
    pub(crate) struct HandlerCall<F> {
        #[pin]
        inner: F,
        ctx: Context,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> HandlerCall<F> {
    pub(crate) fn new(inner: F, ctx: Context) -> HandlerCall<F> {
        HandlerCall {
            inner,
            ctx,
            sleep: None,
        }
    }
}

impl<F> Future for HandlerCall<F>
where
    F: Future<Output = Result<Bytes, Status>>,
{
    type Output = Result<Bytes, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        if let Poll::Ready(result) = this.ctx.clone().sync_scope(|| inner.poll(cx)) {
            return Poll::Ready(result);
        }
        let Some(deadline) = this.ctx.deadline() else {
            return Poll::Pending;
        };
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Status::deadline_exceeded(
                "the handler did not finish before the deadline",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// How long a request waited between arriving and its handler starting.
pub(crate) fn queued(arrival: Instant, start: Instant) -> std::time::Duration {
    start.saturating_duration_since(arrival)
}
