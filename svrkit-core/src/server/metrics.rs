//! Server metrics through the `metrics` facade, with handles cached per method.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `svrkit_server_requests_total` | counter | service, method |
//! | `svrkit_server_responses_total` | counter | service, method, code |
//! | `svrkit_server_request_duration_seconds` | histogram | service, method |
//! | `svrkit_server_queue_duration_seconds` | histogram | service, method |
//! | `svrkit_server_in_flight` | gauge | service, method |
//! | `svrkit_server_rejected_total` | counter | reason (requests refused before routing) |

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::method::MethodDesc;
use crate::status::Code;

/// Requests received, per method.
pub const REQUESTS_TOTAL: &str = "svrkit_server_requests_total";
/// Responses sent, per method and status code.
pub const RESPONSES_TOTAL: &str = "svrkit_server_responses_total";
/// Handler time from start to response, per method.
pub const REQUEST_DURATION: &str = "svrkit_server_request_duration_seconds";
/// Time from arrival on the socket to handler start (DAGOR's overload signal), per method.
pub const QUEUE_DURATION: &str = "svrkit_server_queue_duration_seconds";
/// Requests being handled, per method.
pub const IN_FLIGHT: &str = "svrkit_server_in_flight";
/// Requests refused before they could be routed, by reason.
pub const REJECTED_TOTAL: &str = "svrkit_server_rejected_total";

/// Cached metric handles of one method.
#[derive(Debug)]
pub(crate) struct MethodMetrics {
    desc: &'static MethodDesc,
    requests: Counter,
    duration: Histogram,
    queue: Histogram,
    in_flight: Gauge,
    responses: [OnceLock<Counter>; Code::ALL.len()],
    /// Plain counters for `/status` (the facade's values cannot be read back).
    pub(crate) stats: MethodStats,
}

/// One method's figures as `/status` shows them.
#[derive(Debug, Default)]
pub(crate) struct MethodStats {
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) latency_us_sum: AtomicU64,
    pub(crate) latency: super::latency::LatencyHistogram,
    pub(crate) in_flight: AtomicI64,
}

impl MethodMetrics {
    pub(crate) fn new(desc: &'static MethodDesc) -> MethodMetrics {
        let labels = [("service", desc.service), ("method", desc.method)];
        MethodMetrics {
            desc,
            requests: metrics::counter!(REQUESTS_TOTAL, &labels),
            duration: metrics::histogram!(REQUEST_DURATION, &labels),
            queue: metrics::histogram!(QUEUE_DURATION, &labels),
            in_flight: metrics::gauge!(IN_FLIGHT, &labels),
            responses: Default::default(),
            stats: MethodStats::default(),
        }
    }

    /// A request was accepted for this method.
    pub(crate) fn started(&self, queued: Duration) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.increment(1);
        self.queue.record(queued.as_secs_f64());
        self.in_flight.increment(1.0);
    }

    /// A handler finished (or was refused) with `code`.
    pub(crate) fn finished(&self, code: Code, took: Duration) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.stats
            .latency_us_sum
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.stats.latency.record(took);
        self.in_flight.decrement(1.0);
        self.duration.record(took.as_secs_f64());
        self.responded(code);
    }

    /// A response with `code` was sent without running the handler.
    pub(crate) fn responded(&self, code: Code) {
        if code != Code::Ok {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        let desc = self.desc;
        self.responses[code as usize]
            .get_or_init(|| {
                metrics::counter!(
                    RESPONSES_TOTAL,
                    "service" => desc.service,
                    "method" => desc.method,
                    "code" => code.as_str()
                )
            })
            .increment(1);
    }
}

/// Counts a request refused before routing.
pub(crate) fn rejected(reason: &'static str) {
    metrics::counter!(REJECTED_TOTAL, "reason" => reason).increment(1);
}
