//! The admin endpoint of a running server: /healthz, /readyz, /status, /metrics.

use crate::common;

use common::{http_get, start, start_admin};
use echo::{EchoClient, EchoRequest, EchoServer, EchoService};
use svrkit::admin::{AdminServer, InstanceInfo};
use svrkit::{Channel, Code, Server};

#[tokio::test]
async fn admin_pages_report_health_readiness_status_and_metrics() {
    let admin = AdminServer::new(
        InstanceInfo::new("echo")
            .instance_id("echo-1")
            .version_label(svrkit::selector::Track::Gray),
    )
    .expect("recorder");
    let server = Server::builder().add_service(EchoServer::new(EchoService::new("s")));
    let admin = admin.attach(server.stats()).config_version(|| Some(7));
    let (admin_addr, _stop_admin) = start_admin(admin).await;
    let server = start(server).await;

    assert_eq!(
        http_get(admin_addr, "/healthz").await,
        (200, "ok\n".to_string())
    );
    assert_eq!(http_get(admin_addr, "/readyz").await.0, 200);
    // Only hosts it is meant for (an address, localhost, configured names): a page of a
    // rebound domain gets nothing, and the endpoint keeps serving.
    let port = admin_addr.port();
    let (refused, why) = svrkit_testkit::http_get_as(admin_addr, "/status", "evil.example").await;
    assert_eq!(refused, 403, "{why}");
    assert!(why.contains("evil.example"), "{why}");
    assert_eq!(
        svrkit_testkit::http_get_as(
            admin_addr,
            "/metrics",
            &format!("rebind.evil.example:{port}")
        )
        .await
        .0,
        403
    );
    assert_eq!(
        svrkit_testkit::http_get_as(admin_addr, "/healthz", &format!("localhost:{port}"))
            .await
            .0,
        200
    );

    let client = EchoClient::new(Channel::lazy([server.addr]));
    for _ in 0..3 {
        client
            .echo(EchoRequest {
                payload: b"x".to_vec().into(),
                delay_ms: 0,
            })
            .await
            .expect("echo");
    }
    let err = client
        .relay(EchoRequest::default())
        .await
        .expect_err("no next hop");
    assert_eq!(err.code(), Code::FailedPrecondition);

    let (code, body) = http_get(admin_addr, "/status").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON status");
    assert_eq!(status["service"], "echo");
    assert_eq!(status["instance_id"], "echo-1");
    assert_eq!(status["version_label"], "gray");
    assert_eq!(status["config_version"], 7);
    assert_eq!(status["ready"], true);
    assert_eq!(status["connections"], 1);
    assert!(status["uptime_secs"].as_f64().expect("uptime") >= 0.0);
    let methods = status["servers"][0]["methods"].as_array().expect("methods");
    let echo = methods
        .iter()
        .find(|m| m["method"] == "Echo")
        .expect("Echo listed");
    assert_eq!(
        (echo["requests"].as_u64(), echo["errors"].as_u64()),
        (Some(3), Some(0))
    );
    let relay = methods
        .iter()
        .find(|m| m["method"] == "Relay")
        .expect("Relay listed");
    assert_eq!(relay["errors"], 1);
    // failed_precondition is the caller's: an error, not a fault of the server.
    assert_eq!(relay["faults"], 0);
    assert_eq!(echo["faults"], 0);
    assert_eq!(status["servers"][0]["admission"]["admits_all"], true);

    let (code, metrics) = http_get(admin_addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains(
            "svrkit_server_requests_total{service=\"svrkit.demo.Echo\",method=\"Echo\",protocol=\"svrkit\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("code=\"failed_precondition\""),
        "{metrics}"
    );
    // Latency is a histogram with the documented buckets (aggregatable across
    // instances), and metrics carry HELP and TYPE lines.
    for bucket in svrkit::admin::LATENCY_BUCKETS {
        let line = format!(
            "svrkit_server_request_duration_seconds_bucket{{service=\"svrkit.demo.Echo\",method=\"Echo\",protocol=\"svrkit\",le=\"{bucket}\"}}"
        );
        assert!(metrics.contains(&line), "no {line} in {metrics}");
    }
    assert!(
        metrics.contains("# TYPE svrkit_server_request_duration_seconds histogram"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# HELP svrkit_server_requests_total Requests received, per method."),
        "{metrics}"
    );
    assert!(!metrics.contains("quantile="), "no summaries: {metrics}");
    // The client side of the same calls, per method (the test's client is in-process).
    assert!(
        metrics.contains(
            "svrkit_client_requests_total{service=\"svrkit.demo.Echo\",method=\"Echo\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("svrkit_client_responses_total{service=\"svrkit.demo.Echo\",method=\"Relay\",code=\"failed_precondition\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE svrkit_client_request_duration_seconds histogram"),
        "{metrics}"
    );
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {process} ")),
            "no {process}: {metrics}"
        );
    }

    server.shutdown().await;
    assert_eq!(
        http_get(admin_addr, "/readyz").await.0,
        503,
        "a drained server is not ready"
    );
}
