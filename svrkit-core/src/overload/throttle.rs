//! Client-side adaptive throttling (Google SRE book, "Handling Overload").
//!
//! Each client remembers, over the last two minutes, how many requests it made and how
//! many the backend accepted, and refuses new ones locally with probability
//! `max(0, (requests - K * accepts) / (requests + 1))`, K = 2. While the backend accepts
//! everything nothing is refused; when it starts refusing, the client sheds most of the
//! doomed traffic itself, at no cost to the backend. K = 2 lets up to twice the accepted
//! rate through, so the client notices recovery quickly.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use tower_layer::Layer;
use tower_service::Service;

use crate::random::random_u64;
use crate::request::{RpcRequest, RpcResponse};
use crate::status::{Code, Status};

/// Settings of [`AdaptiveThrottle`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleConfig {
    /// The multiplier K: requests up to K times the accepted ones pass (2).
    pub k: f64,
    /// How far back requests and accepts are counted (2 minutes).
    pub window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            k: 2.0,
            window: Duration::from_secs(120),
        }
    }
}

/// The SRE formula: probability of refusing the next request locally.
pub(crate) fn reject_probability(requests: u64, accepts: u64, k: f64) -> f64 {
    ((requests as f64 - k * accepts as f64) / (requests as f64 + 1.0)).max(0.0)
}

/// Per-second counts over the window.
#[derive(Debug)]
struct Counts {
    origin: Instant,
    /// `(second, requests, accepts)` ring, one slot per second of the window.
    slots: Vec<(u64, u64, u64)>,
}

impl Counts {
    fn slot(&mut self, now: Instant) -> &mut (u64, u64, u64) {
        let second = now.saturating_duration_since(self.origin).as_secs();
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(second % len) as usize];
        if slot.0 != second {
            *slot = (second, 0, 0);
        }
        slot
    }

    fn totals(&self, now: Instant) -> (u64, u64) {
        let second = now.saturating_duration_since(self.origin).as_secs();
        let len = self.slots.len() as u64;
        self.slots
            .iter()
            .filter(|(s, _, _)| second.saturating_sub(*s) < len)
            .fold((0, 0), |(r, a), (_, sr, sa)| (r + sr, a + sa))
    }
}

#[derive(Debug)]
struct Shared {
    config: ThrottleConfig,
    counts: Mutex<Counts>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request and decides whether to refuse it locally.
    fn should_refuse(&self, now: Instant, random: f64) -> bool {
        let mut counts = self.lock();
        let (requests, accepts) = counts.totals(now);
        counts.slot(now).1 += 1;
        random < reject_probability(requests, accepts, self.config.k)
    }

    fn accepted(&self, now: Instant) {
        self.lock().slot(now).2 += 1;
    }
}

/// The layer; clones share one set of counts.
#[derive(Debug, Clone)]
pub struct AdaptiveThrottleLayer {
    shared: Arc<Shared>,
}

impl AdaptiveThrottleLayer {
    /// A layer with the given settings.
    pub fn new(config: ThrottleConfig) -> AdaptiveThrottleLayer {
        let slots = config.window.as_secs().max(1) as usize;
        AdaptiveThrottleLayer {
            shared: Arc::new(Shared {
                config,
                counts: Mutex::new(Counts {
                    origin: Instant::now(),
                    slots: vec![(u64::MAX, 0, 0); slots],
                }),
            }),
        }
    }
}

impl Default for AdaptiveThrottleLayer {
    fn default() -> Self {
        AdaptiveThrottleLayer::new(ThrottleConfig::default())
    }
}

impl<S> Layer<S> for AdaptiveThrottleLayer {
    type Service = AdaptiveThrottle<S>;

    fn layer(&self, inner: S) -> AdaptiveThrottle<S> {
        AdaptiveThrottle {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Refuses requests locally in proportion to how many the backend has been refusing.
#[derive(Debug, Clone)]
pub struct AdaptiveThrottle<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<RpcRequest> for AdaptiveThrottle<S>
where
    S: Service<RpcRequest, Response = RpcResponse, Error = Status>,
    S::Future: Send + 'static,
{
    type Response = RpcResponse;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<RpcResponse, Status>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: RpcRequest) -> Self::Future {
        let random = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if self.shared.should_refuse(Instant::now(), random) {
            super::metrics::local_shed("throttle");
            let status = Status::overloaded(
                "refused by the client's adaptive throttle: the backend is refusing requests",
            )
            .with_not_processed();
            return Box::pin(std::future::ready(Err(status)));
        }
        let shared = Arc::clone(&self.shared);
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            let refused = matches!(&result, Err(s) if matches!(s.code(), Code::Overloaded | Code::Unavailable));
            if !refused {
                shared.accepted(Instant::now());
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formula_lets_k_times_the_accepts_through() {
        assert_eq!(reject_probability(0, 0, 2.0), 0.0);
        assert_eq!(reject_probability(100, 100, 2.0), 0.0);
        assert_eq!(reject_probability(100, 50, 2.0), 0.0);
        assert!((reject_probability(100, 25, 2.0) - 50.0 / 101.0).abs() < 1e-12);
        assert!((reject_probability(1000, 0, 2.0) - 1000.0 / 1001.0).abs() < 1e-12);
    }

    #[test]
    fn counts_age_out_of_the_window() {
        let layer = AdaptiveThrottleLayer::new(ThrottleConfig {
            k: 2.0,
            window: Duration::from_secs(10),
        });
        let shared = &layer.shared;
        let t0 = shared.lock().origin;
        // 100 requests, none accepted: nearly everything is refused.
        for _ in 0..100 {
            shared.should_refuse(t0, 1.0);
        }
        assert!(shared.should_refuse(t0, 0.98), "p = 100/101");
        // Eleven seconds later the window has forgotten them.
        let later = t0 + Duration::from_secs(11);
        assert!(!shared.should_refuse(later, 0.0));
        for _ in 0..10 {
            shared.accepted(later);
        }
        assert!(!shared.should_refuse(later, 0.0), "all accepted: p = 0");
    }
}
