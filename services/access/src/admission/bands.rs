//! The band arithmetic of edge admission: every (business, user) priority a rank, most
//! important first; each rank a band of the limit's places, the least important keeping
//! half; a reserve band between the priorities that wait and the rest; and back from a
//! running count to the least important rank still admitted and, for a user, the last
//! business priority that rank admits. Pure functions of the limit and the count.

use std::sync::OnceLock;

use svrkit::overload::{BUSINESS_LEVELS, Priority, USER_LEVELS, user_priority};

use crate::actions::ACTIONS;

/// The business priorities of the action table, counted from the most important, whose
/// requests wait for a place rather than being refused at once: sign-in and messaging.
pub const WAITING_BUSINESS: u32 = 2;

/// Business priorities' bands kept free between the [`WAITING_BUSINESS`] priorities and
/// the rest: places that only sign-in and messaging take (see the admission module's notes).
pub const RESERVE_BANDS: u32 = 1;

/// DAGOR's user priority of `uid`; nobody signed in (0) is the least important.
pub(super) fn user_of(uid: u64) -> u32 {
    if uid == 0 {
        USER_LEVELS
    } else {
        user_priority(uid)
    }
}

/// The distinct business priorities of the action table, most important first, and
/// last the least important of all (unknown actions).
pub(super) fn business_order() -> &'static [u32] {
    static ORDER: OnceLock<Vec<u32>> = OnceLock::new();
    ORDER.get_or_init(|| {
        let mut order: Vec<u32> = ACTIONS.iter().map(|a| a.priority).collect();
        order.push(BUSINESS_LEVELS);
        order.sort_unstable();
        order.dedup();
        order
    })
}

/// Ranks in all: one per business priority in [`business_order`] and user priority.
pub(super) fn ranks() -> u32 {
    business_order().len() as u32 * USER_LEVELS
}

/// The rank of `priority` (0 the most important): a business priority between two of
/// the table's ranks with the less important one.
pub(super) fn rank_of(priority: Priority) -> u32 {
    let order = business_order();
    let b = order
        .iter()
        .position(|&b| b >= priority.business)
        .unwrap_or(order.len() - 1) as u32;
    b * USER_LEVELS + (priority.user.clamp(1, USER_LEVELS) - 1)
}

/// The first rank below the business priorities that wait for a place.
pub(super) const FIRST_NOT_WAITING: u32 = WAITING_BUSINESS * USER_LEVELS;

/// Ranks of the reserve: one business priority's band that no request ranks in, placed
/// between the priorities that wait and the rest.
pub(super) const RESERVE_RANKS: u32 = RESERVE_BANDS * USER_LEVELS;

/// Where `rank` sits among the bands, the reserve's included: the ranks below the
/// waiting priorities move down past the reserve.
pub(super) fn spaced(rank: u32) -> u32 {
    if rank >= FIRST_NOT_WAITING {
        rank + RESERVE_RANKS
    } else {
        rank
    }
}

/// Bands' ranks in all, the reserve's included.
pub(super) fn spaced_ranks() -> u32 {
    ranks() + RESERVE_RANKS
}

/// How many running requests still leave room for one of rank `rank`:
/// `limit - ceil(limit * s / (2 * S))`, where `s` is the rank's place among the `S`
/// ranks of the bands and the reserve ([`spaced`]); at least half the limit.
pub(super) fn room_of(limit: usize, rank: u32) -> usize {
    let limit = limit as u64;
    let rank = u64::from(spaced(rank.min(ranks() - 1)));
    let reserved = (limit * rank).div_ceil(2 * u64::from(spaced_ranks()));
    (limit - reserved) as usize
}

/// The least important rank admitted with `running` requests running: `None` when every
/// rank is, `Some(u32::MAX)` when none is.
pub(super) fn level_of(limit: usize, running: usize) -> Option<u32> {
    let last = ranks() - 1;
    if running < room_of(limit, last) {
        return None;
    }
    // running < limit - ceil(limit * s / 2S)  <=>  ceil(limit * s / 2S) < free
    // <=> limit * s / 2S <= free - 1  <=>  s <= (free - 1) * 2S / limit.
    let free = limit.saturating_sub(running) as u64;
    let Some(spare) = free.checked_sub(1) else {
        return Some(u32::MAX);
    };
    let spaced_level =
        (spare * 2 * u64::from(spaced_ranks()) / limit as u64).min(u64::from(spaced(last))) as u32;
    // Back from the bands to ranks: a level inside the reserve admits the waiting
    // priorities and nothing below them.
    let level = if spaced_level < FIRST_NOT_WAITING {
        spaced_level
    } else if spaced_level < FIRST_NOT_WAITING + RESERVE_RANKS {
        FIRST_NOT_WAITING - 1
    } else {
        spaced_level - RESERVE_RANKS
    };
    Some(level)
}

/// The largest business priority admitted at rank `level` for a user of priority
/// `user`; 0 when none is.
pub(super) fn ceiling_of(level: u32, user: u32) -> u32 {
    let user = user.clamp(1, USER_LEVELS);
    // Admitted: b * USER_LEVELS + (user - 1) <= level.
    match level.checked_sub(user - 1) {
        Some(room) if level != u32::MAX => {
            let b = (room / USER_LEVELS) as usize;
            let order = business_order();
            order[b.min(order.len() - 1)]
        }
        _ => 0,
    }
}
