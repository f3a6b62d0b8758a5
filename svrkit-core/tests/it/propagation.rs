//! Context propagation across two real hops: client -> front (Relay) -> back (Echo).

use crate::common;

use std::time::Duration;

use common::{Probe, start};
use echo::{EchoClient, EchoRequest, EchoServer, EchoService};
use svrkit::{CallOptions, Channel, Code, Context, Server};

fn request(delay_ms: u32) -> EchoRequest {
    EchoRequest {
        payload: b"payload".to_vec().into(),
        delay_ms,
    }
}

/// A front echo server relaying to a back one, and a client of the front.
async fn two_hops() -> (common::TestServer, common::TestServer, EchoClient) {
    let back =
        start(Server::builder().add_service(EchoServer::new(EchoService::new("back")))).await;
    let front_service =
        EchoService::new("front").with_next_hop(EchoClient::new(Channel::lazy([back.addr])));
    let front = start(Server::builder().add_service(EchoServer::new(front_service))).await;
    let client = EchoClient::new(Channel::connect(front.addr).await.expect("connect"));
    (front, back, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_trace_priority_uid_and_gray_tag_cross_two_hops() {
    let (front, back, client) = two_hops().await;

    let ctx = Context::new()
        .with_timeout(Duration::from_millis(900))
        .with_trace_id(0xfeed)
        .with_business_priority(7)
        .with_uid(42)
        .with_gray_tag("canary");
    let reply = ctx.scope(client.relay(request(20))).await.expect("relay");
    let first = reply.first.expect("front saw");
    let second = reply.second.expect("back saw");

    assert_eq!(
        (first.server.as_str(), second.server.as_str()),
        ("front", "back")
    );
    assert_eq!(
        (first.trace_id, second.trace_id),
        (0xfeed, 0xfeed),
        "one trace"
    );
    // Back's parent is front's outgoing call, a span of its own under front's span (the
    // log test below checks the links).
    assert!(
        ![0, first.span_id, first.parent_span_id].contains(&second.parent_span_id),
        "back's parent span is front's call"
    );
    assert_ne!(second.span_id, first.span_id);
    assert!(
        first.remaining_ms <= 900 && first.remaining_ms > 0,
        "front: {}",
        first.remaining_ms
    );
    // The front slept 20 ms before calling: the back gets only what remained.
    assert!(
        second.remaining_ms + 20 <= first.remaining_ms,
        "{} then {}",
        first.remaining_ms,
        second.remaining_ms
    );
    assert_eq!((first.business_priority, second.business_priority), (7, 7));
    assert_eq!((first.uid, second.uid), (42, 42));
    assert_eq!(
        (first.gray_tag.as_str(), second.gray_tag.as_str()),
        ("canary", "canary")
    );
    assert_eq!(
        (first.caller.as_str(), second.caller.as_str()),
        ("", "svrkit.demo.Echo")
    );
    assert_eq!((first.attempt, second.attempt), (1, 1));

    front.shutdown().await;
    back.shutdown().await;
}

#[tokio::test]
async fn idl_options_apply_unless_the_call_or_context_overrides_them() {
    let server = start(Server::builder().add_service(EchoServer::new(EchoService::new("s")))).await;
    let client = EchoClient::new(Channel::lazy([server.addr]));

    // Nothing stamped: the IDL's (svrkit.priority) = 20 and (svrkit.timeout_ms) = 1000.
    let seen = client
        .echo(request(0))
        .await
        .expect("echo")
        .seen
        .expect("seen");
    assert_eq!(seen.business_priority, 20);
    assert!(
        seen.remaining_ms <= 1000 && seen.remaining_ms > 500,
        "{}",
        seen.remaining_ms
    );
    assert_ne!(seen.trace_id, 0, "the first call starts a trace");

    // Per-call options beat the IDL.
    let opts = CallOptions::new()
        .priority(3)
        .uid(9)
        .timeout(Duration::from_millis(300));
    let seen = client
        .echo_with(request(0), opts)
        .await
        .expect("echo")
        .seen
        .expect("seen");
    assert_eq!((seen.business_priority, seen.uid), (3, 9));
    assert!(seen.remaining_ms <= 300, "{}", seen.remaining_ms);

    // An inherited priority beats the IDL's; an earlier inherited deadline beats the call's.
    let ctx = Context::new()
        .with_business_priority(5)
        .with_timeout(Duration::from_millis(100));
    let seen = ctx
        .scope(client.echo_with(
            request(0),
            CallOptions::new().timeout(Duration::from_secs(5)),
        ))
        .await
        .expect("echo")
        .seen
        .expect("seen");
    assert_eq!(seen.business_priority, 5);
    assert!(seen.remaining_ms <= 100, "{}", seen.remaining_ms);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_past_the_deadline_never_reaches_the_next_hop() {
    let back = Probe::new("back");
    let back_server = start(Server::builder().add_service(EchoServer::new(back.clone()))).await;
    let front_service =
        EchoService::new("front").with_next_hop(EchoClient::new(Channel::lazy([back_server.addr])));
    let front = start(Server::builder().add_service(EchoServer::new(front_service))).await;
    let client = EchoClient::new(Channel::lazy([front.addr]));

    // The front sleeps 150 ms before relaying, but the whole call has 50 ms.
    let err = client
        .relay_with(
            request(150),
            CallOptions::new().timeout(Duration::from_millis(50)),
        )
        .await
        .expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded);

    // A direct call to the back is answered; it is the only one the back ever ran.
    EchoClient::new(Channel::lazy([back_server.addr]))
        .echo(request(0))
        .await
        .expect("direct echo");
    assert_eq!(back.calls(), 1);
    front.shutdown().await;
    back_server.shutdown().await;
}

/// Captured log output, shared with the subscriber.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every line a handler logs runs inside the request's `rpc` span: it names the trace,
/// and the second hop's span names the first hop's as its parent.
#[tokio::test(flavor = "current_thread")]
async fn handler_logs_carry_the_trace_and_the_parent_span() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    // The servers serve as long as these live.
    let (_front, _back, client) = two_hops().await;
    Context::new()
        .with_trace_id(0xfeed)
        .scope(client.relay(request(0)))
        .await
        .expect("relay");

    let text = String::from_utf8_lossy(
        &captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    let line = |what: &str| -> String {
        text.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line in:\n{text}"))
            .to_string()
    };
    let field = |line: &str, name: &str| -> String {
        line.split(&format!("{name}="))
            .nth(1)
            .and_then(|rest| rest.split([' ', '}', ':']).next())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .to_string()
    };
    let relay = line("relay instance=front");
    let echo = line("echo instance=back");
    for l in [&relay, &echo] {
        assert!(l.contains("rpc{"), "{l}");
        assert_eq!(field(l, "trace_id"), format!("{:016x}", 0xfeed), "{l}");
    }
    assert!(relay.contains("method=\"Relay\""), "{relay}");
    assert!(echo.contains("method=\"Echo\""), "{echo}");
    assert_ne!(field(&relay, "span_id"), "0".repeat(16), "{relay}");
    assert_ne!(field(&relay, "span_id"), field(&echo, "span_id"));
    assert!(
        echo.contains("peer=127.0.0.1:"),
        "the server span names the peer: {echo}"
    );

    // The front's call to the back runs in a `call` span inside the front's `rpc` span:
    // a child of the handler's span, and the parent of the back's.
    let finished = text
        .lines()
        .find(|l| l.contains("call finished") && l.contains("method=\"Relay\""))
        .unwrap_or_else(|| panic!("no call line inside the relay's span in:\n{text}"))
        .to_string();
    let call = finished
        .split("call{")
        .nth(1)
        .unwrap_or_else(|| panic!("no call span in {finished}"));
    assert!(
        call.starts_with("service=\"svrkit.demo.Echo\" method=\"Echo\""),
        "{call}"
    );
    assert_eq!(
        field(call, "trace_id"),
        format!("{:016x}", 0xfeed),
        "{call}"
    );
    assert_eq!(
        field(call, "parent"),
        field(&relay, "span_id"),
        "the call's parent is the handler's span:\n{relay}\n{call}"
    );
    assert_eq!(
        field(&echo, "parent"),
        field(call, "span_id"),
        "the second hop's parent is the first hop's call:\n{call}\n{echo}"
    );
}

/// A server layer (tower's filter) that checks the `authorization` metadata entry and
/// removes it, so the secret goes no further; everything else in the metadata travels on.
fn check_token(
    mut request: svrkit::server::ServerRequest,
) -> Result<svrkit::server::ServerRequest, svrkit::Status> {
    let token = request.context_mut().metadata_mut().remove("authorization");
    if token.as_deref() != Some(&b"secret"[..]) {
        return Err(svrkit::Status::unauthenticated("bad token").with_reason("token_invalid"));
    }
    Ok(request)
}

#[tokio::test]
async fn metadata_travels_every_hop_and_a_layer_can_take_an_entry_out() {
    let back =
        start(Server::builder().add_service(EchoServer::new(EchoService::new("back")))).await;
    let front_service =
        EchoService::new("front").with_next_hop(EchoClient::new(Channel::lazy([back.addr])));
    let front = start(
        Server::builder()
            .layer(tower::filter::FilterLayer::new(check_token))
            .add_service(EchoServer::new(front_service)),
    )
    .await;
    let client = EchoClient::new(Channel::connect(front.addr).await.expect("connect"));
    let ctx = Context::new()
        .with_metadata("tenant", "acme")
        .and_then(|c| c.with_metadata("authorization", "secret"))
        .and_then(|c| c.with_metadata("baggage.bin", &b"\x00\xff"[..]))
        .expect("within the bounds");
    let reply = ctx.scope(client.relay(request(0))).await.expect("relay");
    let expected: std::collections::HashMap<String, bytes::Bytes> = [
        ("tenant".to_string(), bytes::Bytes::from_static(b"acme")),
        (
            "baggage.bin".to_string(),
            bytes::Bytes::from_static(b"\x00\xff"),
        ),
    ]
    .into();
    let first = reply.first.expect("first");
    let second = reply.second.expect("second");
    assert_eq!(first.metadata, expected, "the layer took the token out");
    assert_eq!(second.metadata, expected, "the next hop got the rest");

    // Without the token the layer refuses, with a reason the caller can match on.
    let refused = Context::new()
        .with_metadata("tenant", "acme")
        .expect("key")
        .scope(client.relay(request(0)))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), svrkit::Code::Unauthenticated);
    assert_eq!(refused.reason(), Some("token_invalid"));

    // Bounds hold on the client side too.
    assert!(Context::new().with_metadata("Not a key", "x").is_err());
    front.shutdown().await;
    back.shutdown().await;
}
