//! Request bodies in, replies out: reading typed fields from a JSON body with a clear
//! error per field, and rendering profiles and relations.

use serde_json::{Value, json};
use wx_api::account::Profile;
use wx_api::contact::{ListFriendsRequest, PeerRequest, Relation, RelationReply};
use wx_api::storage::ProfileField;

use crate::error::ApiError;

pub(crate) fn text(body: &Value, key: &str) -> Result<String, ApiError> {
    optional_text(body, key)?.ok_or_else(|| ApiError::invalid(format!("{key:?} is required")))
}

pub(crate) fn optional_text(body: &Value, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(format!("{key:?} must be a string"))),
    }
}

/// A non-negative integer, as a JSON number or a decimal string (JavaScript holds no
/// 64-bit integer exactly as a number).
fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A user id: a positive integer (no user has id 0).
fn as_id(key: &str, v: &Value) -> Result<u64, ApiError> {
    as_u64(v)
        .filter(|&uid| uid > 0)
        .ok_or_else(|| ApiError::invalid(format!("{key:?} must be a user id (a positive integer)")))
}

/// An optional user id.
pub(crate) fn optional_id(body: &Value, key: &str) -> Result<Option<u64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_id(key, v).map(Some),
    }
}

/// A required user id.
pub(crate) fn id(body: &Value, key: &str) -> Result<u64, ApiError> {
    optional_id(body, key)?.ok_or_else(|| ApiError::invalid(format!("{key:?} is required")))
}

/// An optional number that is not a user id (a limit, a cursor, a group, post or comment
/// number): a non-negative integer.
pub(crate) fn optional_number(body: &Value, key: &str) -> Result<Option<u64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_u64(v)
            .map(Some)
            .ok_or_else(|| ApiError::invalid(format!("{key:?} must be a non-negative integer"))),
    }
}

/// A required number that is not a user id.
pub(crate) fn number(body: &Value, key: &str) -> Result<u64, ApiError> {
    optional_number(body, key)?.ok_or_else(|| ApiError::invalid(format!("{key:?} is required")))
}

/// A page's `"limit"`: 0 (the service's default) when absent, larger ones saturated at
/// `u32::MAX` (each service caps it at its own most).
pub(crate) fn limit(body: &Value) -> Result<u32, ApiError> {
    Ok(optional_number(body, "limit")?.map_or(0, |l| u32::try_from(l).unwrap_or(u32::MAX)))
}

pub(crate) fn ids(body: &Value, key: &str) -> Result<Vec<u64>, ApiError> {
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

pub(crate) fn peer(body: &Value) -> Result<PeerRequest, ApiError> {
    Ok(PeerRequest {
        peer: id(body, "peer")?,
    })
}

pub(crate) fn list_request(body: &Value) -> Result<ListFriendsRequest, ApiError> {
    Ok(ListFriendsRequest {
        after: optional_number(body, "after")?.unwrap_or(0),
        limit: limit(body)?,
        owner: optional_id(body, "uid")?.unwrap_or(0),
    })
}

/// The name of a relation in JSON.
pub(crate) fn relation_name(r: Relation) -> &'static str {
    match r {
        Relation::None => "none",
        Relation::Friend => "friend",
        Relation::RequestSent => "request_sent",
        Relation::RequestReceived => "request_received",
        Relation::Blocked => "blocked",
    }
}

pub(crate) fn relation_json(r: RelationReply) -> Value {
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
pub(crate) fn profile_json(p: &Profile) -> Value {
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

pub(crate) fn profile_change(body: &Value) -> Result<(Profile, Vec<String>), ApiError> {
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

/// An edge's state as a relation name, from the owner's side.
pub(crate) fn edge_state_name(state: wx_api::storage::EdgeState) -> &'static str {
    use wx_api::storage::EdgeState;
    match state {
        EdgeState::None => "none",
        EdgeState::Friend => "friend",
        EdgeState::RequestSent => "request_sent",
        EdgeState::RequestReceived => "request_received",
        EdgeState::Blocked => "blocked",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        result.expect_err("refused").body()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn numbers_that_are_not_user_ids_say_so() {
        let body = json!({ "limit": -1, "seq": "7", "after": 0, "group_id": 1.5 });
        assert_eq!(
            message(optional_number(&body, "limit")),
            "\"limit\" must be a non-negative integer"
        );
        assert_eq!(
            message(limit(&body)),
            "\"limit\" must be a non-negative integer"
        );
        assert_eq!(limit(&json!({ "limit": 1u64 << 40 })).ok(), Some(u32::MAX));
        assert_eq!(limit(&json!({})).ok(), Some(0));
        assert_eq!(number(&body, "seq").ok(), Some(7));
        assert_eq!(optional_number(&body, "after").ok(), Some(Some(0)));
        assert_eq!(optional_number(&body, "cursor").ok(), Some(None));
        assert_eq!(
            message(number(&body, "group_id")),
            "\"group_id\" must be a non-negative integer"
        );
        assert_eq!(
            message(number(&body, "comment_id")),
            "\"comment_id\" is required"
        );
        assert_eq!(
            message(id(&json!({ "to": 0 }), "to")),
            "\"to\" must be a user id (a positive integer)"
        );
    }

    #[test]
    fn bodies_are_checked_field_by_field() {
        let body = json!({ "peer": "42", "uids": [1, "2"], "bad": -1, "name": 5 });
        assert_eq!(id(&body, "peer").ok(), Some(42));
        assert_eq!(ids(&body, "uids").ok(), Some(vec![1, 2]));
        assert!(id(&body, "bad").is_err());
        assert!(id(&body, "missing").is_err());
        assert!(text(&body, "name").is_err());
        assert!(id(&json!({ "to": 0 }), "to").is_err(), "no user has id 0");
        assert!(ids(&json!({ "members": [1, 0] }), "members").is_err());
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
