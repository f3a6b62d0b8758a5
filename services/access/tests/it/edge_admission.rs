//! Admission at the edge, over a real access-long endpoint: with browsing's share of the
//! gateway's places taken by slow requests, more browsing is refused at once
//! (`overloaded`, reason `edge_shed`, with the `admit` hint), a more important one still
//! runs, and once the slow ones finish everything is admitted again and the hint is gone.

use crate::answering;

use std::sync::Arc;

use serde_json::json;
use wx_client::Ws;

#[tokio::test]
async fn a_full_edge_sheds_browsing_keeps_messaging_and_recovers() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let addr = answering::websocket_with(
        answering::Answering {
            timelines: Some(Arc::clone(&gate)),
            ..Default::default()
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

    // The client keeps the hint: browsing is answered `held_back` without being sent.
    let held_back = ws
        .call("moments.timeline", json!({}))
        .await
        .expect("an answer");
    assert_eq!(held_back["error"]["reason"], "held_back", "{held_back}");

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
    // An answer without a hint lifts it.
    let sent = ws
        .call("message.send", json!({ "to": 8, "text": "again" }))
        .await
        .expect("an answer");
    assert!(sent.get("admit").is_none(), "{sent}");
    let again = ws
        .call("moments.timeline", json!({}))
        .await
        .expect("an answer");
    assert_eq!(again["ok"], true, "{again}");
    assert!(again.get("admit").is_none(), "{again}");
}

/// Messages that user 7 may have running on an edge of `limit` before the next is
/// refused or waits, as the gateway's own admission counts.
fn message_room(limit: usize) -> u64 {
    let edge = access::admission::EdgeAdmission::new(limit);
    let held: Vec<_> = std::iter::from_fn(|| edge.admit("message.send", 7).ok()).collect();
    held.len() as u64
}

/// An edge of 8 whose sign-in and messaging wait up to `edge_wait` for a place, over
/// services whose message sends wait for permits of the returned gate; the edge's
/// address and user 7's connection.
async fn messages_held(
    edge_wait: std::time::Duration,
) -> (Arc<tokio::sync::Semaphore>, std::net::SocketAddr, Ws) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let limits = access::Limits {
        max_in_flight: 8,
        edge_wait,
        ..access::Limits::default()
    };
    let answering = answering::Answering {
        sends: Some(Arc::clone(&gate)),
        ..Default::default()
    };
    let addr = answering::websocket_limited(answering, limits).await;
    let ws = Ws::connect(addr, "7.00112233445566778899aabbccddeeff")
        .await
        .expect("connects")
        .expect("user 7 authenticates");
    (gate, addr, ws)
}

/// Over an edge of 8 whose message sends are held by `gate`, user 7 sends `n` messages at
/// once: the first `room` run, the next waits (one waiter fits on an edge of 8), and the
/// rest are refused at once; returns `room` once those refusals are read (each
/// `edge_shed`, with the hint).
async fn fill_with_messages(ws: &mut Ws, n: u64) -> u64 {
    let room = message_room(8);
    assert!(room + 2 <= n, "room {room}");
    for id in 1..=n {
        let frame =
            json!({ "id": id, "action": "message.send", "body": { "to": 8, "text": "hi" } });
        ws.send_text(&frame.to_string()).await.expect("sends");
    }
    for id in room + 2..=n {
        let refused = ws.answer().await.expect("an answer");
        assert_eq!(refused["id"], id, "{refused}");
        assert_eq!(refused["error"]["reason"], "edge_shed", "{refused}");
        assert!(
            refused["admit"].as_u64().is_some_and(|c| c < 20),
            "{refused}"
        );
    }
    room
}

#[tokio::test]
async fn a_message_finding_no_place_waits_and_takes_the_first_that_frees() {
    let (gate, _, mut ws) = messages_held(svrkit_testkit::PATIENCE).await;
    let room = fill_with_messages(&mut ws, 10).await;
    // One send finishes; its place goes to the waiting message, which then runs.
    gate.add_permits(1);
    let first = ws.answer().await.expect("an answer");
    assert_eq!(first["ok"], true, "{first}");
    gate.add_permits(room as usize);
    let mut answered = vec![first["id"].as_u64().expect("an id")];
    while answered.len() < room as usize + 1 {
        let answer = ws.answer().await.expect("an answer");
        assert_eq!(answer["ok"], true, "{answer}");
        answered.push(answer["id"].as_u64().expect("an id"));
    }
    answered.sort_unstable();
    assert_eq!(answered, (1..=room + 1).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_message_that_waits_in_vain_is_refused_and_the_edge_keeps_serving() {
    let (gate, addr, mut ws) = messages_held(std::time::Duration::from_millis(20)).await;
    let room = fill_with_messages(&mut ws, 9).await;
    // No place frees: the waiting one is refused when its wait ends, with the hint.
    let refused = ws.answer().await.expect("an answer");
    assert_eq!(refused["id"], room + 1, "{refused}");
    assert_eq!(refused["error"]["code"], "overloaded", "{refused}");
    assert_eq!(refused["error"]["reason"], "edge_shed", "{refused}");
    assert!(refused["admit"].as_u64().is_some(), "{refused}");
    // The held ones finish, and messages run again.
    gate.add_permits(room as usize + 1);
    for _ in 0..room {
        let answer = ws.answer().await.expect("an answer");
        assert_eq!(answer["ok"], true, "{answer}");
    }
    // (On a new connection: this one's client may still hold a hint from those answers.)
    let mut again = Ws::connect(addr, "7.00112233445566778899aabbccddeeff")
        .await
        .expect("connects")
        .expect("user 7 authenticates");
    let sent = again
        .call("message.send", json!({ "to": 8, "text": "again" }))
        .await
        .expect("an answer");
    assert_eq!(sent["ok"], true, "{sent}");
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

/// One raw HTTP/1.1 POST of `action` as user 7: the status, the `x-wx-admit` header if
/// any, and the JSON body.
async fn post_as_user_7(
    addr: std::net::SocketAddr,
    action: &str,
    body: &str,
) -> (u16, Option<u64>, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let request = format!(
        "POST /v1/{action} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer 7.00112233445566778899aabbccddeeff\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("writes");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("reads");
    let response = String::from_utf8(response).expect("UTF-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head[9..12].parse().expect("a status");
    let admit = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case(access::http::ADMIT_HEADER)
            .then(|| value.trim().parse().expect("a number"))
    });
    (status, admit, serde_json::from_str(body).expect("JSON"))
}

#[tokio::test]
async fn over_http_a_refusal_is_503_edge_shed_with_the_admit_header() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let services = answering::answering_server_with(answering::Answering {
        timelines: Some(Arc::clone(&gate)),
        ..Default::default()
    })
    .await;
    let gateway = answering::gateway_limited(services, 8);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(access::http::serve(
        listener,
        Arc::clone(&gateway),
        access::edge::EdgeLimits::default(),
        None,
        std::future::pending(),
    ));
    // Eight timelines at once: browsing's share is taken, the others are refused.
    let (done, mut answers) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..8 {
        let done = done.clone();
        tokio::spawn(async move {
            let _ = done.send(post_as_user_7(addr, "moments.timeline", "{}").await);
        });
    }
    // Each request is either running (no answer yet) or refused (answered): wait until
    // all eight are one or the other, checking whenever an answer comes or a moment
    // passes (an admitted request sends nothing to wake us).
    let mut refused = Vec::new();
    let deadline = tokio::time::Instant::now() + svrkit_testkit::PATIENCE;
    while refused.len() + gateway.admission().running() < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "eight requests settle in time"
        );
        let tick = std::time::Duration::from_millis(5);
        if let Ok(answer) = tokio::time::timeout(tick, answers.recv()).await {
            refused.push(answer.expect("an answer"));
        }
    }
    let held = gateway.admission().running();
    assert!((4..=5).contains(&held), "{held} held");
    for (status, admit, body) in &refused {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"]["code"], "overloaded");
        assert_eq!(body["error"]["reason"], "edge_shed");
        let admit = admit.expect("the x-wx-admit header");
        assert!((20..80).contains(&admit), "admit {admit}");
    }
    // Messaging still runs, and its answer carries the hint too.
    let (status, admit, body) =
        post_as_user_7(addr, "message.send", r#"{"to":8,"text":"hi"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(admit.is_some(), "the hint while shedding");
    // Released, the held ones answer, and the edge says nothing more.
    gate.add_permits(held + 1);
    for _ in 0..held {
        let (status, _, body) = tokio::time::timeout(svrkit_testkit::PATIENCE, answers.recv())
            .await
            .expect("released in time")
            .expect("an answer");
        assert_eq!(status, 200, "{body}");
    }
    let (status, admit, _) = post_as_user_7(addr, "moments.timeline", "{}").await;
    assert_eq!((status, admit), (200, None));
}
