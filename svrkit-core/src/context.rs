//! The request context: deadline, trace, priorities, uid and gray tag of the work in hand.
//!
//! Like tarpc's context it is a first-class value, but svrkit carries it in a task-local
//! so that a handler which calls another service passes it on without writing a line:
//! the server runs every handler inside [`Context::scope`], and every outgoing call reads
//! [`Context::current`] to fill its request header — the *remaining* deadline, the same
//! trace id, this handler's span as the parent, the business and user priorities, the uid
//! and the gray tag. Entry points (an access gateway, a test, a CLI) build a context with
//! the `with_*` methods and run their calls inside its scope.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

pub use crate::random::random_u64;

use crate::metadata::{Metadata, MetadataError};
use crate::protocol::RequestHeader;

thread_local! {
    /// The context of the future being polled on this thread, if it runs in a scope.
    ///
    /// A scope moves its context in before each poll and back out after it (a swap, as
    /// tokio's task-locals do), so entering one clones nothing.
    static CURRENT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Makes `slot`'s context current while `f` runs, then puts it back in `slot` (and the
/// previous one back in place), also if `f` panics.
pub(crate) fn enter<R>(slot: &mut Option<Context>, f: impl FnOnce() -> R) -> R {
    struct Restore<'a>(&'a mut Option<Context>);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = CURRENT.try_with(|c| {
                if let Ok(mut current) = c.try_borrow_mut() {
                    std::mem::swap(&mut *current, self.0);
                }
            });
        }
    }
    let swapped = CURRENT
        .try_with(|c| match c.try_borrow_mut() {
            Ok(mut current) => {
                std::mem::swap(&mut *current, slot);
                true
            }
            Err(_) => false,
        })
        .unwrap_or(false);
    if !swapped {
        // Only while the thread is being torn down, or from inside `with_current`.
        return f();
    }
    let _restore = Restore(slot);
    f()
}

pin_project_lite::pin_project! {
    /// A future run with a context current (see [`Context::scope`]).
    #[derive(Debug)]
    pub struct Scoped<F> {
        ctx: Option<Context>,
        #[pin]
        inner: F,
    }
}

impl<F> Scoped<F> {
    /// `inner` run with the context in `slot` (as [`enter`] left it) current.
    pub(crate) fn new(ctx: Option<Context>, inner: F) -> Scoped<F> {
        Scoped { ctx, inner }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        enter(this.ctx, || inner.poll(cx))
    }
}

/// The context of one request. Cheap to clone.
///
/// A handler reads it with [`Context::current`]; calls made while it is current carry
/// its deadline (less the time spent), trace, priorities and user on to the next hop.
/// A caller sets it for what it runs with [`Context::scope`]:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use svrkit::Context;
///
/// let ctx = Context::new()
///     .with_timeout(Duration::from_secs(2))
///     .with_uid(42)
///     .with_business_priority(20);
/// let (uid, left) = ctx
///     .scope(async {
///         let now = Context::current();
///         (now.uid(), now.remaining())
///     })
///     .await;
/// assert_eq!(uid, 42);
/// assert!(left.is_some_and(|d| d <= Duration::from_secs(2)));
/// assert_eq!(Context::current().uid(), 0, "outside the scope: none");
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    deadline: Option<Instant>,
    trace_id: u64,
    /// The high 64 bits of a 128-bit trace id that came from outside (W3C trace context);
    /// 0 for svrkit's own 64-bit trace ids.
    trace_id_high: u64,
    span_id: u64,
    parent_span_id: u64,
    caller: Option<Arc<str>>,
    /// The caller's service name as its mTLS certificate proves it.
    peer_identity: Option<Arc<str>>,
    service: &'static str,
    business_priority: u32,
    uid: u64,
    user_priority: u32,
    gray_tag: Option<Arc<str>>,
    attempt: u32,
    /// The request's metadata, sent on with every call made in this context.
    metadata: Option<Arc<Metadata>>,
    /// The routing key the caller sent this request by (sharded services); never sent
    /// on: each call names its own.
    routing_key: Option<u64>,
}

impl Context {
    /// An empty context: no deadline, no trace yet, no priorities.
    pub fn new() -> Context {
        Context::default()
    }

    /// The context of the task this is called from, or an empty one outside any scope.
    pub fn current() -> Context {
        CURRENT
            .try_with(|c| c.try_borrow().ok().and_then(|c| c.clone()))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Runs `f` with a reference to the current context, if there is one, without cloning.
    pub fn with_current<R>(f: impl FnOnce(Option<&Context>) -> R) -> R {
        let mut f = Some(f);
        let done = CURRENT.try_with(|c| {
            let current = c.try_borrow().ok()?;
            let ctx = current.as_ref()?;
            f.take().map(|f| f(Some(ctx)))
        });
        match (done, f.take()) {
            (Ok(Some(r)), _) => r,
            (_, Some(f)) => f(None),
            (_, None) => unreachable!("the closure runs at most once"),
        }
    }

    /// Runs `fut` with this context as the current one.
    pub fn scope<F: Future>(self, fut: F) -> Scoped<F> {
        Scoped {
            ctx: Some(self),
            inner: fut,
        }
    }

    /// Builds the context a server hands its handler, from the request header.
    ///
    /// `arrival` is when the request's bytes were read off the socket: the remaining time
    /// the caller sent counts from then, so time spent queued in this server is charged
    /// against the deadline.
    pub fn from_request(
        header: &RequestHeader<'_>,
        arrival: Instant,
        service: &'static str,
    ) -> Context {
        let caller = (!header.caller.is_empty()).then(|| Arc::from(header.caller));
        Context::from_request_by(header, arrival, service, caller)
    }

    /// [`Context::from_request`] with the caller's name already shared (the server keeps
    /// it per connection rather than allocating it per request).
    pub(crate) fn from_request_by(
        header: &RequestHeader<'_>,
        arrival: Instant,
        service: &'static str,
        caller: Option<Arc<str>>,
    ) -> Context {
        Context {
            deadline: (header.timeout_us > 0)
                .then(|| arrival + Duration::from_micros(header.timeout_us)),
            trace_id: if header.trace_id == 0 {
                random_u64()
            } else {
                header.trace_id
            },
            trace_id_high: header.trace_id_high,
            span_id: random_u64(),
            parent_span_id: header.span_id,
            caller,
            peer_identity: None,
            service,
            business_priority: header.business_priority,
            uid: header.uid,
            user_priority: header.user_priority,
            gray_tag: (!header.gray_tag.is_empty()).then(|| Arc::from(header.gray_tag)),
            attempt: header.attempt.max(1),
            metadata: header.metadata.clone(),
            routing_key: header.routing_key,
        }
    }

    /// The routing key this request was sent by (a sharded service's key: which shard it
    /// is for), if the caller named one.
    pub fn routing_key(&self) -> Option<u64> {
        self.routing_key
    }

    /// Records the caller's verified identity (from mutual TLS); it replaces the
    /// self-declared caller name.
    pub(crate) fn verified(mut self, identity: Option<Arc<str>>) -> Context {
        if identity.is_some() {
            self.caller.clone_from(&identity);
        }
        self.peer_identity = identity;
        self
    }

    /// The calling service as its certificate proves it (`None` without mutual TLS, or
    /// outside a server call).
    pub fn peer_identity(&self) -> Option<&str> {
        self.peer_identity.as_deref()
    }

    /// Sets an absolute deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Context {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the deadline `timeout` from now.
    pub fn with_timeout(self, timeout: Duration) -> Context {
        self.with_deadline(Instant::now() + timeout)
    }

    /// Sets the trace id (0 lets the first call pick one).
    pub fn with_trace_id(mut self, trace_id: u64) -> Context {
        self.trace_id = trace_id;
        self
    }

    /// Continues the trace an incoming W3C `traceparent` names: its (128-bit) trace id,
    /// and a new span of this context's own whose parent is the traceparent's.
    pub fn with_trace_parent(mut self, parent: TraceParent) -> Context {
        self.trace_id = parent.trace_id as u64;
        self.trace_id_high = (parent.trace_id >> 64) as u64;
        self.parent_span_id = parent.parent_id;
        self.span_id = random_u64();
        self
    }

    /// Starts a trace of its own with a first span: what an entry point that got no
    /// traceparent does, so that it can name its trace and span in its answer.
    pub fn with_new_trace(mut self) -> Context {
        self.trace_id = random_u64();
        self.trace_id_high = 0;
        self.parent_span_id = 0;
        self.span_id = random_u64();
        self
    }

    /// This context's place in its trace as a W3C `traceparent`: the trace id and this
    /// context's span as the parent of whatever comes next.
    pub fn trace_parent(&self) -> TraceParent {
        TraceParent {
            trace_id: (u128::from(self.trace_id_high) << 64) | u128::from(self.trace_id),
            parent_id: self.span_id,
            sampled: true,
        }
    }

    /// Sets the business priority, 1 (most important) ..= 255.
    pub fn with_business_priority(mut self, priority: u32) -> Context {
        self.business_priority = priority;
        self
    }

    /// Sets the user id.
    pub fn with_uid(mut self, uid: u64) -> Context {
        self.uid = uid;
        self
    }

    /// Sets the user priority, 1 ..= 128.
    pub fn with_user_priority(mut self, priority: u32) -> Context {
        self.user_priority = priority;
        self
    }

    /// Sets the gray-release tag.
    pub fn with_gray_tag(mut self, tag: impl Into<Arc<str>>) -> Context {
        self.gray_tag = Some(tag.into());
        self
    }

    /// Names the service doing the work; outgoing calls report it as their caller.
    pub fn with_service(mut self, service: &'static str) -> Context {
        self.service = service;
        self
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left until the deadline (zero once it has passed), or `None` without one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True when the deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The trace id (0: none yet).
    pub fn trace_id(&self) -> u64 {
        self.trace_id
    }

    /// The high 64 bits of the trace id, when the trace came in with a 128-bit id.
    pub fn trace_id_high(&self) -> u64 {
        self.trace_id_high
    }

    /// This unit of work's span id.
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// The caller's span id (0 at the entry point).
    pub fn parent_span_id(&self) -> u64 {
        self.parent_span_id
    }

    /// The service that called this one, when it said.
    pub fn caller(&self) -> Option<&str> {
        self.caller.as_deref()
    }

    /// The service handling this request (empty outside a handler).
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Business priority (0: not stamped).
    pub fn business_priority(&self) -> u32 {
        self.business_priority
    }

    /// The user id (0: none).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// User priority (0: not stamped).
    pub fn user_priority(&self) -> u32 {
        self.user_priority
    }

    /// The gray-release tag, if any.
    pub fn gray_tag(&self) -> Option<&str> {
        self.gray_tag.as_deref()
    }

    /// Which attempt of the call this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The request's metadata (empty when it has none).
    pub fn metadata(&self) -> &Metadata {
        static EMPTY: Metadata = Metadata::EMPTY;
        self.metadata.as_deref().unwrap_or(&EMPTY)
    }

    /// The metadata, to change: a server layer may add to it or remove from it (say, an
    /// auth token it checked) before the handler sees it. Bounded as
    /// [`crate::metadata`] says.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        Arc::make_mut(self.metadata.get_or_insert_with(Arc::default))
    }

    /// Sets one metadata entry, for this context and every call made in it.
    pub fn with_metadata(
        mut self,
        key: &str,
        value: impl Into<bytes::Bytes>,
    ) -> Result<Context, MetadataError> {
        self.metadata_mut().insert(key, value)?;
        Ok(self)
    }

    /// The metadata as the request header carries it (shared, not copied).
    pub(crate) fn metadata_shared(&self) -> Option<Arc<Metadata>> {
        self.metadata.clone().filter(|m| !m.is_empty())
    }
}

/// A W3C Trace Context `traceparent` header, version 00:
/// `00-<trace id, 32 hex>-<parent span id, 16 hex>-<flags, 2 hex>`.
///
/// svrkit's own trace ids are 64 bits; a 128-bit id that comes in is carried whole
/// (request header fields 4 and 14), so spans exported from every hop join the caller's
/// trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (never 0).
    pub trace_id: u128,
    /// The caller's span (never 0).
    pub parent_id: u64,
    /// The caller's sampled flag.
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` value, or `None` when it is not a valid one (a caller's bad
    /// header then starts a new trace rather than failing the request). Versions after 00
    /// are read as 00, as the specification asks; version `ff` is invalid.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let value = value.trim();
        let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let version = value.get(0..2)?;
        if !lower_hex(version) || version == "ff" {
            return None;
        }
        let exact = value.len() == 55;
        let extended = version != "00" && value.len() > 55 && value.as_bytes()[55] == b'-';
        if !(exact || extended) {
            return None;
        }
        let bytes = value.as_bytes();
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let (trace, parent, flags) = (value.get(3..35)?, value.get(36..52)?, value.get(53..55)?);
        if !(lower_hex(trace) && lower_hex(parent) && lower_hex(flags)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let parent_id = u64::from_str_radix(parent, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && parent_id != 0).then_some(TraceParent {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.parent_id,
            u8::from(self.sampled)
        )
    }
}

/// A trace id (high half, low half) the way svrkit's spans show it: 16 hex digits, or 32
/// for a 128-bit id from outside. Entry points that open spans of their own use it too,
/// so that `svrkit::otel` exports them.
#[derive(Debug, Clone, Copy)]
pub struct TraceHex(pub u64, pub u64);

impl std::fmt::Display for TraceHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => write!(f, "{:016x}", self.1),
            high => write!(f, "{high:016x}{:016x}", self.1),
        }
    }
}

/// A span id as 16 hex digits, the way logs show trace and span ids.
#[derive(Debug, Clone, Copy)]
pub struct Hex(pub u64);

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scope_makes_the_context_current_and_nests() {
        assert_eq!(Context::current(), Context::default());
        let outer = Context::new().with_uid(7).with_business_priority(2);
        outer
            .clone()
            .scope(async move {
                assert_eq!(Context::current().uid(), 7);
                Context::new()
                    .with_uid(8)
                    .scope(async { assert_eq!(Context::current().uid(), 8) })
                    .await;
                assert_eq!(Context::current(), outer);
                Context::with_current(|c| assert_eq!(c.map(Context::uid), Some(7)));
            })
            .await;
        Context::with_current(|c| assert!(c.is_none()));
    }

    #[test]
    fn from_request_derives_a_child_span_and_deadline_from_arrival() {
        let arrival = Instant::now();
        let header = RequestHeader {
            timeout_us: 1_500,
            trace_id: 99,
            span_id: 5,
            caller: "front",
            uid: 3,
            gray_tag: "gray",
            ..RequestHeader::default()
        };
        let ctx = Context::from_request(&header, arrival, "svc.Back");
        assert_eq!(ctx.deadline(), Some(arrival + Duration::from_micros(1_500)));
        assert_eq!((ctx.trace_id(), ctx.parent_span_id()), (99, 5));
        assert_ne!(ctx.span_id(), 5);
        assert_eq!(
            (ctx.caller(), ctx.gray_tag(), ctx.uid()),
            (Some("front"), Some("gray"), 3)
        );
        assert_eq!((ctx.service(), ctx.attempt()), ("svc.Back", 1));

        let fresh = Context::from_request(&RequestHeader::default(), arrival, "svc.Back");
        assert_ne!(fresh.trace_id(), 0, "an entry request starts a trace");
        assert_eq!(fresh.deadline(), None);
    }

    #[test]
    fn traceparent_parses_w3c_values_and_refuses_the_rest() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(value).expect("the specification's example");
        assert_eq!(parent.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(
            (parent.parent_id, parent.sampled),
            (0x00f067aa0ba902b7, true)
        );
        assert_eq!(parent.to_string(), value);
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-later")
                .is_some_and(|p| !p.sampled),
            "a later version with more fields"
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01é",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }

        let ctx = Context::new().with_trace_parent(parent);
        assert_eq!(
            (ctx.trace_id_high(), ctx.trace_id()),
            (0x4bf92f3577b34da6, 0xa3ce929d0e0e4736)
        );
        assert_eq!(ctx.parent_span_id(), 0x00f067aa0ba902b7);
        assert_ne!(ctx.span_id(), 0);
        let out = ctx.trace_parent();
        assert_eq!(
            (out.trace_id, out.parent_id),
            (parent.trace_id, ctx.span_id())
        );
        let fresh = Context::new().with_new_trace();
        assert!(fresh.trace_id() != 0 && fresh.span_id() != 0 && fresh.parent_span_id() == 0);
    }

    #[test]
    fn ids_are_nonzero_and_distinct() {
        let a = random_u64();
        let b = random_u64();
        assert!(a != 0 && b != 0 && a != b);
    }
}
