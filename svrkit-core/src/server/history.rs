//! The last 15 minutes of a server, kept in memory: every [`INTERVAL`] a point with each
//! method's requests/s, errors/s, server faults/s and the p50/p99 of that interval alone
//! (from the difference of the latency histograms), DAGOR's level and sheds/s. A bounded
//! ring of [`POINTS`], so a page opened late still draws the quarter of an hour before it
//! (`/history` on the admin endpoint, the charts of the admin page and the console).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::latency;
use super::router::Router;
use super::shared::ServerShared;

/// How often a point is taken.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Points kept: 15 minutes of them.
pub const POINTS: usize = 180;

/// One method over one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodPoint {
    /// Fully qualified service name.
    pub service: &'static str,
    /// Method name.
    pub method: &'static str,
    /// Requests per second (served or refused).
    pub requests_per_s: f64,
    /// Responses other than ok, per second.
    pub errors_per_s: f64,
    /// Of them, the server's faults, per second.
    pub faults_per_s: f64,
    /// Median handler time of the interval's requests, in milliseconds (0: none).
    pub p50_ms: f64,
    /// 99th percentile of the interval's requests, in milliseconds (0: none).
    pub p99_ms: f64,
}

/// The server over one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPoint {
    /// When the interval ended, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Methods that have been called (an idle one reads 0).
    pub methods: Vec<MethodPoint>,
    /// DAGOR's level at the end of the interval: (business, user), `None` admitting all.
    pub level: Option<(u32, u32)>,
    /// Requests DAGOR shed, per second.
    pub sheds_per_s: f64,
}

/// One method's counters at one moment: requests, errors, faults and latency buckets.
type Counters = (u64, u64, u64, Vec<u64>);

/// What the previous point started from.
#[derive(Debug, Default)]
struct Baseline {
    /// Per (service, method).
    methods: HashMap<(&'static str, &'static str), Counters>,
    sheds: u64,
}

/// A server's ring of points.
#[derive(Debug, Default)]
pub(crate) struct History {
    points: Mutex<VecDeque<HistoryPoint>>,
    baseline: Mutex<Option<Baseline>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl History {
    /// The points, oldest first.
    pub(crate) fn points(&self) -> Vec<HistoryPoint> {
        self.points
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Takes a point of `server` over the `seconds` since the last one (the first call
    /// only sets the baseline).
    pub(crate) fn sample(&self, server: &ServerShared, seconds: f64) {
        let mut now = Baseline::default();
        for route in server.router.routes() {
            let Some(stats) = Router::route_stats(route) else {
                continue;
            };
            now.methods.insert(
                (route.desc.service, route.desc.method),
                (
                    stats.requests.load(Ordering::Relaxed),
                    stats.errors.load(Ordering::Relaxed),
                    stats.faults.load(Ordering::Relaxed),
                    stats.latency.counts(),
                ),
            );
        }
        let admission = server.admission.as_ref().map(|a| a.snapshot());
        now.sheds = admission.as_ref().map_or(0, |a| {
            a.shed_by_business_priority.iter().map(|(_, n)| n).sum()
        });
        let mut baseline = self.baseline.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(before) = baseline.take() else {
            *baseline = Some(now);
            return;
        };
        let per_s = |delta: u64| delta as f64 / seconds.max(1e-3);
        let mut methods: Vec<MethodPoint> = now
            .methods
            .iter()
            .map(|(&(service, method), (requests, errors, faults, counts))| {
                let (r0, e0, f0, c0) = before
                    .methods
                    .get(&(service, method))
                    .map_or((0, 0, 0, &[][..]), |(r, e, f, c)| {
                        (*r, *e, *f, c.as_slice())
                    });
                let interval: Vec<u64> = counts
                    .iter()
                    .enumerate()
                    .map(|(i, n)| n.saturating_sub(c0.get(i).copied().unwrap_or(0)))
                    .collect();
                MethodPoint {
                    service,
                    method,
                    requests_per_s: per_s(requests.saturating_sub(r0)),
                    errors_per_s: per_s(errors.saturating_sub(e0)),
                    faults_per_s: per_s(faults.saturating_sub(f0)),
                    p50_ms: latency::quantile_of(&interval, 0.5),
                    p99_ms: latency::quantile_of(&interval, 0.99),
                }
            })
            .collect();
        methods.sort_by(|a, b| (a.service, a.method).cmp(&(b.service, b.method)));
        let point = HistoryPoint {
            at_unix_ms: unix_ms(),
            methods,
            level: admission
                .and_then(|a| a.level)
                .map(|p| (p.business, p.user)),
            sheds_per_s: per_s(now.sheds.saturating_sub(before.sheds)),
        };
        *baseline = Some(now);
        drop(baseline);
        let mut points = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        if points.len() == POINTS {
            points.pop_front();
        }
        points.push_back(point);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::method::{MethodDesc, ServiceDesc};
    use crate::server::router::ServiceHandler;
    use crate::status::{Code, Status};

    static METHODS: [MethodDesc; 1] = [MethodDesc {
        service: "h.H",
        method: "M",
        idempotent: false,
        timeout: None,
        priority: 0,
        stale_read: false,
    }];
    static SERVICE: ServiceDesc = ServiceDesc {
        name: "h.H",
        methods: &METHODS,
    };

    struct H;

    impl ServiceHandler for H {
        fn descriptor(&self) -> &'static ServiceDesc {
            &SERVICE
        }

        fn call(
            &self,
            _: &'static MethodDesc,
            _: bytes::Bytes,
        ) -> crate::BoxFuture<'static, Result<bytes::Bytes, Status>> {
            Box::pin(async { Ok(bytes::Bytes::new()) })
        }
    }

    fn server() -> ServerShared {
        let mut router = Router::default();
        router.add(Box::new(H));
        ServerShared::with_router(router)
    }

    #[test]
    fn points_are_rates_and_percentiles_of_their_interval_and_the_ring_is_bounded() {
        let server = server();
        let route = server.router.route("h.H", "M").expect("route");
        let metrics = route.metrics();
        let history = History::default();
        history.sample(&server, 5.0);
        assert!(
            history.points().is_empty(),
            "the first sample is the baseline"
        );
        // A slow interval, then a fast one: the second point's p99 is its own.
        for _ in 0..10 {
            metrics.started(Duration::ZERO);
            metrics.finished(Code::Ok, Duration::from_millis(100));
        }
        history.sample(&server, 5.0);
        for _ in 0..20 {
            metrics.started(Duration::ZERO);
            metrics.finished(Code::Internal, Duration::from_micros(100));
        }
        history.sample(&server, 5.0);
        let points = history.points();
        assert_eq!(points.len(), 2);
        let (slow, fast) = (&points[0].methods[0], &points[1].methods[0]);
        assert_eq!(slow.requests_per_s, 2.0);
        assert!(slow.p99_ms >= 100.0 && slow.p99_ms < 130.0, "{slow:?}");
        assert_eq!(
            (fast.requests_per_s, fast.errors_per_s, fast.faults_per_s),
            (4.0, 4.0, 4.0)
        );
        assert!(fast.p99_ms < 0.2, "not the slow interval's: {fast:?}");
        for _ in 0..POINTS + 5 {
            history.sample(&server, 5.0);
        }
        let points = history.points();
        assert_eq!(points.len(), POINTS, "bounded");
        assert_eq!(
            points[POINTS - 1].methods[0].requests_per_s,
            0.0,
            "idle reads 0"
        );
        assert_eq!(points[POINTS - 1].methods[0].p99_ms, 0.0);
    }
}
