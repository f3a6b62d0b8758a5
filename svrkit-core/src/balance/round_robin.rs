//! Round robin in proportion to weight.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, Call, Candidate};

/// Each candidate in turn, as often as its weight says relative to the others: weights
/// are divided by their greatest common divisor, so 100/100/100 alternates one by one and
/// 100/200 sends A, B, B.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl RoundRobin {
    /// The next position among `candidates`.
    pub(crate) fn next(&self, candidates: &[Candidate<'_>]) -> usize {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) as u64;
        let weights = || candidates.iter().map(|c| u64::from(c.weight.max(1)));
        let first = weights().next().unwrap_or(1);
        if weights().all(|w| w == first) {
            return (turn % candidates.len() as u64) as usize;
        }
        let divisor = weights().fold(0, gcd).max(1);
        let total: u64 = weights().map(|w| w / divisor).sum();
        let mut position = turn % total.max(1);
        for (i, weight) in weights().enumerate() {
            let share = weight / divisor;
            if position < share {
                return i;
            }
            position -= share;
        }
        candidates.len() - 1
    }
}

impl Balancer for RoundRobin {
    fn choose(&self, _call: &Call<'_>, candidates: &[Candidate<'_>]) -> usize {
        self.next(candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Ring;
    use crate::balance::test_support::candidates;

    #[test]
    fn turns_follow_the_weights() {
        let names: Vec<String> = (0..3).map(|i| format!("e{i}")).collect();
        let ring = Ring::new(&["e0", "e1", "e2"]);
        let call = Call {
            routing_key: None,
            ring: &ring,
        };
        let rr = RoundRobin::default();
        let even = candidates(&names, &[100, 100, 100], &[1, 1, 1]);
        let picks: Vec<usize> = (0..6).map(|_| rr.choose(&call, &even)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);

        let rr = RoundRobin::default();
        let weighted = candidates(&names, &[100, 300, 200], &[1, 1, 1]);
        let mut counts = [0; 3];
        for _ in 0..600 {
            counts[rr.choose(&call, &weighted)] += 1;
        }
        assert_eq!(counts, [100, 300, 200]);
    }
}
