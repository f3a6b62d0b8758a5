//! One instance as a channel sees it: its connection pool and reconnect back-off, its
//! load (for balancing), its outlier-ejection state, and its last admission level.

use crate::selector::Track;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::conn::Conn;
use crate::context::random_u64;
use crate::grpc::Protocol;
use crate::overload::{ADMIT_ALL, level_from_wire};

/// How long an instance's admission level, learnt from its responses, is used to refuse
/// requests locally (one DAGOR window), counted from when the level last changed. After
/// that the client sends everything again until a response tells it the level anew.
pub const ADMISSION_LEVEL_TTL: Duration = Duration::from_secs(1);

/// Consecutive failed calls after which an instance is ejected (a refused connection
/// ejects at once).
pub const EJECT_AFTER_FAILURES: u32 = 5;
/// The first ejection lasts this long; each further one without a success in between
/// doubles it, up to [`EJECT_MAX`].
pub const EJECT_BASE: Duration = Duration::from_millis(500);
/// The longest ejection.
pub const EJECT_MAX: Duration = Duration::from_secs(30);

/// How fast an unrefreshed latency average fades: it halves every this many ms.
pub const LATENCY_HALF_LIFE_MS: u64 = 250;

/// Connection settings an endpoint needs.
#[derive(Debug, Clone)]
pub(crate) struct ConnectSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) max_frame_size: usize,
    /// Mutual TLS, when set.
    pub(crate) tls: Option<crate::tls::ClientTls>,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    /// The protocol every connection speaks, when the channel was told one; otherwise
    /// each endpoint's own ([`Endpoint::protocol`]).
    pub(crate) protocol: Option<Protocol>,
}

/// An instance's share of traffic when its record names none.
pub(crate) const DEFAULT_WEIGHT: u32 = 100;

/// One instance.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    /// The instance's name on the hash ring (its instance id, or its address).
    pub(crate) name: String,
    /// Its release track.
    pub(crate) track: Track,
    /// Its relative share of traffic (from its registry record; 100 by default).
    pub(crate) weight: u32,
    /// The zone its record names (empty when none).
    pub(crate) zone: String,
    /// What it speaks, from its record: svrkit when it lists svrkit (svrkit servers speak
    /// both), gRPC for a plain gRPC server.
    pub(crate) protocol: Protocol,
    slots: Vec<Slot>,
    next_slot: AtomicUsize,
    /// Calls in flight, for balancing.
    pub(crate) in_flight: AtomicUsize,
    /// Moving average of call latency in microseconds, for balancing.
    ewma_us: AtomicU64,
    /// When `ewma_us` was last fed (ms since the channel's epoch).
    ewma_at_ms: AtomicU64,
    failures: AtomicU32,
    ejections: AtomicU32,
    ejected_until_ms: AtomicU64,
    level: AtomicU32,
    level_at_ms: AtomicU64,
    /// A shard of the map with no live instance: no address, every call refused.
    pub(crate) absent: bool,
}

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
    /// Held while connecting, so concurrent callers share one attempt.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct SlotState {
    conn: Option<Conn>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> Option<Conn> {
        self.lock().conn.as_ref().filter(|c| c.is_open()).cloned()
    }

    fn backing_off(&self, now: Instant) -> Option<String> {
        let state = self.lock();
        match state.retry_at {
            Some(at) if at > now => Some(state.last_error.clone()),
            _ => None,
        }
    }
}

/// Why an endpoint could not give a connection.
#[derive(Debug)]
pub(crate) struct ConnectFailed(pub(crate) String);

impl Endpoint {
    pub(crate) fn new(addr: SocketAddr, name: String, track: Track, slots: usize) -> Endpoint {
        Endpoint {
            addr,
            name,
            track,
            weight: DEFAULT_WEIGHT,
            zone: String::new(),
            protocol: Protocol::Svrkit,
            slots: (0..slots.max(1)).map(|_| Slot::default()).collect(),
            next_slot: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            ewma_us: AtomicU64::new(0),
            ewma_at_ms: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            level: AtomicU32::new(ADMIT_ALL),
            level_at_ms: AtomicU64::new(0),
            absent: false,
        }
    }

    /// The endpoint speaking `protocol`.
    pub(crate) fn speaking(mut self, protocol: Protocol) -> Endpoint {
        self.protocol = protocol;
        self
    }

    /// A shard named by its service's map with no live instance: it holds its keys'
    /// place on the ring and refuses their calls (never connecting anywhere).
    pub(crate) fn absent(name: String, slots: usize) -> Endpoint {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut endpoint = Endpoint::new(unspecified, name, Track::Stable, slots);
        endpoint.absent = true;
        endpoint
    }

    /// Places it: its share of traffic and its zone.
    pub(crate) fn placed(mut self, weight: u32, zone: String) -> Endpoint {
        self.weight = weight;
        self.zone = zone;
        self
    }

    /// True when this is a gray-release instance.
    pub(crate) fn is_gray(&self) -> bool {
        self.track.is_gray()
    }

    /// Calls in flight on its open connections.
    pub(crate) fn connection_in_flight(&self) -> usize {
        self.slots
            .iter()
            .filter_map(Slot::open)
            .map(|c| c.in_flight())
            .sum()
    }

    /// The balancing score at `now_ms`: lower is better. The latency average halves for
    /// every [`LATENCY_HALF_LIFE_MS`] it has not been fed, so an instance that stopped
    /// being picked because of one slow call is soon tried again and measured afresh.
    pub(crate) fn load(&self, now_ms: u64) -> u64 {
        let in_flight = self.in_flight.load(Ordering::Relaxed) as u64 + 1;
        let age = now_ms.saturating_sub(self.ewma_at_ms.load(Ordering::Relaxed));
        let ewma = self.ewma_us.load(Ordering::Relaxed) >> (age / LATENCY_HALF_LIFE_MS).min(63);
        in_flight * ewma.max(1)
    }

    /// Folds one call's latency into the moving average (weight 1/5).
    pub(crate) fn observe_latency(&self, took: Duration, now_ms: u64) {
        let sample = took.as_micros().min(u128::from(u32::MAX)) as u64;
        let old = self.ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 4 + sample) / 5
        };
        self.ewma_us.store(new, Ordering::Relaxed);
        self.ewma_at_ms.store(now_ms, Ordering::Relaxed);
    }

    /// True while ejected.
    pub(crate) fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// A call succeeded: the instance is healthy (an ejected one is restored for good).
    pub(crate) fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A call failed in a way that points at the instance; `refused` is a failed connect.
    /// Returns true when this ejected it.
    pub(crate) fn failed(&self, refused: bool, now_ms: u64) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if !refused && failures < EJECT_AFTER_FAILURES {
            return false;
        }
        if self.is_ejected(now_ms) {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let span = EJECT_BASE.saturating_mul(1 << n).min(EJECT_MAX);
        self.ejected_until_ms
            .store(now_ms + span.as_millis() as u64, Ordering::Relaxed);
        tracing::info!(addr = %self.addr, ?span, "svrkit: instance ejected");
        crate::client::metrics::ejected();
        true
    }

    /// True when the instance's recent level says it would shed `priority`.
    pub(crate) fn would_shed(&self, priority: u32, now_ms: impl FnOnce() -> u64) -> bool {
        let level = self.level.load(Ordering::Relaxed);
        level != ADMIT_ALL
            && priority > level
            && now_ms().saturating_sub(self.level_at_ms.load(Ordering::Relaxed))
                < ADMISSION_LEVEL_TTL.as_millis() as u64
    }

    /// Remembers the level a response carried. The TTL runs from when the level last
    /// changed, not from every response: an instance that keeps saying the same level is
    /// sent the full demand again once per TTL, so it sees what its callers were refusing
    /// for it and can relax. The common case costs one load and no clock read.
    pub(crate) fn learn(&self, business: u32, user: u32, now_ms: impl FnOnce() -> u64) {
        let level = level_from_wire(business, user);
        if level != self.level.load(Ordering::Relaxed) {
            self.level.store(level, Ordering::Relaxed);
            self.level_at_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// An open connection from the pool, connecting (once, shared by concurrent callers)
    /// when needed, unless the address is backing off after a failed connect.
    pub(crate) async fn connection(
        &self,
        settings: &ConnectSettings,
        deadline: Instant,
    ) -> Result<Conn, ConnectFailed> {
        // One connection (the default) needs no turn taken: a shared counter moved on
        // every call is a cache line passed between cores.
        let slot = match &self.slots[..] {
            [only] => only,
            slots => &slots[self.next_slot.fetch_add(1, Ordering::Relaxed) % slots.len()],
        };
        if let Some(conn) = slot.open() {
            return Ok(conn);
        }
        // Boxed: connecting (TCP, TLS, a timer) would otherwise make every call's future
        // about 2 KiB larger, allocated and touched on every call for a path taken once
        // per connection.
        Box::pin(self.open_slot(slot, settings, deadline)).await
    }

    /// Connects `slot` (once, shared by concurrent callers), unless it is backing off.
    async fn open_slot(
        &self,
        slot: &Slot,
        settings: &ConnectSettings,
        deadline: Instant,
    ) -> Result<Conn, ConnectFailed> {
        // Off the per-call path: an absent shard never has an open connection, so every
        // call to it comes here.
        if self.absent {
            return Err(ConnectFailed(format!(
                "shard {} has no live instance",
                self.name
            )));
        }
        if let Some(error) = slot.backing_off(Instant::now()) {
            return Err(ConnectFailed(error));
        }
        let _gate = slot.connecting.lock().await;
        if let Some(conn) = slot.open() {
            return Ok(conn);
        }
        if let Some(error) = slot.backing_off(Instant::now()) {
            return Err(ConnectFailed(error));
        }
        let limit = deadline.min(Instant::now() + settings.connect_timeout);
        let attempt = tokio::time::timeout_at(
            limit.into(),
            Conn::connect(
                self.addr,
                settings.protocol.unwrap_or(self.protocol),
                settings.max_frame_size,
                settings.tls.as_ref(),
            ),
        )
        .await;
        let mut state = slot.lock();
        match attempt {
            Ok(Ok(conn)) => {
                state.failures = 0;
                state.retry_at = None;
                state.conn = Some(conn.clone());
                Ok(conn)
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => format!("connect to {}: {e}", self.addr),
                    _ => format!("connect to {}: timed out", self.addr),
                };
                let exp = state.failures.min(16);
                state.failures = state.failures.saturating_add(1);
                let pause = settings
                    .backoff_base
                    .saturating_mul(1 << exp)
                    .min(settings.backoff_max);
                // Up to 20 % jitter so clients that failed together do not return together.
                let jitter = pause.mul_f64((random_u64() % 1000) as f64 / 5000.0);
                state.retry_at = Some(Instant::now() + pause + jitter);
                state.last_error = error.clone();
                tracing::debug!(addr = %self.addr, %error, ?pause, "svrkit connect failed; backing off");
                Err(ConnectFailed(error))
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        for slot in &self.slots {
            if let Some(conn) = slot.lock().conn.take() {
                conn.close();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint::new(([127, 0, 0, 1], 1).into(), "e".into(), Track::Stable, 1)
    }

    #[test]
    fn ejection_backs_off_exponentially_and_a_success_restores() {
        let e = endpoint();
        for _ in 1..EJECT_AFTER_FAILURES {
            assert!(!e.failed(false, 0));
        }
        assert!(e.failed(false, 0), "the fifth consecutive failure ejects");
        assert!(e.is_ejected(0) && e.is_ejected(499) && !e.is_ejected(500));
        // Probed after 500 ms and failed again: ejected twice as long.
        assert!(e.failed(true, 600));
        assert!(e.is_ejected(600 + 999) && !e.is_ejected(600 + 1000));
        e.succeeded();
        // Restored: the next ejection starts from the base again.
        assert!(e.failed(true, 5_000));
        assert!(!e.is_ejected(5_000 + 500));
    }

    #[test]
    fn load_prefers_fewer_calls_and_faster_instances() {
        let fast = endpoint();
        let slow = endpoint();
        fast.observe_latency(Duration::from_micros(100), 0);
        slow.observe_latency(Duration::from_micros(1_000), 0);
        assert!(fast.load(0) < slow.load(0));
        fast.in_flight.store(20, Ordering::Relaxed);
        assert!(fast.load(0) > slow.load(0));
        // A second later the slow one's stale average has faded (4 half-lives: 1,000 -> 62).
        assert_eq!(slow.load(1_000), 62);
    }
}
