//! gRPC on a svrkit server's own port, called by svrkit's client speaking gRPC: the
//! request context crosses (deadline, trace, caller, uid, metadata), errors keep their
//! code, reason and details, deadlines stop handlers, the svrkit protocol is served on
//! the same port at the same time, and mutual TLS admits only the cluster.
//! (Other languages' clients and tonic are in `tools/grpc-python` and `svrkit-bench`'s
//! tests.)

use std::time::Duration;

use echo::{EchoClient, EchoRequest, EchoServer, EchoService};
use svrkit::grpc::Protocol;
use svrkit::{CallOptions, Channel, Code, Context, Server};

use crate::common::start;

fn request(payload: &[u8], delay_ms: u32) -> EchoRequest {
    EchoRequest {
        payload: payload.to_vec().into(),
        delay_ms,
    }
}

fn grpc_client(addr: std::net::SocketAddr) -> EchoClient<Channel> {
    EchoClient::new(
        Channel::builder()
            .protocol(Protocol::Grpc)
            .caller("grpc-test")
            .max_attempts(1)
            .plaintext()
            .lazy([addr]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_grpc_carries_its_context_and_the_same_port_speaks_svrkit() {
    let server = start(Server::builder().add_service(EchoServer::new(EchoService::new("g")))).await;
    let grpc = grpc_client(server.addr);
    let ctx = Context::new()
        .with_uid(42)
        .with_trace_id(0x1234_5678)
        .with_metadata("tenant", "acme")
        .and_then(|c| c.with_metadata("token-bin", &b"\x00\xff"[..]))
        .expect("metadata");
    let reply = ctx
        .scope(grpc.echo_with(
            request(b"over h2", 0),
            CallOptions::new().timeout(Duration::from_millis(800)),
        ))
        .await
        .expect("echo over gRPC");
    assert_eq!(&reply.payload[..], b"over h2");
    let seen = reply.seen.expect("seen");
    assert_eq!(seen.uid, 42);
    assert_eq!(seen.caller, "grpc-test");
    assert_eq!(seen.trace_id, 0x1234_5678, "the trace continues");
    assert_eq!(seen.business_priority, 20, "the method's IDL priority");
    assert!(
        seen.remaining_ms > 0 && seen.remaining_ms <= 800,
        "grpc-timeout became the deadline: {}",
        seen.remaining_ms
    );
    assert_eq!(
        seen.metadata.get("tenant").map(|v| &v[..]),
        Some(&b"acme"[..])
    );
    assert_eq!(
        seen.metadata.get("token-bin").map(|v| &v[..]),
        Some(&b"\x00\xff"[..]),
        "a -bin value crosses as bytes"
    );

    // svrkit's own protocol on the same port, at the same time.
    let native = EchoClient::new(Channel::builder().plaintext().lazy([server.addr]));
    let (a, b) = tokio::join!(
        native.echo(request(b"native", 0)),
        grpc.echo(request(b"grpc", 0))
    );
    assert_eq!(&a.expect("svrkit").payload[..], b"native");
    assert_eq!(&b.expect("grpc").payload[..], b"grpc");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_deadlines_keep_their_meaning_over_grpc() {
    let server = start(Server::builder().add_service(EchoServer::new(EchoService::new("g")))).await;
    let grpc = grpc_client(server.addr);
    // Relay without a next hop is refused by the handler.
    let refused = grpc.relay(request(b"", 0)).await.expect_err("no next hop");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    assert!(!refused.message().is_empty());

    let late = grpc
        .echo_with(
            request(b"slow", 2_000),
            CallOptions::new().timeout(Duration::from_millis(100)),
        )
        .await
        .expect_err("too slow");
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late}");
    // The server goes on serving.
    let ok = grpc
        .echo(request(b"after", 0))
        .await
        .expect("still serving");
    assert_eq!(&ok.payload[..], b"after");
    server.shutdown().await;
}

// Minting certificates needs the `mint` feature (on in the workspace's test build).
#[cfg(feature = "mint")]
mod mutual_tls {
    use super::*;
    use crate::common::credentials;
    use svrkit::tls::mint::ClusterCa;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grpc_over_mutual_tls_admits_the_cluster_only() {
        let ca = ClusterCa::new("test").expect("CA");
        let server = start(
            Server::builder()
                .tls(credentials(&ca, "back").server().expect("server TLS"))
                .add_service(EchoServer::new(EchoService::new("back"))),
        )
        .await;
        let front = credentials(&ca, "front");
        let member = EchoClient::new(
            Channel::builder()
                .protocol(Protocol::Grpc)
                .caller("declared")
                .tls(front.client().expect("client TLS"))
                .lazy([server.addr]),
        );
        let reply = member
            .echo(request(b"tls", 0))
            .await
            .expect("a member gets in");
        assert_eq!(
            reply.seen.expect("seen").caller,
            "front",
            "the certificate names the caller, not the declared name"
        );
        // svrkit's protocol over TLS still works beside it (no ALPN: svrkit).
        let native = EchoClient::new(
            Channel::builder()
                .tls(front.client().expect("client TLS"))
                .lazy([server.addr]),
        );
        native
            .echo(request(b"native", 0))
            .await
            .expect("svrkit over TLS");

        let stranger_ca = ClusterCa::new("test").expect("another CA");
        let stranger = EchoClient::new(
            Channel::builder()
                .protocol(Protocol::Grpc)
                .max_attempts(1)
                .tls(credentials(&stranger_ca, "front").client().expect("TLS"))
                .lazy([server.addr]),
        );
        let refused = stranger.echo(request(b"x", 0)).await.expect_err("refused");
        assert_eq!(refused.code(), Code::Unavailable, "{refused}");
        let plain = grpc_client(server.addr);
        let refused = plain.echo(request(b"x", 0)).await.expect_err("refused");
        assert_eq!(refused.code(), Code::Unavailable, "{refused}");
        member
            .echo(request(b"again", 0))
            .await
            .expect("still serving");
        server.shutdown().await;
    }
}

/// `grpc.health.v1.Health/Check` for the whole server: its `ServingStatus` number.
async fn health(addr: std::net::SocketAddr) -> u64 {
    use svrkit::client::RpcRequest;
    use svrkit::method::{DynamicMethod, Method};
    let channel = Channel::builder()
        .protocol(Protocol::Grpc)
        .plaintext()
        .lazy([addr]);
    let reply = channel
        .call(RpcRequest {
            method: Method::Dynamic(std::sync::Arc::new(DynamicMethod {
                service: "grpc.health.v1.Health".into(),
                method: "Check".into(),
                idempotent: true,
                timeout: None,
                priority: 0,
                stale_read: false,
            })),
            // HealthCheckRequest { service: "" } encodes to nothing.
            body: bytes::Bytes::new(),
            options: CallOptions::new(),
        })
        .await
        .expect("health check");
    // HealthCheckResponse { status = 1 (varint) }.
    match &reply.body[..] {
        [0x08, status] => u64::from(*status),
        other => panic!("unexpected HealthCheckResponse {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_follows_the_servers_own_readiness_checks() {
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&ready);
    let server = start(
        Server::builder()
            .ready_when(std::sync::Arc::new(move || {
                flag.load(std::sync::atomic::Ordering::Relaxed)
            }))
            .add_service(EchoServer::new(EchoService::new("g"))),
    )
    .await;
    assert_eq!(
        health(server.addr).await,
        2,
        "NOT_SERVING while a check fails"
    );
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(health(server.addr).await, 1, "SERVING once it holds");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grpc_input_gets_a_clear_status_and_the_server_keeps_serving() {
    use svrkit::client::RpcRequest;
    use svrkit::method::{DynamicMethod, Method};
    let server = start(
        Server::builder()
            .max_frame_size(1024)
            .add_service(EchoServer::new(EchoService::new("g"))),
    )
    .await;
    let channel = Channel::builder()
        .protocol(Protocol::Grpc)
        .max_attempts(1)
        .plaintext()
        .lazy([server.addr]);
    let raw = |method: &str, body: &'static [u8]| RpcRequest {
        method: Method::Dynamic(std::sync::Arc::new(DynamicMethod {
            service: "svrkit.demo.Echo".into(),
            method: method.into(),
            idempotent: false,
            timeout: None,
            priority: 0,
            stale_read: false,
        })),
        body: bytes::Bytes::from_static(body),
        options: CallOptions::new(),
    };
    // Over the server's limit (the client's own is the default 16 MiB).
    let big = grpc_client(server.addr)
        .echo(request(&[7u8; 4096], 0))
        .await
        .expect_err("too large");
    assert_eq!(big.code(), Code::ResourceExhausted, "{big}");
    // Not an EchoRequest.
    let garbage = channel
        .call(raw("Echo", b"\xff\xff\xff\xff"))
        .await
        .expect_err("undecodable");
    assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage}");
    let unknown = channel
        .call(raw("Nope", b""))
        .await
        .expect_err("unknown method");
    assert_eq!(unknown.code(), Code::Unimplemented, "{unknown}");
    let ok = grpc_client(server.addr)
        .echo(request(b"still here", 0))
        .await
        .expect("the server keeps serving");
    assert_eq!(&ok.payload[..], b"still here");
    server.shutdown().await;
}
