//! Failed logins slow down per account and device: the account's unknown devices share
//! one record, whatever address they come from, and each known device (a credential from
//! an earlier sign-in, [`crate::device`]) has its own. So a stranger guessing passwords
//! slows down every unknown device, rotating addresses gains nothing, and the owner's
//! known devices are never locked out by it.
//!
//! The first [`FREE_FAILURES`] wrong passwords cost nothing. After that, each further
//! failure doubles the wait before the next attempt on that account is even checked
//! (1 s, 2 s, 4 s, … up to [`MAX_WAIT`]); an attempt during the wait is refused at once,
//! before any password is hashed. The real user is never locked out: once the wait is
//! over the right password works, and it clears the record. Rotating source addresses
//! gains nothing, since the record is the account's.
//!
//! Records live in this process's memory, at most [`MAX_RECORDS`] (the oldest quiet ones
//! are dropped first), so with several account instances each counts the attempts it
//! sees.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Wrong passwords allowed before waits begin.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait between attempts.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Accounts tracked at most.
pub const MAX_RECORDS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    not_before: Instant,
    last: Instant,
}

/// The failed-login records of one account instance.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    records: Mutex<HashMap<(u64, u64), Record>>,
}

impl LoginThrottle {
    /// How long `uid` must still wait before an attempt from `device` (a known device's
    /// id; 0 for every unknown one) is checked (`None`: go ahead).
    pub fn wait(&self, uid: u64, device: u64, now: Instant) -> Option<Duration> {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let record = records.get(&(uid, device))?;
        (record.not_before > now).then(|| record.not_before - now)
    }

    /// A wrong password for `uid` from `device` (0: an unknown device).
    pub fn failed(&self, uid: u64, device: u64, now: Instant) {
        let key = (uid, device);
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        if records.len() >= MAX_RECORDS && !records.contains_key(&key) {
            // Forget the quietest tenth.
            let mut by_age: Vec<(Instant, (u64, u64))> =
                records.iter().map(|(k, r)| (r.last, *k)).collect();
            by_age.sort_unstable();
            for (_, u) in by_age.into_iter().take(MAX_RECORDS / 10) {
                records.remove(&u);
            }
        }
        let record = records.entry(key).or_insert(Record {
            failures: 0,
            not_before: now,
            last: now,
        });
        record.failures += 1;
        record.last = now;
        if record.failures >= FREE_FAILURES {
            let doublings = (record.failures - FREE_FAILURES).min(16);
            let wait = Duration::from_secs(1u64 << doublings).min(MAX_WAIT);
            record.not_before = now + wait;
        }
    }

    /// The right password for `uid` from `device`: that device's record is cleared (a
    /// known device's success says nothing of the unknown ones).
    pub fn succeeded(&self, uid: u64, device: u64) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(uid, device));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_after_the_free_failures_double_and_clear_on_success() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            throttle.failed(7, 0, t0);
            assert_eq!(throttle.wait(7, 0, t0), None);
        }
        throttle.failed(7, 0, t0);
        assert_eq!(throttle.wait(7, 0, t0), Some(Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            throttle.wait(7, 0, t1),
            None,
            "the real user gets in after the wait"
        );
        throttle.failed(7, 0, t1);
        assert_eq!(throttle.wait(7, 0, t1), Some(Duration::from_secs(2)));
        for _ in 0..40 {
            throttle.failed(7, 0, t1);
        }
        assert_eq!(throttle.wait(7, 0, t1), Some(MAX_WAIT));
        assert_eq!(
            throttle.wait(8, 0, t1),
            None,
            "other accounts are untouched"
        );
        throttle.succeeded(7, 0);
        assert_eq!(throttle.wait(7, 0, t1), None);
    }

    #[test]
    fn a_known_device_is_never_locked_out_by_the_others() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..20 {
            throttle.failed(7, 0, t0);
        }
        assert!(throttle.wait(7, 0, t0).is_some(), "unknown devices wait");
        assert_eq!(
            throttle.wait(7, 0xd1, t0),
            None,
            "the owner's phone does not"
        );
        for _ in 0..FREE_FAILURES {
            throttle.failed(7, 0xd1, t0);
        }
        assert!(
            throttle.wait(7, 0xd1, t0).is_some(),
            "its own failures count"
        );
        assert_eq!(
            throttle.wait(7, 0xd2, t0),
            None,
            "another known device goes on"
        );
        throttle.succeeded(7, 0xd1);
        assert_eq!(throttle.wait(7, 0xd1, t0), None);
        assert!(
            throttle.wait(7, 0, t0).is_some(),
            "not the unknown devices' record"
        );
    }
}
