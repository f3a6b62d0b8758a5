//! A linearizability checker for histories of reads and writes on registers (one value per
//! key), in the manner of Wing & Gong's search with Lowe's cache of visited
//! configurations (as Porcupine does it).
//!
//! A test records every call it made: when it was called, when it returned (or `None`
//! when its outcome is unknown: a write that failed after it may have been applied), and
//! what it wrote or read. The history is linearizable when every key's operations can be
//! put in one order that respects real time (an operation that returned before another
//! was called comes first) and in which every read sees the latest write before it. A
//! write whose outcome is unknown may take effect at any point after it was called, or
//! never. Reads that failed say nothing and are left out by the caller.
//!
//! Keys are independent (a register's history is linearizable alone or not at all), so
//! each is searched on its own. A write of unknown outcome whose value no read saw is
//! left out before the search: applying it could only make a later read wrong, and
//! keeping it would double the configurations to search.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Instant;

/// What one operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<V> {
    /// Wrote the value.
    Write(V),
    /// Read the value (`None`: the key had none).
    Read(Option<V>),
}

/// One call in a history.
#[derive(Debug, Clone)]
pub struct Operation<K, V> {
    /// The register it was on.
    pub key: K,
    /// What it did.
    pub action: Action<V>,
    /// When it was called.
    pub called: Instant,
    /// When it returned; `None` when its outcome is unknown (only for writes: a failed
    /// read is simply left out).
    pub returned: Option<Instant>,
}

/// Why a history is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No order of this key's operations explains what was read.
    #[error("not linearizable on key {key}: {operations}")]
    NotLinearizable {
        /// The key, formatted.
        key: String,
        /// Its operations in call order, formatted.
        operations: String,
    },
    /// A read's outcome is unknown: the history is malformed.
    #[error("a read without a return time on key {0}")]
    ReadWithoutReturn(String),
    /// The search visited more configurations than allowed (keep histories small).
    #[error("key {key}: gave up after {visited} configurations")]
    TooLarge {
        /// The key, formatted.
        key: String,
        /// How many configurations it visited.
        visited: usize,
    },
}

/// How many configurations one key's search may visit.
const MAX_VISITED: usize = 2_000_000;

/// Checks that `history` is linearizable for registers that hold no value at first.
pub fn check<K, V>(history: &[Operation<K, V>]) -> Result<(), CheckError>
where
    K: Ord + Clone + Debug,
    V: Eq + Hash + Clone + Debug,
{
    let mut by_key: BTreeMap<&K, Vec<&Operation<K, V>>> = BTreeMap::new();
    for op in history {
        if op.returned.is_none() && matches!(op.action, Action::Read(_)) {
            return Err(CheckError::ReadWithoutReturn(format!("{:?}", op.key)));
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, mut ops) in by_key {
        let seen: Vec<&V> = ops
            .iter()
            .filter_map(|op| match &op.action {
                Action::Read(Some(v)) => Some(v),
                _ => None,
            })
            .collect();
        ops.retain(|op| match &op.action {
            Action::Write(v) if op.returned.is_none() => seen.contains(&v),
            _ => true,
        });
        ops.sort_by_key(|op| op.called);
        Search::new(&ops).run().map_err(|failure| match failure {
            Failure::NotLinearizable => CheckError::NotLinearizable {
                key: format!("{key:?}"),
                operations: describe(&ops),
            },
            Failure::TooLarge(visited) => CheckError::TooLarge {
                key: format!("{key:?}"),
                visited,
            },
        })?;
    }
    Ok(())
}

fn describe<K: Debug, V: Debug>(ops: &[&Operation<K, V>]) -> String {
    let Some(start) = ops.first().map(|op| op.called) else {
        return String::new();
    };
    let micros = |t: Instant| t.saturating_duration_since(start).as_micros();
    ops.iter()
        .map(|op| {
            let end = op
                .returned
                .map_or_else(|| "?".to_string(), |t| micros(t).to_string());
            format!("[{}..{} µs {:?}]", micros(op.called), end, op.action)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

enum Failure {
    NotLinearizable,
    TooLarge(usize),
}

/// The search over one key's operations (sorted by call time).
struct Search<'a, K, V> {
    ops: &'a [&'a Operation<K, V>],
    visited: HashSet<(Vec<u64>, Option<V>)>,
    /// Operations that must be linearized (those that returned).
    required: usize,
}

impl<'a, K, V> Search<'a, K, V>
where
    V: Eq + Hash + Clone,
{
    fn new(ops: &'a [&'a Operation<K, V>]) -> Self {
        Search {
            ops,
            visited: HashSet::new(),
            required: ops.iter().filter(|op| op.returned.is_some()).count(),
        }
    }

    fn run(mut self) -> Result<(), Failure> {
        let words = self.ops.len().div_ceil(64);
        // Depth-first, with an explicit stack: (linearized set, register value, how
        // many required operations are in the set).
        let mut stack = vec![(vec![0u64; words], None::<V>, 0usize)];
        while let Some((done, value, count)) = stack.pop() {
            if count == self.required {
                return Ok(());
            }
            if !self.visited.insert((done.clone(), value.clone())) {
                continue;
            }
            if self.visited.len() > MAX_VISITED {
                return Err(Failure::TooLarge(self.visited.len()));
            }
            // The earliest return among operations not linearized yet: whatever was
            // called after it cannot come next.
            let pending = |i: usize| done[i / 64] & (1 << (i % 64)) == 0;
            let horizon = (0..self.ops.len())
                .filter(|&i| pending(i))
                .filter_map(|i| self.ops[i].returned)
                .min();
            for i in (0..self.ops.len()).filter(|&i| pending(i)) {
                let op = self.ops[i];
                if horizon.is_some_and(|h| op.called > h) {
                    // Sorted by call time: no later one can come next either.
                    break;
                }
                let next = match &op.action {
                    Action::Write(v) => Some(v.clone()),
                    Action::Read(seen) if *seen == value => value.clone(),
                    Action::Read(_) => continue,
                };
                let mut then = done.clone();
                then[i / 64] |= 1 << (i % 64);
                let count = count + usize::from(op.returned.is_some());
                stack.push((then, next, count));
            }
        }
        Err(Failure::NotLinearizable)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An operation on key 1 from `from` to `to` ms after `t0` (`to` None: unknown).
    fn op(t0: Instant, from: u64, to: Option<u64>, action: Action<u32>) -> Operation<u8, u32> {
        Operation {
            key: 1,
            action,
            called: t0 + Duration::from_millis(from),
            returned: to.map(|to| t0 + Duration::from_millis(to)),
        }
    }

    use Action::{Read, Write};

    #[test]
    fn a_sequential_history_that_reads_what_was_written_passes() {
        let t = Instant::now();
        let history = [
            op(t, 0, Some(1), Read(None)),
            op(t, 2, Some(3), Write(1)),
            op(t, 4, Some(5), Read(Some(1))),
            op(t, 6, Some(7), Write(2)),
            op(t, 8, Some(9), Read(Some(2))),
        ];
        check(&history).expect("linearizable");
    }

    #[test]
    fn a_stale_read_after_a_completed_write_fails() {
        let t = Instant::now();
        let history = [
            op(t, 0, Some(1), Write(1)),
            op(t, 2, Some(3), Write(2)),
            op(t, 4, Some(5), Read(Some(1))),
        ];
        let err = check(&history).expect_err("stale");
        assert!(matches!(err, CheckError::NotLinearizable { .. }), "{err}");
    }

    #[test]
    fn a_read_overlapping_a_write_may_see_either_value() {
        let t = Instant::now();
        for seen in [Some(1), Some(2)] {
            let history = [
                op(t, 0, Some(1), Write(1)),
                op(t, 2, Some(10), Write(2)),
                op(t, 3, Some(4), Read(seen)),
            ];
            check(&history).expect("either is fine");
        }
    }

    #[test]
    fn two_readers_cannot_see_a_write_in_opposite_orders() {
        // Both reads overlap the write; the first sees it and returns, then the second
        // (called after the first returned) sees the old value: not linearizable.
        let t = Instant::now();
        let history = [
            op(t, 0, Some(1), Write(1)),
            op(t, 2, Some(20), Write(2)),
            op(t, 3, Some(5), Read(Some(2))),
            op(t, 6, Some(8), Read(Some(1))),
        ];
        assert!(check(&history).is_err());
    }

    #[test]
    fn a_value_nobody_wrote_fails() {
        let t = Instant::now();
        let history = [
            op(t, 0, Some(1), Write(1)),
            op(t, 2, Some(3), Read(Some(7))),
        ];
        assert!(check(&history).is_err());
    }

    #[test]
    fn a_write_of_unknown_outcome_may_apply_late_or_never() {
        let t = Instant::now();
        // Never seen: fine.
        let never = [op(t, 0, None, Write(1)), op(t, 5, Some(6), Read(None))];
        check(&never).expect("it may never have applied");
        // Seen long after the call failed: fine (it was applied late).
        let late = [
            op(t, 0, None, Write(1)),
            op(t, 50, Some(51), Read(None)),
            op(t, 60, Some(61), Read(Some(1))),
        ];
        check(&late).expect("it may apply late");
        // Seen, then unseen with no other write: not fine.
        let flicker = [
            op(t, 0, None, Write(1)),
            op(t, 50, Some(51), Read(Some(1))),
            op(t, 60, Some(61), Read(None)),
        ];
        assert!(check(&flicker).is_err());
    }

    #[test]
    fn keys_are_checked_apart() {
        let t = Instant::now();
        let mut other = op(t, 0, Some(1), Write(5));
        other.key = 2;
        let history = [
            op(t, 0, Some(1), Write(1)),
            other,
            op(t, 2, Some(3), Read(Some(1))),
        ];
        check(&history).expect("key 2's write does not touch key 1");
        let mut wrong = op(t, 2, Some(3), Read(Some(5)));
        wrong.key = 1;
        let history = [op(t, 0, Some(1), Write(1)), wrong];
        let err = check(&history).expect_err("key 1 never held 5");
        assert!(err.to_string().contains("key 1"), "{err}");
    }

    #[test]
    fn a_read_of_unknown_outcome_is_refused() {
        let t = Instant::now();
        let history = [op(t, 0, None, Read(None))];
        assert!(matches!(
            check(&history),
            Err(CheckError::ReadWithoutReturn(_))
        ));
    }

    #[test]
    fn many_concurrent_writers_stay_tractable() {
        // 12 writers overlapping in rounds and a read after each round: the cache keeps
        // the search small.
        let t = Instant::now();
        let mut history = Vec::new();
        for round in 0..30u64 {
            let base = round * 100;
            for w in 0..12u32 {
                let value = (round as u32) * 100 + w;
                let to = if w % 5 == 0 { None } else { Some(base + 50) };
                history.push(op(t, base + u64::from(w), to, Write(value)));
            }
            history.push(op(
                t,
                base + 60,
                Some(base + 61),
                Read(Some((round as u32) * 100 + 11)),
            ));
        }
        check(&history).expect("linearizable");
        // The last round's read sees a value nobody wrote last: refused, quickly.
        history.push(op(t, 5000, Some(5001), Read(Some(77_777))));
        assert!(matches!(
            check(&history),
            Err(CheckError::NotLinearizable { .. })
        ));
    }

    #[test]
    fn twelve_overlapping_writes_and_a_read_of_each_order_stay_tractable() {
        let t = Instant::now();
        let mut history: Vec<_> = (0..12u32)
            .map(|w| op(t, u64::from(w), Some(100), Write(w)))
            .collect();
        history.push(op(t, 101, Some(102), Read(Some(0))));
        check(&history).expect("write 0 may come last");
    }
}
