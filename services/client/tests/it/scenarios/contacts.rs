//! Contacts through the access tier: what a stranger and a friend see of a profile, a
//! friend request pushed to every connection and accepted over one, friends lists,
//! removal, finding people by name, blocks and the friend ceiling.

use std::net::SocketAddr;

use serde_json::json;
use svrkit_testkit::PATIENCE;

use crate::harness::{Backend, call, refused, unique};

/// A stranger sees a profile's public fields only (not even which fields are private);
/// its owner sees every field; a stranger cannot list someone's friends.
pub async fn a_stranger_sees_public_fields_only(backend: &Backend) {
    let alice = backend.session("alice").await;
    let bob = backend.session("bob").await;
    alice
        .call(
            "profile.update",
            json!({ "region": "Shenzhen", "signature": "hi", "phone": "555", "private_fields": ["region", "phone"] }),
        )
        .await;

    let p = alice.profile_seen_by(&bob).await;
    assert_eq!(
        (p["nickname"].as_str(), p["signature"].as_str()),
        (Some(alice.name.to_uppercase().as_str()), Some("hi"))
    );
    assert_eq!(
        (p["region"].as_str(), p["phone"].as_str()),
        (Some(""), Some(""))
    );
    assert_eq!(p["hidden"], json!(["region", "phone"]));
    assert_eq!(
        p["private_fields"],
        json!([]),
        "which fields are private is private"
    );
    let own = alice.call("profile.get", json!({})).await;
    assert_eq!(own["profile"]["region"], "Shenzhen");
    bob.refused(
        "friends.list",
        json!({ "uid": alice.uid }),
        403,
        "permission_denied",
    )
    .await;
}

/// A friend request reaches every long connection of the recipient, on every
/// access-long instance (wherever the presence owner is), waits in their requests, and
/// is accepted over one of those connections.
pub async fn a_friend_request_is_pushed_everywhere_and_accepted_over_a_connection(
    backend: &Backend,
) {
    let alice = backend.session("alice").await;
    let bob = backend.session("bob").await;
    let mut bob_ws = Vec::new();
    for addr in &backend.ws {
        bob_ws.push(bob.connect(*addr).await);
    }
    assert_eq!(alice.request_friend(&bob, "hello").await, "request_sent");
    for ws in &mut bob_ws {
        let push = ws.push(PATIENCE).await.expect("a push on every connection");
        assert_eq!(push["push"], "friend_request");
        assert_eq!(
            (
                push["body"]["from"].as_u64(),
                push["body"]["greeting"].as_str()
            ),
            (Some(alice.uid), Some("hello"))
        );
    }
    let pending = bob.call("friends.requests", json!({})).await;
    assert_eq!(pending["requests"][0]["from"], alice.uid);
    assert_eq!(pending["requests"][0]["greeting"], "hello");
    let accepted = bob_ws[0]
        .call("friends.accept", json!({ "peer": alice.uid }))
        .await
        .expect("answer");
    assert_eq!(accepted["ok"], true, "{accepted}");
    assert_eq!(accepted["result"]["relation"], "friend");
}

/// Friends see each other's private fields, each lists the other (with profiles), and
/// `relation.check` says so (and "none" of a stranger).
pub async fn friends_see_private_fields_and_each_other(backend: &Backend) {
    let alice = backend.session("alice").await;
    let bob = backend.session("bob").await;
    alice
        .call(
            "profile.update",
            json!({ "region": "Shenzhen", "phone": "555", "private_fields": ["region", "phone"] }),
        )
        .await;
    alice.befriend(&bob).await;
    let seen = alice.profile_seen_by(&bob).await;
    assert_eq!(
        (seen["region"].as_str(), seen["phone"].as_str()),
        (Some("Shenzhen"), Some("555"))
    );
    for (me, other) in [(&alice, &bob), (&bob, &alice)] {
        let list = me.call("friends.list", json!({})).await;
        let friends = list["friends"].as_array().expect("list");
        assert_eq!(friends.len(), 1);
        assert_eq!(friends[0]["profile"]["uid"], other.uid);
        assert_eq!(friends[0]["profile"]["name"], other.name.as_str());
    }
    let relations = alice
        .call("relation.check", json!({ "peers": [bob.uid, 12345] }))
        .await;
    assert_eq!(relations["relations"][bob.uid.to_string()], "friend");
    assert_eq!(relations["relations"]["12345"], "none");
}

/// A friend removed is a stranger again: private fields hidden, gone from both lists.
pub async fn a_removed_friend_is_a_stranger_again(backend: &Backend) {
    let alice = backend.session("alice").await;
    let bob = backend.session("bob").await;
    alice
        .call(
            "profile.update",
            json!({ "region": "Shenzhen", "private_fields": ["region"] }),
        )
        .await;
    alice.befriend(&bob).await;
    assert_eq!(alice.profile_seen_by(&bob).await["region"], "Shenzhen");
    alice
        .call("friends.remove", json!({ "peer": bob.uid }))
        .await;
    assert_eq!(alice.profile_seen_by(&bob).await["region"], "");
    assert_eq!(bob.friends().await, Vec::<u64>::new());
    assert_eq!(alice.friends().await, Vec::<u64>::new());
}

/// Two people who ask each other at the same moment end as friends, every time: the
/// request that loses the race for the edges reads them again and accepts the other's.
pub async fn asking_each_other_at_once_makes_friends(backend: &Backend) {
    for trial in 0..10 {
        let a = backend.session("mutual_a").await;
        let b = backend.session("mutual_b").await;
        let (from_a, from_b) = tokio::join!(
            a.call("friends.request", json!({ "peer": b.uid })),
            b.call("friends.request", json!({ "peer": a.uid })),
        );
        for answer in [&from_a, &from_b] {
            let relation = answer["relation"].as_str().unwrap_or_default();
            assert!(
                relation == "request_sent" || relation == "friend",
                "trial {trial}: {answer}"
            );
        }
        assert_eq!(a.friends().await, vec![b.uid], "trial {trial}");
        assert_eq!(b.friends().await, vec![a.uid], "trial {trial}");
    }
}

/// Everything a person does with contacts, in order (the four scenarios above), as one
/// session: what the log and metrics suites drive through every tier.
pub async fn every_contact_scenario(backend: &Backend) {
    a_stranger_sees_public_fields_only(backend).await;
    a_friend_request_is_pushed_everywhere_and_accepted_over_a_connection(backend).await;
    friends_see_private_fields_and_each_other(backend).await;
    a_removed_friend_is_a_stranger_again(backend).await;
}

// `user.find` finds a user by their exact name and shows what a stranger may see;
/// unknown and impossible names get precise refusals; `endpoint` names an access-long
/// WebSocket that accepts the caller's token.
pub async fn finding_people_and_the_long_connection(backend: &Backend) {
    let http = &backend.http;
    let finder = backend.user(&unique("finder")).await;
    let found = backend.user(&unique("found")).await;
    let token = Some(finder.token.as_str());
    call(
        http,
        "profile.update",
        json!({ "region": "Shenzhen", "signature": "hi", "private_fields": ["region"] }),
        Some(&found.token),
    )
    .await;
    let reply = call(http, "user.find", json!({ "name": found.name }), token).await;
    let profile = &reply["profile"];
    assert_eq!(profile["uid"], found.uid);
    assert_eq!(profile["signature"], "hi");
    assert_eq!(
        profile["region"], "",
        "a stranger does not see a private field"
    );
    assert_eq!(profile["hidden"], json!(["region"]));
    let nobody = refused(
        http,
        "user.find",
        json!({ "name": unique("nobody") }),
        token,
        404,
        "not_found",
    )
    .await;
    assert_eq!(nobody.reason(), "unknown_user");
    for bad in [
        json!({ "name": "no spaces" }),
        json!({ "name": "x".repeat(10_000) }),
        json!({}),
    ] {
        refused(http, "user.find", bad, token, 400, "invalid_argument").await;
    }
    refused(
        http,
        "user.find",
        json!({ "name": found.name }),
        None,
        401,
        "unauthenticated",
    )
    .await;
    refused(http, "endpoint", json!({}), None, 401, "unauthenticated").await;

    let endpoint = call(http, "endpoint", json!({}), token).await;
    let url = endpoint["websocket_url"].as_str().expect("a URL");
    let addr: SocketAddr = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.strip_suffix("/v1/ws"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not a WebSocket URL of the gateway: {url}"));
    assert!(
        backend.ws.contains(&addr),
        "{addr} is not an access-long instance"
    );
    let mut ws = wx_client::Ws::connect(addr, &finder.token)
        .await
        .expect("connects")
        .expect("the token is accepted");
    let listed = ws.call("friends.list", json!({})).await.expect("an answer");
    assert_eq!(listed["ok"], true, "{listed}");
}

/// Blocks, the friend ceiling (3 in these backends) and every refusal in between.
pub async fn relations_and_their_limits(backend: &Backend) {
    let http = &backend.http;
    let a = backend.user(&unique("ann")).await;
    let b = backend.user(&unique("ben")).await;
    let (ta, tb) = (Some(a.token.as_str()), Some(b.token.as_str()));
    refused(
        http,
        "friends.request",
        json!({ "peer": a.uid }),
        ta,
        400,
        "invalid_argument",
    )
    .await;
    refused(
        http,
        "friends.request",
        json!({ "peer": 42 }),
        ta,
        404,
        "not_found",
    )
    .await;
    refused(
        http,
        "friends.accept",
        json!({ "peer": b.uid }),
        ta,
        409,
        "failed_precondition",
    )
    .await;
    // Ben blocks Ann: her request is answered as any other ("sent"), so the block is not
    // revealed, and Ben never hears of it.
    call(http, "friends.block", json!({ "peer": a.uid }), tb).await;
    let sent = call(http, "friends.request", json!({ "peer": b.uid }), ta).await;
    assert_eq!(sent["relation"], "request_sent", "{sent}");
    let seen = call(http, "relation.check", json!({ "peers": [b.uid] }), ta).await;
    assert_eq!(seen["relations"][b.uid.to_string()], "request_sent");
    let requests = call(http, "friends.requests", json!({}), tb).await;
    assert_eq!(requests["requests"], json!([]), "{requests}");
    // Ben cannot ask Ann either while he blocks her; unblocking lifts it.
    refused(
        http,
        "friends.request",
        json!({ "peer": a.uid }),
        tb,
        409,
        "failed_precondition",
    )
    .await;
    call(http, "friends.unblock", json!({ "peer": a.uid }), tb).await;
    // Asking someone who already asked you is accepting (her unheard request counts).
    call(http, "friends.request", json!({ "peer": b.uid }), ta).await;
    let mutual = call(http, "friends.request", json!({ "peer": a.uid }), tb).await;
    assert_eq!(mutual["relation"], "friend");
    refused(
        http,
        "friends.request",
        json!({ "peer": b.uid }),
        ta,
        409,
        "already_exists",
    )
    .await;

    // Ann reaches the ceiling of 3 friends: the 4th acceptance is refused, clearly.
    for name in ["cat", "dan"] {
        let u = backend.user(&unique(name)).await;
        call(
            http,
            "friends.request",
            json!({ "peer": a.uid }),
            Some(&u.token),
        )
        .await;
        call(http, "friends.accept", json!({ "peer": u.uid }), ta).await;
    }
    let eve = backend.user(&unique("eve")).await;
    call(
        http,
        "friends.request",
        json!({ "peer": a.uid }),
        Some(&eve.token),
    )
    .await;
    let full = refused(
        http,
        "friends.accept",
        json!({ "peer": eve.uid }),
        ta,
        429,
        "resource_exhausted",
    )
    .await;
    assert!(
        full.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("3 friends"),
        "{}",
        full.body
    );
    let list = call(http, "friends.list", json!({}), ta).await;
    assert_eq!(list["friends"].as_array().map(Vec::len), Some(3));
    // The refusal left Eve's request pending and Eve friendless.
    let eves = call(http, "friends.list", json!({}), Some(&eve.token)).await;
    assert_eq!(eves["friends"], json!([]));
    // Blocking a friend ends the friendship on both sides.
    call(http, "friends.block", json!({ "peer": b.uid }), ta).await;
    let bens = call(http, "friends.list", json!({}), tb).await;
    assert_eq!(bens["friends"], json!([]));
}
