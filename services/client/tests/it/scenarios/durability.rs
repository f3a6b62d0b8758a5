//! What survives a crash: a half-done accept, and every acknowledged write when every
//! process restarts (gracefully or with `kill -9`).

use serde_json::json;

use crate::harness::{Backend, call, refused, unique};

/// An accept that stopped between its two writes (their side FRIEND, ours still
/// REQUEST_RECEIVED, as a crash would leave it) is finished by accepting again.
pub async fn an_interrupted_accept_is_finished_by_accepting_again(backend: &Backend) {
    use wx_api::storage::{
        ContactStoreClient, Edge, EdgeState, PutEdgeRequest, contact_store_methods,
    };
    let http = &backend.http;
    let asker = backend.user(&unique("una")).await;
    let accepter = backend.user(&unique("vic")).await;
    call(
        http,
        "friends.request",
        json!({ "peer": accepter.uid }),
        Some(&asker.token),
    )
    .await;
    // The first half of the accept: the asker's edge becomes FRIEND (version 1 -> 2).
    let store = ContactStoreClient::new(
        backend
            .store_channel(contact_store_methods::SERVICE_NAME, "contact-1")
            .await,
    );
    store
        .put_edge_with(
            PutEdgeRequest {
                edge: Some(Edge {
                    owner: asker.uid,
                    peer: accepter.uid,
                    state: EdgeState::Friend as i32,
                    ..Edge::default()
                }),
                expected_version: 1,
                max_friends: 0,
            },
            wx_api::by_uid(asker.uid),
        )
        .await
        .expect("half an accept");
    // The accepter still sees the request, and accepting again completes both sides.
    let pending = call(http, "friends.requests", json!({}), Some(&accepter.token)).await;
    assert_eq!(pending["requests"][0]["from"], asker.uid);
    call(
        http,
        "friends.accept",
        json!({ "peer": asker.uid }),
        Some(&accepter.token),
    )
    .await;
    for (me, other) in [(&asker, &accepter), (&accepter, &asker)] {
        let list = call(http, "friends.list", json!({}), Some(&me.token)).await;
        assert_eq!(list["friends"][0]["profile"]["uid"], other.uid, "{list}");
        assert_eq!(list["friends"].as_array().map(Vec::len), Some(1));
    }
}

/// Everything written before every process restarts is there afterwards: accounts,
/// passwords, sessions, profiles, friendships, pending requests.
pub async fn restarting_every_process_loses_nothing(backend: &mut Backend, kill: bool) {
    let http = backend.http;
    let a = backend.user(&unique("rita")).await;
    let b = backend.user(&unique("sam")).await;
    let c = backend.user(&unique("tom")).await;
    call(
        &http,
        "profile.update",
        json!({ "signature": "before the restart" }),
        Some(&a.token),
    )
    .await;
    call(
        &http,
        "friends.request",
        json!({ "peer": b.uid }),
        Some(&a.token),
    )
    .await;
    call(
        &http,
        "friends.accept",
        json!({ "peer": a.uid }),
        Some(&b.token),
    )
    .await;
    call(
        &http,
        "friends.request",
        json!({ "peer": a.uid, "greeting": "pending" }),
        Some(&c.token),
    )
    .await;

    backend.restart_all(kill).await;

    // The old session still works; so does signing in again.
    let me = call(&http, "profile.get", json!({}), Some(&a.token)).await;
    assert_eq!(me["profile"]["signature"], "before the restart");
    call(
        &http,
        "login",
        json!({ "name": b.name, "password": "correct horse battery" }),
        None,
    )
    .await;
    let friends = call(&http, "friends.list", json!({}), Some(&b.token)).await;
    assert_eq!(friends["friends"][0]["profile"]["uid"], a.uid);
    let pending = call(&http, "friends.requests", json!({}), Some(&a.token)).await;
    assert_eq!(pending["requests"][0]["from"], c.uid);
    assert_eq!(pending["requests"][0]["greeting"], "pending");
    refused(
        &http,
        "register",
        json!({ "name": a.name, "password": "another password" }),
        None,
        409,
        "already_exists",
    )
    .await;
}
