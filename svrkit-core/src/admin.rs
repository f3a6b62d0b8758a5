//! The admin HTTP endpoint every svrkit process runs on its own port.
//!
//! | path | answer |
//! |---|---|
//! | `/` | HTML: the same figures as `/status`, live (requests/s, errors, p50/p99 per method, DAGOR level and sheds), charts of the last 15 minutes, recent and slowest requests, for a person ([`page`]) |
//! | `/history` | JSON: the last 15 minutes, a point every 5 s: per method requests/s, errors/s, faults/s and the interval's p50/p99; DAGOR's level and sheds/s ([`crate::server::history`]) |
//! | `/rpcz` | JSON: the last sampled calls (one trace in 64, every hop of it) and the last minute's slowest: method, caller, status, latency, trace and span ids, protocol; `?trace=ID` keeps one trace ([`crate::server::recent`]) |
//! | `/metrics` | Prometheus text: every metric recorded through the `metrics` facade, and the process metrics (CPU, memory, descriptors, threads) |
//! | `/status` | JSON: service, version label, instance id, uptime, config version, connections, in-flight, per-method counts and latencies, DAGOR admission level, queuing time and shed counts |
//! | `/healthz` | `200 ok` while the process runs |
//! | `/readyz` | `200 ready` while every attached server serves and the service's own checks hold ([`AdminServer::ready_when`]); `503` before it starts, once it drains, and for a few seconds after accepting a connection failed ([`crate::process_limits`]) |
//!
//! ```no_run
//! # async fn run(server: svrkit::Server, rpc: tokio::net::TcpListener, admin: tokio::net::TcpListener) -> std::io::Result<()> {
//! let admin_server = svrkit::admin::AdminServer::new(svrkit::admin::InstanceInfo::new("echo"))
//!     .expect("metrics recorder")
//!     .attach(server.stats());
//! tokio::spawn(admin_server.serve(admin, std::future::pending()));
//! server.serve(rpc, std::future::pending()).await
//! # }
//! ```

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};

use crate::selector::Track;
use tokio::net::TcpListener;

use crate::server::{ServerSnapshot, ServerStats};

pub mod host;
pub mod page;

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Another `metrics` recorder is already installed in this process.
    #[error("installing the Prometheus recorder: {0}")]
    Recorder(String),
}

/// Who this process is, as `/status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// The service name.
    pub service: String,
    /// Its release track (`"stable"` or `"gray"` on the page).
    pub version_label: Track,
    /// Unique among the service's instances.
    pub instance_id: String,
}

impl InstanceInfo {
    /// A `stable` instance of `service` with an id made of host-unique parts (pid, time).
    pub fn new(service: impl Into<String>) -> InstanceInfo {
        let service = service.into();
        let instance_id = format!(
            "{service}-{}-{:x}",
            std::process::id(),
            crate::context::random_u64() & 0xffff_ffff
        );
        InstanceInfo {
            service,
            version_label: Track::Stable,
            instance_id,
        }
    }

    /// Sets the version label.
    pub fn version_label(mut self, track: Track) -> InstanceInfo {
        self.version_label = track;
        self
    }

    /// Sets the instance id.
    pub fn instance_id(mut self, id: impl Into<String>) -> InstanceInfo {
        self.instance_id = id.into();
        self
    }
}

/// The buckets of every latency histogram (`*_seconds`), in seconds: 100 µs to 10 s,
/// about 2.5× apart, so p50 and p99 of an RPC are resolved whether it takes a tenth of a
/// millisecond or seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
///
/// Call it before building servers and channels: metric handles are registered on first
/// use, and handles taken before a recorder exists record nothing.
pub fn install_metrics() -> Result<PrometheusHandle, AdminError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                // Histograms with fixed buckets, not per-instance summaries, so
                // `histogram_quantile` works over any number of instances.
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|e| e.to_string())?;
            crate::server::metrics::describe();
            Ok(handle)
        })
        .clone()
        .map_err(AdminError::Recorder)
}

/// The admin endpoint of one process.
#[derive(Debug, Clone)]
pub struct AdminServer {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    info: InstanceInfo,
    started: Instant,
    prometheus: PrometheusHandle,
    servers: Vec<ServerStats>,
    config_version: Option<ConfigVersion>,
    sections: Sections,
    readiness: Readiness,
}

/// What else must hold for `/readyz` to answer ready (a service's own conditions).
#[derive(Clone, Default)]
pub struct Readiness(pub Vec<Arc<dyn Fn() -> bool + Send + Sync>>);

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Readiness({} check(s))", self.0.len())
    }
}

/// A service's own part of `/status`.
pub type Section = Arc<dyn Fn() -> Value + Send + Sync>;

/// Named [`Section`]s.
#[derive(Clone, Default)]
pub struct Sections(pub Vec<(String, Section)>);

impl std::fmt::Debug for Sections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

/// Reads the applied config version when `/status` is asked.
#[derive(Clone)]
struct ConfigVersion(Arc<dyn Fn() -> Option<u64> + Send + Sync>);

impl std::fmt::Debug for ConfigVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigVersion")
    }
}

impl AdminServer {
    /// An admin endpoint for this process; installs the Prometheus recorder.
    pub fn new(info: InstanceInfo) -> Result<AdminServer, AdminError> {
        Ok(AdminServer {
            inner: Arc::new(Inner {
                info,
                started: Instant::now(),
                prometheus: install_metrics()?,
                servers: Vec::new(),
                config_version: None,
                sections: Sections::default(),
                readiness: Readiness::default(),
            }),
        })
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// Reports this RPC server in `/status` and `/readyz`.
    pub fn attach(mut self, server: ServerStats) -> AdminServer {
        self.inner_mut().servers.push(server);
        self
    }

    /// Reports the applied config version in `/status`.
    pub fn config_version(
        mut self,
        version: impl Fn() -> Option<u64> + Send + Sync + 'static,
    ) -> AdminServer {
        self.inner_mut().config_version = Some(ConfigVersion(Arc::new(version)));
        self
    }

    /// `/readyz` (and `/status`'s `ready`) also wait for `check`: a storage replica is
    /// ready once every shard it holds has a leader, say.
    pub fn ready_when(mut self, check: Arc<dyn Fn() -> bool + Send + Sync>) -> AdminServer {
        self.inner_mut().readiness.0.push(check);
        self
    }

    /// Adds `name` to `/status`, as `section` says when asked (a storage replica's
    /// shards, say).
    pub fn section(mut self, name: impl Into<String>, section: Section) -> AdminServer {
        self.inner_mut().sections.0.push((name.into(), section));
        self
    }

    /// The `/status` document.
    pub fn status(&self) -> Value {
        let inner = &self.inner;
        let snapshots: Vec<ServerSnapshot> = inner
            .servers
            .iter()
            .filter_map(ServerStats::snapshot)
            .collect();
        let mut doc = json!({
            "service": inner.info.service,
            "version_label": inner.info.version_label,
            "instance_id": inner.info.instance_id,
            "uptime_secs": inner.started.elapsed().as_secs_f64(),
            "config_version": inner.config_version.as_ref().and_then(|f| (f.0)()),
            "ready": self.is_ready(),
            "accepting": crate::process_limits::accepting(),
            "connections": snapshots.iter().map(|s| s.connections).sum::<usize>(),
            "in_flight": snapshots.iter().map(|s| s.in_flight).sum::<i64>(),
            "servers": snapshots.iter().map(server_json).collect::<Vec<_>>(),
        });
        for (name, section) in &inner.sections.0 {
            doc[name.as_str()] = section();
        }
        doc
    }

    fn is_ready(&self) -> bool {
        self.inner.servers.iter().all(ServerStats::is_ready)
            && crate::process_limits::accepting()
            && self.inner.readiness.0.iter().all(|check| check())
    }

    /// Serves the endpoint on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = page::router()
            .route("/metrics", get(metrics))
            .route("/status", get(status))
            .route("/history", get(history))
            .route("/rpcz", get(rpcz))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(self)
            .layer(axum::middleware::from_fn_with_state(
                host::AllowedHosts::from_env(host::ALLOWED_HOSTS_VAR),
                host::check_host,
            ));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

fn server_json(s: &ServerSnapshot) -> Value {
    json!({
        "services": s.services,
        "connections": s.connections,
        "in_flight": s.in_flight,
        "draining": s.draining,
        "methods": s.methods.iter().map(|m| json!({
            "service": m.service,
            "method": m.method,
            "requests": m.requests,
            "errors": m.errors,
            "faults": m.faults,
            "in_flight": m.in_flight,
            "mean_latency_ms": m.mean_latency_ms,
            "p50_latency_ms": m.p50_latency_ms,
            "p99_latency_ms": m.p99_latency_ms,
        })).collect::<Vec<_>>(),
        "admission": s.admission.as_ref().map(|a| json!({
            "level": a.level.map(|p| json!({"business": p.business, "user": p.user})),
            "admits_all": a.level.is_none(),
            "queue_mean_ms": a.last_window_queue_mean.as_secs_f64() * 1e3,
            "overloaded": a.last_window_overloaded,
            "windows": a.windows,
            "shed_by_business_priority": a.shed_by_business_priority.iter()
                .map(|(b, n)| json!({"business_priority": b, "shed": n}))
                .collect::<Vec<_>>(),
        })),
    })
}

/// `/history`: the last 15 minutes of every attached server, a point per interval.
async fn history(State(admin): State<AdminServer>) -> Response {
    let points: Vec<Value> = admin
        .inner
        .servers
        .iter()
        .flat_map(|s| s.history())
        .map(|p| {
            json!({
                "t": p.at_unix_ms,
                "level": p.level.map(|(b, u)| json!({"business": b, "user": u})),
                "sheds_per_s": p.sheds_per_s,
                "methods": p.methods.iter().map(|m| json!({
                    "method": format!("{}/{}", m.service, m.method),
                    "rps": m.requests_per_s,
                    "eps": m.errors_per_s,
                    "fps": m.faults_per_s,
                    "p50": m.p50_ms,
                    "p99": m.p99_ms,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(json!({
        "interval_s": crate::server::history::INTERVAL.as_secs(),
        "points": points,
    }))
    .into_response()
}

/// A call as `/rpcz` shows it.
fn call_json(r: &crate::server::CallRecord) -> Value {
    json!({
        "at_unix_us": r.at_unix_us,
        "method": format!("{}/{}", r.service, r.method),
        "caller": r.caller,
        "code": r.code.as_str(),
        "latency_ms": r.latency_us as f64 / 1000.0,
        "trace_id": crate::context::TraceHex(r.trace_id_high, r.trace_id).to_string(),
        "span_id": format!("{:016x}", r.span_id),
        "parent_span_id": format!("{:016x}", r.parent_span_id),
        "protocol": r.protocol.as_str(),
    })
}

/// The value of `key` in a URL query (`a=1&trace=ab`), if it is there.
pub fn query_value<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// A trace id as `/rpcz` writes it (16 hex digits, or 32 for a 128-bit id): (high, low).
fn parse_trace(hex: &str) -> Option<(u64, u64)> {
    if hex.is_empty() || hex.len() > 32 || !hex.is_ascii() {
        return None;
    }
    let (high, low) = hex.split_at(hex.len().saturating_sub(16));
    let number = |s: &str| match s {
        "" => Some(0),
        s => u64::from_str_radix(s, 16).ok(),
    };
    Some((number(high)?, number(low)?))
}

/// `/rpcz`: recent sampled calls (newest first) and the last minute's slowest;
/// `?trace=ID` keeps one trace's.
async fn rpcz(
    State(admin): State<AdminServer>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let trace = match query_value(query.as_deref(), "trace") {
        None => None,
        Some(hex) => match parse_trace(hex) {
            Some(ids) => Some(ids),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    "a trace id is 1 to 32 hex digits\n",
                )
                    .into_response();
            }
        },
    };
    let list = |calls: fn(&ServerStats) -> Vec<crate::server::CallRecord>| -> Vec<Value> {
        admin
            .inner
            .servers
            .iter()
            .flat_map(calls)
            .filter(|r| trace.is_none_or(|ids| ids == (r.trace_id_high, r.trace_id)))
            .map(|r| call_json(&r))
            .collect()
    };
    axum::Json(json!({
        "sample_one_in": crate::server::recent::SAMPLE_ONE_IN,
        "recent": list(ServerStats::recent_calls),
        "slowest": list(ServerStats::slowest_calls),
    }))
    .into_response()
}

async fn metrics(State(admin): State<AdminServer>) -> Response {
    let mut text = admin.inner.prometheus.render();
    text.push_str(&crate::process_metrics::render());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn status(State(admin): State<AdminServer>) -> Response {
    axum::Json(admin.status()).into_response()
}

async fn readyz(State(admin): State<AdminServer>) -> Response {
    if admin.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if !crate::process_limits::accepting() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: accepting connections failed (out of file descriptors?)\n",
        )
            .into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_parse_as_rpcz_writes_them() {
        assert_eq!(parse_trace("00000002af37bc40"), Some((0, 0x2af3_7bc40)));
        assert_eq!(parse_trace("7"), Some((0, 7)));
        assert_eq!(
            parse_trace("00000000000000090000000000000007"),
            Some((9, 7)),
            "128-bit"
        );
        for bad in ["", "xyz", "123456789012345678901234567890123", "é"] {
            assert_eq!(parse_trace(bad), None, "{bad}");
        }
        assert_eq!(query_value(Some("a=1&trace=ab"), "trace"), Some("ab"));
        assert_eq!(query_value(Some("a=1"), "trace"), None);
    }
}
