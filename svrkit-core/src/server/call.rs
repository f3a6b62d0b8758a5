//! The future of one request's handling (server layers and handler): its tracing span and
//! its deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::time::Sleep;

use crate::context::{Context, Hex, TraceHex};
use crate::status::Status;

pin_project_lite::pin_project! {
    /// Runs the future of a request's handling (the server's layers around the
    /// handler) inside the request's span, and stops it at the request's deadline.
    ///
    /// The deadline timer is created only if the handler does not finish on its first
    /// poll, so the common fast handler registers no timer at all.
    pub(crate) struct HandlerCall<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        deadline: Option<Instant>,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

/// The span of one server call (`rpc`, at INFO): the request's identity, so every line
/// logged while handling it (in server layers and in the handler) names the trace it
/// belongs to. When INFO is off for svrkit the span is never built.
pub(crate) fn rpc_span(
    ctx: &Context,
    method: &'static str,
    peer: SocketAddr,
    protocol: crate::grpc::Protocol,
) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        service = ctx.service(),
        method,
        protocol = protocol.as_str(),
        trace_id = %TraceHex(ctx.trace_id_high(), ctx.trace_id()),
        span_id = %Hex(ctx.span_id()),
        parent = %Hex(ctx.parent_span_id()),
        caller = ctx.caller().unwrap_or(""),
        peer = %peer,
        uid = ctx.uid(),
        business = ctx.business_priority(),
        user = ctx.user_priority(),
        attempt = ctx.attempt(),
        code = tracing::field::Empty,
    )
}

impl<F> HandlerCall<F> {
    /// The handling `inner`, run in `span` and stopped at `deadline`.
    pub(crate) fn new(inner: F, span: tracing::Span, deadline: Option<Instant>) -> HandlerCall<F> {
        HandlerCall {
            inner,
            span,
            deadline,
            sleep: None,
        }
    }

    /// When the request's time is up, if it has a deadline.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
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
        let polled = inner.poll(cx);
        drop(entered);
        if let Poll::Ready(result) = polled {
            record_code(this.span, &result);
            return Poll::Ready(result);
        }
        let Some(deadline) = *this.deadline else {
            return Poll::Pending;
        };
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let result = Err(Status::deadline_exceeded(
                    "the handler did not finish before the deadline",
                ));
                record_code(this.span, &result);
                Poll::Ready(result)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Records the outcome's code on the span (nothing when the span is disabled).
fn record_code(span: &tracing::Span, result: &Result<Bytes, Status>) {
    if !span.is_disabled() {
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| crate::Code::Ok);
        span.record("code", code.as_str());
    }
}

/// How long a request waited between arriving and its handler starting.
pub(crate) fn queued(arrival: Instant, start: Instant) -> std::time::Duration {
    start.saturating_duration_since(arrival)
}
