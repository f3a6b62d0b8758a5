//! access-long: a WebSocket at `/v1/ws` carrying requests and server pushes.
//!
//! ```text
//! client: {"op":"auth","token":"T"}                 first frame, within 10 s
//! server: {"op":"auth","ok":true,"uid":U}           or an error, then close
//! client: {"id":1,"action":"friends.list","body":{}}
//! server: {"id":1,"ok":true,"result":{...}}         or {"id":1,"ok":false,"error":{...}}
//! server: {"push":"friend_request","body":{...}}    whenever something happens
//! ```
//!
//! The auth answer also carries `"priorities"`, every action's business priority. While
//! the gateway sheds load (see [`crate::admission`]), every answer carries
//! `"admit": N`, the least important business priority it admits from this user now: a
//! request whose action's priority number is larger would be refused `overloaded`
//! (reason `edge_shed`, not run). A client holds such requests back for a while (the
//! benchmark's clients: until a newer hint, or for 500 ms, doubled after each refusal up
//! to 8 s), then tries again: the gateway's load changes from one answer to the next.
//!
//! The connection authenticates once; every request on it acts as that user, with the
//! same action table, priorities and rate limit as access-short. Requests run
//! concurrently and answer in any order (match them by `id`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::admission::EdgeAdmission;
use crate::edge::EdgeLimits;
use crate::error::ApiError;
use crate::gateway::{Caller, Gateway};
use crate::push::{Hub, QUEUE};

/// How long a new connection may take to authenticate.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a frame to the client may wait for the client to read it; a client slower
/// than that is disconnected, so what is queued for it stays bounded.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes a session reads from its socket at a time. A frame longer than this grows the
/// buffer for as long as it takes; an idle session holds only this (the WebSocket
/// library's default, 128 KiB, touched in full on every read, would be most of the
/// memory of an idle connection).
pub const READ_BUFFER: usize = 1024;
/// Requests one connection may have running at once; more are refused at once.
pub const MAX_IN_FLIGHT: usize = 64;

#[derive(Debug, Clone)]
struct Long {
    gateway: Arc<Gateway>,
    hub: Arc<Hub>,
    /// Upgraded connections open, at most the edge's connection limit.
    sessions: Arc<Semaphore>,
    /// Sessions one user may hold here.
    max_per_user: usize,
    /// How long a session's last check is trusted.
    session_recheck: Duration,
}

/// A connection's session, checked again before an action once its last check is older
/// than the edge's `session_recheck`: the push that closes a revoked session's
/// connections can be lost (a gateway restarted, the presence owner moved), and a
/// connection must not act on a revoked session whatever happened to that push.
#[derive(Debug)]
struct SessionCheck {
    token: Arc<str>,
    checked: std::sync::Mutex<Instant>,
    every: Duration,
}

impl SessionCheck {
    fn new(token: Arc<str>, every: Duration) -> SessionCheck {
        SessionCheck {
            token,
            checked: std::sync::Mutex::new(Instant::now()),
            every,
        }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ok while the session stands. A session the account service says is gone
    /// (revoked, expired) is refused `unauthenticated`; an account service that cannot
    /// answer leaves the last check standing, and the next action asks again.
    async fn verify(&self, gateway: &Gateway) -> Result<(), ApiError> {
        if self.last().elapsed() < self.every {
            return Ok(());
        }
        match gateway.authenticate_session(Some(&self.token)).await {
            Ok(_) => {
                *self.last() = Instant::now();
                Ok(())
            }
            Err(e) if e.code == svrkit::Code::Unauthenticated => Err(e),
            Err(e) => {
                metrics::counter!("wx_access_session_checks_failed_total").increment(1);
                tracing::debug!(error = %e.message, "session check unanswered; the last one stands");
                Ok(())
            }
        }
    }
}

/// Serves the WebSocket endpoint on `listener` within `limits` until `shutdown`: at most
/// `limits.max_connections` connections, upgraded or not (see [`crate::edge`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    hub: Arc<Hub>,
    limits: EdgeLimits,
    tls: Option<crate::edge::EdgeTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sessions = Arc::new(Semaphore::new(limits.max_connections));
    let router = Router::new()
        .route("/v1/ws", get(upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Long {
            gateway,
            hub,
            sessions,
            max_per_user: limits.max_per_user,
            session_recheck: limits.session_recheck,
        });
    crate::edge::serve(listener, router, limits, tls, shutdown).await
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(long): State<Long>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    // An upgraded connection leaves the edge's count: it holds a session permit instead.
    let Ok(permit) = Arc::clone(&long.sessions).try_acquire_owned() else {
        metrics::counter!("wx_access_connections_refused_total").increment(1);
        let error = ApiError::new(svrkit::Code::Unavailable, "too many connections")
            .reason("too_many_connections");
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(error.body()),
        )
            .into_response();
    };
    // A frame announcing more than a message may hold is refused from its header, before
    // any of it is buffered.
    ws.max_message_size(EdgeLimits::MAX_BODY)
        .max_frame_size(EdgeLimits::MAX_BODY)
        .read_buffer_size(READ_BUFFER)
        // Each frame is written at once: a push is one frame, there is nothing to batch.
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            session(long, socket, peer).await;
            drop(permit);
        })
}

fn error_frame(id: &Value, e: &ApiError) -> String {
    let mut body = e.body();
    body["id"] = id.clone();
    body.to_string()
}

/// The answer to request `id` refused at the edge, with what the edge admits from `uid`.
fn refusal_frame(id: Value, e: &ApiError, admission: &EdgeAdmission, uid: u64) -> String {
    let mut frame = e.body();
    frame["id"] = id;
    frame["admit"] = json!(admission.ceiling(uid).unwrap_or(0));
    frame.to_string()
}

/// Waits for the auth frame; returns the user, their token and when it expires.
async fn authenticate(long: &Long, socket: &mut WebSocket) -> Result<(u64, String, u64), ApiError> {
    let first = tokio::time::timeout(AUTH_TIMEOUT, socket.recv())
        .await
        .map_err(|_| ApiError::new(svrkit::Code::Unauthenticated, "no auth frame in time"))?;
    let text = match first {
        Some(Ok(Message::Text(text))) => text,
        _ => {
            return Err(ApiError::invalid(
                "the first frame must be {\"op\":\"auth\",\"token\":...}",
            ));
        }
    };
    let frame: Value = serde_json::from_str(text.as_str())
        .map_err(|e| ApiError::invalid(format!("the auth frame is not JSON: {e}")))?;
    if frame["op"] != "auth" {
        return Err(ApiError::invalid(
            "the first frame must be {\"op\":\"auth\",\"token\":...}",
        ));
    }
    let token = frame["token"].as_str().unwrap_or_default().to_string();
    let (uid, expires_ms) = long.gateway.authenticate_session(Some(&token)).await?;
    if long.hub.connections_of(uid) >= long.max_per_user {
        metrics::counter!("wx_access_connections_refused_total").increment(1);
        return Err(ApiError::new(
            svrkit::Code::ResourceExhausted,
            format!("at most {} connections per user", long.max_per_user),
        )
        .reason("too_many_connections"));
    }
    Ok((uid, token, expires_ms))
}

async fn session(long: Long, mut socket: WebSocket, peer: SocketAddr) {
    let (uid, token, expires_ms) = match authenticate(&long, &mut socket).await {
        Ok(user) => user,
        Err(e) => {
            let mut body = e.body();
            body["op"] = json!("auth");
            let _ = socket.send(Message::Text(body.to_string().into())).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    let (outbox, mut outgoing) = crate::outbox::outbox(QUEUE);
    let ended = Arc::new(tokio::sync::Notify::new());
    let registration = long
        .hub
        .register(uid, &token, outbox.clone(), Arc::clone(&ended))
        .await;
    let hello = json!({
        "op": "auth",
        "ok": true,
        "uid": uid,
        "priorities": crate::actions::priorities(),
    })
    .to_string();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    tracing::debug!(uid, %peer, "long connection up");
    let token: Arc<str> = token.into();
    let check = Arc::new(SessionCheck::new(Arc::clone(&token), long.session_recheck));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    // The session's expiry ends the connection as a logout does.
    let left = Duration::from_millis(expires_ms.saturating_sub(wx_api::now_ms()));
    let expiry = tokio::time::sleep(left);
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            () = &mut expiry => {
                let frame = json!({ "push": crate::push::SESSION_ENDED, "body": { "reason": "expired" } });
                let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(frame.to_string().into()))).await;
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        let e = ApiError::invalid("send text frames holding JSON");
                        let _ = outbox.try_send(error_frame(&Value::Null, &e));
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                let frame: Value = match serde_json::from_str(text.as_str()) {
                    Ok(frame) => frame,
                    Err(e) => {
                        let e = ApiError::invalid(format!("the frame is not JSON: {e}"));
                        let _ = outbox.try_send(error_frame(&Value::Null, &e));
                        continue;
                    }
                };
                let id = frame.get("id").cloned().unwrap_or(Value::Null);
                let Some(action) = frame.get("action").and_then(Value::as_str).map(str::to_string) else {
                    let e = ApiError::invalid("a request has \"id\", \"action\" and \"body\"");
                    let _ = outbox.try_send(error_frame(&id, &e));
                    continue;
                };
                // Admission at the edge: refused here, the request costs only its frame.
                let admission = long.gateway.admission();
                let entry = match admission.admit_or_wait(&action, uid) {
                    Ok(entry) => entry,
                    Err(e) => {
                        let _ = outbox.try_send(refusal_frame(id, &e, admission, uid));
                        continue;
                    }
                };
                let body = frame.get("body").cloned().unwrap_or_else(|| json!({}));
                // A client that sends without reading cannot pile up work here.
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    let e = ApiError::new(
                        svrkit::Code::ResourceExhausted,
                        format!("more than {MAX_IN_FLIGHT} requests in flight on this connection"),
                    )
                    .reason("too_many_in_flight");
                    let _ = outbox.try_send(error_frame(&id, &e));
                    continue;
                };
                // A frame may carry a W3C traceparent; the answer names the edge span.
                let mut ctx = crate::gateway::edge_context(frame.get("traceparent").and_then(Value::as_str));
                // Services skip this connection when they push news of this request's
                // own change to its author: it gets the answer.
                if let Err(e) = ctx
                    .metadata_mut()
                    .insert(wx_api::ORIGIN_CONNECTION, registration.origin().to_be_bytes().to_vec())
                {
                    tracing::warn!(error = %e, "could not name the connection");
                }
                let span = crate::gateway::edge_span(&ctx, &action);
                let traceparent = ctx.trace_parent().to_string();
                let (gateway, outbox, token) = (Arc::clone(&long.gateway), outbox.clone(), Arc::clone(&token));
                let (check, ended) = (Arc::clone(&check), Arc::clone(&ended));
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = check.verify(&gateway).await {
                        // Revoked: the action is refused, and the connection ends.
                        let _ = outbox.send(error_frame(&id, &e)).await;
                        let gone = json!({ "push": crate::push::SESSION_ENDED, "body": { "reason": "revoked" } });
                        let _ = outbox.send(gone.to_string()).await;
                        ended.notify_one();
                        return;
                    }
                    // Sign-in and messaging may wait a moment for a place (see
                    // `crate::admission`); the rest was admitted or refused above.
                    let admitted = match entry.ready().await {
                        Ok(admitted) => admitted,
                        Err(e) => {
                            let frame = refusal_frame(id, &e, gateway.admission(), uid);
                            let _ = outbox.send(frame).await;
                            return;
                        }
                    };
                    let outcome = ctx
                        .scope(gateway.act(Caller::User { uid }, &action, body, Some(&token)))
                        .instrument(span.clone())
                        .await;
                    crate::gateway::record_outcome(&span, &outcome);
                    drop(admitted);
                    let mut answer = match outcome {
                        Ok(result) => json!({ "id": id, "ok": true, "result": result, "traceparent": traceparent }),
                        Err(e) => {
                            let mut frame = e.body();
                            frame["id"] = id;
                            frame["traceparent"] = json!(traceparent);
                            frame
                        }
                    };
                    // While the edge sheds, every answer says what it admits.
                    if let Some(ceiling) = gateway.admission().ceiling(uid) {
                        answer["admit"] = json!(ceiling);
                    }
                    let answer = answer.to_string();
                    let _ = outbox.send(answer).await;
                });
            }
            () = ended.notified() => {
                // Logged out: say so (the frame is queued), then close.
                while let Some(frame) = outgoing.try_recv() {
                    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(frame.into()))).await;
                }
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            Some(frame) = outgoing.recv() => {
                // A client that stops reading is let go rather than buffered for.
                match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(frame.into()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        metrics::counter!("wx_access_slow_readers_dropped_total").increment(1);
                        tracing::debug!(uid, %peer, "client stopped reading; closing");
                        break;
                    }
                }
            }
        }
    }
    tracing::debug!(uid, %peer, "long connection closed");
}
