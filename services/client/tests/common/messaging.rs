//! Messaging scenarios through the access tier: send, push then sync, idempotent
//! re-sends, offline catch-up, two devices, and every refusal with its precise status.

use serde_json::{Value, json};
use svrkit_testkit::PATIENCE;
use wx_client::Ws;

use super::{Backend, User, call, refused, unique};

/// `a` and `b` become friends.
pub async fn befriend(backend: &Backend, a: &User, b: &User) {
    let http = &backend.http;
    call(
        http,
        "friends.request",
        json!({ "peer": b.uid }),
        Some(&a.token),
    )
    .await;
    call(
        http,
        "friends.accept",
        json!({ "peer": a.uid }),
        Some(&b.token),
    )
    .await;
}

/// Syncs `user`'s `device` from `key` until nothing more waits; the messages and the last
/// key.
pub async fn sync_all(
    backend: &Backend,
    user: &User,
    device: &str,
    key: &str,
) -> (Vec<Value>, String) {
    let mut key = key.to_string();
    let mut messages = Vec::new();
    for _ in 0..100 {
        let reply = call(
            &backend.http,
            "sync",
            json!({ "sync_key": key, "device": device }),
            Some(&user.token),
        )
        .await;
        messages.extend(reply["messages"].as_array().cloned().unwrap_or_default());
        key = reply["sync_key"].as_str().expect("a key").to_string();
        if reply["has_more"] != true {
            return (messages, key);
        }
    }
    panic!("sync never finished");
}

fn texts(messages: &[Value]) -> Vec<&str> {
    messages.iter().filter_map(|m| m["text"].as_str()).collect()
}

/// Alice writes to Bob: pushed, synced, re-sent idempotently; Bob away catches up on
/// exactly what he missed; two devices; Alice's own mailbox holds what she sent.
pub async fn send_push_sync_and_catch_up(backend: &Backend) {
    let http = &backend.http;
    let alice = backend.user(&unique("alice")).await;
    let bob = backend.user(&unique("bob")).await;
    befriend(backend, &alice, &bob).await;
    let (ta, tb) = (Some(alice.token.as_str()), Some(bob.token.as_str()));

    // Both of Bob's devices sync once: the mailbox knows them from then on.
    let (none, phone_key) = sync_all(backend, &bob, "phone", "").await;
    assert!(none.is_empty());
    let (_, desktop_key) = sync_all(backend, &bob, "desktop", "").await;

    let mut ws = Ws::connect(backend.ws[0], &bob.token)
        .await
        .expect("connect")
        .expect("auth");
    let sent = call(
        http,
        "message.send",
        json!({ "to": bob.uid, "text": "hi Bob", "client_msg_id": "c-1" }),
        ta,
    )
    .await;
    let push = ws.push(PATIENCE).await.expect("a sync push");
    assert_eq!(push["push"], "sync", "{push}");
    // Bob syncs over the long connection.
    let reply = ws
        .call("sync", json!({ "sync_key": phone_key, "device": "phone" }))
        .await
        .expect("sync");
    assert_eq!(reply["ok"], true, "{reply}");
    let got = reply["result"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(texts(&got), ["hi Bob"]);
    assert_eq!(got[0]["from"], alice.uid);
    assert_eq!(got[0]["msg_id"], sent["msg_id"]);
    let phone_key = reply["result"]["sync_key"]
        .as_str()
        .expect("key")
        .to_string();

    // The same client id again: the same message, nothing new for Bob.
    let again = call(
        http,
        "message.send",
        json!({ "to": bob.uid, "text": "hi Bob", "client_msg_id": "c-1" }),
        ta,
    )
    .await;
    assert_eq!(again["msg_id"], sent["msg_id"]);
    assert_eq!(again["seq"], sent["seq"]);
    let (nothing, phone_key) = sync_all(backend, &bob, "phone", &phone_key).await;
    assert!(nothing.is_empty(), "{nothing:?}");

    // Bob goes offline; Alice sends two more; Bob's old key gets exactly those two.
    drop(ws);
    for (i, text) in ["second", "third"].iter().enumerate() {
        call(
            http,
            "message.send",
            json!({ "to": bob.uid, "text": text, "client_msg_id": format!("c-{}", i + 2) }),
            ta,
        )
        .await;
    }
    let (missed, _) = sync_all(backend, &bob, "phone", &phone_key).await;
    assert_eq!(texts(&missed), ["second", "third"]);
    let seqs: Vec<u64> = missed.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert!(seqs[0] < seqs[1], "in sequence order: {seqs:?}");
    // The phone synced past everything; the desktop still gets all three.
    let (desktop, _) = sync_all(backend, &bob, "desktop", &desktop_key).await;
    assert_eq!(texts(&desktop), ["hi Bob", "second", "third"]);

    // Alice's other devices see what she sent, in order.
    let (own, _) = sync_all(backend, &alice, "laptop", "").await;
    assert_eq!(texts(&own), ["hi Bob", "second", "third"]);
    assert!(
        own.iter()
            .all(|m| m["from"] == alice.uid && m["to"] == bob.uid)
    );

    // Paging: one message at a time, has_more until the end.
    let first = call(http, "sync", json!({ "limit": 1, "device": "pager" }), tb).await;
    assert_eq!(first["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(first["has_more"], true);
    // A first sync carries the user's own profile.
    assert_eq!(first["profile"]["uid"], bob.uid);
}

/// Every refusal with its status and reason; blocks are never revealed.
pub async fn messaging_refusals(backend: &Backend) {
    let http = &backend.http;
    let alice = backend.user(&unique("alice")).await;
    let bob = backend.user(&unique("bob")).await;
    let carol = backend.user(&unique("carol")).await;
    befriend(backend, &alice, &bob).await;
    befriend(backend, &alice, &carol).await;
    let ta = Some(alice.token.as_str());
    let stranger = backend.user(&unique("stranger")).await;

    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({ "to": stranger.uid, "text": "hi" }),
            403,
            "permission_denied",
            "not_friend",
        ),
        (
            json!({ "to": 9_007_199_254_740_000u64, "text": "hi" }),
            404,
            "not_found",
            "unknown_user",
        ),
        (
            json!({ "to": bob.uid, "text": "" }),
            400,
            "invalid_argument",
            "empty_text",
        ),
        (
            json!({ "to": bob.uid, "text": "   " }),
            400,
            "invalid_argument",
            "empty_text",
        ),
        (
            json!({ "to": bob.uid, "text": "x".repeat(16 * 1024 + 1) }),
            400,
            "invalid_argument",
            "text_too_long",
        ),
        (json!({ "to": bob.uid }), 400, "invalid_argument", ""),
        (
            json!({ "to": "bob", "text": "hi" }),
            400,
            "invalid_argument",
            "",
        ),
        (
            json!({ "to": alice.uid, "text": "me" }),
            400,
            "invalid_argument",
            "",
        ),
    ];
    for (body, status, code, reason) in cases {
        let answer = refused(http, "message.send", body.clone(), ta, status, code).await;
        assert_eq!(answer.reason(), reason, "{body}");
    }
    // 16 KiB exactly is fine.
    call(
        http,
        "message.send",
        json!({ "to": bob.uid, "text": "y".repeat(16 * 1024) }),
        ta,
    )
    .await;

    // Carol blocks Alice: Alice is told exactly what a stranger is told.
    call(
        http,
        "friends.block",
        json!({ "peer": alice.uid }),
        Some(&carol.token),
    )
    .await;
    let blocked = refused(
        http,
        "message.send",
        json!({ "to": carol.uid, "text": "hi" }),
        ta,
        403,
        "permission_denied",
    )
    .await;
    let as_stranger = refused(
        http,
        "message.send",
        json!({ "to": stranger.uid, "text": "hi" }),
        ta,
        403,
        "permission_denied",
    )
    .await;
    assert_eq!(blocked.reason(), "not_friend");
    let scrub = |a: &wx_client::Answer| {
        a.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .replace(&carol.uid.to_string(), "U")
            .replace(&stranger.uid.to_string(), "U")
    };
    assert_eq!(
        scrub(&blocked),
        scrub(&as_stranger),
        "a block is not revealed"
    );
    // A stranger cannot write to Alice either, and nothing reached Carol.
    refused(
        http,
        "message.send",
        json!({ "to": alice.uid, "text": "hi" }),
        Some(&stranger.token),
        403,
        "permission_denied",
    )
    .await;
    let (carol_got, _) = sync_all(backend, &carol, "phone", "").await;
    assert!(carol_got.is_empty());

    // Keys: malformed, corrupt, another user's.
    let (_, bob_key) = sync_all(backend, &bob, "phone", "").await;
    for key in ["nonsense", &"0".repeat(66), bob_key.as_str()] {
        let answer = refused(
            http,
            "sync",
            json!({ "sync_key": key }),
            ta,
            400,
            "invalid_argument",
        )
        .await;
        assert_eq!(answer.reason(), "bad_sync_key", "{key}");
    }
    refused(
        http,
        "sync",
        json!({ "sync_key": 5 }),
        ta,
        400,
        "invalid_argument",
    )
    .await;

    // A key older than what is kept: Bob's only device synced past three messages, so
    // they were trimmed; his first key from before them has expired.
    let (_, old_key) = sync_all(backend, &bob, "tablet", "").await;
    let (_, _) = sync_all(backend, &bob, "phone", &bob_key).await;
    for text in ["a", "b", "c"] {
        call(
            http,
            "message.send",
            json!({ "to": bob.uid, "text": text }),
            ta,
        )
        .await;
    }
    let (_, tablet_now) = sync_all(backend, &bob, "tablet", &old_key).await;
    let (_, _) = sync_all(backend, &bob, "tablet", &tablet_now).await;
    let (_, phone_now) = sync_all(backend, &bob, "phone", &bob_key).await;
    let (_, _) = sync_all(backend, &bob, "phone", &phone_now).await;
    let expired = refused(
        http,
        "sync",
        json!({ "sync_key": old_key, "device": "tablet" }),
        Some(&bob.token),
        409,
        "failed_precondition",
    )
    .await;
    assert_eq!(expired.reason(), "sync_key_expired");
    // Starting over from an empty key works, and the server kept serving throughout.
    call(
        http,
        "sync",
        json!({ "device": "tablet" }),
        Some(&bob.token),
    )
    .await;
}
