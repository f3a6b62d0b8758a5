//! Client metrics through the `metrics` facade.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `svrkit_client_retries_total` | counter | reason (`not_processed`, `idempotent`) |
//! | `svrkit_client_retry_budget_exhausted_total` | counter | — |
//! | `svrkit_client_backup_requests_total` | counter | — |
//! | `svrkit_client_ejections_total` | counter | — |
//! | `svrkit_client_local_shed_total` | counter | reason (`collaborative`, `throttle`) |

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
