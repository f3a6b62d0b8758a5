//! What both gateways share: authentication, the action table, rate limits and the
//! context every downstream request carries.
//!
//! Every client action is a name (`friends.request`) with a JSON body. The table below
//! gives each its business priority — what DAGOR sheds last under overload: signing in
//! and messaging before contact changes before browsing — and whether it needs a user.
//! The gateway stamps the user's uid, their user priority and the action's business
//! priority on the request context, so every hop below sees them.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};
use svrkit::overload::user_priority;
use svrkit::{Code, Context};
use wx_api::account::{
    AccountClient, GetProfilesRequest, LoginRequest, LogoutRequest, Profile, RegisterRequest,
    TokenState, UpdateProfileRequest, VerifyTokenRequest,
};
use wx_api::contact::{
    CheckRequest, ContactClient, FriendRequest, ListFriendsRequest, PeerRequest, Relation,
    RelationReply,
};
use wx_api::storage::ProfileField;

use crate::error::ApiError;
use crate::ratelimit::RateLimiter;

/// One client action.
#[derive(Debug, Clone, Copy)]
pub struct ActionSpec {
    /// Its name on the wire.
    pub name: &'static str,
    /// Business priority stamped on its requests (smaller is more important).
    pub priority: u32,
    /// Whether it needs a signed-in user.
    pub needs_user: bool,
}

const fn action(name: &'static str, priority: u32, needs_user: bool) -> ActionSpec {
    ActionSpec {
        name,
        priority,
        needs_user,
    }
}

/// Business priorities by kind of action.
pub mod priority {
    /// Signing in, out and up.
    pub const AUTH: u32 = 10;
    /// Messaging (the message issue's actions).
    pub const MESSAGING: u32 = 20;
    /// Changing contacts.
    pub const CONTACT_WRITE: u32 = 30;
    /// Reading contacts and profiles.
    pub const CONTACT_READ: u32 = 40;
    /// Browsing moments (the moments issue's actions).
    pub const MOMENTS_BROWSE: u32 = 80;
}

/// Every action the backend offers.
pub const ACTIONS: &[ActionSpec] = &[
    action("register", priority::AUTH, false),
    action("login", priority::AUTH, false),
    action("logout", priority::AUTH, true),
    action("profile.get", priority::CONTACT_READ, true),
    action("profile.update", priority::CONTACT_WRITE, true),
    action("friends.request", priority::CONTACT_WRITE, true),
    action("friends.accept", priority::CONTACT_WRITE, true),
    action("friends.reject", priority::CONTACT_WRITE, true),
    action("friends.remove", priority::CONTACT_WRITE, true),
    action("friends.block", priority::CONTACT_WRITE, true),
    action("friends.unblock", priority::CONTACT_WRITE, true),
    action("friends.list", priority::CONTACT_READ, true),
    action("friends.requests", priority::CONTACT_READ, true),
    action("relation.check", priority::CONTACT_READ, true),
];

/// The action named `name`.
pub fn find_action(name: &str) -> Option<&'static ActionSpec> {
    ACTIONS.iter().find(|a| a.name == name)
}

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
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            rate_per_sec: 20.0,
            burst: 40.0,
            timeout: Duration::from_secs(5),
        }
    }
}

/// The logic-tier clients and the per-user limits both gateways use.
#[derive(Debug)]
pub struct Gateway {
    account: AccountClient,
    contact: ContactClient,
    users: RateLimiter<u64>,
    addresses: RateLimiter<IpAddr>,
    limits: Limits,
}

impl Gateway {
    /// A gateway calling these services.
    pub fn new(account: AccountClient, contact: ContactClient, limits: Limits) -> Gateway {
        Gateway {
            account,
            contact,
            users: RateLimiter::new(limits.rate_per_sec, limits.burst),
            addresses: RateLimiter::new(limits.rate_per_sec, limits.burst),
            limits,
        }
    }

    /// The user a token belongs to; each failure has its own reason.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<u64, ApiError> {
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
            ApiError::new(Code::Unauthenticated, "sign in first: no token").reason("token_missing")
        })?;
        let ctx = Context::new()
            .with_timeout(self.limits.timeout)
            .with_business_priority(priority::AUTH);
        let reply = ctx
            .scope(self.account.verify_token(VerifyTokenRequest {
                token: token.to_string(),
            }))
            .await?;
        match reply.state() {
            TokenState::Valid => Ok(reply.uid),
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
        let mut ctx = Context::new()
            .with_timeout(self.limits.timeout)
            .with_business_priority(spec.priority);
        if uid != 0 {
            ctx = ctx.with_uid(uid).with_user_priority(user_priority(uid));
        }
        ctx.scope(self.run(spec.name, uid, &body, token)).await
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
                    .await
                    .map_err(|s| with_reason(s.into(), Code::AlreadyExists, "name_taken"))?;
                json!({ "uid": reply.uid })
            }
            "login" => {
                let reply = a
                    .login(LoginRequest {
                        name: text(body, "name")?,
                        password: text(body, "password")?,
                    })
                    .await
                    .map_err(|s| {
                        let e = with_reason(s.into(), Code::NotFound, "unknown_user");
                        with_reason(e, Code::Unauthenticated, "wrong_password")
                    })?;
                json!({ "uid": reply.uid, "token": reply.token, "expires_ms": reply.expires_ms })
            }
            "logout" => {
                a.logout(LogoutRequest {
                    token: token.unwrap_or_default().to_string(),
                })
                .await?;
                json!({})
            }
            "profile.get" => {
                let uids = match body.get("uids") {
                    Some(_) => ids(body, "uids")?,
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
            other => {
                return Err(ApiError::new(
                    Code::Unimplemented,
                    format!("{other} is listed but not wired"),
                ));
            }
        })
    }
}

fn with_reason(e: ApiError, code: Code, reason: &'static str) -> ApiError {
    if e.code == code { e.reason(reason) } else { e }
}

fn text(body: &Value, key: &str) -> Result<String, ApiError> {
    optional_text(body, key)?.ok_or_else(|| ApiError::invalid(format!("{key:?} is required")))
}

fn optional_text(body: &Value, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(format!("{key:?} must be a string"))),
    }
}

fn as_id(key: &str, v: &Value) -> Result<u64, ApiError> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::invalid(format!("{key:?} must be a user id (a positive integer)")))
}

fn optional_id(body: &Value, key: &str) -> Result<Option<u64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_id(key, v).map(Some),
    }
}

fn id(body: &Value, key: &str) -> Result<u64, ApiError> {
    optional_id(body, key)?.ok_or_else(|| ApiError::invalid(format!("{key:?} is required")))
}

fn ids(body: &Value, key: &str) -> Result<Vec<u64>, ApiError> {
    let list = body
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid(format!("{key:?} must be a list of user ids")))?;
    if list.len() > wx_api::MAX_FRIENDS as usize {
        return Err(ApiError::invalid(format!(
            "{key:?} holds at most {} ids",
            wx_api::MAX_FRIENDS
        )));
    }
    list.iter().map(|v| as_id(key, v)).collect()
}

fn peer(body: &Value) -> Result<PeerRequest, ApiError> {
    Ok(PeerRequest {
        peer: id(body, "peer")?,
    })
}

fn list_request(body: &Value) -> Result<ListFriendsRequest, ApiError> {
    Ok(ListFriendsRequest {
        after: optional_id(body, "after")?.unwrap_or(0),
        limit: optional_id(body, "limit")?
            .unwrap_or(0)
            .min(u64::from(u32::MAX)) as u32,
        owner: optional_id(body, "uid")?.unwrap_or(0),
    })
}

/// The name of a relation in JSON.
pub fn relation_name(r: Relation) -> &'static str {
    match r {
        Relation::None => "none",
        Relation::Friend => "friend",
        Relation::RequestSent => "request_sent",
        Relation::RequestReceived => "request_received",
        Relation::Blocked => "blocked",
    }
}

fn relation_json(r: RelationReply) -> Value {
    let relation = Relation::try_from(r.relation).unwrap_or(Relation::None);
    json!({ "peer": r.peer, "relation": relation_name(relation) })
}

fn field_name(f: i32) -> &'static str {
    match ProfileField::try_from(f) {
        Ok(ProfileField::Region) => "region",
        Ok(ProfileField::Signature) => "signature",
        Ok(ProfileField::Phone) => "phone",
        _ => "unknown",
    }
}

fn field_of(name: &str) -> Option<ProfileField> {
    match name {
        "region" => Some(ProfileField::Region),
        "signature" => Some(ProfileField::Signature),
        "phone" => Some(ProfileField::Phone),
        _ => None,
    }
}

/// A profile in JSON.
pub fn profile_json(p: &Profile) -> Value {
    json!({
        "uid": p.uid,
        "name": p.name,
        "nickname": p.nickname,
        "avatar": p.avatar,
        "region": p.region,
        "signature": p.signature,
        "phone": p.phone,
        "private_fields": p.private_fields.iter().map(|f| field_name(*f)).collect::<Vec<_>>(),
        "hidden": p.hidden.iter().map(|f| field_name(*f)).collect::<Vec<_>>(),
    })
}

fn profile_change(body: &Value) -> Result<(Profile, Vec<String>), ApiError> {
    let mut profile = Profile::default();
    let mut mask = Vec::new();
    let fields = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("the body must be a JSON object"))?;
    for (key, value) in fields {
        match key.as_str() {
            "nickname" | "avatar" | "region" | "signature" | "phone" => {
                let v = optional_text(body, key)?.unwrap_or_default();
                match key.as_str() {
                    "nickname" => profile.nickname = v,
                    "avatar" => profile.avatar = v,
                    "region" => profile.region = v,
                    "signature" => profile.signature = v,
                    _ => profile.phone = v,
                }
            }
            "private_fields" => {
                let names = value.as_array().ok_or_else(|| {
                    ApiError::invalid("\"private_fields\" must be a list of field names")
                })?;
                for name in names {
                    let field = name.as_str().and_then(field_of).ok_or_else(|| {
                        ApiError::invalid(format!(
                            "{name} cannot be private: use region, signature or phone"
                        ))
                    })?;
                    profile.private_fields.push(field as i32);
                }
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown profile field {other:?}"
                )));
            }
        }
        mask.push(key.clone());
    }
    if mask.is_empty() {
        return Err(ApiError::invalid("nothing to change"));
    }
    Ok((profile, mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_table_orders_priorities_and_names_are_unique() {
        let p = |n: &str| find_action(n).map(|a| a.priority);
        assert!(p("login") < p("friends.request"));
        assert!(p("friends.request") < p("friends.list"));
        const { assert!(priority::MESSAGING < priority::MOMENTS_BROWSE) };
        let mut names: Vec<&str> = ACTIONS.iter().map(|a| a.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ACTIONS.len());
        assert!(find_action("login").is_some_and(|a| !a.needs_user));
        assert!(find_action("friends.list").is_some_and(|a| a.needs_user));
    }

    #[test]
    fn bodies_are_checked_field_by_field() {
        let body = json!({ "peer": "42", "uids": [1, "2"], "bad": -1, "name": 5 });
        assert_eq!(id(&body, "peer").ok(), Some(42));
        assert_eq!(ids(&body, "uids").ok(), Some(vec![1, 2]));
        assert!(id(&body, "bad").is_err());
        assert!(id(&body, "missing").is_err());
        assert!(text(&body, "name").is_err());
        let (profile, mask) =
            profile_change(&json!({ "region": "Shenzhen", "private_fields": ["region"] }))
                .expect("valid change");
        assert_eq!(profile.region, "Shenzhen");
        assert_eq!(mask, ["private_fields", "region"]);
        assert!(profile_change(&json!({ "private_fields": ["nickname"] })).is_err());
        assert!(profile_change(&json!({ "password": "x" })).is_err());
        assert!(profile_change(&json!({})).is_err());
    }
}
