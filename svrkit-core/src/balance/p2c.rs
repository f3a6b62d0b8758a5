//! Power of two choices, weighted.

use super::{Balancer, Call, Candidate};
use crate::random::random_u64;

/// Two candidates drawn at random in proportion to their weights; the one with the lower
/// load per unit of weight wins. Loads within 25 % of each other are a tie, broken at
/// random: otherwise light, sequential traffic would always go to whichever instance was
/// marginally faster.
#[derive(Debug, Default, Clone, Copy)]
pub struct PowerOfTwoChoices;

/// The position of the candidate that `draw` (uniform below the total weight, less
/// `skip`'s weight when skipping) falls on.
fn weighted(candidates: &[Candidate<'_>], mut draw: u64, skip: Option<usize>) -> usize {
    for (i, c) in candidates.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        let w = u64::from(c.weight.max(1));
        if draw < w {
            return i;
        }
        draw -= w;
    }
    candidates.len() - 1
}

impl Balancer for PowerOfTwoChoices {
    fn choose(&self, _call: &Call<'_>, candidates: &[Candidate<'_>]) -> usize {
        if candidates.len() < 2 {
            return 0;
        }
        let total: u64 = candidates.iter().map(|c| u64::from(c.weight.max(1))).sum();
        let r = random_u64();
        let a = weighted(candidates, (r & 0xffff_ffff) % total, None);
        let rest = total - u64::from(candidates[a].weight.max(1));
        let b = weighted(candidates, (r >> 32) % rest.max(1), Some(a));
        let (ca, cb) = (&candidates[a], &candidates[b]);
        // load / weight compared without division: la * wb against lb * wa.
        let la = u128::from(ca.load) * u128::from(cb.weight.max(1));
        let lb = u128::from(cb.load) * u128::from(ca.weight.max(1));
        if lb * 5 < la * 4 {
            b
        } else if la * 5 < lb * 4 || r & (1 << 20) == 0 {
            a
        } else {
            b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Ring;
    use crate::balance::test_support::candidates;

    #[test]
    fn the_lighter_per_weight_wins_and_weights_share_idle_traffic() {
        let names: Vec<String> = (0..3).map(|i| format!("e{i}")).collect();
        let ring = Ring::new(&["e0", "e1", "e2"]);
        let call = Call {
            routing_key: None,
            ring: &ring,
        };
        let loaded = candidates(&names, &[100, 100], &[50_000, 100]);
        for _ in 0..50 {
            assert_eq!(PowerOfTwoChoices.choose(&call, &loaded), 1);
        }
        // Twice the load on twice the weight is the same load per unit: a tie.
        let heavy = candidates(&names, &[200, 100], &[2_000, 1_000]);
        let mut counts = [0; 2];
        for _ in 0..2_000 {
            counts[PowerOfTwoChoices.choose(&call, &heavy)] += 1;
        }
        assert!(counts[0] > 600 && counts[1] > 600, "{counts:?}");
        // Idle instances (equal loads) get traffic in proportion to weight: with three
        // candidates the heavy one is drawn into most pairs.
        let idle = candidates(&names, &[400, 100, 100], &[1, 1, 1]);
        let mut counts = [0; 3];
        for _ in 0..6_000 {
            counts[PowerOfTwoChoices.choose(&call, &idle)] += 1;
        }
        assert!(
            counts[0] > counts[1] * 2 && counts[0] > counts[2] * 2,
            "{counts:?}"
        );
    }
}
