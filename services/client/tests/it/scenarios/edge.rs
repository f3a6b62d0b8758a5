//! The edge against one abusive client: every attack below is bounded, and another user
//! keeps being served meanwhile. The backend runs with 500 ms header and body timeouts
//! and at most 24 connections per gateway (see `access::edge`).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wx_client::Ws;

use crate::harness::{Backend, call, refused, unique};

/// The connection cap the edge test's backend runs with.
pub const MAX_CONNECTIONS: usize = 24;

/// Everything the server sends until it closes the connection (bounded by `wait`);
/// `None` if it is still open then.
async fn until_closed(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

async fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

/// A Content-Length larger than the body, a chunked body without its last chunk, headers
/// that never end, a connection that says nothing: each ends (408 or a close) within the
/// timeouts, while a user is served.
pub async fn slow_and_short_requests_end(backend: &Backend) {
    let addr = backend.http.addr();
    let wait = Duration::from_secs(10);
    let user = backend.user(&unique("patient")).await;
    served_soon(backend, &user.token).await;
    let mut short = send(
        addr,
        b"POST /v1/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\"",
    )
    .await;
    let mut chunked = send(
        addr,
        b"POST /v1/login HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await;
    let mut slowloris = send(
        addr,
        b"POST /v1/login HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1",
    )
    .await;
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    // A user meanwhile.
    call(&backend.http, "profile.get", json!({}), Some(&user.token)).await;
    for (what, stream) in [("short body", &mut short), ("endless chunks", &mut chunked)] {
        let answer = until_closed(stream, wait).await;
        let answer = answer.unwrap_or_else(|| panic!("{what}: still open after {wait:?}"));
        assert!(answer.starts_with("HTTP/1.1 408"), "{what}: {answer}");
        assert!(answer.contains("body_timeout"), "{what}: {answer}");
    }
    for (what, stream) in [("slowloris", &mut slowloris), ("idle", &mut idle)] {
        assert!(
            until_closed(stream, wait).await.is_some(),
            "{what}: still open after {wait:?}"
        );
    }
}

/// Waits (bounded) until `profile.get` crosses access, account and contact: right after
/// the backend starts, account may not have discovered contact yet.
async fn served_soon(backend: &Backend, token: &str) {
    let deadline = std::time::Instant::now() + svrkit_testkit::PATIENCE;
    loop {
        let answer = backend
            .http
            .call("profile.get", &json!({}), Some(token))
            .await;
        if answer.is_ok_and(|a| a.ok()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "profile.get never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Past the connection cap a connection is closed at once; those within it are served,
/// and once the flood ends everyone is served again.
pub async fn connections_are_capped(backend: &Backend) {
    let addr = backend.http.addr();
    let mut flood = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 8 {
        flood.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // Kept alive: a served connection keeps its place while the others are tried.
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let (mut served, mut refused_now) = (0, 0);
    for stream in &mut flood {
        let _ = stream.write_all(request).await;
        let mut head = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut head)).await;
        match read.expect("an answer or a close in time") {
            Ok(n) if head[..n].starts_with(b"HTTP/1.1 200") => served += 1,
            _ => refused_now += 1,
        }
    }
    assert!(served <= MAX_CONNECTIONS, "{served} served");
    assert!(refused_now >= 8, "{refused_now} refused");
    // Once the flood is gone (the server sees the closes a moment later), all is served.
    drop(flood);
    let deadline = std::time::Instant::now() + svrkit_testkit::PATIENCE;
    loop {
        let mut stream = send(addr, request).await;
        let mut head = [0u8; 64];
        if let Ok(n) = stream.read(&mut head).await
            && head[..n].starts_with(b"HTTP/1.1 200")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still refused after the flood"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let user = backend.user(&unique("after_flood")).await;
    served_soon(backend, &user.token).await;
}

/// A WebSocket frame announcing 16 MiB is refused from its header (the connection ends
/// at once, nothing buffered); other users' connections carry on.
pub async fn oversized_websocket_frames_are_refused(backend: &Backend) {
    let user = backend.user(&unique("steady")).await;
    served_soon(backend, &user.token).await;
    let mut ws = Ws::connect(backend.ws[0], &user.token)
        .await
        .expect("connect")
        .expect("auth");
    let mut raw = send(
        backend.ws[0],
        b"GET /v1/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    let mut head = [0u8; 512];
    let n = raw.read(&mut head).await.expect("handshake");
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // FIN + text, masked, 64-bit length 16 MiB, a mask, then a little of the payload.
    let mut frame = vec![0x81, 0xFF];
    frame.extend_from_slice(&(16u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[0u8; 1024]);
    raw.write_all(&frame).await.expect("frame");
    assert!(
        until_closed(&mut raw, Duration::from_secs(10))
            .await
            .is_some(),
        "the connection announcing 16 MiB is still open"
    );
    let reply = ws
        .call("profile.get", json!({}))
        .await
        .expect("still served");
    assert_eq!(reply["ok"], true, "{reply}");
}

/// Profile fields have lengths and no control characters; a batch of profiles is capped
/// and each uid read once; tokens are parsed strictly.
pub async fn inputs_are_bounded(backend: &Backend) {
    let http = &backend.http;
    let user = backend.user(&unique("bounded")).await;
    served_soon(backend, &user.token).await;
    let t = Some(user.token.as_str());
    let huge = "x".repeat(65_000);
    for (field, value) in [
        ("avatar", huge.as_str()),
        ("region", huge.as_str()),
        ("phone", huge.as_str()),
        ("nickname", "bad\u{0}name"),
        ("signature", "line\nbreak"),
    ] {
        let mut body = json!({});
        body[field] = json!(value);
        let answer = refused(http, "profile.update", body, t, 400, "invalid_argument").await;
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(field)),
            "{}",
            answer.body
        );
    }
    call(http, "profile.update", json!({ "region": "Shenzhen" }), t).await;
    let many: Vec<u64> = (0..101).map(|_| user.uid).collect();
    refused(
        http,
        "profile.get",
        json!({ "uids": many }),
        t,
        400,
        "invalid_argument",
    )
    .await;
    let same: Vec<u64> = (0..100).map(|_| user.uid).collect();
    let reply = call(http, "profile.get", json!({ "uids": same }), t).await;
    assert_eq!(
        reply["profiles"].as_array().map(Vec::len),
        Some(1),
        "{reply}"
    );
    for forged in [
        format!("+{}", user.token),
        format!("0{}", user.token),
        format!("{}x", user.token),
    ] {
        let answer = refused(
            http,
            "profile.get",
            json!({}),
            Some(&forged),
            401,
            "unauthenticated",
        )
        .await;
        assert_eq!(
            answer.reason(),
            "token_invalid",
            "{forged}: {}",
            answer.body
        );
    }
}

/// Logging out ends the live connections of that session (and only those): the
/// connection is told `session_ended` and closed; another session of the same user on
/// another instance carries on.
pub async fn logout_ends_the_sessions_connections(backend: &Backend) {
    let user = backend.user(&unique("leaver")).await;
    served_soon(backend, &user.token).await;
    let second = call(
        &backend.http,
        "login",
        json!({ "name": user.name, "password": "correct horse battery" }),
        None,
    )
    .await;
    let other_token = second["token"].as_str().expect("a token").to_string();
    let mut ending = Ws::connect(backend.ws[0], &user.token)
        .await
        .expect("connect")
        .expect("auth");
    let mut staying = Ws::connect(backend.ws[1], &other_token)
        .await
        .expect("connect")
        .expect("auth");
    call(&backend.http, "logout", json!({}), Some(&user.token)).await;
    let push = ending
        .push(svrkit_testkit::PATIENCE)
        .await
        .expect("told of the logout");
    assert_eq!(push["push"], "session_ended", "{push}");
    assert!(
        ending.call("profile.get", json!({})).await.is_err(),
        "the logged-out connection is closed"
    );
    let reply = staying
        .call("profile.get", json!({}))
        .await
        .expect("the other session carries on");
    assert_eq!(reply["ok"], true, "{reply}");
}

/// Wrong passwords slow down further attempts on that account (from any address), the
/// right one included, until the wait is over; then the real user gets in. Other
/// accounts are untouched.
pub async fn failed_logins_slow_down_per_account(backend: &Backend) {
    let http = &backend.http;
    let victim = backend.user(&unique("victim")).await;
    let bystander = backend.user(&unique("bystander")).await;
    let wrong = json!({ "name": victim.name, "password": "not the password" });
    for _ in 0..account::throttle::FREE_FAILURES {
        let answer = refused(http, "login", wrong.clone(), None, 401, "unauthenticated").await;
        assert_eq!(answer.reason(), "wrong_password");
    }
    let right = json!({ "name": victim.name, "password": "correct horse battery" });
    let answer = refused(
        http,
        "login",
        right.clone(),
        None,
        429,
        "resource_exhausted",
    )
    .await;
    assert_eq!(answer.reason(), "login_throttled", "{}", answer.body);
    let other = json!({ "name": bystander.name, "password": "correct horse battery" });
    call(http, "login", other, None).await;
    // The wait is a second: then the right password works.
    let deadline = std::time::Instant::now() + svrkit_testkit::PATIENCE;
    loop {
        let answer = http.call("login", &right, None).await.expect("an answer");
        if answer.ok() {
            break;
        }
        assert_eq!(answer.reason(), "login_throttled", "{}", answer.body);
        assert!(std::time::Instant::now() < deadline, "locked out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A session's expiry ends its live connection (the backend runs 2 s sessions).
pub async fn expiry_ends_the_connection(backend: &Backend) {
    let user = backend.user(&unique("brief")).await;
    let mut ws = Ws::connect(backend.ws[0], &user.token)
        .await
        .expect("connect")
        .expect("auth");
    let push = ws
        .push(svrkit_testkit::PATIENCE)
        .await
        .expect("told of the expiry");
    assert_eq!(push["push"], "session_ended", "{push}");
    assert_eq!(push["body"]["reason"], "expired", "{push}");
    assert!(ws.call("profile.get", json!({})).await.is_err(), "closed");
}

/// One user holds at most 8 connections on an instance; the ninth is refused at sign-in.
pub async fn connections_per_user_are_capped(backend: &Backend) {
    let user = backend.user(&unique("many")).await;
    let mut held = Vec::new();
    for _ in 0..access::edge::EdgeLimits::MAX_PER_USER {
        held.push(
            Ws::connect(backend.ws[0], &user.token)
                .await
                .expect("connect")
                .expect("auth"),
        );
    }
    let refused_auth = Ws::connect(backend.ws[0], &user.token)
        .await
        .expect("connect")
        .expect_err("the ninth is refused");
    assert_eq!(
        refused_auth["error"]["reason"], "too_many_connections",
        "{refused_auth}"
    );
    drop(held.pop());
    // One closed: room again (the server sees the close a moment later).
    let deadline = std::time::Instant::now() + svrkit_testkit::PATIENCE;
    while Ws::connect(backend.ws[0], &user.token)
        .await
        .expect("connect")
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no room after a close"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One address holds at most 4 connections (the backend's setting): a fifth from it is
/// closed at once, while another address is served.
pub async fn connections_per_address_are_capped(backend: &Backend) {
    let addr = backend.http.addr();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for stream in &mut held {
        stream.write_all(request).await.expect("write");
        let mut head = [0u8; 64];
        let n = stream.read(&mut head).await.expect("read");
        assert!(head[..n].starts_with(b"HTTP/1.1 200"), "within the cap");
    }
    let mut fifth = send(addr, request).await;
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), fifth.read(&mut head))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&head[..n]));
    // Another loopback address is its own client.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 2], 0)))
        .expect("bind 127.0.0.2");
    let mut other = socket.connect(addr).await.expect("connect");
    other.write_all(request).await.expect("write");
    let n = other.read(&mut head).await.expect("read");
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "another address is served"
    );
}

/// `GET path` on `addr`: the status code, or `None` when nothing answers within a second.
async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        String::from_utf8_lossy(&answer)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(1), fetch)
        .await
        .ok()
        .flatten()
}

/// With a small descriptor budget (the backend runs with `SVRKIT_MAX_OPEN_FILES`), the
/// gateway's connection cap follows the limit and keeps descriptors in reserve: a flood
/// of idle connections is refused past the cap, while `/readyz` answers ready, the
/// process keeps its registry heartbeat and RPC, and users are served once it ends.
pub async fn descriptors_stay_in_reserve(backend: &Backend, open_files: usize) {
    let user = backend.user(&unique("fd_user")).await;
    let admin = backend
        .admin_endpoints()
        .into_iter()
        .find_map(|(id, addr)| (id == "access-short-1").then_some(addr))
        .expect("access-short's admin endpoint");
    assert_eq!(get_status(admin, "/readyz").await, Some(200));
    // Three times the whole descriptor budget, all idle.
    let mut flood = Vec::new();
    for _ in 0..open_files * 3 {
        match TcpStream::connect(backend.http.addr()).await {
            Ok(stream) => flood.push(stream),
            Err(_) => break,
        }
    }
    // The process still has descriptors for its admin endpoint, and says it is ready.
    assert_eq!(
        get_status(admin, "/readyz").await,
        Some(200),
        "ready under the flood"
    );
    // Connections past the cap were closed at once: fewer than the limit stay open.
    let mut open = 0;
    for stream in &mut flood {
        let mut byte = [0u8; 1];
        let closed = matches!(
            tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        );
        if !closed {
            open += 1;
        }
    }
    assert!(
        open < open_files.saturating_sub(200),
        "{open} of {} connections held with {open_files} descriptors",
        flood.len()
    );
    drop(flood);
    served_soon(backend, &user.token).await;
    // Its RPC side and registry heartbeat kept working: logins cross every tier.
    let again = call(
        &backend.http,
        "login",
        json!({ "name": user.name, "password": "correct horse battery" }),
        None,
    )
    .await;
    assert_eq!(again["uid"], user.uid);
}

/// The attacks of the security review, together, against a running backend: frames that
/// announce 16 MiB, profile batches of one uid repeated thousands of times, 65,000-
/// character profile fields, and a hundred idle connections held open. Each is refused or
/// bounded, and no process's resident memory grows by more than 64 MiB (the table of
/// before and after is printed).
pub async fn memory_stays_bounded_under_attack(backend: &Backend) {
    const WATCHED: [&str; 5] = [
        "access-short-1",
        "access-long-1",
        "account-1",
        "accountstore-1",
        "accountstore-2",
    ];
    let user = backend.user(&unique("target")).await;
    served_soon(backend, &user.token).await;
    let before: Vec<u64> = WATCHED
        .iter()
        .map(|id| backend.rss_kib(id).expect("running"))
        .collect();
    // Ten connections announcing 16 MiB WebSocket frames, all at once.
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let mut raw = send(
            backend.ws[0],
            b"GET /v1/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await;
        let mut head = [0u8; 512];
        let _ = raw.read(&mut head).await;
        let mut frame = vec![0x81, 0xFF];
        frame.extend_from_slice(&(16u64 << 20).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend_from_slice(&[0u8; 4096]);
        let _ = raw.write_all(&frame).await;
        stalled.push(raw);
    }
    // Profile batches of one uid, 3,700 times over; 65,000-character fields.
    let repeated: Vec<u64> = std::iter::repeat_n(user.uid, 3_700).collect();
    for _ in 0..20 {
        refused(
            &backend.http,
            "profile.get",
            json!({ "uids": repeated }),
            Some(&user.token),
            400,
            "invalid_argument",
        )
        .await;
    }
    let long = "x".repeat(65_000);
    for field in ["avatar", "region", "phone", "signature", "nickname"] {
        refused(
            &backend.http,
            "profile.update",
            json!({ field: long }),
            Some(&user.token),
            400,
            "invalid_argument",
        )
        .await;
    }
    // A hundred idle connections, held while memory is read.
    let mut idle = Vec::new();
    for _ in 0..100 {
        if let Ok(stream) = TcpStream::connect(backend.http.addr()).await {
            idle.push(stream);
        }
    }
    served_soon(backend, &user.token).await;
    let after: Vec<u64> = WATCHED
        .iter()
        .map(|id| backend.rss_kib(id).expect("running"))
        .collect();
    println!("{:<16} {:>12} {:>12}", "process", "RSS before", "RSS after");
    for ((id, b), a) in WATCHED.iter().zip(&before).zip(&after) {
        println!("{id:<16} {:>9} KiB {:>9} KiB", b, a);
        assert!(
            a.saturating_sub(*b) < 64 * 1024,
            "{id} grew from {b} KiB to {a} KiB"
        );
    }
    drop(idle);
    drop(stalled);
}

/// A connection does not act on a revoked session even when the push that would close
/// it never comes (here the session is deleted in the store, as a logout does, with no
/// push at all): the next action is refused `unauthenticated`, the connection is told
/// `session_ended` and closed; another session of the same user carries on.
pub async fn a_revoked_session_stops_acting_even_if_its_close_is_lost(backend: &Backend) {
    use wx_api::storage::{AccountStoreClient, GetSessionRequest, account_store_methods};
    let user = backend.session("revoked").await;
    let mut ws = user.connect(backend.ws[0]).await;
    let mut other = backend.session_of(&user).await.connect(backend.ws[1]).await;
    let listed = ws.call("friends.list", json!({})).await.expect("an answer");
    assert_eq!(listed["ok"], true, "{listed}");

    let (uid, session_id) = user.token.split_once('.').expect("uid.session");
    let store = AccountStoreClient::new(
        backend
            .store_channel(account_store_methods::SERVICE_NAME, "account-1")
            .await,
    );
    let uid: u64 = uid.parse().expect("a uid");
    store
        .delete_session_with(
            GetSessionRequest {
                uid,
                session_id: session_id.to_string(),
            },
            wx_api::by_uid(uid),
        )
        .await
        .expect("revoked in the store");

    let refused = ws
        .call("profile.update", json!({ "signature": "still me?" }))
        .await
        .expect("an answer");
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["error"]["code"], "unauthenticated", "{refused}");
    let push = ws
        .push(svrkit_testkit::PATIENCE)
        .await
        .expect("told the session ended");
    assert_eq!(push["push"], "session_ended", "{push}");
    assert!(
        ws.call("friends.list", json!({})).await.is_err(),
        "the revoked connection is closed"
    );
    let profile = other
        .call("profile.get", json!({}))
        .await
        .expect("an answer");
    assert_eq!(
        profile["ok"], true,
        "the other session carries on: {profile}"
    );
    assert_ne!(profile["result"]["profile"]["signature"], "still me?");
}

/// The gateways answer only hosts they are meant for (an IP address, `localhost`, their
/// configured public names): a page whose domain was rebound to a gateway's address
/// gets `403` for the web client, the API and the WebSocket endpoint alike, and the
/// gateways keep serving everyone else.
pub async fn gateways_answer_only_their_own_hosts(backend: &Backend) {
    use svrkit_testkit::http_get_as;
    let short = backend.http.addr();
    let long = backend.ws[0];
    for (addr, path) in [
        (short, "/"),
        (short, "/v1/profile.get"),
        (long, "/healthz"),
        (long, "/v1/ws"),
    ] {
        let (code, body) = http_get_as(addr, path, "evil.example").await;
        assert_eq!(code, 403, "{path}: {body}");
        let (code, body) =
            http_get_as(addr, path, &format!("wx.evil.example:{}", addr.port())).await;
        assert_eq!(code, 403, "{path}: {body}");
    }
    let (code, _) = http_get_as(short, "/", &format!("localhost:{}", short.port())).await;
    assert_eq!(code, 200);
    let (code, _) = http_get_as(short, "/", "chat.example.com").await;
    assert_eq!(code, 200, "a configured public name");
    let (code, _) = http_get_as(long, "/healthz", &long.to_string()).await;
    assert_eq!(code, 200);
}

/// A targeted lockout does not lock the owner out: wrong passwords from unknown devices
/// (rotating addresses or not) slow down every unknown device, while the owner's known
/// device (a credential from an earlier sign-in) signs in at once; a credential of
/// another account or a made-up one is no credential; a known device's own wrong
/// passwords slow down only it.
pub async fn a_known_device_is_not_locked_out_by_a_stranger(backend: &Backend) {
    let http = &backend.http;
    let owner = backend.user(&unique("owner")).await;
    let other = backend.user(&unique("other")).await;
    let right = json!({ "name": owner.name, "password": "correct horse battery" });
    let phone = call(http, "login", right.clone(), None).await["device"]
        .as_str()
        .expect("a device credential")
        .to_string();
    assert!(phone.starts_with(&format!("d1.{}.", owner.uid)), "{phone}");
    let others_device = call(
        http,
        "login",
        json!({ "name": other.name, "password": "correct horse battery" }),
        None,
    )
    .await["device"]
        .as_str()
        .expect("a device credential")
        .to_string();

    // A stranger guesses, from no known device, until unknown devices are throttled.
    let wrong = json!({ "name": owner.name, "password": "guess" });
    for _ in 0..account::throttle::FREE_FAILURES + 3 {
        let answer = http.call("login", &wrong, None).await.expect("an answer");
        assert!(!answer.ok(), "{}", answer.body);
    }
    let throttled = refused(
        http,
        "login",
        right.clone(),
        None,
        429,
        "resource_exhausted",
    )
    .await;
    assert_eq!(throttled.reason(), "login_throttled");
    let with = |device: &str| {
        let mut body = right.clone();
        body["device"] = json!(device);
        body
    };
    for fake in [
        others_device.as_str(),
        "d1.1.0000000000000001.0000000000000001",
    ] {
        let answer = refused(http, "login", with(fake), None, 429, "resource_exhausted").await;
        assert_eq!(answer.reason(), "login_throttled", "{fake}");
    }
    // The owner's phone is not locked out, and keeps its credential.
    let signed_in = call(http, "login", with(&phone), None).await;
    assert_eq!(signed_in["uid"], owner.uid);
    assert_eq!(signed_in["device"], phone.as_str());

    // The phone's own wrong passwords slow down only the phone.
    let mut wrong_from_phone = wrong.clone();
    wrong_from_phone["device"] = json!(phone);
    for _ in 0..account::throttle::FREE_FAILURES {
        refused(
            http,
            "login",
            wrong_from_phone.clone(),
            None,
            401,
            "unauthenticated",
        )
        .await;
    }
    let answer = refused(http, "login", with(&phone), None, 429, "resource_exhausted").await;
    assert_eq!(answer.reason(), "login_throttled");
}
