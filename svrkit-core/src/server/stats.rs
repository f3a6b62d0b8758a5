//! A read-only view of a running server, for operators (`/status`, `/readyz`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use super::history::{History, HistoryPoint};
use super::recent::CallRecord;
use super::router::Router;
use super::shared::ServerShared;
use crate::overload::AdmissionSnapshot;

/// A handle to a server's live figures; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    shared: Arc<OnceLock<Arc<ServerShared>>>,
    history: Arc<History>,
}

/// One method's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodSnapshot {
    /// Fully qualified service name.
    pub service: &'static str,
    /// Method name.
    pub method: &'static str,
    /// Requests whose handler started.
    pub requests: u64,
    /// Responses with a code other than ok (including refusals before the handler).
    pub errors: u64,
    /// Those of them that were the server's fault, not the caller's
    /// ([`crate::Code::is_server_fault`]): what a release is judged by.
    pub faults: u64,
    /// Handlers running now.
    pub in_flight: i64,
    /// Mean handler time, in milliseconds.
    pub mean_latency_ms: f64,
    /// Median handler time, in milliseconds (within 19 %).
    pub p50_latency_ms: f64,
    /// 99th-percentile handler time, in milliseconds (within 19 %).
    pub p99_latency_ms: f64,
}

/// A server's figures at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSnapshot {
    /// The services served.
    pub services: Vec<&'static str>,
    /// Open client connections.
    pub connections: usize,
    /// Handlers running now, over all methods.
    pub in_flight: i64,
    /// True once shutdown began.
    pub draining: bool,
    /// Per-method figures, for methods that have been called.
    pub methods: Vec<MethodSnapshot>,
    /// DAGOR's state, when admission control is on.
    pub admission: Option<AdmissionSnapshot>,
}

impl ServerStats {
    pub(crate) fn attach(&self, shared: Arc<ServerShared>) {
        let _ = self.shared.set(shared);
    }

    /// The figures now, or `None` before the server started serving.
    pub fn snapshot(&self) -> Option<ServerSnapshot> {
        let shared = self.shared.get()?;
        let mut methods: Vec<MethodSnapshot> = shared
            .router
            .routes()
            .filter_map(|route| {
                let m = Router::route_stats(route)?;
                let requests = m.requests.load(Ordering::Relaxed);
                let latency = m.latency_us_sum.load(Ordering::Relaxed);
                Some(MethodSnapshot {
                    service: route.desc.service,
                    method: route.desc.method,
                    requests,
                    errors: m.errors.load(Ordering::Relaxed),
                    faults: m.faults.load(Ordering::Relaxed),
                    in_flight: m.in_flight.load(Ordering::Relaxed),
                    mean_latency_ms: if requests == 0 {
                        0.0
                    } else {
                        latency as f64 / requests as f64 / 1000.0
                    },
                    p50_latency_ms: m.latency.quantile_ms(0.5),
                    p99_latency_ms: m.latency.quantile_ms(0.99),
                })
            })
            .collect();
        methods.sort_by(|a, b| (a.service, a.method).cmp(&(b.service, b.method)));
        let mut services = shared.router.service_names();
        services.sort_unstable();
        Some(ServerSnapshot {
            services,
            connections: shared.connections.load(Ordering::Relaxed),
            in_flight: methods.iter().map(|m| m.in_flight).sum(),
            draining: shared.draining.load(Ordering::Relaxed),
            methods,
            admission: shared.admission.as_ref().map(|a| a.snapshot()),
        })
    }

    /// The last 15 minutes, a point every [`history::INTERVAL`](super::history::INTERVAL),
    /// oldest first (empty until the server has served for one interval).
    pub fn history(&self) -> Vec<HistoryPoint> {
        self.history.points()
    }

    /// The last sampled calls, newest first (rpcz; see [`super::recent`]).
    pub fn recent_calls(&self) -> Vec<CallRecord> {
        self.shared
            .get()
            .map(|s| s.recent.recent())
            .unwrap_or_default()
    }

    /// The slowest calls of the last minute, slowest first.
    pub fn slowest_calls(&self) -> Vec<CallRecord> {
        self.shared
            .get()
            .map(|s| s.recent.slowest())
            .unwrap_or_default()
    }

    /// Takes a point every interval while the server runs.
    pub(crate) async fn keep_history(self, shared: Arc<ServerShared>) {
        let mut every = tokio::time::interval(super::history::INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = std::time::Instant::now();
        loop {
            every.tick().await;
            let now = std::time::Instant::now();
            self.history
                .sample(&shared, now.duration_since(last).as_secs_f64());
            last = now;
        }
    }

    /// True while the server serves and is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.shared
            .get()
            .is_some_and(|s| !s.draining.load(Ordering::Relaxed))
    }
}
