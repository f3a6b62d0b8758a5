//! access-short: every action over HTTP/JSON, `POST /v1/ACTION` with a JSON object
//! (`GET` for actions without a body), the session token as `Authorization: Bearer T`.
//!
//! Answers are `{"ok":true, ...}` or `{"ok":false,"error":{"code","message","reason"?}}`
//! with a matching HTTP status (400 bad input, 401 not signed in, 403 not allowed, 404
//! unknown, 409 conflict, 413 too large, 429 rate-limited, 503 overloaded).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::gateway::{Caller, Gateway};

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The HTTP routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/{action}", post(call).get(call))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(gateway)
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Small frames go out at once: with Nagle's algorithm a reply written right after a
    // push waits for the client's delayed ACK (40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
    });
    axum::serve(
        listener,
        router(gateway).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
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

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn call(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let error = ApiError::new(svrkit::Code::ResourceExhausted, rejection.body_text())
                .reason("body_too_large");
            return (status, axum::Json(error.body())).into_response();
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
    reply(gateway.act(caller, &action, body, token).await)
}
