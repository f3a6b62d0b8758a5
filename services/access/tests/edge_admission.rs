//! Admission at the edge, over a real access-long endpoint: with browsing's share of the
//! gateway's places taken by slow requests, more browsing is refused at once
//! (`overloaded`, reason `edge_shed`, with the `admit` hint), a more important one still
//! runs, and once the slow ones finish everything is admitted again and the hint is gone.

#[allow(dead_code)] // each test file uses part of the shared harness
#[path = "support/answering.rs"]
mod answering;

use std::sync::Arc;

use serde_json::json;
use wx_client::Ws;

#[tokio::test]
async fn a_full_edge_sheds_browsing_keeps_messaging_and_recovers() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let addr = answering::websocket_with(
        answering::Answering {
            timelines: Some(Arc::clone(&gate)),
        },
        8,
    )
    .await;
    let mut ws = Ws::connect(addr, "7.00112233445566778899aabbccddeeff")
        .await
        .expect("connects")
        .expect("user 7 authenticates");
    // Timelines take places until browsing's share is full (half the limit is open to
    // everything, browsing gets part of the rest): frames are admitted in the order they
    // are read, so the first refusal comes back while the admitted ones wait.
    for id in 1..=8 {
        let frame = json!({ "id": id, "action": "moments.timeline", "body": {} });
        ws.send_text(&frame.to_string()).await.expect("sends");
    }
    let refused = ws.answer().await.expect("an answer");
    let first_refused = refused["id"].as_u64().expect("an id");
    assert!((5..=6).contains(&first_refused), "{refused}");
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["error"]["code"], "overloaded");
    assert_eq!(refused["error"]["reason"], "edge_shed");
    let ceiling = refused["admit"].as_u64().expect("the admit hint");
    assert!((20..80).contains(&ceiling), "admit {ceiling}");
    // The rest of the eight are refused too.
    for id in first_refused + 1..=8 {
        let refused = ws.answer().await.expect("an answer");
        assert_eq!(
            (refused["id"].as_u64(), refused["error"]["reason"].as_str()),
            (Some(id), Some("edge_shed"))
        );
    }
    let held = first_refused - 1;

    // Messaging is more important: it is admitted and answered, with the hint.
    let sent = ws
        .call("message.send", json!({ "to": 8, "text": "hi" }))
        .await
        .expect("an answer");
    assert_eq!(sent["ok"], true, "{sent}");
    assert!(sent["admit"].as_u64().is_some(), "{sent}");

    // The slow ones finish; the edge admits everything again and says nothing of it.
    gate.add_permits(held as usize);
    let mut answered = Vec::new();
    while answered.len() < held as usize {
        let answer = ws.answer().await.expect("an answer");
        assert_eq!(answer["ok"], true, "{answer}");
        answered.push(answer["id"].as_u64().expect("an id"));
    }
    answered.sort_unstable();
    assert_eq!(answered, (1..=held).collect::<Vec<_>>());
    gate.add_permits(1);
    let again = ws
        .call("moments.timeline", json!({}))
        .await
        .expect("an answer");
    assert_eq!(again["ok"], true, "{again}");
    assert!(again.get("admit").is_none(), "{again}");
}

#[tokio::test]
async fn the_auth_answer_lists_every_actions_priority() {
    let addr = answering::websocket().await;
    let mut ws = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws"))
        .await
        .expect("connects")
        .0;
    use futures_util::{SinkExt, StreamExt};
    let auth = json!({ "op": "auth", "token": "7.00112233445566778899aabbccddeeff" });
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        auth.to_string().into(),
    ))
    .await
    .expect("sends");
    let hello = ws.next().await.expect("a frame").expect("a frame");
    let hello: serde_json::Value =
        serde_json::from_str(hello.to_text().expect("text")).expect("JSON");
    assert_eq!(hello["ok"], true);
    for action in access::actions::ACTIONS {
        assert_eq!(
            hello["priorities"][action.name], action.priority,
            "{}",
            action.name
        );
    }
}
