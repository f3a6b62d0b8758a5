//! Retry and backup-request budgets.
//!
//! A budget earns a fraction of a token for every original request and spends a whole one
//! per retry (or backup request), so retries stay under that fraction of the traffic
//! however badly the backend fails; a retry storm cannot multiply load. The balance is
//! capped so that a long quiet spell does not bank an unbounded burst.

use std::sync::atomic::{AtomicI64, Ordering};

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

#[cfg(test)]
mod tests {
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
}
