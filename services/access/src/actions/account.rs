//! The account actions: `register`, `login`, `logout`, `profile.get`, `profile.update`,
//! `user.find` and `endpoint` (where the caller's long connection goes).

use serde_json::{Value, json};
use svrkit::Code;
use wx_api::access::{DeliverRequest, EndpointRequest, Event};
use wx_api::account::{
    FindUserRequest, GetProfilesRequest, LoginChallengeRequest, LoginRequest, LogoutRequest,
    RegisterRequest, UpdateProfileRequest,
};

use super::Call;
use crate::error::ApiError;
use crate::json::{ids, optional_id, optional_text, profile_change, profile_json, text};
use crate::push::{SESSION_ENDED, session_digest};

/// The most profiles one `profile.get` reads (repeated uids count once downstream).
pub const MAX_PROFILES_PER_CALL: usize = 100;

pub(super) async fn register(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let reply = call
        .clients
        .account
        .register(RegisterRequest {
            name: text(body, "name")?,
            password: text(body, "password")?,
            nickname: optional_text(body, "nickname")?.unwrap_or_default(),
        })
        .await?;
    Ok(json!({ "uid": reply.uid }))
}

pub(super) async fn login(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let reply = call
        .clients
        .account
        .login(LoginRequest {
            name: text(body, "name")?,
            password: text(body, "password")?,
            device: optional_text(body, "device")?.unwrap_or_default(),
            proof: optional_text(body, "proof")?.unwrap_or_default(),
        })
        .await?;
    Ok(json!({
        "uid": reply.uid,
        "token": reply.token,
        "expires_ms": reply.expires_ms,
        "device": reply.device,
    }))
}

/// A proof-of-work puzzle for signing in as `name`, which a sign-in refused with
/// `proof_required` needs solved (`login`'s `proof`; see `account::proof`).
pub(super) async fn login_challenge(call: Call<'_>) -> Result<Value, ApiError> {
    let reply = call
        .clients
        .account
        .login_challenge(LoginChallengeRequest {
            name: text(call.body, "name")?,
        })
        .await?;
    Ok(json!({ "challenge": reply.challenge, "bits": reply.bits }))
}

pub(super) async fn logout(call: Call<'_>) -> Result<Value, ApiError> {
    let (me, token) = (call.me, call.token.unwrap_or_default());
    call.clients
        .account
        .logout(LogoutRequest {
            token: token.to_string(),
        })
        .await?;
    // The session's live connections end too (wherever they are).
    if let Some(push) = &call.clients.push {
        let ended = push
            .deliver_with(
                DeliverRequest {
                    uid: me,
                    event: Some(Event {
                        kind: SESSION_ENDED.to_string(),
                        json: json!({ "session": session_digest(token).to_string() }).to_string(),
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
    Ok(json!({}))
}

pub(super) async fn profile_get(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
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
        None => vec![optional_id(body, "uid")?.unwrap_or(call.me)],
    };
    let profiles = call
        .clients
        .account
        .get_profiles(GetProfilesRequest { uids: uids.clone() })
        .await?;
    Ok(if body.get("uids").is_none() {
        let profile = profiles
            .profiles
            .first()
            .ok_or_else(|| ApiError::new(Code::NotFound, format!("no user {}", uids[0])))?;
        json!({ "profile": profile_json(profile) })
    } else {
        json!({ "profiles": profiles.profiles.iter().map(profile_json).collect::<Vec<_>>() })
    })
}

pub(super) async fn user_find(call: Call<'_>) -> Result<Value, ApiError> {
    let name = text(call.body, "name")?;
    let profile = call
        .clients
        .account
        .find_user(FindUserRequest { name })
        .await?;
    Ok(json!({ "profile": profile_json(&profile) }))
}

pub(super) async fn endpoint(call: Call<'_>) -> Result<Value, ApiError> {
    let push =
        call.clients.push.as_ref().ok_or_else(|| {
            ApiError::new(Code::Unavailable, "this gateway has no long connections")
        })?;
    let reply = push
        .endpoint_with(EndpointRequest {}, wx_api::by_uid(call.me))
        .await?;
    Ok(json!({ "websocket_url": reply.websocket_url }))
}

pub(super) async fn profile_update(call: Call<'_>) -> Result<Value, ApiError> {
    let (profile, mask) = profile_change(call.body)?;
    let updated = call
        .clients
        .account
        .update_profile(UpdateProfileRequest {
            profile: Some(profile),
            mask,
        })
        .await?;
    Ok(json!({ "profile": profile_json(&updated) }))
}
