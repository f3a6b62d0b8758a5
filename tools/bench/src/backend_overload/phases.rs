//! One phase of load: requests on a fixed schedule over every user, then what was
//! counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::client::{Collector, Conn, lock};
use super::mix::{GIVE_UP, MIX, User, kind_of};
use super::report::Tally;

/// The users, their connections and what they report to.
pub(super) struct Load {
    pub(super) users: Arc<Vec<User>>,
    pub(super) conns: Vec<Arc<Conn>>,
    pub(super) collector: Arc<Collector>,
    pub(super) next_id: Arc<AtomicU64>,
    pub(super) weights: [u32; MIX.len()],
    /// The backend's processes, whose CPU each phase measures.
    pub(super) backend_pids: Vec<u32>,
}

impl Load {
    /// CPU time the backend's processes have used so far.
    pub(super) fn backend_cpu(&self) -> Duration {
        self.backend_pids
            .iter()
            .map(|&pid| crate::stats::process_cpu(pid))
            .sum()
    }

    /// The highest goodput of `weights`' mix: the rate starts at `start` requests/s and
    /// grows by half while at least 98 % succeed (3 s phases; a step that fails is tried
    /// once more). If the start is too much already, it halves until a step passes.
    pub(super) async fn ramp(&self, weights: &[u32; MIX.len()], start: f64) -> f64 {
        let mut capacity = 0.0f64;
        let mut rate = start;
        let mut retried = false;
        let mut passed = false;
        loop {
            let tally = self.phase_of(weights, rate, Duration::from_secs(3)).await;
            let (ok, sent) = tally.totals();
            let goodput = ok as f64 / 3.0;
            eprintln!(
                "  {rate:.0}/s offered: {goodput:.0}/s succeeded ({:.1} %)",
                ok as f64 * 100.0 / sent.max(1) as f64
            );
            capacity = capacity.max(goodput);
            if rate > 200_000.0 {
                return capacity;
            }
            if (ok as f64) < 0.98 * sent as f64 {
                // One step may fail by chance (a compaction, a neighbour): it is tried
                // once more before the ramp ends.
                if !retried {
                    retried = true;
                    continue;
                }
                if passed || rate < 2.0 {
                    return capacity;
                }
                (rate, retried) = (rate / 2.0, false);
                continue;
            }
            (passed, retried) = (true, false);
            rate *= 1.5;
        }
    }

    /// Offers `rate` requests/s of the benchmark's mix for one unmeasured second and
    /// then `measured`; returns the measured requests' outcomes once each is answered or
    /// given up on.
    pub(super) async fn phase(&self, rate: f64, measured: Duration) -> Tally {
        self.phase_of(&self.weights, rate, measured).await
    }

    /// [`Load::phase`] with the mix `weights`.
    pub(super) async fn phase_of(
        &self,
        weights: &[u32; MIX.len()],
        rate: f64,
        measured: Duration,
    ) -> Tally {
        let users = self.users.len();
        // Each user sends on its own fixed schedule, offset so sends spread evenly.
        let interval = Duration::from_secs_f64(users as f64 / rate.max(1.0));
        let begin = tokio::time::Instant::now();
        let stop_at = begin + Duration::from_secs(1) + measured;
        let mut senders = tokio::task::JoinSet::new();
        for (i, conn) in self.conns.iter().enumerate() {
            let (all, collector, next_id, conn) = (
                Arc::clone(&self.users),
                Arc::clone(&self.collector),
                Arc::clone(&self.next_id),
                Arc::clone(conn),
            );
            let offset = interval.mul_f64(i as f64 / users as f64);
            let weights = *weights;
            senders.spawn(async move {
                let user = &all[i];
                let mut tick = tokio::time::interval_at(begin + offset, interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                loop {
                    if tick.tick().await >= stop_at {
                        return;
                    }
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    conn.request(id, kind_of(id, &weights), user, &collector);
                }
            });
        }
        tokio::time::sleep_until(begin + Duration::from_secs(1)).await;
        *lock(&self.collector.tally) = Tally::default();
        self.collector.measuring.store(true, Ordering::Relaxed);
        let cpu_before = self.backend_cpu();
        tokio::time::sleep_until(stop_at).await;
        self.collector.measuring.store(false, Ordering::Relaxed);
        let backend_cpu = self.backend_cpu().saturating_sub(cpu_before);
        while senders.join_next().await.is_some() {}
        // What was sent in the window is answered, or given up on, by now.
        tokio::time::sleep(GIVE_UP).await;
        for conn in &self.conns {
            lock(&conn.waiting).clear();
        }
        let mut tally = std::mem::take(&mut *lock(&self.collector.tally));
        tally.backend_cpu = backend_cpu;
        tally
    }
}
