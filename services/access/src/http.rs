//! access-short: every action over HTTP/JSON, `POST /v1/ACTION` with a JSON object
//! (`GET` for actions without a body), the session token as `Authorization: Bearer T`.
//!
//! Answers are `{"ok":true, ...}` or `{"ok":false,"error":{"code","message","reason"?}}`
//! with a matching HTTP status (400 bad input, 401 not signed in, 403 not allowed, 404
//! unknown, 409 conflict, 413 too large, 429 rate-limited, 503 overloaded).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::edge::EdgeLimits;
use crate::error::ApiError;
use crate::gateway::{Caller, Gateway};

/// The HTTP routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/{action}", post(call).get(call))
        .route("/healthz", get(|| async { "ok" }))
        .merge(crate::web::router())
        .with_state(gateway)
}

/// Serves `router` on `listener` within `limits`, over TLS when `tls` is given, until
/// `shutdown` (see [`crate::edge`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    limits: EdgeLimits,
    tls: Option<crate::edge::EdgeTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(gateway).layer(axum::Extension(limits.clone()));
    crate::edge::serve(listener, router, limits, tls, shutdown).await
}

fn reply(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(mut value) => {
            if let Value::Object(map) = &mut value {
                map.insert("ok".into(), json!(true));
            }
            (StatusCode::OK, axum::Json(value)).into_response()
        }
        Err(e) => (e.http_status(), axum::Json(e.body())).into_response(),
    }
}

/// The bearer token of a request, if any, exactly as sent (a token with stray spaces is
/// not the same token).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// `POST /v1/ACTION`: continues the trace of the request's W3C `traceparent` (or starts
/// one), runs the action in the edge span, and answers with the `traceparent` of that span.
async fn call(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(action): Path<String>,
    limits: Option<axum::Extension<EdgeLimits>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let traceparent = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok());
    let ctx = crate::gateway::edge_context(traceparent);
    let span = crate::gateway::edge_span(&ctx, &action);
    let answer = ctx.trace_parent().to_string();
    let mut response = ctx
        .scope(run(
            gateway,
            peer,
            action,
            limits,
            headers,
            body,
            span.clone(),
        ))
        .instrument(span)
        .await;
    if let Ok(value) = header::HeaderValue::from_str(&answer) {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    response
}

/// The W3C trace context header.
const TRACEPARENT: &str = "traceparent";

async fn run(
    gateway: Arc<Gateway>,
    peer: SocketAddr,
    action: String,
    limits: Option<axum::Extension<EdgeLimits>>,
    headers: HeaderMap,
    body: Body,
    span: tracing::Span,
) -> Response {
    let body_timeout = limits.map_or(EdgeLimits::default().body_timeout, |l| l.0.body_timeout);
    let read = axum::body::to_bytes(body, EdgeLimits::MAX_BODY);
    let body = match tokio::time::timeout(body_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            // Too large, or the connection failed mid-body.
            let error = ApiError::new(
                svrkit::Code::ResourceExhausted,
                format!(
                    "the body could not be read within {} bytes: {e}",
                    EdgeLimits::MAX_BODY
                ),
            )
            .reason("body_too_large");
            return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(error.body())).into_response();
        }
        Err(_) => {
            let error = ApiError::new(
                svrkit::Code::DeadlineExceeded,
                format!("the body did not arrive within {body_timeout:?}"),
            )
            .reason("body_timeout");
            let mut response =
                (StatusCode::REQUEST_TIMEOUT, axum::Json(error.body())).into_response();
            // The rest of the body may never come: do not wait for it to reuse the
            // connection.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return response;
        }
    };
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return reply(Err(ApiError::invalid(format!("the body is not JSON: {e}")))),
        }
    };
    let token = bearer(&headers);
    let caller = match token {
        Some(_) => match gateway.authenticate(token).await {
            Ok(uid) => Caller::User { uid },
            Err(e) => return reply(Err(e)),
        },
        None => Caller::Anonymous { ip: peer.ip() },
    };
    let uid = match caller {
        Caller::User { uid } => uid,
        Caller::Anonymous { .. } => 0,
    };
    // Admission at the edge, after the token check (itself admitted by account, at the
    // sign-in priority): the request's work starts now (sign-in and messaging after a
    // short wait for a place, when none is free) or not at all.
    let admission = gateway.admission();
    let admitted = match admission.admit_or_wait(&action, uid) {
        Ok(entry) => entry.ready().await,
        Err(e) => Err(e),
    };
    let outcome = match admitted {
        Ok(_admitted) => gateway.act(caller, &action, body, token).await,
        Err(e) => Err(e),
    };
    crate::gateway::record_outcome(&span, &outcome);
    let ceiling = admission.ceiling(uid);
    let mut response = reply(outcome);
    if let Some(ceiling) = ceiling {
        response
            .headers_mut()
            .insert(ADMIT_HEADER, header::HeaderValue::from(ceiling));
    }
    response
}

/// The response header that, while the gateway sheds load, carries the least important
/// business priority the caller may send (see [`crate::admission::EdgeAdmission::ceiling`]).
pub const ADMIT_HEADER: &str = "x-wx-admit";
