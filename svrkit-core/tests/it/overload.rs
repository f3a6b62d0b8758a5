//! DAGOR end to end: an overloaded server sheds the least important priorities first
//! while the important ones keep succeeding, and clients learn its level from responses
//! and refuse locally what it would refuse.

use crate::common;

use std::time::Duration;

use common::{PATIENCE, Probe, http_get, start, start_admin};
use echo::{EchoClient, EchoRequest, EchoServer};
use svrkit::overload::{DagorConfig, Priority};
use svrkit::{CallOptions, Channel, Code, Context, Server, Status};

const HIGH: u32 = 1;
const LOW: u32 = 200;

async fn call<S>(
    client: &EchoClient<S>,
    business: u32,
    user: u32,
    delay_ms: u32,
) -> Result<(), Status>
where
    S: tower::Service<svrkit::client::RpcRequest, Response = svrkit::client::RpcResponse>
        + Clone
        + Send
        + 'static,
    S::Error: Into<svrkit::BoxError>,
    S::Future: Send,
{
    Context::new()
        .with_user_priority(user)
        .scope(
            client.echo_with(
                EchoRequest {
                    payload: b"x".to_vec().into(),
                    delay_ms,
                },
                CallOptions::new()
                    .priority(business)
                    .timeout(Duration::from_secs(5)),
            ),
        )
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_server_sheds_low_priorities_and_keeps_serving_high_ones() {
    let probe = Probe::new("m");
    let server = Server::builder()
        .max_concurrency(1)
        .admission(DagorConfig {
            window: Duration::from_secs(3600),
            window_requests: 30,
            alpha: 0.5,
            ..DagorConfig::default()
        })
        .add_service(EchoServer::new(probe.clone()));
    let admission = server
        .admission_controller()
        .expect("admission is on by default");
    let admin = svrkit::admin::AdminServer::new(svrkit::admin::InstanceInfo::new("m"))
        .expect("recorder")
        .attach(server.stats());
    let (admin_addr, _stop_admin) = start_admin(admin).await;
    let server = start(server).await;
    let client = EchoClient::new(Channel::lazy([server.addr]));

    // Arrival 1: a high-priority blocker holds the only worker for 100 ms.
    let blocker = tokio::spawn({
        let client = client.clone();
        async move { call(&client, HIGH, 1, 100).await }
    });
    tokio::time::timeout(PATIENCE, probe.started.notified())
        .await
        .expect("blocker started");
    // Arrivals 2..=21: four high (users 2..=5) and sixteen low (users 1..=16) queue behind it.
    let queued: Vec<_> = (2..=5)
        .map(|u| (HIGH, u))
        .chain((1..=16).map(|u| (LOW, u)))
        .map(|(b, u)| {
            let client = client.clone();
            tokio::spawn(async move { call(&client, b, u, 0).await })
        })
        .collect();
    blocker.await.expect("task").expect("blocker succeeds");
    for q in queued {
        q.await
            .expect("task")
            .expect("queued requests are served: the level was still open");
    }
    // Arrivals 22..=30: low users 17..=25, one at a time. The 30th ends the window; its
    // mean queuing time (~100 ms for twenty of them) is far over 20 ms: overloaded.
    for u in 17..=25 {
        call(&client, LOW, u, 0)
            .await
            .expect("served before the window ended");
    }
    let snapshot = admission.snapshot();
    assert!(snapshot.last_window_overloaded, "{snapshot:?}");
    assert!(
        snapshot.last_window_queue_mean > Duration::from_millis(20),
        "{snapshot:?}"
    );
    // 30 admitted, alpha 0.5: keep 15 = all 5 high and the 10 most important low users.
    assert_eq!(snapshot.level, Some(Priority::new(LOW, 10)));

    // Fresh clients (no cached level): high priorities all pass, low ones above the level
    // are shed by the server with `overloaded`, flagged as not processed.
    for u in 1..=5 {
        let fresh = EchoClient::new(Channel::lazy([server.addr]));
        call(&fresh, HIGH, u, 0)
            .await
            .expect("high priority keeps succeeding");
    }
    let fresh = EchoClient::new(Channel::lazy([server.addr]));
    call(&fresh, LOW, 10, 0)
        .await
        .expect("the least important admitted level passes");
    // Even a successful response carries the level: this client already refuses user 11.
    let local = call(&fresh, LOW, 11, 0).await.expect_err("refused locally");
    assert!(
        local.message().contains("refused without sending"),
        "{local}"
    );

    let fresh = EchoClient::new(Channel::lazy([server.addr]));
    let calls_before = probe.calls();
    let shed = call(&fresh, LOW, 11, 0).await.expect_err("shed");
    assert_eq!(shed.code(), Code::Overloaded);
    assert!(shed.is_not_processed());
    assert!(
        shed.message().contains("shed by admission control"),
        "{shed}"
    );
    assert_eq!(
        probe.calls(),
        calls_before,
        "a shed request never reaches the handler"
    );

    // Collaborative: that client learnt the level from the response and now refuses
    // locally, without a round trip; the server's shed count does not move.
    let shed_at_server = admission.snapshot().shed_by_business_priority;
    let local = call(&fresh, LOW, 12, 0).await.expect_err("refused locally");
    assert_eq!(local.code(), Code::Overloaded);
    assert!(
        local.message().contains("refused without sending"),
        "{local}"
    );
    assert_eq!(
        admission.snapshot().shed_by_business_priority,
        shed_at_server
    );
    // The same client still sends what the server admits.
    call(&fresh, HIGH, 3, 0)
        .await
        .expect("high priority passes the local check");

    // Operators see it: level, queuing time and shed counts by priority.
    let (_, body) = http_get(admin_addr, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let adm = &status["servers"][0]["admission"];
    assert_eq!(
        adm["level"],
        serde_json::json!({"business": LOW, "user": 10})
    );
    assert_eq!(adm["overloaded"], true);
    assert!(adm["queue_mean_ms"].as_f64().expect("queue mean") > 20.0);
    assert_eq!(
        adm["shed_by_business_priority"][0]["business_priority"],
        LOW
    );
    assert_eq!(adm["shed_by_business_priority"][0]["shed"], 1);
    let (_, metrics) = http_get(admin_addr, "/metrics").await;
    assert!(
        metrics.contains("svrkit_dagor_shed_total{business_priority=\"200\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("svrkit_dagor_level_business 200"),
        "{metrics}"
    );
    assert!(metrics.contains("svrkit_dagor_overloaded 1"), "{metrics}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_whose_deadline_passes_in_the_worker_queue_is_not_run() {
    let probe = Probe::new("m");
    let server = start(
        Server::builder()
            .max_concurrency(1)
            .add_service(EchoServer::new(probe.clone())),
    )
    .await;
    let client = EchoClient::new(Channel::lazy([server.addr]));
    let slow = tokio::spawn({
        let client = client.clone();
        async move { call(&client, HIGH, 1, 200).await }
    });
    tokio::time::timeout(PATIENCE, probe.started.notified())
        .await
        .expect("slow started");
    let err = Context::new()
        .with_timeout(Duration::from_millis(30))
        .scope(client.echo(EchoRequest {
            payload: b"late".to_vec().into(),
            delay_ms: 0,
        }))
        .await
        .expect_err("deadline passes while queued");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    slow.await.expect("task").expect("slow succeeds");
    call(&client, HIGH, 1, 0).await.expect("afterwards");
    assert_eq!(probe.calls(), 2, "the queued request never ran");
    server.shutdown().await;
}

/// An Echo that refuses everything as overloaded and counts what reaches it.
#[derive(Clone, Default)]
struct AlwaysOverloaded {
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl echo::Echo for AlwaysOverloaded {
    async fn echo(&self, _request: EchoRequest) -> Result<echo::EchoReply, Status> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(Status::overloaded("busy"))
    }

    async fn relay(&self, _request: EchoRequest) -> Result<echo::RelayReply, Status> {
        Err(Status::unimplemented("relay"))
    }
}

#[tokio::test]
async fn the_adaptive_throttle_stops_sending_to_a_backend_that_refuses_everything() {
    use svrkit::overload::AdaptiveThrottleLayer;
    let backend = AlwaysOverloaded::default();
    let server = start(Server::builder().add_service(EchoServer::new(backend.clone()))).await;
    let stack = tower::ServiceBuilder::new()
        .layer(AdaptiveThrottleLayer::default())
        .service(Channel::lazy([server.addr]));
    let client = EchoClient::with_service(stack);
    let total = 400;
    let mut local = 0;
    for _ in 0..total {
        let err = call(&client, HIGH, 1, 0).await.expect_err("always refused");
        assert_eq!(err.code(), Code::Overloaded);
        if err.message().contains("adaptive throttle") {
            assert!(err.is_not_processed());
            local += 1;
        }
    }
    let reached = backend.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reached + local, total);
    // With no accepts, p = requests / (requests + 1): after the first few, nearly all stay local.
    assert!(
        reached < 40,
        "only {reached} of {total} reached the backend"
    );
    server.shutdown().await;
}
