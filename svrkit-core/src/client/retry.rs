//! When a call is repeated: the retry policy of a channel, and the budget that bounds
//! retries and backup requests. The policy decides on values alone (a status, a count, two
//! instants), so every rule here is tested without a socket.
//!
//! A budget earns a fraction of a token for every original request and spends a whole one
//! per retry (or backup request), so retries stay under that fraction of the traffic
//! however badly the backend fails; a retry storm cannot multiply load. The balance is
//! capped so that a long quiet spell does not bank an unbounded burst.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use crate::status::{Code, Status};

/// Retries (or backups) allowed per original request: 10 % (Google SRE).
pub const DEFAULT_RETRY_RATIO: f64 = 0.1;
/// The most retries a budget can bank.
pub const DEFAULT_RETRY_RESERVE: u32 = 100;
/// Retries a new budget starts with, so a fresh client can ride out a first failure.
pub const INITIAL_RETRIES: u32 = 10;

const MILLI: i64 = 1_000;

/// A token bucket in thousandths of a retry.
#[derive(Debug)]
pub struct RetryBudget {
    earn: i64,
    cap: i64,
    balance: AtomicI64,
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per request, banking at most `reserve`.
    pub fn new(ratio: f64, reserve: u32) -> RetryBudget {
        RetryBudget {
            earn: (ratio * MILLI as f64).round() as i64,
            cap: i64::from(reserve) * MILLI,
            balance: AtomicI64::new(i64::from(INITIAL_RETRIES.min(reserve)) * MILLI),
        }
    }

    /// Credits one original request. A full budget (the steady state of a healthy
    /// backend) costs a single load, no write: no cache-line ping-pong between callers.
    pub fn deposit(&self) {
        if self.balance.load(Ordering::Relaxed) < self.cap {
            let _ = self
                .balance
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some((b + self.earn).min(self.cap))
                });
        }
    }

    /// Takes one retry if the balance allows.
    pub fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= MILLI).then_some(b - MILLI)
            })
            .is_ok()
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(DEFAULT_RETRY_RATIO, DEFAULT_RETRY_RESERVE)
    }
}

/// When a failed call is repeated, on another instance: the retry rules of one channel.
///
/// - A failed attempt is repeated only when it provably never ran (`not processed`: a
///   refused connection, a shed before dispatch, "not mine") or when the method is
///   idempotent and the failure is `UNAVAILABLE`; never when the callee passed the failure
///   on from further down (only the caller next to a failure retries); never past the
///   attempt limit or the deadline.
/// - A repeat of a request that was sent costs a token of the retry budget; one that never
///   left costs nothing.
///
/// Backup requests (hedging) are a separate policy, [`super::hedge::HedgePolicy`], with a
/// budget of their own, as `tower::retry` and `tower::hedge` are separate layers.
#[derive(Debug)]
pub(crate) struct RetryPolicy {
    max_attempts: u32,
    retries: RetryBudget,
}

impl RetryPolicy {
    /// At most `max_attempts` attempts per call, retries within `retry_ratio`.
    pub(crate) fn new(max_attempts: u32, retry_ratio: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            retries: RetryBudget::new(retry_ratio, DEFAULT_RETRY_RESERVE),
        }
    }

    /// A call begins: it earns its share of the retry budget.
    pub(crate) fn begin(&self) {
        self.retries.deposit();
    }

    /// Why the call should be repeated after `status`, if it should: `attempts` made so far
    /// (at most `cap`, what the caller can track), `now` against the call's `deadline`.
    pub(crate) fn retry_reason(
        &self,
        status: &Status,
        idempotent: bool,
        attempts: usize,
        cap: usize,
        now: Instant,
        deadline: Instant,
    ) -> Option<&'static str> {
        let reason = if status.is_passed_on() {
            // Only the caller next to the failure retries it.
            return None;
        } else if status.is_not_processed() {
            "not_processed"
        } else if idempotent && status.code() == Code::Unavailable {
            "idempotent"
        } else {
            return None;
        };
        let out_of_attempts = attempts >= (self.max_attempts as usize).min(cap);
        (!out_of_attempts && now < deadline).then_some(reason)
    }

    /// Whether a retry may go now; one of a request that was `sent` spends a token.
    pub(crate) fn admit_retry(&self, sent: bool) -> bool {
        !sent || self.retries.withdraw()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retries_stay_under_the_ratio() {
        let budget = RetryBudget::new(0.1, 100);
        // Spend the starting balance first.
        let initial = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(initial, INITIAL_RETRIES as usize);
        let mut retries = 0;
        for _ in 0..1_000 {
            budget.deposit();
            // A backend that fails everything: try to retry every request.
            if budget.withdraw() {
                retries += 1;
            }
        }
        assert_eq!(retries, 100, "10 % of 1,000");
        assert!(!budget.withdraw());
    }

    #[test]
    fn the_reserve_caps_what_quiet_time_banks() {
        let budget = RetryBudget::new(0.1, 5);
        for _ in 0..10_000 {
            budget.deposit();
        }
        let burst = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(burst, 5);
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::new(3, 0.1)
    }

    #[test]
    fn only_unprocessed_or_idempotent_unavailable_failures_are_repeated() {
        let p = policy();
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let unavailable = Status::unavailable("down");
        let shed = Status::overloaded("shed").with_not_processed();
        let cases: [(&Status, bool, Option<&str>); 8] = [
            (&shed, false, Some("not_processed")),
            (&shed, true, Some("not_processed")),
            (&unavailable, true, Some("idempotent")),
            (&unavailable, false, None),
            (&Status::internal("bug"), true, None),
            (&Status::deadline_exceeded("late"), true, None),
            (&Status::not_found("no"), true, None),
            (&Status::unavailable("below").passed_on(), true, None),
        ];
        for (status, idempotent, want) in cases {
            assert_eq!(
                p.retry_reason(status, idempotent, 1, 8, now, later),
                want,
                "{status} idempotent={idempotent}"
            );
        }
        // A passed-on "not processed" (from a hop further down) is not repeated either.
        let passed = Status::unavailable("x").with_not_processed().passed_on();
        assert_eq!(p.retry_reason(&passed, true, 1, 8, now, later), None);
    }

    #[test]
    fn attempts_and_the_deadline_bound_retries() {
        let p = policy();
        let now = Instant::now();
        let status = Status::unavailable("down");
        assert!(
            p.retry_reason(&status, true, 2, 8, now, now + Duration::from_secs(1))
                .is_some()
        );
        assert_eq!(
            p.retry_reason(&status, true, 3, 8, now, now + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            p.retry_reason(&status, true, 1, 1, now, now + Duration::from_secs(1)),
            None,
            "the caller's cap"
        );
        assert_eq!(
            p.retry_reason(&status, true, 1, 8, now, now),
            None,
            "the deadline"
        );
        let one = RetryPolicy::new(0, 0.1);
        assert_eq!(
            one.retry_reason(&status, true, 1, 8, now, now + Duration::from_secs(1)),
            None,
            "at least one attempt, no more"
        );
    }

    #[test]
    fn sent_retries_spend_the_budget_and_unsent_ones_are_free() {
        let p = RetryPolicy::new(3, 0.1);
        let mut admitted = 0;
        for _ in 0..1_000 {
            p.begin();
            if p.admit_retry(true) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, INITIAL_RETRIES as usize + 100);
        assert!(!p.admit_retry(true));
        assert!(
            p.admit_retry(false),
            "a request that never left costs nothing"
        );
    }
}
