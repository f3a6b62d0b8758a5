//! The messaging actions: `message.send`, `sync` and the `group.*` actions.

use serde_json::{Value, json};
use wx_api::message::{
    AddMembersRequest, CreateGroupRequest, GroupInfo, GroupInfoRequest, LeaveGroupRequest,
    SendGroupRequest, SendRequest, SyncRequest,
};

use super::Call;
use crate::error::ApiError;
use crate::json::{edge_state_name, id, ids, limit, number, optional_text, profile_json, text};

pub(super) async fn send(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let reply = call
        .clients
        .message
        .send(SendRequest {
            to: id(body, "to")?,
            text: text(body, "text")?,
            client_msg_id: optional_text(body, "client_msg_id")?.unwrap_or_default(),
            envelope: None,
        })
        .await?;
    Ok(json!({ "msg_id": reply.msg_id.to_string(), "seq": reply.seq, "sent_ms": reply.sent_ms }))
}

pub(super) async fn sync(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let reply = call
        .clients
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
            "envelope": m.envelope.as_ref().map(|e| json!({
                "sender": e.sender,
                "seq": e.seq,
                "total": e.total,
                "shares": e.shares,
            })),
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
    Ok(out)
}

pub(super) async fn group_create(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let group = call
        .clients
        .message
        .create_group(CreateGroupRequest {
            name: optional_text(body, "name")?.unwrap_or_default(),
            members: ids(body, "members")?,
        })
        .await?;
    Ok(group_json(group))
}

pub(super) async fn group_add(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let group = call
        .clients
        .message
        .add_members(AddMembersRequest {
            group_id: number(body, "group_id")?,
            members: ids(body, "members")?,
        })
        .await?;
    Ok(group_json(group))
}

pub(super) async fn group_leave(call: Call<'_>) -> Result<Value, ApiError> {
    call.clients
        .message
        .leave_group(LeaveGroupRequest {
            group_id: number(call.body, "group_id")?,
        })
        .await?;
    Ok(json!({}))
}

pub(super) async fn group_send(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let reply = call
        .clients
        .message
        .send_group(SendGroupRequest {
            group_id: number(body, "group_id")?,
            text: text(body, "text")?,
            client_msg_id: optional_text(body, "client_msg_id")?.unwrap_or_default(),
            envelope: None,
        })
        .await?;
    Ok(json!({ "msg_id": reply.msg_id.to_string(), "sent_ms": reply.sent_ms }))
}

pub(super) async fn group_info(call: Call<'_>) -> Result<Value, ApiError> {
    let group = call
        .clients
        .message
        .get_group_info(GroupInfoRequest {
            group_id: number(call.body, "group_id")?,
        })
        .await?;
    Ok(group_json(group))
}

fn group_json(g: GroupInfo) -> Value {
    json!({ "group": { "group_id": g.group_id, "name": g.name, "owner": g.owner, "members": g.members } })
}
