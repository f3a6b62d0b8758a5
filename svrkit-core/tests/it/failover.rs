//! Retries, failover and backup requests against real servers, including a real kill -9
//! of a server process under load.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{EchoProcess, Probe, start};
use echo::{Echo, EchoClient, EchoReply, EchoRequest, EchoServer, EchoService, RelayReply};
use svrkit::{Channel, Code, Server, Status};

fn request() -> EchoRequest {
    EchoRequest {
        payload: b"x".to_vec().into(),
        delay_ms: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_of_three_instances_under_load_fails_no_idempotent_call() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).expect("recorder");

    let mut procs: Vec<EchoProcess> = ["a", "b", "c"]
        .iter()
        .map(|n| EchoProcess::spawn(&["--name".as_ref(), n.as_ref()]))
        .collect();
    let channel = Channel::lazy(procs.iter().map(|p| p.addr));
    let client = EchoClient::new(channel);
    let failed = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let after_kill_by_dead = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, failed, served, killed, after) = (
                client.clone(),
                failed.clone(),
                served.clone(),
                killed.clone(),
                after_kill_by_dead.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..250 {
                    // Calls started once the process is gone must never be served by it.
                    let started_after_kill = killed.load(Ordering::Relaxed);
                    match client.echo(request()).await {
                        Ok(reply) => {
                            served.fetch_add(1, Ordering::Relaxed);
                            if started_after_kill && reply.seen.is_some_and(|s| s.server == "a") {
                                after.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            eprintln!("failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    // Kill instance a once a third of the calls are done.
    while served.load(Ordering::Relaxed) < 600 {
        tokio::task::yield_now().await;
    }
    procs[0].kill_9();
    killed.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no call failed");
    assert_eq!(served.load(Ordering::Relaxed), 2_000);
    assert_eq!(after_kill_by_dead.load(Ordering::Relaxed), 0);

    let mut retries = 0;
    let mut ejections = 0;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if let DebugValue::Counter(n) = value {
            match key.key().name() {
                "svrkit_client_retries_total" => retries += n,
                "svrkit_client_ejections_total" => ejections += n,
                _ => {}
            }
        }
    }
    assert!(ejections >= 1, "the dead instance was ejected");
    // The calls in flight on the dead instance, plus a few probes: it left rotation fast.
    assert!(retries <= 40, "{retries} retries");
}

/// An Echo that never answers within a call's deadline (Echo's IDL timeout is 1 s).
#[derive(Clone)]
struct Slow(EchoService);

impl Echo for Slow {
    async fn echo(&self, request: EchoRequest) -> Result<EchoReply, Status> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        self.0.echo(request).await
    }

    async fn relay(&self, request: EchoRequest) -> Result<RelayReply, Status> {
        self.0.relay(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_request_answers_when_the_first_instance_is_slow() {
    let slow =
        start(Server::builder().add_service(EchoServer::new(Slow(EchoService::new("slow"))))).await;
    let fast =
        start(Server::builder().add_service(EchoServer::new(EchoService::new("fast")))).await;
    let client = EchoClient::new(
        Channel::builder()
            .balance(svrkit::balance::Balance::RoundRobin)
            .backup_requests(Duration::from_millis(30))
            .lazy([slow.addr, fast.addr]),
    );
    // Round robin sends every other first attempt to the silent instance: those calls can
    // only succeed through their backup request.
    for _ in 0..4 {
        let reply = client
            .echo(EchoRequest {
                payload: b"x".to_vec().into(),
                delay_ms: 0,
            })
            .await
            .expect("echo");
        let seen = reply.seen.expect("seen");
        assert_eq!(seen.server, "fast");
    }
    slow.shutdown().await;
    fast.shutdown().await;
}

#[tokio::test]
async fn a_processed_failure_of_a_non_idempotent_method_is_not_retried() {
    // Relay is not idempotent; each instance's next hop is unreachable, so the handler
    // runs and fails with `unavailable`.
    let (_held, dead) = svrkit_testkit::refusing_addr();
    let probes: Vec<Probe> = (0..2)
        .map(|i| {
            let mut p = Probe::new(&format!("p{i}"));
            p.inner = p
                .inner
                .clone()
                .with_next_hop(EchoClient::new(Channel::lazy([dead])));
            p
        })
        .collect();
    let mut servers = Vec::new();
    for p in &probes {
        servers.push(start(Server::builder().add_service(EchoServer::new(p.clone()))).await);
    }
    let client = EchoClient::new(Channel::lazy(servers.iter().map(|s| s.addr)));
    let err = client
        .relay(EchoRequest::default())
        .await
        .expect_err("next hop down");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        probes.iter().map(Probe::calls).sum::<usize>(),
        1,
        "ran once, not retried"
    );
    for s in servers {
        s.shutdown().await;
    }
}

/// A TCP proxy to `upstream` that forwards until cut; cut, it keeps every connection
/// open and passes nothing either way, as a server cut off from the network does (no
/// answer, no reset).
async fn cuttable_proxy(upstream: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cut = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cut);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(forward(client_read, server_write, Arc::clone(&flag)));
            tokio::spawn(forward(server_read, client_write, Arc::clone(&flag)));
        }
    });
    (addr, cut)
}

/// Copies `from` to `to` until either ends, dropping what comes while `cut` is set.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || (!cut.load(Ordering::Relaxed) && to.write_all(&buf[..n]).await.is_err()) {
            return;
        }
    }
}

/// A server that goes silent mid-call (cut off: nothing answers, nothing resets) is given
/// up when a ping goes unanswered, long before the call's deadline, and the call fails
/// `unavailable` saying so; a server that is merely slow answers the ping and its call
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_given_up_after_an_unanswered_ping_and_a_slow_one_is_not() {
    let server =
        start(Server::builder().add_service(EchoServer::new(EchoService::new("far")))).await;
    let (addr, cut) = cuttable_proxy(server.addr).await;
    let client = EchoClient::new(Channel::lazy([addr]));
    let long = svrkit::CallOptions::new().timeout(Duration::from_secs(60));
    // Slow but alive: 2.5 s of silence on the connection, past the ping's 1 s.
    let slow = EchoRequest {
        payload: b"slow".to_vec().into(),
        delay_ms: 2_500,
    };
    client
        .echo_with(slow.clone(), long)
        .await
        .expect("a slow server answers the ping and then the call");
    cut.store(true, Ordering::Relaxed);
    // Calls whose deadlines end before a second of silence passes, one after another:
    // the silence adds up across them, and the connection is given up all the same.
    let short = svrkit::CallOptions::new().timeout(Duration::from_millis(300));
    let quick = EchoRequest {
        payload: b"quick".to_vec().into(),
        delay_ms: 0,
    };
    let mut reasons = Vec::new();
    for _ in 0..20 {
        let err = client
            .echo_with(quick.clone(), short)
            .await
            .expect_err("nothing comes back");
        reasons.push(err.reason().map(str::to_string));
        if err.reason() == Some(svrkit::client::PEER_SILENT) {
            break;
        }
    }
    assert_eq!(
        reasons.last(),
        Some(&Some(svrkit::client::PEER_SILENT.to_string())),
        "{reasons:?}"
    );
    let err = client
        .echo_with(slow, long)
        .await
        .expect_err("nothing comes back");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("no answer to a ping"), "{err}");
    assert_eq!(err.reason(), Some(svrkit::client::PEER_SILENT), "{err}");
    server.shutdown().await;
}
