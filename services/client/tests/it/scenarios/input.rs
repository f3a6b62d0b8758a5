//! Bad input everywhere gets a precise status, and the server keeps serving.

use serde_json::json;
use wx_client::Ws;

use crate::harness::{Backend, call, refused, unique};

/// Every kind of bad input gets its precise status, and the backend keeps serving.
pub async fn bad_input_gets_precise_errors(backend: &Backend) {
    let http = &backend.http;
    let u = backend.user(&unique("val")).await;
    let t = Some(u.token.as_str());
    // Accounts.
    refused(
        http,
        "register",
        json!({ "name": u.name, "password": "long enough pw" }),
        None,
        409,
        "already_exists",
    )
    .await;
    refused(
        http,
        "register",
        json!({ "name": "x", "password": "long enough pw" }),
        None,
        400,
        "invalid_argument",
    )
    .await;
    refused(
        http,
        "register",
        json!({ "name": unique("shorty"), "password": "short" }),
        None,
        400,
        "invalid_argument",
    )
    .await;
    refused(
        http,
        "register",
        json!({ "name": unique("nopw") }),
        None,
        400,
        "invalid_argument",
    )
    .await;
    let wrong = refused(
        http,
        "login",
        json!({ "name": u.name, "password": "not it at all" }),
        None,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(wrong.reason(), "wrong_password");
    let unknown = refused(
        http,
        "login",
        json!({ "name": unique("ghost"), "password": "whatever123" }),
        None,
        404,
        "not_found",
    )
    .await;
    assert_eq!(unknown.reason(), "unknown_user");
    // Tokens: missing, forged, expired.
    let missing = refused(
        http,
        "friends.list",
        json!({}),
        None,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(missing.reason(), "token_missing");
    let forged = format!("{}.{}", u.uid, "0123456789abcdef0123456789abcdef");
    let bad = refused(
        http,
        "friends.list",
        json!({}),
        Some(&forged),
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(bad.reason(), "token_invalid");
    let garbage = refused(
        http,
        "friends.list",
        json!({}),
        Some("not-a-token"),
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(garbage.reason(), "token_invalid");
    let expired = expired_token(backend, u.uid).await;
    let old = refused(
        http,
        "friends.list",
        json!({}),
        Some(&expired),
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(old.reason(), "token_expired");
    // Requests: unknown action, malformed JSON, wrong types, oversized body.
    let unknown = refused(http, "friends.teleport", json!({}), t, 404, "not_found").await;
    assert_eq!(unknown.reason(), "unknown_action");
    let malformed = http
        .raw("POST", "/v1/friends.list", b"{not json", t)
        .await
        .expect("answer");
    assert_eq!(
        (malformed.status, malformed.code()),
        (400, "invalid_argument"),
        "{}",
        malformed.body
    );
    let not_object = http
        .raw("POST", "/v1/friends.list", b"[1,2]", t)
        .await
        .expect("answer");
    assert_eq!(
        (not_object.status, not_object.code()),
        (400, "invalid_argument")
    );
    refused(
        http,
        "friends.request",
        json!({ "peer": "seven" }),
        t,
        400,
        "invalid_argument",
    )
    .await;
    refused(
        http,
        "profile.update",
        json!({ "private_fields": ["nickname"] }),
        t,
        400,
        "invalid_argument",
    )
    .await;
    refused(
        http,
        "profile.update",
        json!({ "password": "x" }),
        t,
        400,
        "invalid_argument",
    )
    .await;
    let huge = format!("{{\"greeting\":\"{}\"}}", "x".repeat(100 * 1024));
    let too_big = http
        .raw("POST", "/v1/friends.request", huge.as_bytes(), t)
        .await
        .expect("answer");
    assert_eq!(
        (too_big.status, too_big.code()),
        (413, "resource_exhausted"),
        "{}",
        too_big.body
    );
    // The long connection: a refused token, then garbage frames on a good one.
    let refused_ws = Ws::connect(backend.ws[0], &forged).await.expect("connect");
    let error = refused_ws.expect_err("a forged token is refused");
    assert_eq!(error["error"]["reason"], "token_invalid");
    let mut ws = Ws::connect(backend.ws[0], &u.token)
        .await
        .expect("connect")
        .expect("auth");
    ws.send_text("{oops").await.expect("send");
    let answer = ws.answer().await.expect("an error frame");
    assert_eq!(answer["error"]["code"], "invalid_argument");
    let answer = ws
        .call("friends.teleport", json!({}))
        .await
        .expect("answer");
    assert_eq!(answer["error"]["reason"], "unknown_action");
    // Everyone still serves.
    let ok = ws.call("friends.list", json!({})).await.expect("answer");
    assert_eq!(ok["ok"], true, "{ok}");
    call(http, "profile.get", json!({}), t).await;
    // Logging out ends the session everywhere.
    call(http, "logout", json!({}), t).await;
    let gone = refused(http, "friends.list", json!({}), t, 401, "unauthenticated").await;
    assert_eq!(gone.reason(), "token_invalid");
}

/// A session stored already expired, through the store's own RPC (no waiting for a
/// real one to expire).
async fn expired_token(backend: &Backend, uid: u64) -> String {
    use wx_api::storage::{
        AccountStoreClient, PutSessionRequest, SessionRecord, account_store_methods,
    };
    let channel = backend
        .store_channel(account_store_methods::SERVICE_NAME, "account-1")
        .await;
    let session_id = "00112233445566778899aabbccddeeff".to_string();
    let past = wx_api::now_ms() - 1_000;
    AccountStoreClient::new(channel)
        .put_session_with(
            PutSessionRequest {
                session: Some(SessionRecord {
                    session_id: session_id.clone(),
                    uid,
                    created_ms: past - 60_000,
                    expires_ms: past,
                }),
            },
            wx_api::by_uid(uid),
        )
        .await
        .expect("stored");
    format!("{uid}.{session_id}")
}
