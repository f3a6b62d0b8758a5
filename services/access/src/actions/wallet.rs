//! The `wallet.*` and `envelope.*` actions: JSON in, `wx.wallet.Wallet` calls, JSON out.
//!
//! Money is in cents (integers). An envelope is named by `{"sender": uid, "seq": n}`;
//! its requests are routed to the wallet instance that owns it (by its key), the others
//! by the acting user.

use serde_json::{Value, json};
use svrkit::CallOptions;
use wx_api::storage::{LedgerEntry, account};
use wx_api::wallet::{
    BalanceRequest, EnvelopeRef, EnvelopeView, HistoryRequest, SendRequest, TopUpRequest,
};

use super::Call;
use crate::error::ApiError;
use crate::json::{id, limit, number, optional_id, optional_number, optional_text, text};

fn by_user(call: &Call<'_>) -> CallOptions {
    CallOptions::new().routing_key(call.me)
}

/// The envelope a body names, and the options routing to its owner.
fn envelope(body: &Value) -> Result<(EnvelopeRef, CallOptions), ApiError> {
    let r = EnvelopeRef {
        sender: id(body, "sender")?,
        seq: number(body, "seq")?,
    };
    let route = CallOptions::new().routing_key(wx_api::envelope_key(r.sender, r.seq));
    Ok((r, route))
}

/// What a ledger line was, for people.
fn kind(e: &LedgerEntry) -> &'static str {
    let Some(t) = &e.transfer else {
        return "unknown";
    };
    let from = t.from.map(|a| a.kind()).unwrap_or_default();
    match (from, e.change >= 0) {
        (account::Kind::Mint, _) => "top_up",
        (account::Kind::Envelope, true) if t.transfer_id.starts_with("refund:") => {
            "envelope_refund"
        }
        (account::Kind::Envelope, true) => "envelope_opened",
        (_, false) => "envelope_sent",
        _ => "unknown",
    }
}

fn entry_json(e: &LedgerEntry) -> Value {
    let t = e.transfer.clone().unwrap_or_default();
    let envelope = [t.from, t.to]
        .into_iter()
        .flatten()
        .find(|a| a.kind() == account::Kind::Envelope)
        .map(|a| json!({ "sender": a.uid, "seq": a.seq }));
    json!({
        "entry": e.entry,
        "kind": kind(e),
        "change": e.change,
        "balance_after": e.balance_after,
        "transfer_id": t.transfer_id,
        "at_ms": t.at_ms,
        "envelope": envelope,
    })
}

fn view_json(v: &EnvelopeView) -> Value {
    let r = v.envelope.unwrap_or_default();
    json!({
        "envelope": { "sender": r.sender, "seq": r.seq },
        "to": v.to,
        "group_id": v.group_id,
        "total": v.total,
        "shares": v.shares,
        "greeting": v.greeting,
        "created_ms": v.created_ms,
        "expires_ms": v.expires_ms,
        "taken": v.taken,
        "remaining": v.remaining,
        "expired": v.expired,
        "mine": v.mine,
        "takers": v.takers.iter().map(|t| json!({
            "uid": t.uid,
            "amount": t.amount,
            "opened_ms": t.opened_ms,
        })).collect::<Vec<_>>(),
    })
}

pub(super) async fn balance(call: Call<'_>) -> Result<Value, ApiError> {
    let reply = call
        .clients
        .wallet
        .balance_with(BalanceRequest {}, by_user(&call))
        .await?;
    Ok(json!({ "balance": reply.balance }))
}

pub(super) async fn history(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let reply = call
        .clients
        .wallet
        .history_with(
            HistoryRequest {
                before: optional_number(body, "before")?.unwrap_or(0),
                limit: limit(body)?,
            },
            by_user(&call),
        )
        .await?;
    Ok(json!({
        "entries": reply.entries.iter().map(entry_json).collect::<Vec<_>>(),
        "next_before": reply.next_before,
    }))
}

pub(super) async fn top_up(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let reply = call
        .clients
        .wallet
        .top_up_with(
            TopUpRequest {
                amount: number(body, "amount")?,
                transfer_id: text(body, "transfer_id")?,
                uid: 0,
            },
            by_user(&call),
        )
        .await?;
    Ok(json!({ "balance": reply.balance, "applied": reply.applied }))
}

pub(super) async fn send(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let shares = optional_number(body, "shares")?.unwrap_or(1);
    let view = call
        .clients
        .wallet
        .send_with(
            SendRequest {
                to: optional_id(body, "to")?.unwrap_or(0),
                group_id: optional_number(body, "group_id")?.unwrap_or(0),
                total: number(body, "total")?,
                shares: u32::try_from(shares).unwrap_or(u32::MAX),
                greeting: optional_text(body, "greeting")?.unwrap_or_default(),
                transfer_id: text(body, "transfer_id")?,
            },
            by_user(&call),
        )
        .await?;
    Ok(view_json(&view))
}

pub(super) async fn grab(call: Call<'_>) -> Result<Value, ApiError> {
    let (r, route) = envelope(call.body)?;
    let reply = call.clients.wallet.grab_with(r, route).await?;
    Ok(json!({
        "reserved_until_ms": reply.reserved_until_ms,
        "shares": reply.shares,
        "taken": reply.taken,
    }))
}

pub(super) async fn open(call: Call<'_>) -> Result<Value, ApiError> {
    let (r, route) = envelope(call.body)?;
    let reply = call.clients.wallet.open_with(r, route).await?;
    Ok(json!({ "amount": reply.amount }))
}

pub(super) async fn get(call: Call<'_>) -> Result<Value, ApiError> {
    let (r, route) = envelope(call.body)?;
    let view = call.clients.wallet.get_with(r, route).await?;
    Ok(view_json(&view))
}
