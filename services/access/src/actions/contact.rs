//! The contact actions: `friends.*` (request, accept, reject, remove, block, unblock,
//! list, requests) and `relation.check`.

use serde_json::{Value, json};
use wx_api::contact::{CheckRequest, FriendRequest, Relation};

use super::Call;
use crate::error::ApiError;
use crate::json::{
    id, ids, list_request, optional_text, peer, profile_json, relation_json, relation_name,
};

pub(super) async fn request(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let relation = call
        .clients
        .contact
        .request(FriendRequest {
            peer: id(body, "peer")?,
            greeting: optional_text(body, "greeting")?.unwrap_or_default(),
        })
        .await?;
    Ok(relation_json(relation))
}

pub(super) async fn accept(call: Call<'_>) -> Result<Value, ApiError> {
    Ok(relation_json(
        call.clients.contact.accept(peer(call.body)?).await?,
    ))
}

pub(super) async fn reject(call: Call<'_>) -> Result<Value, ApiError> {
    Ok(relation_json(
        call.clients.contact.reject(peer(call.body)?).await?,
    ))
}

pub(super) async fn remove(call: Call<'_>) -> Result<Value, ApiError> {
    Ok(relation_json(
        call.clients.contact.remove(peer(call.body)?).await?,
    ))
}

pub(super) async fn block(call: Call<'_>) -> Result<Value, ApiError> {
    Ok(relation_json(
        call.clients.contact.block(peer(call.body)?).await?,
    ))
}

pub(super) async fn unblock(call: Call<'_>) -> Result<Value, ApiError> {
    Ok(relation_json(
        call.clients.contact.unblock(peer(call.body)?).await?,
    ))
}

pub(super) async fn list(call: Call<'_>) -> Result<Value, ApiError> {
    let reply = call
        .clients
        .contact
        .list_friends(list_request(call.body)?)
        .await?;
    Ok(json!({ "friends": reply.friends.iter().map(|f| json!({
        "profile": f.profile.as_ref().map(profile_json),
        "since_ms": f.since_ms,
    })).collect::<Vec<_>>() }))
}

pub(super) async fn requests(call: Call<'_>) -> Result<Value, ApiError> {
    let reply = call
        .clients
        .contact
        .list_requests(list_request(call.body)?)
        .await?;
    Ok(json!({ "requests": reply.requests.iter().map(|r| json!({
        "from": r.from,
        "greeting": r.greeting,
        "sent_ms": r.sent_ms,
        "profile": r.profile.as_ref().map(profile_json),
    })).collect::<Vec<_>>() }))
}

pub(super) async fn check(call: Call<'_>) -> Result<Value, ApiError> {
    let peers = ids(call.body, "peers")?;
    let reply = call
        .clients
        .contact
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
    Ok(json!({ "relations": relations }))
}
