//! Replicated stores (`SVRKIT_REPLICAS=3`, every shard a Raft group of three replicas):
//! the leader of a shard killed with SIGKILL while sign-ups, messages and Moments posts
//! flow through the whole backend loses none of what was acknowledged.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use svrkit_testkit::PATIENCE;

use super::messaging::{befriend, sync_all};
use crate::harness::{Backend, User, call, unique};

/// A process of `store` that leads at least one of its shards now (from `/status`).
async fn a_leader_of(backend: &Backend, store: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        for (id, admin) in backend.admin_endpoints() {
            if !id.starts_with(&format!("{store}-")) {
                continue;
            }
            if leads(admin).await {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "{store} has no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn leads(admin: SocketAddr) -> bool {
    let (code, body) = svrkit_testkit::http_get(admin, "/status").await;
    let status: Value = serde_json::from_str(&body).unwrap_or_default();
    code == 200
        && status["shards"]
            .as_array()
            .is_some_and(|shards| shards.iter().any(|s| s["role"] == "leader"))
}

/// Calls `action` until an answer is definite: `Some(body)` when acknowledged (or, for
/// `register`, found taken after an attempt whose outcome was unknown).
async fn until_definite(
    backend: &Backend,
    action: &str,
    body: &Value,
    token: Option<&str>,
) -> Option<Value> {
    let deadline = Instant::now() + PATIENCE * 2;
    while Instant::now() < deadline {
        match backend.http.call(action, body, token).await {
            Ok(answer) if answer.ok() => return Some(answer.body),
            Ok(answer) if action == "register" && answer.status == 409 => return Some(Value::Null),
            // While a shard elects a new leader its keys are refused (not processed).
            Ok(answer) => assert!(
                matches!(answer.status, 503 | 504 | 500),
                "{action}: {} {}",
                answer.status,
                answer.body
            ),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Kills a leading replica of accountstore, msgstore and momentsstore mid-traffic:
/// every acknowledged sign-up signs in, every acknowledged message arrives exactly once
/// and in order, every acknowledged post is in its author's album; the killed replicas
/// come back and the traffic goes on.
pub async fn a_killed_shard_leader_loses_nothing(backend: &mut Backend) {
    let alice = backend.user(&unique("alice")).await;
    let bob = backend.user(&unique("bob")).await;
    befriend(backend, &alice, &bob).await;
    let mut victims = Vec::new();
    for store in ["accountstore", "msgstore", "momentsstore"] {
        victims.push(a_leader_of(backend, store).await);
    }
    let (mut signed_up, mut messages, mut posts) = (Vec::new(), Vec::new(), Vec::new());
    let password = "correct horse battery";
    for round in 0..24 {
        if round == 8 {
            for victim in &victims {
                backend.signal(victim, "KILL");
            }
        }
        if round == 16 {
            for victim in &victims {
                backend.kill_and_restart(victim);
            }
        }
        let name = unique(&format!("signup{round}"));
        let register = json!({ "name": name, "password": password });
        if until_definite(backend, "register", &register, None)
            .await
            .is_some()
        {
            signed_up.push(name);
        }
        let id = format!("raft-{round}");
        let send = json!({ "to": bob.uid, "text": id, "client_msg_id": id });
        if until_definite(backend, "message.send", &send, Some(&alice.token))
            .await
            .is_some()
        {
            messages.push(id);
        }
        let post = json!({ "text": format!("post {round}") });
        if let Some(reply) =
            until_definite(backend, "moments.post", &post, Some(&alice.token)).await
        {
            posts.push(reply["seq"].as_u64().expect("a post's seq"));
        }
    }
    assert!(
        signed_up.len() >= 22 && messages.len() >= 22 && posts.len() >= 22,
        "most writes were acknowledged: {} sign-ups, {} messages, {} posts",
        signed_up.len(),
        messages.len(),
        posts.len()
    );
    eprintln!(
        "victims {victims:?}: {} sign-ups, {} messages, {} posts acknowledged",
        signed_up.len(),
        messages.len(),
        posts.len()
    );
    for name in &signed_up {
        // A login that meets a shard still settling (a replica back from the kill
        // catching up) may be refused as unavailable or time out, and is tried again;
        // an account that is not there is refused at once and fails the test.
        let login = json!({ "name": name, "password": password });
        let session = until_definite(backend, "login", &login, None)
            .await
            .unwrap_or_else(|| panic!("{name} could not sign in"));
        assert!(session["token"].is_string(), "{name} signs in: {session}");
    }
    let (got, _) = sync_all(backend, &bob, "raft", "").await;
    let texts: Vec<&str> = got.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, messages, "every acknowledged message once, in order");
    let album = album_of(backend, &alice, &bob).await;
    for seq in &posts {
        assert!(
            album.contains(seq),
            "post {seq} is in the album ({album:?})"
        );
    }
}

/// Every post seq in `author`'s album as `viewer` sees it.
async fn album_of(backend: &Backend, author: &User, viewer: &User) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut body = json!({ "author": author.uid, "limit": 50 });
    for _ in 0..20 {
        let page = call(
            &backend.http,
            "moments.album",
            body.clone(),
            Some(&viewer.token),
        )
        .await;
        seqs.extend(
            page["posts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["seq"].as_u64()),
        );
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => body["cursor"] = json!(c),
            _ => break,
        }
    }
    seqs
}
