//! Client behaviour: tower layers, several addresses, reconnecting and back-off.

use crate::common;

use std::time::Duration;

use common::start;
use echo::{EchoClient, EchoRequest, EchoServer, EchoService};
use svrkit::{Channel, Code, Server};
use tokio::net::TcpListener;

fn request(delay_ms: u32) -> EchoRequest {
    EchoRequest {
        payload: b"p".to_vec().into(),
        delay_ms,
    }
}

fn server(name: &str) -> Server {
    Server::builder().add_service(EchoServer::new(EchoService::new(name)))
}

#[tokio::test]
async fn any_tower_layer_composes_with_a_channel() {
    let s = start(server("s")).await;
    // A layer that stamps a priority on every request, and tower's own timeout.
    let stack = tower::ServiceBuilder::new()
        .timeout(Duration::from_millis(100))
        .map_request(|mut r: svrkit::client::RpcRequest| {
            r.options = r.options.priority(99);
            r
        })
        .service(Channel::lazy([s.addr]));
    let client = EchoClient::with_service(stack);
    let seen = client
        .echo(request(0))
        .await
        .expect("echo")
        .seen
        .expect("seen");
    assert_eq!(seen.business_priority, 99);
    // tower's timeout error is not a Status; it arrives as `unknown` with its text.
    let err = client
        .echo(request(1_000))
        .await
        .expect_err("tower timeout");
    assert_eq!(err.code(), Code::Unknown);
    assert!(err.message().contains("timed out"), "{err}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_addresses_and_skip_a_dead_one() {
    let a = start(server("a")).await;
    let b = start(server("b")).await;
    // A port with nothing listening, held for the whole test.
    let (_held, dead) = svrkit_testkit::refusing_addr();
    let client = EchoClient::new(
        Channel::builder()
            .balance(svrkit::balance::Balance::RoundRobin)
            .lazy([a.addr, dead, b.addr]),
    );
    let mut seen = std::collections::HashMap::new();
    for _ in 0..30 {
        let reply = client
            .echo(request(0))
            .await
            .expect("no call fails while two addresses live");
        *seen.entry(reply.seen.expect("seen").server).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.values().all(|n| *n >= 10),
        "round robin over the live ones: {seen:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_channel_reconnects_to_a_restarted_server() {
    let first = start(server("first")).await;
    let addr = first.addr;
    let client = EchoClient::new(
        Channel::builder()
            .backoff(Duration::ZERO, Duration::ZERO)
            .lazy([addr]),
    );
    assert_eq!(
        client
            .echo(request(0))
            .await
            .expect("up")
            .seen
            .expect("seen")
            .server,
        "first"
    );
    first.shutdown().await;
    let err = client.echo(request(0)).await.expect_err("down");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.is_not_processed(), "{err:?}");

    let listener = TcpListener::bind(addr).await.expect("rebind the same port");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(server("second").serve(listener, async {
        let _ = rx.await;
    }));
    let reply = client.echo(request(0)).await.expect("reconnected");
    assert_eq!(reply.seen.expect("seen").server, "second");
    let _ = tx.send(());
    second.await.expect("task").expect("serve");
}

#[tokio::test]
async fn while_backing_off_calls_fail_fast_without_connecting() {
    let (held, dead) = svrkit_testkit::refusing_addr();
    let client = EchoClient::new(
        Channel::builder()
            .backoff(Duration::from_secs(3600), Duration::from_secs(3600))
            .lazy([dead]),
    );
    let err = client.echo(request(0)).await.expect_err("refused");
    assert!(err.message().contains("connect to"), "{err}");
    // The server comes up, but the channel is backing off for an hour: it does not try.
    let listener = held.listen(1024).expect("listen on the held port");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let up = tokio::spawn(server("late").serve(listener, async {
        let _ = rx.await;
    }));
    let err = client
        .echo(request(0))
        .await
        .expect_err("still backing off");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("connect to"),
        "reports the last connect error: {err}"
    );
    let _ = tx.send(());
    up.await.expect("task").expect("serve");
}
