//! When a call sends a backup request: the hedging policy of a channel.
//!
//! An idempotent call that has not been answered after the backup delay may send the same
//! request to another instance and take whichever answer comes first (backup requests, as
//! in "The Tail at Scale"). Backups have a budget of their own, apart from retries, so
//! that hedging adds at most a tenth of the traffic however slow the backend gets. The
//! policy decides on values alone; the channel's `backup` module does the sending.

use std::time::Duration;

use super::retry::RetryBudget;

/// Backup requests allowed per hedged call: 10 %.
const BACKUP_RATIO: f64 = 0.1;
/// The most backup requests the budget can bank.
const BACKUP_RESERVE: u32 = 10;

/// The backup-request rules of one channel.
#[derive(Debug)]
pub(crate) struct HedgePolicy {
    delay: Option<Duration>,
    backups: RetryBudget,
}

impl HedgePolicy {
    /// Backup requests after `delay` (none when `None`), within 10 % of hedged calls.
    pub(crate) fn new(delay: Option<Duration>) -> HedgePolicy {
        HedgePolicy {
            delay,
            backups: RetryBudget::new(BACKUP_RATIO, BACKUP_RESERVE),
        }
    }

    /// A call begins: the backup delay, when the call may have a backup request (it then
    /// earns its share of the backup budget).
    pub(crate) fn begin(&self, idempotent: bool) -> Option<Duration> {
        let delay = self.delay.filter(|_| idempotent);
        if delay.is_some() {
            self.backups.deposit();
        }
        delay
    }

    /// Whether a backup request may go now (it spends a token).
    pub(crate) fn admit_backup(&self) -> bool {
        self.backups.withdraw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_calls_get_backups_within_their_budget() {
        let p = HedgePolicy::new(Some(Duration::from_millis(5)));
        assert_eq!(p.begin(false), None);
        assert_eq!(p.begin(true), Some(Duration::from_millis(5)));
        assert_eq!(HedgePolicy::new(None).begin(true), None);
        let backups = (0..1_000).filter(|_| p.admit_backup()).count();
        assert!(backups <= 10, "{backups}");
    }
}
