//! What both gateways share: authentication, running an action from the table in
//! [`crate::actions`], rate limits, and the context every downstream request carries.
//!
//! Every client action is a name (`friends.request`) with a JSON body. The gateway stamps
//! the user's uid, their user priority and the action's business priority on the request
//! context, so every hop below sees them.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};
use svrkit::context::{Hex, TraceHex, TraceParent};
use svrkit::overload::user_priority;
use svrkit::{Code, Context};
use wx_api::access::{DeliverRequest, EndpointRequest, Event, PushClient};
use wx_api::account::{
    AccountClient, FindUserRequest, GetProfilesRequest, LoginRequest, LogoutRequest,
    RegisterRequest, TokenState, UpdateProfileRequest, VerifyTokenRequest,
};
use wx_api::contact::{CheckRequest, ContactClient, FriendRequest, Relation};
use wx_api::message::{
    AddMembersRequest, CreateGroupRequest, GroupInfo, GroupInfoRequest, LeaveGroupRequest,
    MessageClient, SendGroupRequest, SendRequest, SyncRequest,
};
use wx_api::moments::MomentsClient;

use crate::actions::{find_action, priority};
use crate::admission::EdgeAdmission;
use crate::error::ApiError;
use crate::json::{
    edge_state_name, id, ids, limit, list_request, number, optional_id, optional_text, peer,
    profile_change, profile_json, relation_json, relation_name, text,
};
use crate::push::{SESSION_ENDED, session_digest};
use crate::ratelimit::RateLimiter;

/// The most profiles one `profile.get` reads (repeated uids count once downstream).
pub const MAX_PROFILES_PER_CALL: usize = 100;

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
    account: AccountClient,
    contact: ContactClient,
    message: MessageClient,
    moments: MomentsClient,
    push: Option<PushClient>,
    users: RateLimiter<u64>,
    addresses: RateLimiter<IpAddr>,
    limits: Limits,
    admission: EdgeAdmission,
}

impl Gateway {
    /// A gateway calling these services.
    pub fn new(
        account: AccountClient,
        contact: ContactClient,
        message: MessageClient,
        moments: MomentsClient,
        push: Option<PushClient>,
        limits: Limits,
    ) -> Gateway {
        Gateway {
            account,
            contact,
            message,
            moments,
            push,
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
            .scope(self.account.verify_token(VerifyTokenRequest {
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
        let outcome = ctx.scope(self.run(spec.name, uid, &body, token)).await;
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

    async fn run(
        &self,
        action: &str,
        me: u64,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (a, c) = (&self.account, &self.contact);
        Ok(match action {
            "register" => {
                let reply = a
                    .register(RegisterRequest {
                        name: text(body, "name")?,
                        password: text(body, "password")?,
                        nickname: optional_text(body, "nickname")?.unwrap_or_default(),
                    })
                    .await?;
                json!({ "uid": reply.uid })
            }
            "login" => {
                let reply = a
                    .login(LoginRequest {
                        name: text(body, "name")?,
                        password: text(body, "password")?,
                    })
                    .await?;
                json!({ "uid": reply.uid, "token": reply.token, "expires_ms": reply.expires_ms })
            }
            "logout" => {
                let token = token.unwrap_or_default();
                a.logout(LogoutRequest {
                    token: token.to_string(),
                })
                .await?;
                // The session's live connections end too (wherever they are).
                if let Some(push) = &self.push {
                    let ended = push
                        .deliver_with(
                            DeliverRequest {
                                uid: me,
                                event: Some(Event {
                                    kind: SESSION_ENDED.to_string(),
                                    json: json!({ "session": session_digest(token).to_string() })
                                        .to_string(),
                                }),
                                except_connection: 0,
                            },
                            wx_api::by_uid(me),
                        )
                        .await;
                    if let Err(status) = ended {
                        tracing::warn!(uid = me, %status, "the session's connections were not told of the logout");
                    }
                }
                json!({})
            }
            "profile.get" => {
                let uids = match body.get("uids") {
                    Some(_) => {
                        let uids = ids(body, "uids")?;
                        if uids.len() > MAX_PROFILES_PER_CALL {
                            return Err(ApiError::invalid(format!(
                                "\"uids\" holds at most {MAX_PROFILES_PER_CALL} ids"
                            )));
                        }
                        uids
                    }
                    None => vec![optional_id(body, "uid")?.unwrap_or(me)],
                };
                let profiles = a
                    .get_profiles(GetProfilesRequest { uids: uids.clone() })
                    .await?;
                if body.get("uids").is_none() {
                    let profile = profiles.profiles.first().ok_or_else(|| {
                        ApiError::new(Code::NotFound, format!("no user {}", uids[0]))
                    })?;
                    json!({ "profile": profile_json(profile) })
                } else {
                    json!({ "profiles": profiles.profiles.iter().map(profile_json).collect::<Vec<_>>() })
                }
            }
            "user.find" => {
                let name = text(body, "name")?;
                let profile = a.find_user(FindUserRequest { name }).await?;
                json!({ "profile": profile_json(&profile) })
            }
            "endpoint" => {
                let push = self.push.as_ref().ok_or_else(|| {
                    ApiError::new(Code::Unavailable, "this gateway has no long connections")
                })?;
                let reply = push
                    .endpoint_with(EndpointRequest {}, wx_api::by_uid(me))
                    .await?;
                json!({ "websocket_url": reply.websocket_url })
            }
            "profile.update" => {
                let (profile, mask) = profile_change(body)?;
                let updated = a
                    .update_profile(UpdateProfileRequest {
                        profile: Some(profile),
                        mask,
                    })
                    .await?;
                json!({ "profile": profile_json(&updated) })
            }
            "friends.request" => relation_json(
                c.request(FriendRequest {
                    peer: id(body, "peer")?,
                    greeting: optional_text(body, "greeting")?.unwrap_or_default(),
                })
                .await?,
            ),
            "friends.accept" => relation_json(c.accept(peer(body)?).await?),
            "friends.reject" => relation_json(c.reject(peer(body)?).await?),
            "friends.remove" => relation_json(c.remove(peer(body)?).await?),
            "friends.block" => relation_json(c.block(peer(body)?).await?),
            "friends.unblock" => relation_json(c.unblock(peer(body)?).await?),
            "friends.list" => {
                let reply = c.list_friends(list_request(body)?).await?;
                json!({ "friends": reply.friends.iter().map(|f| json!({
                    "profile": f.profile.as_ref().map(profile_json),
                    "since_ms": f.since_ms,
                })).collect::<Vec<_>>() })
            }
            "friends.requests" => {
                let reply = c.list_requests(list_request(body)?).await?;
                json!({ "requests": reply.requests.iter().map(|r| json!({
                    "from": r.from,
                    "greeting": r.greeting,
                    "sent_ms": r.sent_ms,
                    "profile": r.profile.as_ref().map(profile_json),
                })).collect::<Vec<_>>() })
            }
            "relation.check" => {
                let peers = ids(body, "peers")?;
                let reply = c
                    .check(CheckRequest {
                        peers: peers.clone(),
                    })
                    .await?;
                let relations: serde_json::Map<String, Value> = peers
                    .iter()
                    .zip(reply.relations.iter())
                    .map(|(p, r)| {
                        let r = Relation::try_from(*r).unwrap_or(Relation::None);
                        (p.to_string(), json!(relation_name(r)))
                    })
                    .collect();
                json!({ "relations": relations })
            }
            "message.send" => {
                let reply = self
                    .message
                    .send(SendRequest {
                        to: id(body, "to")?,
                        text: text(body, "text")?,
                        client_msg_id: optional_text(body, "client_msg_id")?.unwrap_or_default(),
                    })
                    .await?;
                json!({ "msg_id": reply.msg_id.to_string(), "seq": reply.seq, "sent_ms": reply.sent_ms })
            }
            "sync" => {
                let reply = self
                    .message
                    .sync(SyncRequest {
                        sync_key: optional_text(body, "sync_key")?.unwrap_or_default(),
                        limit: limit(body)?,
                        device: optional_text(body, "device")?.unwrap_or_default(),
                    })
                    .await?;
                let mut out = json!({
                    "messages": reply.messages.iter().map(|m| json!({
                        "group_id": m.group_id,
                        "seq": m.seq,
                        "msg_id": m.msg_id.to_string(),
                        "from": m.from,
                        "to": m.to,
                        "text": m.text,
                        "sent_ms": m.sent_ms,
                        "client_msg_id": m.client_msg_id,
                    })).collect::<Vec<_>>(),
                    "has_more": reply.has_more,
                    "sync_key": reply.sync_key,
                });
                if let Some(profile) = &reply.profile {
                    out["profile"] = profile_json(profile);
                }
                out["contacts"] = reply
                    .contacts
                    .iter()
                    .map(|c| {
                        json!({
                            "peer": c.peer,
                            "relation": edge_state_name(c.state()),
                            "updated_ms": c.updated_ms,
                        })
                    })
                    .collect();
                out
            }
            "group.create" => group_json(
                self.message
                    .create_group(CreateGroupRequest {
                        name: optional_text(body, "name")?.unwrap_or_default(),
                        members: ids(body, "members")?,
                    })
                    .await?,
            ),
            "group.add" => group_json(
                self.message
                    .add_members(AddMembersRequest {
                        group_id: number(body, "group_id")?,
                        members: ids(body, "members")?,
                    })
                    .await?,
            ),
            "group.leave" => {
                self.message
                    .leave_group(LeaveGroupRequest {
                        group_id: number(body, "group_id")?,
                    })
                    .await?;
                json!({})
            }
            "group.send" => {
                let reply = self
                    .message
                    .send_group(SendGroupRequest {
                        group_id: number(body, "group_id")?,
                        text: text(body, "text")?,
                        client_msg_id: optional_text(body, "client_msg_id")?.unwrap_or_default(),
                    })
                    .await?;
                json!({ "msg_id": reply.msg_id.to_string(), "sent_ms": reply.sent_ms })
            }
            "group.info" => group_json(
                self.message
                    .get_group_info(GroupInfoRequest {
                        group_id: number(body, "group_id")?,
                    })
                    .await?,
            ),
            moments if moments.starts_with("moments.") => {
                crate::moments_actions::run(&self.moments, moments, me, body).await?
            }
            other => {
                return Err(ApiError::new(
                    Code::Unimplemented,
                    format!("{other} is listed but not wired"),
                ));
            }
        })
    }
}

fn group_json(g: GroupInfo) -> Value {
    json!({ "group": { "group_id": g.group_id, "name": g.name, "owner": g.owner, "members": g.members } })
}
