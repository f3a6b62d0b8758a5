//! Server metrics through the `metrics` facade, with handles cached per method.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `svrkit_server_requests_total` | counter | service, method, protocol |
//! | `svrkit_server_responses_total` | counter | service, method, protocol, code |
//! | `svrkit_server_request_duration_seconds` | histogram | service, method, protocol |
//! | `svrkit_server_queue_duration_seconds` | histogram | service, method, protocol |
//! | `svrkit_server_in_flight` | gauge | service, method, protocol |
//!
//! `protocol` is `svrkit` or `grpc` ([`crate::grpc`]): a method's calls over both count
//! apart in `/metrics` and together on `/status`.
//! | `svrkit_server_rejected_total` | counter | reason (requests refused before routing) |

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::grpc::Protocol;
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

/// Gives every metric svrkit records its HELP text and unit (the admin endpoint calls it
/// once the recorder is installed).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Requests received, per method."
    );
    describe_counter!(
        RESPONSES_TOTAL,
        Unit::Count,
        "Responses sent, per method and status code."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Handler time from start to response, per method."
    );
    describe_histogram!(
        QUEUE_DURATION,
        Unit::Seconds,
        "Time from arrival on the socket to handler start (DAGOR's overload signal), per method."
    );
    describe_gauge!(
        IN_FLIGHT,
        Unit::Count,
        "Requests being handled, per method."
    );
    describe_counter!(
        REJECTED_TOTAL,
        Unit::Count,
        "Requests refused before they could be routed, by reason."
    );
    describe_counter!(
        crate::client::metrics::CLIENT_REQUESTS_TOTAL,
        Unit::Count,
        "Calls a client completed, per method."
    );
    describe_counter!(
        crate::client::metrics::CLIENT_RESPONSES_TOTAL,
        Unit::Count,
        "Calls a client completed, per method and status code."
    );
    describe_histogram!(
        crate::client::metrics::CLIENT_REQUEST_DURATION,
        Unit::Seconds,
        "Time from a client's call to its answer, retries and hedges included, per method."
    );
    describe_counter!(
        "svrkit_client_retries_total",
        Unit::Count,
        "Calls a client sent again after a failure, per service."
    );
    describe_counter!(
        "svrkit_client_retry_budget_exhausted_total",
        Unit::Count,
        "Retries a client skipped because its retry budget was spent."
    );
    describe_counter!(
        "svrkit_client_backup_requests_total",
        Unit::Count,
        "Backup (hedged) requests a client sent."
    );
    describe_counter!(
        "svrkit_client_ejections_total",
        Unit::Count,
        "Instances a client took out of rotation as outliers."
    );
    describe_counter!(
        "svrkit_client_local_shed_total",
        Unit::Count,
        "Calls a client refused locally because the instance's DAGOR level would refuse them."
    );
    describe_counter!(
        "svrkit_dagor_shed_total",
        Unit::Count,
        "Requests DAGOR admission control refused, by business priority."
    );
    describe_gauge!(
        "svrkit_dagor_level_business",
        "The business priority DAGOR admits up to (lower numbers are more important)."
    );
    describe_gauge!(
        "svrkit_dagor_level_user",
        "The user priority DAGOR admits up to within the business level."
    );
    describe_gauge!(
        "svrkit_dagor_queue_mean_seconds",
        Unit::Seconds,
        "Mean queuing time of the last DAGOR window."
    );
    describe_gauge!(
        "svrkit_dagor_overloaded",
        "1 while the last DAGOR window was overloaded, else 0."
    );
    describe_gauge!(
        "svrkit_discovery_stale",
        "1 while a channel serves its last known instances because the registry is unreachable."
    );
    // Until DAGOR's first window ends, a server admits everything and is not overloaded.
    for gauge in [
        "svrkit_dagor_level_business",
        "svrkit_dagor_level_user",
        "svrkit_dagor_queue_mean_seconds",
        "svrkit_dagor_overloaded",
    ] {
        metrics::gauge!(gauge).set(0.0);
    }
}

/// Cached metric handles of one method over one protocol.
#[derive(Debug)]
pub(crate) struct MethodMetrics {
    desc: &'static MethodDesc,
    protocol: Protocol,
    requests: Counter,
    duration: Histogram,
    queue: Histogram,
    in_flight: Gauge,
    responses: [OnceLock<Counter>; Code::ALL.len()],
    /// Plain counters for `/status` (the facade's values cannot be read back), shared by
    /// the method's protocols.
    pub(crate) stats: Arc<MethodStats>,
}

/// One method's figures as `/status` shows them.
#[derive(Debug, Default)]
pub(crate) struct MethodStats {
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// The errors that were the server's fault ([`Code::is_server_fault`]).
    pub(crate) faults: AtomicU64,
    pub(crate) latency_us_sum: AtomicU64,
    pub(crate) latency: super::latency::LatencyHistogram,
    pub(crate) in_flight: AtomicI64,
    /// Of `requests`, those that came over gRPC.
    pub(crate) grpc_requests: AtomicU64,
}

impl MethodMetrics {
    pub(crate) fn new(
        desc: &'static MethodDesc,
        protocol: Protocol,
        stats: Arc<MethodStats>,
    ) -> MethodMetrics {
        let labels = [
            ("service", desc.service),
            ("method", desc.method),
            ("protocol", protocol.as_str()),
        ];
        MethodMetrics {
            desc,
            protocol,
            requests: metrics::counter!(REQUESTS_TOTAL, &labels),
            duration: metrics::histogram!(REQUEST_DURATION, &labels),
            queue: metrics::histogram!(QUEUE_DURATION, &labels),
            in_flight: metrics::gauge!(IN_FLIGHT, &labels),
            responses: Default::default(),
            stats,
        }
    }

    /// Counts a request on `/status`.
    fn count_request(&self) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if self.protocol == Protocol::Grpc {
            self.stats.grpc_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request was accepted for this method.
    pub(crate) fn started(&self, queued: Duration) {
        self.count_request();
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
        self.count_response(code);
    }

    /// A response with `code` was sent without running the handler (shed, expired in the
    /// queue, refused by policy): a request all the same, so that a rate of errors is
    /// never more than all requests (an overloaded instance reads "errors 63 of 82", not
    /// "63 of 19").
    pub(crate) fn responded(&self, code: Code) {
        self.count_request();
        self.requests.increment(1);
        self.count_response(code);
    }

    /// Counts a response with `code` (its request was counted already).
    fn count_response(&self, code: Code) {
        if code != Code::Ok {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            if code.is_server_fault() {
                self.stats.faults.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (desc, protocol) = (self.desc, self.protocol);
        self.responses[code as usize]
            .get_or_init(|| {
                metrics::counter!(
                    RESPONSES_TOTAL,
                    "service" => desc.service,
                    "method" => desc.method,
                    "protocol" => protocol.as_str(),
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

#[cfg(test)]
mod tests {
    use super::*;

    static DESC: MethodDesc = MethodDesc {
        service: "s.S",
        method: "M",
        idempotent: false,
        timeout: None,
        priority: 0,
        stale_read: false,
    };

    #[test]
    fn server_faults_and_caller_errors_are_counted_apart_and_sheds_are_requests() {
        let m = MethodMetrics::new(&DESC, Protocol::Grpc, Arc::default());
        for code in [
            Code::Ok,
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::Internal,
            Code::Unavailable,
        ] {
            m.started(Duration::ZERO);
            m.finished(code, Duration::from_millis(1));
        }
        // Shed before its handler ran.
        m.responded(Code::Overloaded);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(
            load(&m.stats.requests),
            7,
            "the shed one counts as a request too"
        );
        assert_eq!(load(&m.stats.errors), 6, "every code but ok");
        assert_eq!(load(&m.stats.grpc_requests), 7, "all of them over gRPC");
        assert_eq!(
            load(&m.stats.faults),
            3,
            "internal, unavailable, overloaded"
        );
    }
}
