//! The future of one handler invocation: its context, its tracing span, its deadline.

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
        // Always `Some`: an `Option` so that polling can move it in place as the current
        // context and back without cloning it.
        ctx: Option<Context>,
        span: tracing::Span,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

/// An id as 16 hex digits, the way logs show trace and span ids.
struct Hex(u64);

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl<F> HandlerCall<F> {
    /// The call of `method` with `ctx`. Its span (`rpc`, at INFO) carries the request's
    /// identity, so every line the handler logs names the trace it belongs to; when INFO
    /// is off for svrkit the span is never built.
    pub(crate) fn new(inner: F, ctx: Context, method: &'static str) -> HandlerCall<F> {
        let span = tracing::info_span!(
            "rpc",
            service = ctx.service(),
            method,
            trace_id = %Hex(ctx.trace_id()),
            span_id = %Hex(ctx.span_id()),
            parent = %Hex(ctx.parent_span_id()),
            caller = ctx.caller().unwrap_or(""),
            uid = ctx.uid(),
            business = ctx.business_priority(),
            user = ctx.user_priority(),
            attempt = ctx.attempt(),
        );
        HandlerCall {
            inner,
            ctx: Some(ctx),
            span,
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
        let entered = this.span.enter();
        let polled = crate::context::enter(this.ctx, || inner.poll(cx));
        drop(entered);
        if let Poll::Ready(result) = polled {
            return Poll::Ready(result);
        }
        let Some(deadline) = this.ctx.as_ref().and_then(Context::deadline) else {
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
