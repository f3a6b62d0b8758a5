//! Overload metrics through the `metrics` facade.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `svrkit_dagor_level_business` / `svrkit_dagor_level_user` | gauge | — (0: admits all) |
//! | `svrkit_dagor_queue_mean_seconds` | gauge | — (mean queuing time of the last window) |
//! | `svrkit_dagor_overloaded` | gauge | — (1 when the last window was overloaded) |
//! | `svrkit_dagor_shed_total` | counter | business_priority |
//! | `svrkit_client_local_shed_total` | counter | reason (`collaborative`, `throttle`) |

use std::time::Duration;

/// Records the result of a completed window: the admission level `(b, u)` it set, the
/// mean queuing time, and whether it was overloaded.
pub(crate) fn window((b, u): (u32, u32), mean: Duration, overloaded: bool) {
    metrics::gauge!("svrkit_dagor_level_business").set(f64::from(b));
    metrics::gauge!("svrkit_dagor_level_user").set(f64::from(u));
    metrics::gauge!("svrkit_dagor_queue_mean_seconds").set(mean.as_secs_f64());
    metrics::gauge!("svrkit_dagor_overloaded").set(if overloaded { 1.0 } else { 0.0 });
}

/// The counter of requests a server shed at one business priority.
pub(crate) fn shed_counter(business_priority: u32) -> metrics::Counter {
    metrics::counter!("svrkit_dagor_shed_total", "business_priority" => business_priority.to_string())
}

/// Counts a request a client refused locally.
pub(crate) fn local_shed(reason: &'static str) {
    metrics::counter!("svrkit_client_local_shed_total", "reason" => reason).increment(1);
}
