//! The DAGOR level adjustment: a window's histogram in, the next admission level out.
//!
//! Kept a pure function so it can be tested with exact numbers.

use super::priority::{ADMIT_ALL, USER_LEVELS};

/// The next admission level.
///
/// `histogram[i]` counts the requests of priority index `i` that arrived in the window
/// (admitted or not); `current` is the level they met. When `overloaded`, the level moves
/// down to the highest one whose cumulative count is at most `(1 - alpha)` times what was
/// admitted, so the next window admits about `alpha` fewer requests; otherwise it moves up
/// to the lowest one whose cumulative count reaches `(1 + beta)` times what was admitted
/// (or, when even every arrival is fewer, to the least important priority that arrived:
/// with collaborative shedding the server sees only a trickle of the demand its callers
/// refuse, so "little demand seen" must not open the gates). A healthy window in which nothing
/// below the level arrived moves up one user-priority step only (callers may be refusing
/// that demand themselves, so its absence proves nothing), and to admit-all when that
/// step completes a business priority. The most important level, 0, is never shed.
pub fn next_level(histogram: &[u32], current: u32, overloaded: bool, alpha: f64, beta: f64) -> u32 {
    let current = current.min(ADMIT_ALL) as usize;
    let admitted: u64 = histogram
        .iter()
        .take(current + 1)
        .map(|c| u64::from(*c))
        .sum();
    if overloaded {
        let target = (admitted as f64 * (1.0 - alpha)).floor() as u64;
        let mut cumulative = 0u64;
        let mut level = 0usize;
        for (i, count) in histogram.iter().enumerate().take(current + 1) {
            cumulative += u64::from(*count);
            if cumulative > target {
                break;
            }
            level = i;
        }
        // Always tighten by at least one step while overloaded.
        level.min(current.saturating_sub(1)) as u32
    } else {
        if current >= ADMIT_ALL as usize {
            return ADMIT_ALL;
        }
        let above: u64 = histogram
            .iter()
            .skip(current + 1)
            .map(|c| u64::from(*c))
            .sum();
        if above == 0 {
            // Nothing below the level arrived. Either all demand is admitted, or callers
            // are refusing it themselves (collaborative shedding) and it is invisible
            // here: probe one step up rather than opening the gates.
            return probe_up(current as u32);
        }
        let target = ((admitted as f64 * (1.0 + beta)).ceil() as u64).max(admitted + 1);
        let mut cumulative = admitted;
        let mut highest_seen = current;
        for (i, count) in histogram.iter().enumerate().skip(current + 1) {
            if *count == 0 {
                continue;
            }
            cumulative += u64::from(*count);
            highest_seen = i;
            if cumulative >= target {
                return i as u32;
            }
        }
        // Less demand below the level was seen than the step allows. That may be all there
        // is, or a trickle of what callers refuse themselves: admit what was seen, no more.
        highest_seen as u32
    }
}

/// The level after a healthy window in which nothing below `current` arrived: one
/// user-priority step up, and admit-all once that step opens a whole business priority.
pub(super) fn probe_up(current: u32) -> u32 {
    if current >= ADMIT_ALL {
        return ADMIT_ALL;
    }
    let next = current + 1;
    if next.is_multiple_of(USER_LEVELS) {
        ADMIT_ALL
    } else {
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overload::priority::LEVELS;

    fn histogram(entries: &[(u32, u32)]) -> Vec<u32> {
        let mut h = vec![0; LEVELS as usize];
        for (level, count) in entries {
            h[*level as usize] = *count;
        }
        h
    }

    #[test]
    fn overload_from_admit_all_sheds_the_least_important_five_percent() {
        // 100 levels with 20 requests each: 2,000 admitted; shed ~100 = the last 5 levels.
        let h = histogram(&(0..100).map(|l| (l, 20)).collect::<Vec<_>>());
        let next = next_level(&h, ADMIT_ALL, true, 0.05, 0.01);
        assert_eq!(next, 94);
        let admitted: u32 = h[..=next as usize].iter().sum();
        assert_eq!(admitted, 1_900);
    }

    #[test]
    fn overload_skips_empty_levels_and_always_tightens() {
        let h = histogram(&[(10, 500), (20, 500)]);
        // Cumulative: 500 at 10..19, 1000 at 20; 95 % of 1000 = 950 -> highest level <= 950 is 19.
        assert_eq!(next_level(&h, 20, true, 0.05, 0.01), 19);
        // Nothing to shed at the current level: still one step down.
        let h = histogram(&[(3, 100)]);
        assert_eq!(next_level(&h, 3, true, 0.05, 0.01), 2);
        // Level 0 is the floor.
        let h = histogram(&[(0, 100)]);
        assert_eq!(next_level(&h, 0, true, 0.05, 0.01), 0);
    }

    #[test]
    fn recovery_admits_one_percent_more_and_reaches_admit_all() {
        // Admitted 1,000 up to level 10; 1 % more = 1,010 needs level 12 (10 more there).
        let h = histogram(&[(10, 1_000), (11, 5), (12, 5), (13, 500)]);
        assert_eq!(next_level(&h, 10, false, 0.05, 0.01), 12);
        // Visible demand below the level is under 1 % of the admitted: admit all of it, but
        // do not open beyond what was seen.
        let h = histogram(&[(10, 1_000), (4_000, 5)]);
        assert_eq!(next_level(&h, 10, false, 0.05, 0.01), 4_000);
        assert_eq!(next_level(&h, ADMIT_ALL, false, 0.05, 0.01), ADMIT_ALL);
    }

    #[test]
    fn with_no_visible_demand_below_the_level_recovery_probes_one_step() {
        // Callers may be filtering: one user-priority step at a time...
        let h = histogram(&[(10, 1_000)]);
        assert_eq!(next_level(&h, 10, false, 0.05, 0.01), 11);
        // ...until a whole business priority is open, then everything.
        let top_of_b1 = USER_LEVELS - 2;
        assert_eq!(next_level(&h, top_of_b1, false, 0.05, 0.01), top_of_b1 + 1);
        assert_eq!(next_level(&h, top_of_b1 + 1, false, 0.05, 0.01), ADMIT_ALL);
    }

    #[test]
    fn drop_fast_recover_slow() {
        // Uniform demand over 1,000 levels; repeated windows converge as expected.
        let h = histogram(&(0..1_000).map(|l| (l, 10)).collect::<Vec<_>>());
        let mut level = ADMIT_ALL;
        for _ in 0..3 {
            level = next_level(&h, level, true, 0.05, 0.01);
        }
        // 10,000 -> at most 9,500 (level 949) -> 9,025 (901) -> 8,569 (855).
        assert_eq!(level, 855);
        let down = level;
        level = next_level(&h, level, false, 0.05, 0.01);
        // 8,560 admitted * 1.01 = 8,645.6 -> 8,650 at level 864.
        assert_eq!(level, 864);
        assert!(level - down < 999 - down, "recovery is a small step");
    }
}
