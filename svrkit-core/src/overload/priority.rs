//! Request priorities: business priority B and user priority U, and the admission level.
//!
//! Both are "smaller is more important". A request's priority is the pair (B, U), compared
//! lexicographically: business first, then user. It is flattened into one index so that
//! levels compare as integers and histograms are flat arrays.

use std::time::{SystemTime, UNIX_EPOCH};

/// Business priorities run 1 (most important) ..= this.
pub const BUSINESS_LEVELS: u32 = 255;
/// User priorities run 1 (most important) ..= this (DAGOR uses 128).
pub const USER_LEVELS: u32 = 128;
/// The business priority of a request nobody stamped and whose method sets none.
pub const DEFAULT_BUSINESS_PRIORITY: u32 = 128;
/// How often the user-priority hash changes, so no user is always last (one hour).
pub const USER_PRIORITY_ROTATION_SECS: u64 = 3600;
/// Number of distinct (B, U) levels.
pub const LEVELS: u32 = BUSINESS_LEVELS * USER_LEVELS;
/// The level index that admits every request.
pub const ADMIT_ALL: u32 = LEVELS - 1;

/// A request's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Priority {
    /// Business priority, 1 ..= 255.
    pub business: u32,
    /// User priority, 1 ..= 128.
    pub user: u32,
}

impl Priority {
    /// A priority, with both parts clamped into range (0 counts as least important).
    pub fn new(business: u32, user: u32) -> Priority {
        let clamp = |v: u32, max: u32| if v == 0 || v > max { max } else { v };
        Priority {
            business: clamp(business, BUSINESS_LEVELS),
            user: clamp(user, USER_LEVELS),
        }
    }

    /// The flat index: `(business - 1) * 128 + (user - 1)`; smaller is more important.
    pub fn index(self) -> u32 {
        (self.business - 1) * USER_LEVELS + (self.user - 1)
    }

    /// The priority at a flat index.
    pub fn from_index(index: u32) -> Priority {
        let index = index.min(ADMIT_ALL);
        Priority {
            business: index / USER_LEVELS + 1,
            user: index % USER_LEVELS + 1,
        }
    }
}

/// The admission level as carried in response headers: `(0, 0)` admits everything,
/// otherwise the least important (B, U) still admitted.
pub fn level_to_wire(level: u32) -> (u32, u32) {
    if level >= ADMIT_ALL {
        (0, 0)
    } else {
        let p = Priority::from_index(level);
        (p.business, p.user)
    }
}

/// The level index for a wire pair (see [`level_to_wire`]).
pub fn level_from_wire(business: u32, user: u32) -> u32 {
    if business == 0 {
        ADMIT_ALL
    } else {
        Priority::new(business, user).index()
    }
}

/// The user priority of `uid` during the hour that contains `now`, under `key`.
///
/// A keyed hash of (uid, hour): every process with the same key computes the same value,
/// so all hops of a request agree, and each hour reshuffles users so the same people are
/// not always shed first. Anonymous requests (uid 0) get the lowest priority.
pub fn user_priority_at(uid: u64, now: SystemTime, key: u64) -> u32 {
    if uid == 0 {
        return USER_LEVELS;
    }
    let hour = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / USER_PRIORITY_ROTATION_SECS);
    let h = mix(uid ^ mix(hour ^ key));
    (h % u64::from(USER_LEVELS)) as u32 + 1
}

/// [`user_priority_at`] now, with the default key.
pub fn user_priority(uid: u64) -> u32 {
    if uid == 0 {
        return USER_LEVELS;
    }
    user_priority_at(uid, SystemTime::now(), DEFAULT_USER_PRIORITY_KEY)
}

/// The cluster-wide default key of the user-priority hash.
pub const DEFAULT_USER_PRIORITY_KEY: u64 = 0x5356_524b_4441_474f;

/// splitmix64's finaliser: a strong 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn business_priority_dominates_user_priority() {
        let urgent_but_unlucky = Priority::new(1, 128);
        let routine_but_lucky = Priority::new(2, 1);
        assert!(urgent_but_unlucky.index() < routine_but_lucky.index());
        assert!(Priority::new(5, 3).index() < Priority::new(5, 4).index());
        assert_eq!(Priority::new(1, 1).index(), 0);
        assert_eq!(Priority::new(255, 128).index(), ADMIT_ALL);
        assert_eq!(
            Priority::new(0, 0),
            Priority::new(255, 128),
            "unset is least important"
        );
        for index in [0, 1, 127, 128, 4000, ADMIT_ALL] {
            assert_eq!(Priority::from_index(index).index(), index);
        }
    }

    #[test]
    fn wire_levels_round_trip_and_zero_admits_all() {
        assert_eq!(level_to_wire(ADMIT_ALL), (0, 0));
        assert_eq!(level_from_wire(0, 0), ADMIT_ALL);
        let level = Priority::new(7, 30).index();
        let (b, u) = level_to_wire(level);
        assert_eq!((b, u), (7, 30));
        assert_eq!(level_from_wire(b, u), level);
    }

    #[test]
    fn user_priority_is_stable_within_an_hour_and_rotates_across_hours() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000 * 3600);
        let same_hour = t0 + Duration::from_secs(3599);
        let next_hour = t0 + Duration::from_secs(3600);
        let key = 42;
        let mut changed = 0;
        let mut seen = std::collections::HashSet::new();
        for uid in 1..=2_000u64 {
            let p = user_priority_at(uid, t0, key);
            assert!((1..=USER_LEVELS).contains(&p));
            assert_eq!(
                p,
                user_priority_at(uid, same_hour, key),
                "stable within the hour"
            );
            if p != user_priority_at(uid, next_hour, key) {
                changed += 1;
            }
            seen.insert(p);
        }
        assert!(
            changed > 1_900,
            "almost every user moves each hour ({changed})"
        );
        assert_eq!(seen.len(), USER_LEVELS as usize, "every level is used");
        assert_eq!(
            user_priority_at(0, t0, key),
            USER_LEVELS,
            "anonymous is last"
        );
        assert_ne!(
            (1..50)
                .map(|u| user_priority_at(u, t0, 1))
                .collect::<Vec<_>>(),
            (1..50)
                .map(|u| user_priority_at(u, t0, 2))
                .collect::<Vec<_>>(),
            "the key changes the order"
        );
    }
}
