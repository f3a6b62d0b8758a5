//! How late this process's async runtime runs what is ready: the part of queuing time an
//! async server cannot see per request.
//!
//! DAGOR measures overload as queuing time: the time between a request arriving and its
//! handler starting. A server with a worker limit sees it as the wait for a worker. An
//! async server that polls every handler at once sees almost none, even when its threads
//! are saturated: the wait moves into the runtime's run queue, before the connection's
//! task reads the request at all. A probe task measures that wait: it asks to wake after
//! [`PROBE`] and notes how much later it actually ran. [`Admission`](super::Admission)
//! adds the latest lateness to every request's queuing time, so a process short of CPU
//! sheds by priority like one short of workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the probe asks to run while requests arrive.
pub(crate) const PROBE: Duration = Duration::from_millis(10);
/// After this long without arrivals, the probe checks only once a second (an idle
/// process does not wake 100 times a second).
const IDLE_AFTER: Duration = Duration::from_secs(2);
const IDLE_PROBE: Duration = Duration::from_secs(1);

/// The runtime's latest lateness, shared between the probe and the admission controller.
#[derive(Debug, Default)]
pub struct RuntimeLag {
    /// Microseconds the last probe ran late (timer granularity subtracted).
    late_us: AtomicU64,
    /// Arrivals seen by the controller, so the probe knows whether anyone is asking.
    arrivals: AtomicU64,
}

impl RuntimeLag {
    /// The latest lateness.
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.late_us.load(Ordering::Relaxed))
    }

    /// Notes a request's arrival (keeps the probe awake).
    pub(crate) fn arrived(&self) {
        self.arrivals.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one probe's lateness. A timer fires up to about a millisecond late on an
    /// idle runtime (its granularity); only what is beyond that counts.
    pub fn record(&self, late: Duration) {
        let late_us = late.saturating_sub(Duration::from_millis(1)).as_micros() as u64;
        self.late_us.store(late_us, Ordering::Relaxed);
    }

    /// Probes until `self` is the only reference left (the server and its controller
    /// are gone). Runs on the current tokio runtime.
    pub async fn probe(self: Arc<Self>) {
        let mut seen = self.arrivals.load(Ordering::Relaxed);
        let mut last_arrival = Instant::now();
        while Arc::strong_count(&self) > 1 {
            let now = self.arrivals.load(Ordering::Relaxed);
            if now != seen {
                (seen, last_arrival) = (now, Instant::now());
            }
            let period = if last_arrival.elapsed() < IDLE_AFTER {
                PROBE
            } else {
                self.record(Duration::ZERO);
                IDLE_PROBE
            };
            let asked = Instant::now() + period;
            tokio::time::sleep_until(asked.into()).await;
            self.record(Instant::now().saturating_duration_since(asked));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_beyond_the_timer_granularity_is_what_counts() {
        let lag = RuntimeLag::default();
        lag.record(Duration::from_micros(800));
        assert_eq!(lag.get(), Duration::ZERO);
        lag.record(Duration::from_millis(31));
        assert_eq!(lag.get(), Duration::from_millis(30));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_runtime_kept_busy_shows_as_lateness_and_the_probe_ends_with_its_owner() {
        let lag = Arc::new(RuntimeLag::default());
        lag.arrived();
        let probe = tokio::spawn(Arc::clone(&lag).probe());
        // Let the probe arm its 10 ms timer, then hold the only thread for 60 ms: the
        // probe cannot run before that, so it runs at least 50 ms late.
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(60));
        let mut seen = Duration::ZERO;
        for _ in 0..1000 {
            seen = lag.get();
            if seen > Duration::ZERO {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            seen >= Duration::from_millis(40),
            "the probe ran {seen:?} late"
        );
        drop(lag);
        tokio::time::timeout(Duration::from_secs(5), probe)
            .await
            .expect("the probe stops once its owner is gone")
            .expect("the probe does not panic");
    }
}
