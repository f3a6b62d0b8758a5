//! svrkit and tonic talk gRPC to each other: tonic's client calls a svrkit server, and
//! svrkit's client (`Protocol::Grpc`) calls a tonic server — answers, errors with their
//! codes and messages, and deadlines, both ways. The same IDL (`proto/bench.proto`) is
//! generated for both by `build.rs`.

use std::time::Duration;

use bytes::Bytes;
use svrkit::grpc::Protocol;
use svrkit::{CallOptions, Channel, Code, Server, Status};
use tokio::net::TcpListener;

#[allow(missing_docs, unreachable_pub, dead_code, clippy::all)]
mod svrkit_gen {
    include!(concat!(env!("OUT_DIR"), "/svrkit/bench.rs"));
}

#[allow(missing_docs, unreachable_pub, dead_code, clippy::all)]
mod tonic_gen {
    include!(concat!(env!("OUT_DIR"), "/tonic/bench.rs"));
}

/// svrkit's echo: `refuse` is refused with a reason, `slow` takes a second.
struct SvrkitEcho;

impl svrkit_gen::bench_server::Bench for SvrkitEcho {
    async fn echo(&self, request: svrkit_gen::Payload) -> Result<svrkit_gen::Payload, Status> {
        match &request.data[..] {
            b"refuse" => Err(Status::permission_denied("not for tonic").with_reason("no_tonic")),
            b"slow" => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(request)
            }
            _ => Ok(request),
        }
    }
}

/// tonic's echo, with the same behaviour.
struct TonicEcho;

#[tonic::async_trait]
impl tonic_gen::bench_server::Bench for TonicEcho {
    async fn echo(
        &self,
        request: tonic::Request<tonic_gen::Payload>,
    ) -> Result<tonic::Response<tonic_gen::Payload>, tonic::Status> {
        let payload = request.into_inner();
        match &payload.data[..] {
            b"refuse" => Err(tonic::Status::permission_denied("not for svrkit")),
            b"slow" => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(tonic::Response::new(payload))
            }
            _ => Ok(tonic::Response::new(payload)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_client_calls_a_svrkit_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(svrkit_gen::bench_server::BenchServer::new(SvrkitEcho))
            .serve(listener, async {
                let _ = stopped.await;
            }),
    );
    let mut client = tonic_gen::bench_client::BenchClient::connect(format!("http://{addr}"))
        .await
        .expect("tonic connects");
    let payload = |data: &'static [u8]| tonic_gen::Payload {
        data: Bytes::from_static(data),
    };
    let reply = client.echo(payload(b"from tonic")).await.expect("echo");
    assert_eq!(&reply.into_inner().data[..], b"from tonic");

    let refused = client.echo(payload(b"refuse")).await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(refused.message(), "not for tonic");

    // tonic's client times out by its own timer (CANCELLED, "Timeout expired") as the
    // server's DEADLINE_EXCEEDED is on its way; either way the call ends at its deadline.
    let mut late = tonic::Request::new(payload(b"slow"));
    late.set_timeout(Duration::from_millis(100));
    let late = client.echo(late).await.expect_err("too slow");
    assert!(
        matches!(
            late.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{late:?}"
    );

    // Many calls at once on tonic's one HTTP/2 connection.
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.echo(payload(b"many")).await })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("echo");
    }
    let _ = stop.send(());
    server.await.expect("task").expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_svrkit_client_calls_a_tonic_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(tonic_gen::bench_server::BenchServer::new(TonicEcho))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    let client = svrkit_gen::bench_client::BenchClient::new(
        Channel::builder()
            .protocol(Protocol::Grpc)
            .max_attempts(1)
            .plaintext()
            .lazy([addr]),
    );
    let payload = |data: &'static [u8]| svrkit_gen::Payload {
        data: Bytes::from_static(data),
    };
    let reply = client.echo(payload(b"from svrkit")).await.expect("echo");
    assert_eq!(&reply.data[..], b"from svrkit");

    let refused = client.echo(payload(b"refuse")).await.expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    assert_eq!(refused.message(), "not for svrkit");

    let late = client
        .echo_with(
            payload(b"slow"),
            CallOptions::new().timeout(Duration::from_millis(100)),
        )
        .await
        .expect_err("too slow");
    // The svrkit client's deadline, or tonic's server enforcing the grpc-timeout it was
    // sent (tonic answers that CANCELLED, "Timeout expired"): whichever comes first.
    assert!(
        matches!(late.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{late}"
    );

    let calls: Vec<_> = (0..64)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.echo(payload(b"many")).await })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("echo");
    }
    let _ = stop.send(());
    server.await.expect("task").expect("serve");
}
