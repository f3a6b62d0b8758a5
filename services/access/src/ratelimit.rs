//! Per-user rate limits: each user may make `rate` requests a second on average, in
//! bursts of up to `burst` — `governor`'s keyed GCRA limiter over a sharded map, so
//! concurrent requests of different users take no common lock.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter as Gcra};

/// Once the map holds this many keys, those whose limit has fully recovered are dropped.
const SWEEP_AT: usize = 100_000;

/// Rate limits keyed by user (or by address before login).
pub struct RateLimiter<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    limiter: Gcra<K, DashMapStateStore<K>, C, NoOpMiddleware<C::Instant>>,
}

impl<K: Hash + Eq + Clone, C: Clock> std::fmt::Debug for RateLimiter<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("keys", &self.limiter.len())
            .finish()
    }
}

/// The largest burst: with the slowest rate (one an hour) the limiter's arithmetic stays
/// within 64-bit nanoseconds.
const MAX_BURST: f64 = 1_000_000.0;

/// `rate` a second (at least one an hour), bursts of `burst` (1 to [`MAX_BURST`]).
fn quota(rate: f64, burst: f64) -> Quota {
    let period = if rate > 0.0 && rate.is_finite() {
        Duration::from_secs_f64((1.0 / rate).min(3_600.0))
    } else {
        Duration::from_secs(3_600)
    };
    let burst = if burst.is_nan() {
        1.0
    } else {
        burst.clamp(1.0, MAX_BURST)
    };
    let burst = NonZeroU32::new(burst as u32).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_hour(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `rate` requests a second, bursts of `burst`.
    pub fn new(rate: f64, burst: f64) -> RateLimiter<K> {
        RateLimiter {
            limiter: Gcra::dashmap(quota(rate, burst)),
        }
    }
}

impl<K: Hash + Eq + Clone, C: Clock> RateLimiter<K, C> {
    /// The same on `clock` (a fake one in tests).
    pub fn with_clock(rate: f64, burst: f64, clock: C) -> RateLimiter<K, C> {
        RateLimiter {
            limiter: Gcra::dashmap_with_clock(quota(rate, burst), clock),
        }
    }

    /// Takes one request's worth for `key`: false when it has none left now.
    pub fn allow(&self, key: &K) -> bool {
        if self.limiter.len() >= SWEEP_AT {
            // Keys whose limit has fully recovered carry no state worth keeping.
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(key).is_ok()
    }

    /// Keys with state now.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// True without keys.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn bursts_then_the_rate_and_users_are_independent() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(10.0, 5.0, clock.clone());
        for _ in 0..5 {
            assert!(limiter.allow(&1u64));
        }
        assert!(!limiter.allow(&1), "the burst is spent");
        assert!(limiter.allow(&2), "another user has their own bucket");
        // 10 a second: one request back after 100 ms, not before.
        clock.advance(Duration::from_millis(50));
        assert!(!limiter.allow(&1));
        clock.advance(Duration::from_millis(60));
        assert!(limiter.allow(&1));
        assert!(!limiter.allow(&1));
        // Idle long enough, the burst is back but no more than it.
        clock.advance(Duration::from_secs(10));
        for _ in 0..5 {
            assert!(limiter.allow(&1));
        }
        assert!(!limiter.allow(&1));
    }

    #[test]
    fn odd_settings_still_limit() {
        let clock = FakeRelativeClock::default();
        for (rate, burst) in [
            (0.0, 0.0),
            (-1.0, 3.0),
            (f64::NAN, f64::INFINITY),
            (1e12, 1.0),
        ] {
            let limiter = RateLimiter::with_clock(rate, burst, clock.clone());
            assert!(limiter.allow(&7u64), "{rate} {burst}: the first passes");
        }
        let tight = RateLimiter::with_clock(0.0, 1.0, clock.clone());
        assert!(tight.allow(&1u64));
        assert!(
            !tight.allow(&1),
            "a zero rate allows the burst, then nothing"
        );
    }
}
