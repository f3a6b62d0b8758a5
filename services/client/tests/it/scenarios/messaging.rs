//! Messaging scenarios through the access tier: send, push then sync, idempotent
//! re-sends, offline catch-up, two devices, and every refusal with its precise status.

use serde_json::{Value, json};
use svrkit_testkit::PATIENCE;
use wx_client::Ws;

use crate::harness::{Backend, User, call, refused, unique};

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

    // Both of Bob's devices sync once: the mailbox knows them from then on. The first
    // sync carries his relations: Alice, a friend.
    let first = call(http, "sync", json!({ "device": "phone" }), tb).await;
    let contacts = first["contacts"].as_array().cloned().unwrap_or_default();
    assert!(
        contacts
            .iter()
            .any(|c| c["peer"] == alice.uid && c["relation"] == "friend"),
        "{first}"
    );
    let (none, phone_key) = sync_all(
        backend,
        &bob,
        "phone",
        first["sync_key"].as_str().expect("key"),
    )
    .await;
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
    let (missed, phone_key) = sync_all(backend, &bob, "phone", &phone_key).await;
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

    // A removal reaches sync too: the contact change log keeps it.
    let quiet = call(
        http,
        "sync",
        json!({ "sync_key": phone_key, "device": "phone" }),
        tb,
    )
    .await;
    assert_eq!(quiet["contacts"], json!([]), "nothing changed since");
    call(http, "friends.remove", json!({ "peer": bob.uid }), ta).await;
    let removed = call(
        http,
        "sync",
        json!({ "sync_key": quiet["sync_key"], "device": "phone" }),
        tb,
    )
    .await;
    let changes = removed["contacts"].as_array().cloned().unwrap_or_default();
    assert_eq!(changes.len(), 1, "{removed}");
    assert_eq!(changes[0]["peer"], alice.uid);
    assert_eq!(changes[0]["relation"], "none");

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
        (
            json!({ "to": 0, "text": "hi" }),
            400,
            "invalid_argument",
            "",
        ),
    ];
    for (body, status, code, reason) in cases {
        let answer = refused(http, "message.send", body.clone(), ta, status, code).await;
        assert_eq!(answer.reason(), reason, "{body}");
    }
    // Numbers that are not user ids are not called user ids.
    let answer = refused(
        http,
        "sync",
        json!({ "limit": -1 }),
        ta,
        400,
        "invalid_argument",
    )
    .await;
    assert_eq!(
        answer.body["error"]["message"],
        "\"limit\" must be a non-negative integer"
    );
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

    // Keys: malformed, corrupt, another user's, and forged: the checksummed spelling
    // anyone can compute, and a genuine key with its sequence raised (the backend signs
    // its keys with the cluster secret).
    let (_, bob_key) = sync_all(backend, &bob, "phone", "").await;
    let (_, alice_key) = sync_all(backend, &alice, "phone", "").await;
    let forged = message::SyncKey {
        uid: alice.uid,
        messages: 1_000_000,
        ..message::SyncKey::default()
    }
    .encode(&message::SyncKeyCheck::checksummed());
    let raised = format!("{}{}", &alice_key[..50], "00000000000f4240") + &alice_key[66..];
    assert_eq!(raised.len(), alice_key.len());
    call(http, "sync", json!({ "sync_key": alice_key }), ta).await;
    for key in [
        "nonsense",
        &"0".repeat(74),
        bob_key.as_str(),
        &forged,
        &raised,
    ] {
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

/// How many messages of group `group` `user` has, after syncing from scratch.
async fn group_messages(backend: &Backend, user: &User, group: u64) -> Vec<Value> {
    let device = format!("check-{:x}", svrkit::context::random_u64());
    let (all, _) = sync_all(backend, user, &device, "").await;
    all.into_iter().filter(|m| m["group_id"] == group).collect()
}

/// Waits until every one of `users` holds `count` messages of `group`.
async fn until_delivered(backend: &Backend, users: &[User], group: u64, count: usize) {
    let deadline = std::time::Instant::now() + PATIENCE * 3;
    for user in users {
        loop {
            let got = group_messages(backend, user, group).await;
            assert!(
                got.len() <= count,
                "{} got {} copies: {got:?}",
                user.name,
                got.len()
            );
            if got.len() == count {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} has {} of {count} group messages",
                user.name,
                got.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// A group of three: one message reaches all three once; members only; leaving stops
/// delivery; only friends can be added.
pub async fn group_chat(backend: &Backend) {
    let http = &backend.http;
    let alice = backend.user(&unique("alice")).await;
    let bob = backend.user(&unique("bob")).await;
    let carol = backend.user(&unique("carol")).await;
    let stranger = backend.user(&unique("stranger")).await;
    befriend(backend, &alice, &bob).await;
    befriend(backend, &alice, &carol).await;
    let ta = Some(alice.token.as_str());

    let refused_create = refused(
        http,
        "group.create",
        json!({ "name": "x", "members": [bob.uid, stranger.uid] }),
        ta,
        403,
        "permission_denied",
    )
    .await;
    assert_eq!(refused_create.reason(), "not_friend");
    let created = call(
        http,
        "group.create",
        json!({ "name": "lunch", "members": [bob.uid, carol.uid] }),
        ta,
    )
    .await;
    let group = created["group"]["group_id"].as_u64().expect("group id");
    let mut members: Vec<u64> = created["group"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(members.first(), Some(&alice.uid), "the creator first");
    members.sort_unstable();
    let mut expected = vec![alice.uid, bob.uid, carol.uid];
    expected.sort_unstable();
    assert_eq!(members, expected);
    let seen = call(
        http,
        "group.info",
        json!({ "group_id": group }),
        Some(&bob.token),
    )
    .await;
    assert_eq!(seen["group"]["name"], "lunch");

    let body = json!({ "group_id": group, "text": "noon?", "client_msg_id": "g-1" });
    call(http, "group.send", body.clone(), ta).await;
    // Sent again with the same id: still one copy each.
    call(http, "group.send", body, ta).await;
    let everyone = [alice.clone(), bob.clone(), carol.clone()];
    until_delivered(backend, &everyone, group, 1).await;
    let bobs = group_messages(backend, &bob, group).await;
    assert_eq!(bobs[0]["text"], "noon?");
    assert_eq!(bobs[0]["from"], alice.uid);

    // Outsiders can neither send nor look.
    for (action, body) in [
        ("group.send", json!({ "group_id": group, "text": "hi" })),
        ("group.info", json!({ "group_id": group })),
    ] {
        let answer = refused(
            http,
            action,
            body,
            Some(&stranger.token),
            403,
            "permission_denied",
        )
        .await;
        assert_eq!(answer.reason(), "not_member", "{action}");
    }
    refused(
        http,
        "group.info",
        json!({ "group_id": 12345 }),
        ta,
        404,
        "not_found",
    )
    .await;
    refused(
        http,
        "group.send",
        json!({ "group_id": group, "text": "" }),
        ta,
        400,
        "invalid_argument",
    )
    .await;

    // Bob leaves: the next message reaches Alice and Carol only.
    call(
        http,
        "group.leave",
        json!({ "group_id": group }),
        Some(&bob.token),
    )
    .await;
    call(
        http,
        "group.send",
        json!({ "group_id": group, "text": "without Bob" }),
        ta,
    )
    .await;
    until_delivered(backend, &[alice.clone(), carol.clone()], group, 2).await;
    assert_eq!(group_messages(backend, &bob, group).await.len(), 1);
}

/// A group of 50: one message, fifty mailboxes, one copy each.
pub async fn group_of_fifty(backend: &Backend) {
    let http = &backend.http;
    let owner = backend.user(&unique("owner")).await;
    let mut members = Vec::new();
    for i in 0..49 {
        let user = backend.user(&unique(&format!("m{i}"))).await;
        befriend(backend, &owner, &user).await;
        members.push(user);
    }
    let ids: Vec<u64> = members.iter().map(|m| m.uid).collect();
    let created = call(
        http,
        "group.create",
        json!({ "name": "fifty", "members": ids }),
        Some(&owner.token),
    )
    .await;
    let group = created["group"]["group_id"].as_u64().expect("group id");
    assert_eq!(
        created["group"]["members"].as_array().map(Vec::len),
        Some(50)
    );
    call(
        http,
        "group.send",
        json!({ "group_id": group, "text": "all hands" }),
        Some(&owner.token),
    )
    .await;
    members.push(owner);
    until_delivered(backend, &members, group, 1).await;
}

/// The fan-out worker aborts after a few stored copies (a failpoint); restarted, it finishes
/// the job from the durable queue: every member gets the message exactly once.
pub async fn fanout_survives_a_crash_mid_job(backend: &mut Backend) {
    let owner = backend.user(&unique("owner")).await;
    let mut members = Vec::new();
    for i in 0..9 {
        let user = backend.user(&unique(&format!("c{i}"))).await;
        befriend(backend, &owner, &user).await;
        members.push(user);
    }
    let ids: Vec<u64> = members.iter().map(|m| m.uid).collect();
    let created = call(
        &backend.http,
        "group.create",
        json!({ "name": "crash", "members": ids }),
        Some(&owner.token),
    )
    .await;
    let group = created["group"]["group_id"].as_u64().expect("group id");
    // The send is accepted (or, if the abort beats the answer, sent again: idempotent).
    let body = json!({ "group_id": group, "text": "survive", "client_msg_id": "crash-1" });
    let first = backend
        .http
        .call("group.send", &body, Some(&owner.token))
        .await;
    assert!(
        backend.restart_after_exit("message-1", &["WX_FAILPOINT_FANOUT_ABORT_AFTER"]),
        "the failpoint aborted the fan-out worker"
    );
    if !first.is_ok_and(|a| a.ok()) {
        call(&backend.http, "group.send", body, Some(&owner.token)).await;
    }
    members.push(owner);
    until_delivered(backend, &members, group, 1).await;
}

/// Sends until acknowledged (the same client id each time, so retries are idempotent),
/// within the patience; `None` if it never was.
async fn send_until_acked(
    backend: &Backend,
    user: &User,
    action: &str,
    body: &Value,
) -> Option<Value> {
    let deadline = std::time::Instant::now() + PATIENCE * 2;
    while std::time::Instant::now() < deadline {
        match backend.http.call(action, body, Some(&user.token)).await {
            Ok(answer) if answer.ok() => return Some(answer.body),
            // While a process restarts (or a dead allocator's lease runs out) sends fail.
            Ok(answer) => assert!(
                matches!(answer.status, 503 | 504 | 500 | 409),
                "{action}: {} {}",
                answer.status,
                answer.body
            ),
            Err(_) => {}
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    None
}

/// While messages flow, kill -9 the message, seq and msgstore processes in turn (each is
/// restarted at once): every acknowledged message arrives exactly once, in sequence
/// order, one to one and in a group.
pub async fn chaos_loses_and_duplicates_nothing(backend: &mut Backend) {
    let alice = backend.user(&unique("alice")).await;
    let bob = backend.user(&unique("bob")).await;
    let carol = backend.user(&unique("carol")).await;
    befriend(backend, &alice, &bob).await;
    befriend(backend, &alice, &carol).await;
    let created = call(
        &backend.http,
        "group.create",
        json!({ "name": "chaos", "members": [bob.uid, carol.uid] }),
        Some(&alice.token),
    )
    .await;
    let group = created["group"]["group_id"].as_u64().expect("group id");
    let victims = [
        "message-1",
        "seq-1",
        "msgstore-1",
        "seq-2",
        "msgstore-2",
        "message-1",
    ];
    let mut acked_direct = Vec::new();
    let mut acked_group = Vec::new();
    for round in 0..(victims.len() * 8) {
        if round % 8 == 4 {
            backend.kill_and_restart(victims[round / 8]);
        }
        let id = format!("chaos-{round}");
        let direct = json!({ "to": bob.uid, "text": id, "client_msg_id": id });
        if send_until_acked(backend, &alice, "message.send", &direct)
            .await
            .is_some()
        {
            acked_direct.push(id.clone());
        }
        let gid = format!("group-{round}");
        let body = json!({ "group_id": group, "text": gid, "client_msg_id": gid });
        if send_until_acked(backend, &alice, "group.send", &body)
            .await
            .is_some()
        {
            acked_group.push(gid);
        }
    }
    assert!(
        acked_direct.len() >= victims.len() * 8 - 2,
        "most sends were acknowledged eventually: {}",
        acked_direct.len()
    );
    // Bob has every acknowledged direct message exactly once, in the order sent.
    let (got, _) = sync_all(backend, &bob, "chaos", "").await;
    let direct: Vec<&str> = got
        .iter()
        .filter(|m| m["group_id"] == 0)
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(direct, acked_direct, "exactly once, in order");
    let seqs: Vec<u64> = got.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence order: {seqs:?}"
    );
    // Every member has every acknowledged group message exactly once (the fan-out may
    // still be finishing a job a kill interrupted).
    for user in [&alice, &bob, &carol] {
        let deadline = std::time::Instant::now() + PATIENCE * 3;
        loop {
            let mut texts: Vec<String> = group_messages(backend, user, group)
                .await
                .iter()
                .filter_map(|m| m["text"].as_str().map(str::to_string))
                .collect();
            let total = texts.len();
            texts.sort();
            texts.dedup();
            assert_eq!(texts.len(), total, "{}: a group message twice", user.name);
            let mut want = acked_group.clone();
            want.sort();
            if texts == want {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: {} of {} group messages",
                user.name,
                texts.len(),
                want.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// A message sent over a long connection is pushed to the recipient and to the sender's
/// other connections, not back to the one it was sent on (it has the answer).
pub async fn the_sending_connection_is_not_pushed_its_own_message(backend: &Backend) {
    let alice = backend.user(&unique("alice")).await;
    let bob = backend.user(&unique("bob")).await;
    befriend(backend, &alice, &bob).await;
    let connect = |token: String| async move {
        Ws::connect(backend.ws[0], &token)
            .await
            .expect("connect")
            .expect("auth")
    };
    // Two connections of one session: what is skipped is the connection, not the session.
    let mut sending = connect(alice.token.clone()).await;
    let mut other = connect(alice.token.clone()).await;
    let mut bobs = connect(bob.token.clone()).await;

    let sent = sending
        .call("message.send", json!({ "to": bob.uid, "text": "hi" }))
        .await
        .expect("send");
    assert_eq!(sent["ok"], true, "{sent}");
    let push = bobs.push(PATIENCE).await.expect("the recipient's push");
    assert_eq!(push["push"], "sync", "{push}");
    // Alice's pushes go out in one delivery, to each of her connections in turn: once
    // the other one has its push, the sending one's would be queued already, ahead of
    // the answer to any later request.
    let push = other.push(PATIENCE).await.expect("the other device's push");
    assert_eq!(push["push"], "sync", "{push}");
    let answer = sending
        .call("profile.get", json!({}))
        .await
        .expect("a later request");
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(
        matches!(
            sending.push(std::time::Duration::ZERO).await,
            Err(wx_client::ClientError::Timeout)
        ),
        "the sending connection was pushed its own message"
    );

    // A message to Alice reaches every one of her connections, the sending one too.
    let back = bobs
        .call(
            "message.send",
            json!({ "to": alice.uid, "text": "hi Alice" }),
        )
        .await
        .expect("send back");
    assert_eq!(back["ok"], true, "{back}");
    for ws in [&mut sending, &mut other] {
        let push = ws.push(PATIENCE).await.expect("a push");
        assert_eq!(push["push"], "sync", "{push}");
    }
}

/// A client message id names one message of one conversation: reusing it for another
/// chat, a group or another text is refused with a clear conflict before anything is
/// acknowledged, a true re-send is the same message, and every acknowledged message
/// reaches its readers (a reused id once made a group message vanish after a 200).
pub async fn a_reused_client_id_is_refused_and_nothing_acknowledged_is_lost(backend: &Backend) {
    let b = backend.session("b").await;
    let a = backend.session("a").await;
    let c = backend.session("c").await;
    b.befriend(&a).await;
    b.befriend(&c).await;
    let group = b
        .call(
            "group.create",
            json!({ "name": "ids", "members": [a.uid, c.uid] }),
        )
        .await["group"]["group_id"]
        .as_u64()
        .expect("a group");

    let direct = json!({ "to": a.uid, "text": "hello A", "client_msg_id": "dup1" });
    let first = b.call("message.send", direct.clone()).await;
    let reuses = [
        (
            "group.send",
            json!({ "group_id": group, "text": "hello all", "client_msg_id": "dup1" }),
        ),
        (
            "message.send",
            json!({ "to": c.uid, "text": "hello A", "client_msg_id": "dup1" }),
        ),
        (
            "message.send",
            json!({ "to": a.uid, "text": "changed", "client_msg_id": "dup1" }),
        ),
    ];
    for (action, body) in reuses {
        let refused = b.refused(action, body, 409, "already_exists").await;
        assert_eq!(refused.reason(), "client_msg_id_reused", "{action}");
    }
    // The true re-send is the same message.
    let again = b.call("message.send", direct).await;
    assert_eq!(again["msg_id"], first["msg_id"]);

    // What was acknowledged arrives, once: the direct message at A (and in B's own
    // mailbox), a group message with a fresh id at every member.
    let sent = b
        .call(
            "group.send",
            json!({ "group_id": group, "text": "hello all", "client_msg_id": "dup2" }),
        )
        .await;
    assert!(sent["msg_id"].is_string(), "{sent}");
    until_delivered(
        backend,
        &[(*a).clone(), (*b).clone(), (*c).clone()],
        group,
        1,
    )
    .await;
    for reader in [&a, &b] {
        let (all, _) = sync_all(backend, reader, "check-direct", "").await;
        let direct: Vec<&Value> = all.iter().filter(|m| m["group_id"] == 0).collect();
        assert_eq!(direct.len(), 1, "{}: {all:?}", reader.name);
        assert_eq!(direct[0]["msg_id"], first["msg_id"]);
        assert_eq!(direct[0]["text"], "hello A");
    }
    let (at_c, _) = sync_all(backend, &c, "check-direct", "").await;
    assert!(
        at_c.iter().all(|m| m["group_id"] == group),
        "C was sent nothing directly: {at_c:?}"
    );
}

/// A sync page is bounded in bytes as well as in count: forty messages of the longest
/// text come in pages of at most a few hundred KiB, each continued by its SyncKey, and
/// every message arrives exactly once (one small request once answered 13 MB).
pub async fn sync_pages_are_bounded_in_bytes(backend: &Backend) {
    let alice = backend.session("alice").await;
    let bob = backend.session("bob").await;
    alice.befriend(&bob).await;
    let long = "x".repeat(16 * 1024);
    for i in 0..40 {
        alice.send(&bob, &format!("{i:02}{}", &long[2..])).await;
    }
    let first = bob.call("sync", json!({ "device": "pages" })).await;
    let page = first["messages"].as_array().map_or(0, Vec::len);
    let bytes = first.to_string().len();
    assert!(page > 0 && page < 40, "one page held {page} of 40 messages");
    assert_eq!(first["has_more"], true);
    assert!(bytes < 512 * 1024, "one sync page was {bytes} bytes");
    let (rest, _) = sync_all(
        backend,
        &bob,
        "pages",
        first["sync_key"].as_str().expect("a key"),
    )
    .await;
    let mut got: Vec<String> = first["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(rest.iter())
        .filter_map(|m| m["text"].as_str().map(|t| t[..2].to_string()))
        .collect();
    let expected: Vec<String> = (0..40).map(|i| format!("{i:02}")).collect();
    assert_eq!(got.len(), 40, "every message once");
    got.sort();
    assert_eq!(got, expected);
}
