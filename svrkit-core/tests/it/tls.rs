//! Mutual TLS and call policies on svrkit's own protocol: only holders of a certificate
//! from the cluster CA get a connection, handlers see the caller's verified service name
//! (not the name it declares), and a policy refuses the services it does not list with
//! `permission_denied` before the body is decoded — while the server keeps serving.

use std::net::SocketAddr;
use std::time::Duration;

use echo::{EchoClient, EchoRequest, EchoServer, EchoService};
use svrkit::policy::CallPolicy;
use svrkit::tls::Credentials;
use svrkit::tls::mint::ClusterCa;
use svrkit::{CallOptions, Channel, Code, Context, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::credentials;

async fn tls_server(
    ca: &ClusterCa,
    policy: CallPolicy,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .tls(credentials(ca, "back").server().expect("server TLS"))
        .policy(policy)
        .add_service(EchoServer::new(EchoService::new("back")));
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn client(addr: SocketAddr, credentials: Option<&Credentials>) -> EchoClient<Channel> {
    let builder = Channel::builder()
        .caller("declared-name")
        .max_attempts(1)
        .connect_timeout(Duration::from_secs(5));
    let builder = match credentials {
        Some(c) => builder.tls(c.client().expect("client TLS")),
        None => builder.plaintext(),
    };
    EchoClient::new(builder.lazy([addr]))
}

async fn echo(
    client: &EchoClient<Channel>,
    payload: Vec<u8>,
    uid: u64,
) -> Result<echo::EchoReply, svrkit::Status> {
    Context::new()
        .with_uid(uid)
        .scope(client.echo_with(
            EchoRequest {
                payload: payload.into(),
                delay_ms: 0,
            },
            CallOptions::new().timeout(Duration::from_secs(5)),
        ))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_cluster_gets_in_and_the_policy_decides_who_calls() {
    let ca = ClusterCa::new("test").expect("CA");
    let policy =
        CallPolicy::from_json(r#"{"callers":["front","operator"],"uid_callers":["front"]}"#)
            .expect("policy");
    let (addr, _stop) = tls_server(&ca, policy).await;
    let front = credentials(&ca, "front");

    // A listed caller: its verified name replaces the one it declares.
    let allowed = client(addr, Some(&front));
    let reply = echo(&allowed, b"over tls".to_vec(), 7)
        .await
        .expect("allowed");
    assert_eq!(&reply.payload[..], b"over tls");
    let seen = reply.seen.expect("seen");
    assert_eq!(
        seen.caller, "front",
        "the certificate's name, not the declared one"
    );
    assert_eq!(seen.uid, 7);

    // Large and many: a 1 MiB payload and 200 concurrent calls arrive intact.
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let reply = echo(&allowed, big.clone(), 0).await.expect("1 MiB");
    assert_eq!(reply.payload.len(), big.len());
    assert!(
        reply.payload[..] == big[..],
        "the payload came back byte for byte"
    );
    let calls: Vec<_> = (0..200u32)
        .map(|i| {
            let c = allowed.clone();
            tokio::spawn(async move {
                echo(&c, i.to_le_bytes().to_vec(), 0)
                    .await
                    .map(|r| r.payload)
            })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let payload = call.await.expect("join").expect("concurrent call");
        assert_eq!(&payload[..], &(i as u32).to_le_bytes());
    }

    // The operator may call, but not act for a user.
    let operator = client(addr, Some(&credentials(&ca, "operator")));
    echo(&operator, b"x".to_vec(), 0)
        .await
        .expect("the operator may call");
    let denied = echo(&operator, b"x".to_vec(), 42)
        .await
        .expect_err("no uid for the operator");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied}");

    // A cluster member the policy does not list.
    let stranger = client(addr, Some(&credentials(&ca, "stranger")));
    let denied = echo(&stranger, b"x".to_vec(), 0)
        .await
        .expect_err("not listed");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied}");
    assert!(
        denied.message().contains("stranger may not call"),
        "{denied}"
    );

    // The same CA, another trust domain: a certificate for `front` of another cluster is
    // no identity here, and the policy refuses it.
    let issued = ca.issue_in("othercluster", "front").expect("issued");
    let elsewhere = Credentials::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
    )
    .expect("credentials");
    let denied = echo(&client(addr, Some(&elsewhere)), b"x".to_vec(), 0)
        .await
        .expect_err("another trust domain");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied}");
    assert!(denied.message().contains("verified identity"), "{denied}");

    // Another CA's certificate, and no TLS at all: no connection.
    let other = ClusterCa::new("other").expect("CA");
    let forged = client(addr, Some(&credentials(&other, "front")));
    let refused = echo(&forged, b"x".to_vec(), 0)
        .await
        .expect_err("foreign CA");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    let plain = client(addr, None);
    let refused = echo(&plain, b"x".to_vec(), 0).await.expect_err("plain TCP");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");

    // Bytes that are not TLS: the connection ends, nothing else does.
    let mut raw = tokio::net::TcpStream::connect(addr).await.expect("connect");
    raw.write_all(b"SVRK\x00\x01 not a TLS hello at all \r\n\r\n")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut sink)).await;
    assert!(
        read.is_ok(),
        "the server closes a connection that is not TLS"
    );

    // The listed caller is still served.
    let reply = echo(&allowed, b"still here".to_vec(), 0)
        .await
        .expect("still serving");
    assert_eq!(&reply.payload[..], b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_without_tls_refuses_everyone() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .policy(CallPolicy::default())
            .add_service(EchoServer::new(EchoService::new("back")))
            .serve(listener, async {
                let _ = stopped.await;
            }),
    );
    let denied = echo(&client(addr, None), b"x".to_vec(), 0)
        .await
        .expect_err("no identity");
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificates_get_no_connection_and_renewed_ones_load_without_a_restart() {
    use std::time::SystemTime;
    let ca = ClusterCa::new("test").expect("CA");
    let policy = CallPolicy::from_json(r#"{"callers":["front"]}"#).expect("policy");
    let (addr, _stop) = tls_server(&ca, policy).await;
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    let with = |issued: svrkit::tls::mint::Issued| {
        Credentials::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            ca.cert_pem().as_bytes(),
        )
        .expect("credentials")
    };

    // A stolen certificate is worth only its short life: once expired (or before it
    // starts) it gets no connection.
    let expired = with(
        ca.issue_between("test", "front", now - 2 * hour, now - hour)
            .expect("issued"),
    );
    let refused = echo(&client(addr, Some(&expired)), b"x".to_vec(), 0)
        .await
        .expect_err("expired");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    let early = with(
        ca.issue_between("test", "front", now + hour, now + 2 * hour)
            .expect("issued"),
    );
    let refused = echo(&client(addr, Some(&early)), b"x".to_vec(), 0)
        .await
        .expect_err("not yet valid");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");

    // A process's certificate files rewritten (renewed, here to another name the policy
    // lists): new connections present the new one, with no restart.
    let dir = svrkit_testkit::tempdir("tls-reload");
    let (cert, key) = (dir.path().join("me.crt"), dir.path().join("me.key"));
    let first = ca.issue_for("stranger", hour).expect("issued");
    std::fs::write(&cert, &first.cert_pem).expect("write");
    std::fs::write(&key, &first.key_pem).expect("write");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.cert_pem()).expect("write");
    let mine = Credentials::from_pem_files(&cert, &key, &ca_file).expect("credentials");
    let denied = echo(&client(addr, Some(&mine)), b"x".to_vec(), 0)
        .await
        .expect_err("a stranger");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied}");
    let renewed = ca.issue_for("front", hour).expect("issued");
    std::fs::write(&cert, &renewed.cert_pem).expect("write");
    std::fs::write(&key, &renewed.key_pem).expect("write");
    mine.slot().reload(&cert, &key).expect("reloaded");
    assert_eq!(mine.identity().as_deref(), Some("front"));
    let reply = echo(&client(addr, Some(&mine)), b"renewed".to_vec(), 0)
        .await
        .expect("the renewed certificate is presented");
    assert_eq!(&reply.payload[..], b"renewed");
    // A half-written renewal (a key that does not match) keeps the current certificate.
    std::fs::write(&key, &first.key_pem).expect("write");
    assert!(mine.slot().reload(&cert, &key).is_err());
    assert_eq!(mine.identity().as_deref(), Some("front"));
}
