//! The request context on the wire, both ways, and the priority rule: what a call sends of
//! its [`Context`] ([`outgoing`]) and what a server makes of what arrives
//! ([`incoming_priority`], with `Context::from_request`).
//!
//! The priority rule, in one place: the first hop that stamps a priority wins, so every
//! instance and every later hop sees the same one.
//! - Business priority: the call's own option, else the one inherited from the context,
//!   else the method's IDL priority, else [`DEFAULT_BUSINESS_PRIORITY`]. A server that
//!   receives an unstamped request applies the same fallbacks.
//! - User priority: the inherited one, else derived from the uid ([`user_priority`]).

use std::time::Instant;

use crate::context::Context;
use crate::method::Method;
use crate::overload::{DEFAULT_BUSINESS_PRIORITY, Priority, user_priority};
use crate::protocol::RequestHeader;
use crate::request::CallOptions;

/// A call's place in its trace.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallTrace {
    /// The caller's trace, or a new one.
    pub(crate) trace_id: u64,
    /// The high half of a 128-bit trace id from outside, else 0.
    pub(crate) trace_id_high: u64,
    /// The call's own span, the callee's parent.
    pub(crate) span_id: u64,
}

impl CallTrace {
    /// The trace a call made in `ctx` belongs to (a new one outside any), with a new span.
    pub(crate) fn of(ctx: &Context) -> CallTrace {
        let span_id = crate::random::random_u64();
        match ctx.trace_id() {
            0 => CallTrace {
                trace_id: crate::random::random_u64(),
                trace_id_high: 0,
                span_id,
            },
            inherited => CallTrace {
                trace_id: inherited,
                trace_id_high: ctx.trace_id_high(),
                span_id,
            },
        }
    }
}

/// The header of the first attempt of a call of `method` made in `ctx` with `opts`, due
/// by `deadline` (after `now`); `caller` names the calling service when `ctx` does not.
pub(crate) fn outgoing<'a>(
    ctx: &'a Context,
    method: &'a Method,
    opts: &CallOptions,
    caller: &'static str,
    trace: CallTrace,
    now: Instant,
    deadline: Instant,
) -> RequestHeader<'a> {
    let business = match (
        opts.priority.filter(|p| *p != 0),
        ctx.business_priority(),
        method.priority(),
    ) {
        (Some(p), _, _) => p,
        (None, 0, 0) => DEFAULT_BUSINESS_PRIORITY,
        (None, 0, idl) => idl,
        (None, inherited, _) => inherited,
    };
    let uid = opts.uid.unwrap_or(ctx.uid());
    let user = match ctx.user_priority() {
        0 => user_priority(uid),
        inherited => inherited,
    };
    RequestHeader {
        service: method.service(),
        method: method.method(),
        timeout_us: u64::try_from(deadline.saturating_duration_since(now).as_micros())
            .unwrap_or(u64::MAX)
            .max(1),
        trace_id: trace.trace_id,
        trace_id_high: trace.trace_id_high,
        span_id: trace.span_id,
        caller: if ctx.service().is_empty() {
            caller
        } else {
            ctx.service()
        },
        business_priority: business,
        uid,
        user_priority: user,
        gray_tag: ctx.gray_tag().unwrap_or(""),
        attempt: opts.attempt.max(1),
        routing_key: opts.routing_key,
        metadata: ctx.metadata_shared(),
    }
}

/// The priority a server gives a request: what the header stamped, else the method's IDL
/// priority and the uid's user priority.
pub(crate) fn incoming_priority(header: &RequestHeader<'_>, idl_priority: u32) -> Priority {
    let business = match (header.business_priority, idl_priority) {
        (0, 0) => DEFAULT_BUSINESS_PRIORITY,
        (0, idl) => idl,
        (stamped, _) => stamped,
    };
    let user = match header.user_priority {
        0 => user_priority(header.uid),
        stamped => stamped,
    };
    Priority::new(business, user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::MethodDesc;
    use std::time::Duration;

    static DESC: MethodDesc = MethodDesc {
        service: "s.S",
        method: "M",
        idempotent: false,
        timeout: None,
        priority: 30,
        stale_read: false,
    };
    static UNSET: MethodDesc = MethodDesc {
        priority: 0,
        ..DESC
    };

    fn sent(ctx: &Context, method: &'static MethodDesc, opts: &CallOptions) -> (u32, u32, u64) {
        let now = Instant::now();
        let method = Method::Static(method);
        let trace = CallTrace::of(ctx);
        let h = outgoing(
            ctx,
            &method,
            opts,
            "me",
            trace,
            now,
            now + Duration::from_millis(5),
        );
        assert_eq!(h.timeout_us, 5_000);
        (h.business_priority, h.user_priority, h.uid)
    }

    #[test]
    fn the_first_stamp_wins_and_the_rest_falls_back_in_order() {
        let plain = Context::new();
        assert_eq!(sent(&plain, &DESC, &CallOptions::new()).0, 30, "the IDL's");
        assert_eq!(
            sent(&plain, &UNSET, &CallOptions::new()).0,
            DEFAULT_BUSINESS_PRIORITY
        );
        let inherited = Context::new()
            .with_business_priority(7)
            .with_user_priority(3);
        assert_eq!(
            sent(&inherited, &DESC, &CallOptions::new()).0,
            7,
            "inherited beats the IDL"
        );
        assert_eq!(
            sent(&inherited, &DESC, &CallOptions::new().priority(2)).0,
            2,
            "the call's own"
        );
        assert_eq!(
            sent(&inherited, &DESC, &CallOptions::new()).1,
            3,
            "user priority inherited"
        );
        let (_, user, uid) = sent(&plain, &DESC, &CallOptions::new().uid(42));
        assert_eq!((user, uid), (user_priority(42), 42), "derived from the uid");

        // The server applies the same rule to what arrives.
        let stamped = RequestHeader {
            business_priority: 9,
            user_priority: 4,
            ..RequestHeader::default()
        };
        assert_eq!(incoming_priority(&stamped, 30), Priority::new(9, 4));
        let unstamped = RequestHeader {
            uid: 42,
            ..RequestHeader::default()
        };
        assert_eq!(
            incoming_priority(&unstamped, 30),
            Priority::new(30, user_priority(42))
        );
        assert_eq!(
            incoming_priority(&RequestHeader::default(), 0).business,
            DEFAULT_BUSINESS_PRIORITY
        );
    }

    #[test]
    fn a_call_continues_its_contexts_trace_with_a_span_of_its_own() {
        let ctx = Context::new().with_trace_id(77);
        let trace = CallTrace::of(&ctx);
        assert_eq!(trace.trace_id, 77);
        assert_ne!(trace.span_id, ctx.span_id());
        let fresh = CallTrace::of(&Context::new());
        assert!(fresh.trace_id != 0 && fresh.span_id != 0);
    }
}
