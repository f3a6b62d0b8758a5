//! A lock-free latency histogram for `/status` percentiles: log-linear buckets (four per
//! power of two of microseconds, so a percentile is within 19 % of the truth), one atomic
//! add per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Number of buckets: exact below 8 µs, then four per power of two up to 2^63 µs.
const BUCKETS: usize = 256;

/// Request latencies of one method.
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// The bucket of `us` microseconds.
fn bucket(us: u64) -> usize {
    if us < 8 {
        return us as usize;
    }
    let log = 63 - us.leading_zeros() as usize; // >= 3
    let sub = ((us >> (log - 2)) & 3) as usize;
    log * 4 + sub
}

/// The largest value in bucket `i`, in microseconds.
fn upper(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let (log, sub) = (i / 4, (i % 4) as u64);
    let step = 1u64 << (log - 2);
    ((4 + sub) << (log - 2)).saturating_add(step - 1)
}

impl LatencyHistogram {
    /// Counts one request that took `took`.
    pub(crate) fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile (0..=1) in milliseconds, 0 with no requests.
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        quantile_of(&self.counts(), q)
    }

    /// Every bucket's count (the difference of two is an interval's histogram).
    pub(crate) fn counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// The `q` quantile (0..=1) in milliseconds of bucket counts, 0 when they are all 0.
pub(crate) fn quantile_of(counts: &[u64], q: f64) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return upper(i) as f64 / 1000.0;
        }
    }
    upper(counts.len().saturating_sub(1)) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_with_bounded_error() {
        let mut last = 0;
        for us in (0..100_000u64).chain([1 << 20, 1 << 40, u64::MAX]) {
            let b = bucket(us);
            assert!(b >= last, "buckets grow with the value");
            assert!(us <= upper(b), "{us} is within bucket {b}");
            assert!(
                upper(b) as f64 <= (us as f64) * 1.25 + 1.0,
                "{us}: {}",
                upper(b)
            );
            last = b;
        }
        assert!(bucket(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_come_from_the_counts() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.99), 0.0);
        for _ in 0..99 {
            h.record(Duration::from_micros(100));
        }
        h.record(Duration::from_millis(50));
        let p50 = h.quantile_ms(0.5);
        assert!((0.1..0.125).contains(&p50), "{p50}");
        let p99 = h.quantile_ms(0.99);
        assert!((0.1..0.125).contains(&p99), "{p99}");
        let max = h.quantile_ms(1.0);
        assert!((50.0..62.5).contains(&max), "{max}");
    }
}
