//! Per-user token buckets: each user may make `rate` requests a second on average, in
//! bursts of up to `burst`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Token buckets keyed by user (or by address before login).
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets idle this long are dropped when the map is swept.
const IDLE_SECS: f64 = 60.0;
/// The map is swept once it holds this many buckets.
const SWEEP_AT: usize = 100_000;

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `rate` requests a second, bursts of `burst`.
    pub fn new(rate: f64, burst: f64) -> RateLimiter<K> {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key` at `now`: false when the bucket is empty.
    pub fn allow_at(&self, key: &K, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, b| now.duration_since(b.at).as_secs_f64() < IDLE_SECS);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// [`RateLimiter::allow_at`] now.
    pub fn allow(&self, key: &K) -> bool {
        self.allow_at(key, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_the_rate_and_users_are_independent() {
        let limiter = RateLimiter::new(10.0, 5.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.allow_at(&1u64, t0));
        }
        assert!(!limiter.allow_at(&1, t0), "the burst is spent");
        assert!(
            limiter.allow_at(&2, t0),
            "another user has their own bucket"
        );
        // 10 a second: one token back after 100 ms, not before.
        assert!(!limiter.allow_at(&1, t0 + Duration::from_millis(50)));
        assert!(limiter.allow_at(&1, t0 + Duration::from_millis(160)));
        assert!(!limiter.allow_at(&1, t0 + Duration::from_millis(170)));
        // Idle long enough, the bucket is full again but no fuller.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..5 {
            assert!(limiter.allow_at(&1, later));
        }
        assert!(!limiter.allow_at(&1, later));
    }
}
