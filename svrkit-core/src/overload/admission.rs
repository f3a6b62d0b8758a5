//! The server's DAGOR admission controller, shared by all its connections.
//!
//! Per request, on arrival: one histogram increment and one comparison with the current
//! level, both lock-free; a request below the level is refused there and then, before its
//! body is decoded or a task is spawned. When its handler starts, its queuing time is added
//! to the window. A window ends after [`DagorConfig::window`] or
//! [`DagorConfig::window_requests`], whichever comes first; the request that ends it takes
//! a lock, computes the next level from the window's histogram and resets the window.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::lag::RuntimeLag;
use super::level::{next_level, probe_up};
use super::priority::{ADMIT_ALL, BUSINESS_LEVELS, LEVELS, Priority, USER_LEVELS, level_to_wire};

/// DAGOR's settings; the defaults are the published ones (WeChat, SoCC 2018).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DagorConfig {
    /// A window ends after this long… (1 s)
    pub window: Duration,
    /// …or after this many requests, whichever comes first (2,000).
    pub window_requests: u32,
    /// Overloaded when a window's mean queuing time exceeds this (20 ms).
    pub queue_threshold: Duration,
    /// Fraction fewer requests to admit after an overloaded window (5 %).
    pub alpha: f64,
    /// Fraction more requests to admit after a healthy window (1 %).
    pub beta: f64,
    /// An overloaded window whose mean queuing time fell fast enough to be under the
    /// threshold within this many more windows (at the fall of the last one) keeps the
    /// level (2; 0 is the paper's rule of lowering after every overloaded window).
    ///
    /// Queuing time lags the level: requests admitted before a cut still wait behind the
    /// backlog, so a window or two after the cut still look overloaded while the queue
    /// is already draining. Cutting again for each of them sheds far below what the
    /// server can do, and the way back up is 1 % a window. Not lowering while the queue
    /// falls that fast leaves the cut that is already working to finish; a queue that
    /// grows, stays or falls slowly is still cut every window.
    pub drain_windows: u32,
}

impl Default for DagorConfig {
    fn default() -> Self {
        DagorConfig {
            window: Duration::from_secs(1),
            window_requests: 2_000,
            queue_threshold: Duration::from_millis(20),
            alpha: 0.05,
            beta: 0.01,
            drain_windows: 2,
        }
    }
}

/// A point-in-time view of the controller, for `/status` and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionSnapshot {
    /// The current level: the least important priority still admitted (`None`: all).
    pub level: Option<Priority>,
    /// Mean queuing time of the last completed window.
    pub last_window_queue_mean: Duration,
    /// Whether the last completed window was overloaded.
    pub last_window_overloaded: bool,
    /// Windows completed so far.
    pub windows: u64,
    /// Requests shed so far, by business priority (index 0 is priority 1).
    pub shed_by_business_priority: Vec<(u32, u64)>,
}

/// Admission state of one server.
#[derive(Debug)]
pub struct Admission {
    config: DagorConfig,
    epoch: Instant,
    level: AtomicU32,
    histogram: Box<[AtomicU32]>,
    /// One bit per business priority that arrived in this window, so ending a window
    /// resets only the histogram rows that were written (the histogram has 32,640 cells;
    /// a window usually touches a few rows).
    touched: [AtomicU64; TOUCHED_WORDS],
    arrivals: AtomicU32,
    queue_sum_us: AtomicU64,
    queue_count: AtomicU32,
    window_start_us: AtomicU64,
    shed: Box<[AtomicU64]>,
    shed_counters: Box<[OnceLock<metrics::Counter>]>,
    roll: Mutex<RollState>,
    /// The runtime's lateness, added to every request's queuing time.
    lag: Arc<RuntimeLag>,
}

/// Words of the `touched` bitmap: one bit per business priority.
const TOUCHED_WORDS: usize = (BUSINESS_LEVELS as usize).div_ceil(64);

#[derive(Debug, Default)]
struct RollState {
    scratch: Vec<u32>,
    windows: u64,
    last_mean: Duration,
    last_overloaded: bool,
}

impl Admission {
    /// A controller that starts admitting everything.
    pub fn new(config: DagorConfig) -> Admission {
        Admission {
            config,
            epoch: Instant::now(),
            level: AtomicU32::new(ADMIT_ALL),
            histogram: (0..LEVELS).map(|_| AtomicU32::new(0)).collect(),
            touched: std::array::from_fn(|_| AtomicU64::new(0)),
            arrivals: AtomicU32::new(0),
            queue_sum_us: AtomicU64::new(0),
            queue_count: AtomicU32::new(0),
            window_start_us: AtomicU64::new(0),
            shed: (0..BUSINESS_LEVELS).map(|_| AtomicU64::new(0)).collect(),
            shed_counters: (0..BUSINESS_LEVELS).map(|_| OnceLock::new()).collect(),
            roll: Mutex::new(RollState::default()),
            lag: Arc::default(),
        }
    }

    /// The runtime lateness this controller adds to queuing times. A server runs its
    /// probe ([`RuntimeLag::probe`]) while it serves.
    pub fn lag(&self) -> &Arc<RuntimeLag> {
        &self.lag
    }

    /// The settings.
    pub fn config(&self) -> &DagorConfig {
        &self.config
    }

    /// The current level index (see [`Priority::index`]).
    pub fn level(&self) -> u32 {
        self.level.load(Ordering::Relaxed)
    }

    /// The current level as the two response-header fields.
    pub fn wire_level(&self) -> (u32, u32) {
        level_to_wire(self.level())
    }

    /// Counts an arriving request and decides whether to admit it.
    pub fn admit(&self, priority: Priority, arrival: Instant) -> bool {
        let now_us = self.micros(arrival);
        let window_us = self.config.window.as_micros() as u64;
        if now_us.saturating_sub(self.window_start_us.load(Ordering::Relaxed)) >= window_us {
            // The window's time is up: it ends before this request is judged, so the first
            // request after a quiet spell meets the level the quiet earned, not the one the
            // last busy window left.
            self.roll(now_us);
        }
        let index = priority.index();
        self.histogram[index as usize].fetch_add(1, Ordering::Relaxed);
        let row = (index / USER_LEVELS) as usize;
        let (word, bit) = (&self.touched[row / 64], 1u64 << (row % 64));
        // A plain load first: the row is almost always marked already. (An increment that
        // races with the end of a window may be counted in a later window of its row.)
        if word.load(Ordering::Relaxed) & bit == 0 {
            word.fetch_or(bit, Ordering::Relaxed);
        }
        let admitted = index <= self.level.load(Ordering::Relaxed);
        if !admitted {
            let b = (priority.business - 1) as usize;
            self.shed[b].fetch_add(1, Ordering::Relaxed);
            self.shed_counters[b]
                .get_or_init(|| super::metrics::shed_counter(priority.business))
                .increment(1);
        }
        let arrivals = self.arrivals.fetch_add(1, Ordering::Relaxed) + 1;
        if arrivals % 64 == 1 {
            self.lag.arrived();
        }
        if arrivals >= self.config.window_requests {
            self.roll(now_us);
        }
        admitted
    }

    /// Whether a request admitted earlier still passes the current level (checked again
    /// when it leaves the worker queue). Counted as shed when it does not.
    pub fn still_admitted(&self, priority: Priority) -> bool {
        if priority.index() <= self.level.load(Ordering::Relaxed) {
            return true;
        }
        let b = (priority.business - 1) as usize;
        self.shed[b].fetch_add(1, Ordering::Relaxed);
        self.shed_counters[b]
            .get_or_init(|| super::metrics::shed_counter(priority.business))
            .increment(1);
        false
    }

    /// Records how long an admitted request waited before its handler started; the
    /// runtime's current lateness is added (see [`RuntimeLag`]).
    pub fn started(&self, queued: Duration) {
        let queued = queued + self.lag.get();
        self.queue_sum_us
            .fetch_add(queued.as_micros() as u64, Ordering::Relaxed);
        self.queue_count.fetch_add(1, Ordering::Relaxed);
    }

    /// The state for operators.
    pub fn snapshot(&self) -> AdmissionSnapshot {
        let level = self.level();
        let roll = self
            .roll
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        AdmissionSnapshot {
            level: (level < ADMIT_ALL).then(|| Priority::from_index(level)),
            last_window_queue_mean: roll.last_mean,
            last_window_overloaded: roll.last_overloaded,
            windows: roll.windows,
            shed_by_business_priority: self
                .shed
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    let n = n.load(Ordering::Relaxed);
                    (n > 0).then_some((i as u32 + 1, n))
                })
                .collect(),
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Whether the mean queuing time, `last` a window ago and `mean` now, falls fast enough
    /// to be under the threshold within [`DagorConfig::drain_windows`] more windows.
    fn draining(&self, mean: Duration, last: Duration) -> bool {
        let windows = self.config.drain_windows;
        windows > 0
            && mean < last
            && mean.saturating_sub((last - mean).saturating_mul(windows))
                <= self.config.queue_threshold
    }

    /// Ends the window (if no other request is already doing so) and moves the level.
    fn roll(&self, now_us: u64) {
        let Ok(mut state) = self.roll.try_lock() else {
            return;
        };
        // Another request may have rolled the window between our check and the lock.
        let window_us = self.config.window.as_micros() as u64;
        if self.arrivals.load(Ordering::Relaxed) < self.config.window_requests
            && now_us.saturating_sub(self.window_start_us.load(Ordering::Relaxed)) < window_us
        {
            return;
        }
        let state = &mut *state;
        state.scratch.clear();
        state.scratch.resize(self.histogram.len(), 0);
        for (w, word) in self.touched.iter().enumerate() {
            let mut rows = word.swap(0, Ordering::Relaxed);
            while rows != 0 {
                let row = w * 64 + rows.trailing_zeros() as usize;
                rows &= rows - 1;
                let cells = row * USER_LEVELS as usize..(row + 1) * USER_LEVELS as usize;
                for (slot, cell) in state.scratch[cells.clone()]
                    .iter_mut()
                    .zip(&self.histogram[cells])
                {
                    *slot = cell.swap(0, Ordering::Relaxed);
                }
            }
        }
        self.arrivals.store(0, Ordering::Relaxed);
        let sum = self.queue_sum_us.swap(0, Ordering::Relaxed);
        let count = self.queue_count.swap(0, Ordering::Relaxed);
        let elapsed_us = now_us.saturating_sub(self.window_start_us.load(Ordering::Relaxed));
        self.window_start_us.store(now_us, Ordering::Relaxed);
        // Any arrival after the window's time was up would have ended it, so when it ends
        // this late, whole windows passed with nothing arriving at all: healthy windows
        // without demand, each of which probes one step up (see `next_level`).
        let quiet = (elapsed_us / window_us.max(1)).saturating_sub(1);

        let mean = Duration::from_micros(sum.checked_div(u64::from(count)).unwrap_or(0));
        let overloaded = mean > self.config.queue_threshold;
        let current = self.level();
        let mut next = if overloaded && self.draining(mean, state.last_mean) {
            current
        } else {
            next_level(
                &state.scratch,
                current,
                overloaded,
                self.config.alpha,
                self.config.beta,
            )
        };
        for _ in 0..quiet.min(u64::from(LEVELS)) {
            if next >= ADMIT_ALL {
                break;
            }
            next = probe_up(next);
        }
        self.level.store(next, Ordering::Relaxed);
        state.windows += 1;
        state.last_mean = if quiet > 0 { Duration::ZERO } else { mean };
        state.last_overloaded = overloaded && quiet == 0;
        if next != current {
            tracing::debug!(
                from = ?level_to_wire(current),
                to = ?level_to_wire(next),
                queue_mean_ms = mean.as_secs_f64() * 1e3,
                "DAGOR admission level moved"
            );
        }
        super::metrics::window(self.wire_level(), mean, overloaded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window_requests: u32) -> DagorConfig {
        DagorConfig {
            window: Duration::from_secs(3600),
            window_requests,
            ..DagorConfig::default()
        }
    }

    #[test]
    fn a_slow_window_lowers_the_level_and_sheds_the_lowest_priorities_first() {
        let adm = Admission::new(config(100));
        let t = Instant::now();
        // 100 requests over users 1..=100 of business priority 5, each queued 50 ms.
        for user in 1..=100 {
            assert!(adm.admit(Priority::new(5, user), t), "admit-all at first");
            adm.started(Duration::from_millis(50));
        }
        let level = adm.level();
        assert!(
            level < ADMIT_ALL,
            "the 100th request ended an overloaded window"
        );
        assert_eq!(
            Priority::from_index(level),
            Priority::new(5, 95),
            "5 % fewer: users 96..=100 go"
        );
        assert!(adm.admit(Priority::new(5, 95), t));
        assert!(!adm.admit(Priority::new(5, 96), t));
        assert!(
            adm.admit(Priority::new(1, 128), t),
            "more important business priority passes"
        );
        assert!(
            !adm.admit(Priority::new(6, 1), t),
            "less important business priority is shed"
        );
        let snap = adm.snapshot();
        assert!(snap.last_window_overloaded);
        assert_eq!(snap.last_window_queue_mean, Duration::from_millis(50));
        assert_eq!(snap.shed_by_business_priority, vec![(5, 1), (6, 1)]);
    }

    /// Ends one window of `config(100)`: 100 requests of business priority 5 over users
    /// 1..=100, each queued `queued`.
    fn window_of(adm: &Admission, queued: Duration) {
        let t = Instant::now();
        for user in 1..=100 {
            adm.admit(Priority::new(5, user), t);
            adm.started(queued);
        }
    }

    #[test]
    fn a_queue_already_draining_fast_is_not_cut_again() {
        let adm = Admission::new(config(100));
        window_of(&adm, Duration::from_millis(200));
        let after_cut = adm.level();
        assert_eq!(Priority::from_index(after_cut), Priority::new(5, 95));
        // Still overloaded, but 200 -> 60 ms: under 20 ms within two more windows at
        // that fall. The level stays.
        window_of(&adm, Duration::from_millis(60));
        assert_eq!(adm.level(), after_cut);
        assert!(adm.snapshot().last_window_overloaded);
        // 60 -> 50 ms falls too slowly (30 ms two windows on): cut again.
        window_of(&adm, Duration::from_millis(50));
        assert!(adm.level() < after_cut);
        // A queue that grows is cut every window.
        let level = adm.level();
        window_of(&adm, Duration::from_millis(80));
        assert!(adm.level() < level);
    }

    #[test]
    fn without_drain_windows_every_overloaded_window_cuts_as_in_the_paper() {
        let adm = Admission::new(DagorConfig {
            drain_windows: 0,
            ..config(100)
        });
        window_of(&adm, Duration::from_millis(200));
        let after_cut = adm.level();
        window_of(&adm, Duration::from_millis(60));
        assert!(adm.level() < after_cut);
    }

    #[test]
    fn ending_a_window_empties_every_row_that_arrived_and_only_those_count() {
        let adm = Admission::new(config(4));
        let t = Instant::now();
        // Rows in three different words of the bitmap.
        for business in [1, 70, 200] {
            adm.admit(Priority::new(business, 3), t);
        }
        adm.admit(Priority::new(255, 128), t);
        assert_eq!(adm.snapshot().windows, 1, "the 4th arrival ends the window");
        assert!(
            adm.histogram.iter().all(|c| c.load(Ordering::Relaxed) == 0),
            "every written cell was reset"
        );
        assert!(adm.touched.iter().all(|w| w.load(Ordering::Relaxed) == 0));
        adm.admit(Priority::new(70, 3), t);
        let cell = Priority::new(70, 3).index() as usize;
        assert_eq!(adm.histogram[cell].load(Ordering::Relaxed), 1);
        assert_ne!(adm.touched[1].load(Ordering::Relaxed) & (1 << (69 - 64)), 0);
    }

    #[test]
    fn a_fast_window_relaxes_and_the_time_limit_also_ends_windows() {
        let adm = Admission::new(DagorConfig {
            window: Duration::from_millis(10),
            window_requests: 1_000_000,
            ..DagorConfig::default()
        });
        let t0 = Instant::now();
        adm.level
            .store(Priority::new(5, 50).index(), Ordering::Relaxed);
        for user in 1..=128 {
            adm.admit(Priority::new(5, user), t0);
            adm.started(Duration::from_millis(1));
        }
        // Nothing rolls before the window's time is up...
        assert_eq!(adm.snapshot().windows, 0);
        // ...and the first request after it ends the window healthy: the level relaxes.
        adm.admit(Priority::new(5, 1), t0 + Duration::from_millis(11));
        let snap = adm.snapshot();
        assert_eq!(snap.windows, 1);
        assert!(!snap.last_window_overloaded);
        assert!(adm.level() > Priority::new(5, 50).index());
    }

    #[test]
    fn quiet_windows_relax_the_level_before_the_next_request_is_judged() {
        let quiet_for = |windows: u32| {
            let adm = Admission::new(DagorConfig {
                window: Duration::from_millis(10),
                window_requests: 1_000_000,
                ..DagorConfig::default()
            });
            // A burst left the level shedding the last two user priorities of business 5.
            adm.level
                .store(Priority::new(5, 126).index(), Ordering::Relaxed);
            let at =
                adm.epoch + Duration::from_millis(10) * (windows + 1) + Duration::from_millis(5);
            (adm.admit(Priority::new(6, 1), at), adm)
        };
        // The window that was open ends healthy and empty: one step, (5, 127); the next
        // request of business priority 6 is still shed, and judged after the step.
        let (admitted, adm) = quiet_for(0);
        assert!(!admitted);
        assert_eq!(adm.level(), Priority::new(5, 127).index());
        // One quiet window more: (5, 128), the last of business priority 5.
        let (admitted, adm) = quiet_for(1);
        assert!(!admitted);
        assert_eq!(adm.level(), Priority::new(5, 128).index());
        // Two: business priority 5 is whole, everything is admitted again, and that
        // request is the first of the new window.
        let (admitted, adm) = quiet_for(2);
        assert!(admitted, "a server quiet for three windows admits again");
        assert_eq!(adm.level(), ADMIT_ALL);
        let snap = adm.snapshot();
        assert_eq!(snap.windows, 1);
        assert!(!snap.last_window_overloaded);
    }
}
