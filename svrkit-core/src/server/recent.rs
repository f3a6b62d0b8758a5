//! Recent requests, as brpc's rpcz shows them: the last [`RECENT`] sampled calls of a
//! server (method, caller, status, latency, trace and span ids, protocol), and the
//! [`SLOWEST`] slowest calls of the last minute kept apart, sampled or not.
//!
//! Sampling is by trace id (one trace in [`SAMPLE_ONE_IN`]), so every process a sampled
//! trace passes through records its hop, and `svrkit console` can draw the whole trace as
//! a waterfall from the instances' `/rpcz`. A call that is not sampled costs a mask test
//! and, at its end, one relaxed load (is it among the slowest?).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::grpc::Protocol;
use crate::status::Code;

/// Sampled calls kept.
pub const RECENT: usize = 256;
/// Slowest calls kept per minute.
pub const SLOWEST: usize = 16;
/// One trace in this many is sampled (a power of two).
pub const SAMPLE_ONE_IN: u64 = 64;

/// One call as rpcz shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// When the request arrived, in microseconds since the Unix epoch.
    pub at_unix_us: u64,
    /// Fully qualified service name.
    pub service: &'static str,
    /// Method name.
    pub method: &'static str,
    /// The caller (verified by mutual TLS, else as declared); empty when none.
    pub caller: String,
    /// How it ended.
    pub code: Code,
    /// From arrival to answer, in microseconds.
    pub latency_us: u64,
    /// The 128-bit trace id, high half (0 for svrkit's 64-bit ids).
    pub trace_id_high: u64,
    /// The trace id, low half.
    pub trace_id: u64,
    /// This call's span at the server.
    pub span_id: u64,
    /// The caller's span (0: none).
    pub parent_span_id: u64,
    /// The protocol it came over.
    pub protocol: Protocol,
}

/// What is known of a call when it starts, for recording it when it ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallNote {
    pub(crate) arrival: Instant,
    pub(crate) trace_id_high: u64,
    pub(crate) trace_id: u64,
    pub(crate) span_id: u64,
    pub(crate) parent_span_id: u64,
    pub(crate) protocol: Protocol,
}

impl CallNote {
    /// The note of a call arriving at `arrival` with `ctx`, over `protocol`.
    pub(crate) fn of(ctx: &crate::Context, arrival: Instant, protocol: Protocol) -> CallNote {
        CallNote {
            arrival,
            trace_id_high: ctx.trace_id_high(),
            trace_id: ctx.trace_id(),
            span_id: ctx.span_id(),
            parent_span_id: ctx.parent_span_id(),
            protocol,
        }
    }

    /// Whether this call's trace is sampled.
    pub(crate) fn sampled(&self) -> bool {
        self.trace_id & (SAMPLE_ONE_IN - 1) == 0
    }
}

/// A fixed point of both clocks, to turn an `Instant` into wall time.
static ANCHOR: LazyLock<(Instant, SystemTime)> =
    LazyLock::new(|| (Instant::now(), SystemTime::now()));

fn unix_us(at: Instant) -> u64 {
    let (instant, wall) = *ANCHOR;
    let wall_at = if at >= instant {
        wall + at.duration_since(instant)
    } else {
        wall - instant.duration_since(at)
    };
    wall_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn minute_of(at: Instant) -> u64 {
    at.saturating_duration_since(ANCHOR.0).as_secs() / 60 + 1
}

/// This minute's and the last minute's slowest calls.
#[derive(Debug, Default)]
struct Slowest {
    minute: u64,
    this: Vec<CallRecord>,
    last: Vec<CallRecord>,
}

/// A server's recent calls.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    ring: Mutex<VecDeque<CallRecord>>,
    slowest: Mutex<Slowest>,
    /// The minute `floor_us` is of.
    minute: AtomicU64,
    /// A call of this minute at most this slow cannot enter the slowest.
    floor_us: AtomicU64,
}

impl Recent {
    /// Records a call that ended at `end` with `code`, if it is sampled or among this
    /// minute's slowest.
    pub(crate) fn observe(
        &self,
        note: &CallNote,
        service: &'static str,
        method: &'static str,
        caller: Option<&str>,
        code: Code,
        end: Instant,
    ) {
        let latency_us = end.saturating_duration_since(note.arrival).as_micros() as u64;
        let minute = minute_of(end);
        let slow = self.minute.load(Ordering::Relaxed) != minute
            || latency_us > self.floor_us.load(Ordering::Relaxed);
        if !note.sampled() && !slow {
            return;
        }
        let record = CallRecord {
            at_unix_us: unix_us(note.arrival),
            service,
            method,
            caller: caller.unwrap_or("").to_string(),
            code,
            latency_us,
            trace_id_high: note.trace_id_high,
            trace_id: note.trace_id,
            span_id: note.span_id,
            parent_span_id: note.parent_span_id,
            protocol: note.protocol,
        };
        if slow {
            let mut slowest = self.slowest.lock().unwrap_or_else(PoisonError::into_inner);
            if slowest.minute != minute {
                let this = std::mem::take(&mut slowest.this);
                slowest.last = if slowest.minute + 1 == minute {
                    this
                } else {
                    Vec::new()
                };
                slowest.minute = minute;
            }
            let at = slowest
                .this
                .partition_point(|r| r.latency_us >= record.latency_us);
            if at < SLOWEST {
                slowest.this.insert(at, record.clone());
                slowest.this.truncate(SLOWEST);
            }
            let floor = if slowest.this.len() == SLOWEST {
                slowest.this.last().map_or(0, |r| r.latency_us)
            } else {
                0
            };
            self.floor_us.store(floor, Ordering::Relaxed);
            self.minute.store(minute, Ordering::Relaxed);
        }
        if note.sampled() {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            if ring.len() == RECENT {
                ring.pop_front();
            }
            ring.push_back(record);
        }
    }

    /// The sampled calls, newest first.
    pub(crate) fn recent(&self) -> Vec<CallRecord> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().rev().cloned().collect()
    }

    /// The slowest calls of the last minute (this minute's and the one before's that are
    /// less than a minute old), slowest first.
    pub(crate) fn slowest(&self) -> Vec<CallRecord> {
        let slowest = self.slowest.lock().unwrap_or_else(PoisonError::into_inner);
        let since = unix_us(Instant::now()).saturating_sub(60_000_000);
        let mut all: Vec<CallRecord> = slowest
            .this
            .iter()
            .chain(slowest.last.iter())
            .filter(|r| r.at_unix_us >= since)
            .cloned()
            .collect();
        all.sort_by_key(|r| std::cmp::Reverse(r.latency_us));
        all.truncate(SLOWEST);
        all
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn note(trace_id: u64, arrival: Instant) -> CallNote {
        CallNote {
            arrival,
            trace_id_high: 0,
            trace_id,
            span_id: trace_id + 1,
            parent_span_id: 0,
            protocol: Protocol::Svrkit,
        }
    }

    #[test]
    fn sampled_traces_are_kept_bounded_and_the_slowest_apart() {
        let recent = Recent::default();
        let start = Instant::now();
        // 1,000 calls of 1 ms, then one of 900 ms whose trace is not sampled.
        for i in 0..1_000u64 {
            recent.observe(
                &note(i + 1, start),
                "s.S",
                "M",
                Some("front"),
                Code::Ok,
                start + Duration::from_millis(1),
            );
        }
        recent.observe(
            &note(SAMPLE_ONE_IN * 1000 + 1, start),
            "s.S",
            "Slow",
            None,
            Code::DeadlineExceeded,
            start + Duration::from_millis(900),
        );
        let sampled = recent.recent();
        assert_eq!(
            sampled.len(),
            (1_000 / SAMPLE_ONE_IN) as usize,
            "one trace in {SAMPLE_ONE_IN}"
        );
        assert!(sampled.iter().all(|r| r.trace_id % SAMPLE_ONE_IN == 0));
        assert_eq!(sampled[0].caller, "front");
        let slowest = recent.slowest();
        assert_eq!(slowest.len(), SLOWEST);
        assert_eq!(slowest[0].method, "Slow", "unsampled, but the slowest");
        assert_eq!(slowest[0].latency_us, 900_000);
        assert_eq!(slowest[0].code, Code::DeadlineExceeded);

        // The ring is bounded.
        for i in 0..(RECENT as u64 * 2) {
            recent.observe(
                &note(i * SAMPLE_ONE_IN, start),
                "s.S",
                "M",
                None,
                Code::Ok,
                start,
            );
        }
        assert_eq!(recent.recent().len(), RECENT);
    }
}
