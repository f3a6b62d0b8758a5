//! What both gateways share: authentication, running an action from the table in
//! [`crate::actions`], rate limits, and the context every downstream request carries.
//!
//! Every client action is a name (`friends.request`) with a JSON body. The gateway stamps
//! the user's uid, their user priority and the action's business priority on the request
//! context, so every hop below sees them.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;
use svrkit::context::{Hex, TraceHex, TraceParent};
use svrkit::overload::user_priority;
use svrkit::{Code, Context};
use wx_api::account::{TokenState, VerifyTokenRequest};

use crate::actions::{Call, find_action, priority};
use crate::admission::EdgeAdmission;
use crate::clients::Clients;
use crate::error::ApiError;
use crate::ratelimit::RateLimiter;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A signed-in user (verified once per connection, or per request for HTTP).
    User {
        /// The user.
        uid: u64,
    },
    /// Nobody signed in yet, from this address.
    Anonymous {
        /// The client's address (rate limits before login go by it).
        ip: IpAddr,
    },
}

/// Settings of a [`Gateway`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests a second each user may make on average.
    pub rate_per_sec: f64,
    /// The burst above that rate.
    pub burst: f64,
    /// Deadline of each action, end to end.
    pub timeout: Duration,
    /// Requests the gateway runs at once, its last half kept for the more important
    /// ones (see [`crate::admission`]).
    pub max_in_flight: usize,
    /// How long sign-in and messaging wait for a place when none is free (see
    /// [`crate::admission`]); `Duration::ZERO` refuses them at once as well.
    pub edge_wait: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            rate_per_sec: 20.0,
            burst: 40.0,
            timeout: Duration::from_secs(5),
            max_in_flight: 2048,
            edge_wait: crate::admission::EDGE_WAIT,
        }
    }
}

/// The context of one request at the edge: the trace its W3C `traceparent` names (a new
/// span of the gateway's own, the header's span its parent), or a new trace when it sends
/// none or an invalid one. Run the request's work in its scope, inside [`edge_span`], and
/// answer with its [`Context::trace_parent`].
pub fn edge_context(traceparent: Option<&str>) -> Context {
    match traceparent.and_then(TraceParent::parse) {
        Some(parent) => Context::new().with_trace_parent(parent),
        None => Context::new().with_new_trace(),
    }
}

/// The span of one action at the edge (`action`, at INFO), named by `ctx`'s trace ids so
/// that `svrkit::otel` exports it as the parent of the calls the action makes. Its `code`
/// is recorded by [`record_outcome`].
pub fn edge_span(ctx: &Context, action: &str) -> tracing::Span {
    tracing::info_span!(
        "action",
        action,
        trace_id = %TraceHex(ctx.trace_id_high(), ctx.trace_id()),
        span_id = %Hex(ctx.span_id()),
        parent = %Hex(ctx.parent_span_id()),
        code = tracing::field::Empty,
    )
}

/// Records an action's outcome on its edge span.
pub fn record_outcome(span: &tracing::Span, outcome: &Result<Value, ApiError>) {
    if !span.is_disabled() {
        let code = outcome.as_ref().map_or_else(|e| e.code, |_| Code::Ok);
        span.record("code", code.as_str());
    }
}

/// The logic-tier clients and the per-user limits both gateways use.
#[derive(Debug)]
pub struct Gateway {
    clients: Clients,
    users: RateLimiter<u64>,
    addresses: RateLimiter<IpAddr>,
    limits: Limits,
    admission: EdgeAdmission,
}

impl Gateway {
    /// A gateway calling these services.
    pub fn new(clients: Clients, limits: Limits) -> Gateway {
        Gateway {
            clients,
            users: RateLimiter::new(limits.rate_per_sec, limits.burst),
            addresses: RateLimiter::new(limits.rate_per_sec, limits.burst),
            limits,
            admission: EdgeAdmission::with_wait(limits.max_in_flight, limits.edge_wait),
        }
    }

    /// Admission at the edge: what this gateway admits (see [`crate::admission`]).
    pub fn admission(&self) -> &EdgeAdmission {
        &self.admission
    }

    /// The user a token belongs to; each failure has its own reason.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<u64, ApiError> {
        Ok(self.authenticate_session(token).await?.0)
    }

    /// The user a token belongs to and when its session expires (ms since the epoch).
    pub async fn authenticate_session(&self, token: Option<&str>) -> Result<(u64, u64), ApiError> {
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
            ApiError::new(Code::Unauthenticated, "sign in first: no token").reason("token_missing")
        })?;
        let ctx = Context::current()
            .with_timeout(self.limits.timeout)
            .with_business_priority(priority::AUTH);
        let reply = ctx
            .scope(self.clients.account.verify_token(VerifyTokenRequest {
                token: token.to_string(),
            }))
            .await?;
        match reply.state() {
            TokenState::Valid => Ok((reply.uid, reply.expires_ms)),
            TokenState::Expired => Err(ApiError::new(
                Code::Unauthenticated,
                "the session expired; sign in again",
            )
            .reason("token_expired")),
            _ => Err(
                ApiError::new(Code::Unauthenticated, "invalid session token")
                    .reason("token_invalid"),
            ),
        }
    }

    /// Runs `action` for `caller` with `body`; `token` is the caller's own (for logout).
    pub async fn act(
        &self,
        caller: Caller,
        action: &str,
        body: Value,
        token: Option<&str>,
    ) -> Result<Value, ApiError> {
        let spec = find_action(action).ok_or_else(|| {
            ApiError::new(Code::NotFound, format!("unknown action {action:?}"))
                .reason("unknown_action")
        })?;
        let allowed = match caller {
            Caller::User { uid } => self.users.allow(&uid),
            Caller::Anonymous { ip } => self.addresses.allow(&ip),
        };
        metrics::counter!("wx_access_actions_total", "action" => spec.name).increment(1);
        if !allowed {
            metrics::counter!("wx_access_rate_limited_total").increment(1);
            return Err(
                ApiError::new(Code::ResourceExhausted, "too many requests; slow down")
                    .reason("rate_limited"),
            );
        }
        let uid = match caller {
            Caller::User { uid } => uid,
            Caller::Anonymous { .. } if spec.needs_user => {
                return Err(ApiError::new(
                    Code::Unauthenticated,
                    format!("{action} needs a signed-in user"),
                )
                .reason("token_missing"));
            }
            Caller::Anonymous { .. } => 0,
        };
        if !body.is_object() {
            return Err(ApiError::invalid("the body must be a JSON object"));
        }
        // The trace the edge started or continued (see `edge_span`), if any.
        let mut ctx = Context::current()
            .with_timeout(self.limits.timeout)
            .with_business_priority(spec.priority);
        if uid != 0 {
            ctx = ctx.with_uid(uid).with_user_priority(user_priority(uid));
        }
        let started = std::time::Instant::now();
        let call = Call {
            clients: &self.clients,
            me: uid,
            body: &body,
            token,
        };
        let outcome = ctx.scope((spec.handler)(call)).await;
        let code = match &outcome {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        metrics::counter!("wx_access_requests_total", "action" => spec.name, "code" => code)
            .increment(1);
        metrics::histogram!("wx_access_request_duration_seconds", "action" => spec.name)
            .record(started.elapsed().as_secs_f64());
        outcome
    }
}
