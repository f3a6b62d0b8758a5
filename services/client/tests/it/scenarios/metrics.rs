//! Every backend process's `/metrics`, checked by Prometheus' own `promtool check metrics`
//! (Debian's `prometheus` package, which `tools/test` installs): names, types, HELP text
//! and units as Prometheus expects them.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::harness::Backend;

/// `GET path` on `addr`: the body of its 200 answer.
async fn get(addr: SocketAddr, path: &str) -> String {
    let (code, body) = svrkit_testkit::http_get(addr, path).await;
    assert_eq!(code, 200, "{addr}{path}: {body}");
    body
}

/// Runs promtool on every process's metrics; skipped (with a message) where promtool is
/// not installed, except under CI, where its absence is a failure.
pub async fn promtool_passes_every_process(backend: &Backend) {
    let endpoints = backend.admin_endpoints();
    assert!(endpoints.len() > 10, "{} admin endpoints", endpoints.len());
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing: tools/test installs Debian's prometheus package"
        );
        eprintln!("skipped: promtool is not installed (apt-get install prometheus)");
        return;
    }
    let mut scraped = String::new();
    for (id, addr) in endpoints {
        let text = get(addr, "/metrics").await;
        scraped.push_str(&text);
        assert!(
            text.contains("process_resident_memory_bytes"),
            "{id}: {text}"
        );
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("feed promtool");
        let out = child.wait_with_output().expect("promtool ran");
        assert!(
            out.status.success(),
            "{id}: promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dashboard_metrics_exist(&scraped);
}

/// Every metric the shipped Grafana dashboard (`docs/grafana/svrkit.json`) queries is one
/// the backend exports.
fn dashboard_metrics_exist(scraped: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana/svrkit.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("the dashboard")).expect("JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a query");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                let exported = ["svrkit_", "wx_", "process_"]
                    .iter()
                    .any(|p| word.starts_with(p));
                // Counted only once something happens (a shed): none in this run.
                let after_an_event = word == "svrkit_dagor_shed_total";
                if exported && !after_an_event {
                    queried += 1;
                    let family = word.strip_suffix("_bucket").unwrap_or(word);
                    assert!(
                        scraped.contains(&format!("# TYPE {family} ")),
                        "the dashboard queries {word}, which no process exports"
                    );
                }
            }
        }
    }
    assert!(queried >= 12, "{queried} metrics queried");
}
