//! Server behaviour against real sockets: multiplexing, cancellation, deadlines while
//! queued, graceful shutdown and metrics.

use crate::common;

use std::time::Duration;

use common::{PATIENCE, Probe, start};
use echo::{EchoClient, EchoRequest, EchoServer, EchoService};
use svrkit::{CallOptions, Channel, Code, Server};
use tokio::sync::mpsc;

fn request(payload: &str, delay_ms: u32) -> EchoRequest {
    EchoRequest {
        payload: payload.as_bytes().to_vec().into(),
        delay_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_share_one_connection_and_finish_out_of_order() {
    let server = start(Server::builder().add_service(EchoServer::new(EchoService::new("s")))).await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    let client = EchoClient::new(channel.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    // The slow call goes first; the fast ones must not wait for it.
    for (name, delay) in [("slow", 300), ("fast1", 0), ("fast2", 0)] {
        let client = client.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let reply = client.echo(request(name, delay)).await.expect("echo");
            let _ = tx.send(String::from_utf8(reply.payload.to_vec()).expect("utf8"));
        }));
        if delay > 0 {
            // Make sure the slow call is in flight before the fast ones are sent.
            tokio::time::timeout(PATIENCE, async {
                while channel.in_flight() == 0 {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("slow call in flight");
        }
    }
    drop(tx);
    let mut order = Vec::new();
    while let Some(name) = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("replies")
    {
        order.push(name);
    }
    assert_eq!(order.len(), 3);
    assert_eq!(order[2], "slow", "order was {order:?}");

    // Many concurrent calls on the same single connection all get their own answer.
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { (i, client.echo(request(&i.to_string(), 0)).await) })
        })
        .collect();
    for call in calls {
        let (i, reply) = call.await.expect("task");
        assert_eq!(reply.expect("echo").payload, i.to_string().into_bytes());
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_cancels_its_handler_on_the_server() {
    let probe = Probe::new("s");
    let server = start(Server::builder().add_service(EchoServer::new(probe.clone()))).await;
    let client = EchoClient::new(Channel::lazy([server.addr]));
    let started = probe.started.notified();
    let dropped = probe.dropped.notified();
    // The server-side deadline is 10 s away, so only the cancel frame can stop it early.
    let call = client.echo_with(
        request("x", 60_000),
        CallOptions::new().timeout(Duration::from_secs(10)),
    );
    tokio::select! {
        _ = call => panic!("the call cannot finish"),
        () = started => {}
    }
    // Leaving the select dropped the call future: the client sent a cancel.
    tokio::time::timeout(PATIENCE, dropped)
        .await
        .expect("handler dropped after cancel");
    assert_eq!(probe.calls(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_deadline_passed_while_queued_is_not_run() {
    let probe = Probe::new("s");
    let server = start(
        Server::builder()
            .layer(tower::limit::ConcurrencyLimitLayer::new(1))
            .add_service(EchoServer::new(probe.clone())),
    )
    .await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    let client = EchoClient::new(channel);

    // A holds the only slot for 300 ms; B waits behind it with a 50 ms deadline.
    let a = tokio::spawn({
        let client = client.clone();
        async move { client.echo(request("a", 300)).await }
    });
    tokio::time::timeout(PATIENCE, probe.started.notified())
        .await
        .expect("a started");
    let b = client
        .echo_with(
            request("b", 0),
            CallOptions::new().timeout(Duration::from_millis(50)),
        )
        .await
        .expect_err("b times out");
    assert_eq!(b.code(), Code::DeadlineExceeded);
    a.await.expect("task").expect("a succeeds");
    // Frames on a connection are handled in order: once C is answered, B was handled.
    client.echo(request("c", 0)).await.expect("c");
    assert_eq!(
        probe.calls(),
        2,
        "only a and c ran; b's deadline passed in the queue"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_in_flight_calls_then_refuses_new_ones() {
    let probe = Probe::new("s");
    let mut server = start(Server::builder().add_service(EchoServer::new(probe.clone()))).await;
    let client = EchoClient::new(Channel::connect(server.addr).await.expect("connect"));
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.echo(request("slow", 200)).await }
    });
    tokio::time::timeout(PATIENCE, probe.started.notified())
        .await
        .expect("started");
    server.begin_shutdown();
    let reply = slow
        .await
        .expect("task")
        .expect("in-flight call completes during drain");
    assert_eq!(reply.payload, b"slow".to_vec());
    server.join().await;
    let err = client
        .echo(request("late", 0))
        .await
        .expect_err("server gone");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.is_not_processed(), "{err:?}");
}

#[tokio::test]
async fn server_metrics_count_requests_codes_and_queue_time() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A current-thread runtime: every task of this test runs on this thread.
    let _guard = metrics::set_default_local_recorder(&recorder);

    let server = start(Server::builder().add_service(EchoServer::new(EchoService::new("s")))).await;
    let client = EchoClient::new(Channel::lazy([server.addr]));
    client.echo(request("1", 0)).await.expect("echo");
    client.echo(request("2", 1)).await.expect("echo");
    let err = client
        .relay(request("3", 0))
        .await
        .expect_err("no next hop");
    assert_eq!(err.code(), Code::FailedPrecondition);
    server.shutdown().await;

    let mut found = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.key().name(), labels.join(","));
        found.insert(name, value);
    }
    let counter = |name: &str| match found.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}: {other:?} in {:?}", found.keys()),
    };
    assert_eq!(
        counter(
            "svrkit_server_requests_total{service=svrkit.demo.Echo,method=Echo,protocol=svrkit}"
        ),
        2
    );
    assert_eq!(
        counter(
            "svrkit_server_responses_total{service=svrkit.demo.Echo,method=Echo,protocol=svrkit,code=ok}"
        ),
        2
    );
    assert_eq!(
        counter(
            "svrkit_server_responses_total{service=svrkit.demo.Echo,method=Relay,protocol=svrkit,code=failed_precondition}"
        ),
        1
    );
    match found.get("svrkit_server_queue_duration_seconds{service=svrkit.demo.Echo,method=Echo,protocol=svrkit}") {
        Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 2),
        other => panic!("queue histogram: {other:?}"),
    }
    match found.get("svrkit_server_in_flight{service=svrkit.demo.Echo,method=Echo,protocol=svrkit}")
    {
        Some(DebugValue::Gauge(g)) => assert_eq!(g.into_inner(), 0.0),
        other => panic!("in-flight gauge: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tower_layer_sees_the_context_and_peer_before_the_handler() {
    let peers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let layer_peers = std::sync::Arc::clone(&peers);
    // A plain tower layer (tower's own filter): it reads the caller's uid and peer address
    // before the handler runs, refuses calls that name no user, and changes the context
    // the handler then sees.
    let signed_in_only = move |mut request: svrkit::server::ServerRequest| {
        layer_peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(request.peer_addr());
        if request.context().uid() == 0 {
            return Err(svrkit::Status::unauthenticated("sign in first"));
        }
        let tag = format!("checked-{}", request.method().method);
        let ctx = request.context_mut();
        *ctx = std::mem::take(ctx).with_gray_tag(tag);
        Ok(request)
    };
    let server = start(
        Server::builder()
            .layer(tower::filter::FilterLayer::new(signed_in_only))
            .add_service(EchoServer::new(EchoService::new("s"))),
    )
    .await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    let client = EchoClient::new(channel);

    let refused = client
        .echo(request("anonymous", 0))
        .await
        .expect_err("a call without a uid is refused");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(refused.message(), "sign in first");

    let reply = client
        .echo_with(request("signed in", 0), CallOptions::new().uid(42))
        .await
        .expect("a call with a uid passes the layer");
    let seen = reply.seen.expect("the handler reports its context");
    assert_eq!(seen.uid, 42);
    assert_eq!(
        seen.gray_tag, "checked-Echo",
        "the handler sees the layer's change"
    );

    let peers = peers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert_eq!(peers.len(), 2);
    for peer in peers {
        assert!(peer.ip().is_loopback(), "{peer}");
        assert_ne!(peer, server.addr, "the peer is the client's end");
    }
    server.shutdown().await;
}
