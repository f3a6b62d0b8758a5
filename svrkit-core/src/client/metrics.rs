//! Client metrics through the `metrics` facade.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `svrkit_client_retries_total` | counter | reason (`not_processed`, `idempotent`) |
//! | `svrkit_client_retry_budget_exhausted_total` | counter | — |
//! | `svrkit_client_backup_requests_total` | counter | — |
//! | `svrkit_client_ejections_total` | counter | — |
//! | `svrkit_client_local_shed_total` | counter | reason (`collaborative`, `throttle`) |
//! | `svrkit_client_requests_total` | counter | service, method |
//! | `svrkit_client_responses_total` | counter | service, method, code |
//! | `svrkit_client_request_duration_seconds` | histogram | service, method (the whole call, retries and hedges included) |
//!
//! The per-method handles are cached per thread, keyed by the method's descriptor, so a
//! call costs one thread-local lookup and no registry access.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use metrics::{Counter, Histogram};

use crate::method::Method;
use crate::status::Code;

/// Calls completed, per method.
pub(crate) const CLIENT_REQUESTS_TOTAL: &str = "svrkit_client_requests_total";
/// Calls completed, per method and status code.
pub(crate) const CLIENT_RESPONSES_TOTAL: &str = "svrkit_client_responses_total";
/// Time from calling to the answer, per method.
pub(crate) const CLIENT_REQUEST_DURATION: &str = "svrkit_client_request_duration_seconds";

/// One method's handles.
struct MethodHandles {
    service: metrics::SharedString,
    method: metrics::SharedString,
    requests: Counter,
    duration: Histogram,
    responses: [Option<Counter>; Code::ALL.len()],
}

impl MethodHandles {
    fn new(service: metrics::SharedString, method: metrics::SharedString) -> MethodHandles {
        let labels = [("service", service.clone()), ("method", method.clone())];
        MethodHandles {
            requests: metrics::counter!(CLIENT_REQUESTS_TOTAL, &labels),
            duration: metrics::histogram!(CLIENT_REQUEST_DURATION, &labels),
            responses: std::array::from_fn(|_| None),
            service,
            method,
        }
    }

    fn record(&mut self, code: Code, elapsed: Duration) {
        self.requests.increment(1);
        self.duration.record(elapsed.as_secs_f64());
        let (service, method) = (&self.service, &self.method);
        self.responses[code as usize]
            .get_or_insert_with(|| {
                metrics::counter!(
                    CLIENT_RESPONSES_TOTAL,
                    "service" => service.clone(),
                    "method" => method.clone(),
                    "code" => code.as_str()
                )
            })
            .increment(1);
    }
}

thread_local! {
    /// Generated methods' handles, by the address of their static description.
    static HANDLES: RefCell<HashMap<usize, MethodHandles>> = RefCell::new(HashMap::new());
    /// Methods described at run time, by name (bounded: a process calls few of them).
    static DYNAMIC: RefCell<HashMap<(String, String), MethodHandles>> = RefCell::new(HashMap::new());
}

/// Records a finished call of `method`.
pub(crate) fn call_finished(method: &Method, code: Code, elapsed: Duration) {
    match method {
        Method::Static(desc) => HANDLES.with(|handles| {
            handles
                .borrow_mut()
                .entry(std::ptr::from_ref(*desc) as usize)
                .or_insert_with(|| MethodHandles::new(desc.service.into(), desc.method.into()))
                .record(code, elapsed);
        }),
        Method::Dynamic(desc) => DYNAMIC.with(|handles| {
            let mut handles = handles.borrow_mut();
            let key = (desc.service.clone(), desc.method.clone());
            handles
                .entry(key)
                .or_insert_with(|| {
                    MethodHandles::new(desc.service.clone().into(), desc.method.clone().into())
                })
                .record(code, elapsed);
        }),
    }
}

/// A retry was sent.
pub(crate) fn retried(reason: &'static str) {
    metrics::counter!("svrkit_client_retries_total", "reason" => reason).increment(1);
}

/// A retry was wanted but the budget said no.
pub(crate) fn budget_exhausted() {
    metrics::counter!("svrkit_client_retry_budget_exhausted_total").increment(1);
}

/// A backup request was sent.
pub(crate) fn backup_sent() {
    metrics::counter!("svrkit_client_backup_requests_total").increment(1);
}

/// An instance was ejected.
pub(crate) fn ejected() {
    metrics::counter!("svrkit_client_ejections_total").increment(1);
}
