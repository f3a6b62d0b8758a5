//! Choosing the instance for one attempt.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::endpoint::Endpoint;
use crate::balance::{Balance, Ring};
use crate::config::Selector;
use crate::context::new_id;
use std::sync::Arc;

/// The instances a channel currently sends to, and their ring.
#[derive(Debug, Default)]
pub(crate) struct EndpointSet {
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    pub(crate) ring: Ring,
    /// The users binary gray releases send to the gray instances of this set.
    gray_users: Vec<Selector>,
}

impl EndpointSet {
    pub(crate) fn new(endpoints: Vec<Arc<Endpoint>>) -> EndpointSet {
        let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
        EndpointSet {
            ring: Ring::new(&names),
            endpoints,
            gray_users: Vec::new(),
        }
    }

    /// Sets the users that gray instances' releases select.
    pub(crate) fn with_gray_users(mut self, gray_users: Vec<Selector>) -> EndpointSet {
        self.gray_users = gray_users;
        self
    }

    /// True when a gray release of this service selects `uid`.
    pub(crate) fn gray_user(&self, uid: u64) -> bool {
        !self.gray_users.is_empty() && self.gray_users.iter().any(|s| s.selects(uid, ""))
    }
}

/// What the caller asks of an instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want<'a> {
    pub(crate) balance: Balance,
    pub(crate) routing_key: Option<u64>,
    pub(crate) gray: bool,
    pub(crate) priority: u32,
    pub(crate) now_ms: u64,
    pub(crate) tried: &'a [usize],
}

/// Why no instance was picked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoPick {
    /// No instances at all (or all already tried).
    Empty,
    /// Every candidate would shed the request (collaborative shedding).
    AllShedding,
}

/// Picks an instance: the right version label first (gray users to gray instances, others
/// to stable ones), falling back to any; skipping ejected ones unless nothing else is left;
/// never one already tried by this call; never one whose level would shed the request.
pub(crate) fn pick(set: &EndpointSet, want: Want<'_>, rr: &AtomicUsize) -> Result<usize, NoPick> {
    let n = set.endpoints.len();
    let fresh = |i: &usize| !want.tried.contains(i);
    let label_ok = |i: &usize| set.endpoints[*i].is_gray() == want.gray;
    let healthy = |i: &usize| !set.endpoints[*i].is_ejected(want.now_ms);
    let admits = |i: &usize| !set.endpoints[*i].would_shed(want.priority, || want.now_ms);

    if want.balance == Balance::Sharded {
        // Only the owner holds the data: no fallback to another shard, ever.
        let owner = want
            .routing_key
            .and_then(|key| set.ring.node(key))
            .ok_or(NoPick::Empty)?;
        return match (fresh(&owner), admits(&owner)) {
            (false, _) => Err(NoPick::Empty),
            (true, false) => Err(NoPick::AllShedding),
            (true, true) => Ok(owner),
        };
    }
    // One instance (the common point-to-point case): no lists to build.
    if n == 1 {
        return match (fresh(&0), admits(&0)) {
            (false, _) => Err(NoPick::Empty),
            (true, false) => Err(NoPick::AllShedding),
            (true, true) => Ok(0),
        };
    }
    let untried: Vec<usize> = (0..n).filter(fresh).collect();
    if untried.is_empty() {
        return Err(NoPick::Empty);
    }
    let admitting: Vec<usize> = untried.iter().copied().filter(admits).collect();
    if admitting.is_empty() {
        return Err(NoPick::AllShedding);
    }
    // Narrow by health, then by label, keeping the wider set when a narrowing empties it:
    // a gray user goes to a healthy gray instance, else to a healthy stable one.
    let by_health: Vec<usize> = admitting.iter().copied().filter(healthy).collect();
    let pool = if by_health.is_empty() {
        admitting
    } else {
        by_health
    };
    let by_label: Vec<usize> = pool.iter().copied().filter(label_ok).collect();
    let pool = if by_label.is_empty() { pool } else { by_label };

    match (want.balance, want.routing_key) {
        (Balance::ConsistentHash, Some(key)) => Ok(set
            .ring
            .nodes_from(key)
            .find(|i| pool.contains(i))
            .unwrap_or(pool[0])),
        (Balance::PowerOfTwoChoices, _) if pool.len() > 1 => {
            let r = new_id();
            let a = (r % pool.len() as u64) as usize;
            let mut b = ((r >> 32) % (pool.len() as u64 - 1)) as usize;
            if b >= a {
                b += 1;
            }
            let (a, b) = (pool[a], pool[b]);
            let (la, lb) = (
                set.endpoints[a].load(want.now_ms),
                set.endpoints[b].load(want.now_ms),
            );
            // Loads within 25 % are a tie, broken at random: otherwise light, sequential
            // traffic would always go to whichever instance was marginally faster.
            Ok(if lb * 5 < la * 4 {
                b
            } else if la * 5 < lb * 4 || r & (1 << 20) == 0 {
                a
            } else {
                b
            })
        }
        _ => Ok(pool[rr.fetch_add(1, Ordering::Relaxed) % pool.len()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn set(labels: &[&str]) -> EndpointSet {
        EndpointSet::new(
            labels
                .iter()
                .enumerate()
                .map(|(i, label)| {
                    Arc::new(Endpoint::new(
                        ([127, 0, 0, 1], 1000 + i as u16).into(),
                        format!("e{i}"),
                        (*label).to_string(),
                        1,
                    ))
                })
                .collect(),
        )
    }

    fn want(balance: Balance, tried: &[usize]) -> Want<'_> {
        Want {
            balance,
            routing_key: None,
            gray: false,
            priority: 0,
            now_ms: 0,
            tried,
        }
    }

    #[test]
    fn round_robin_visits_each_and_skips_tried() {
        let s = set(&["stable", "stable", "stable"]);
        let rr = AtomicUsize::new(0);
        let picks: Vec<usize> = (0..6)
            .map(|_| pick(&s, want(Balance::RoundRobin, &[]), &rr).expect("pick"))
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        for _ in 0..10 {
            assert_ne!(pick(&s, want(Balance::RoundRobin, &[1]), &rr), Ok(1));
        }
        assert_eq!(
            pick(&s, want(Balance::RoundRobin, &[0, 1, 2]), &rr),
            Err(NoPick::Empty)
        );
    }

    #[test]
    fn two_choices_avoid_the_loaded_instance() {
        let s = set(&["stable", "stable"]);
        s.endpoints[0].observe_latency(Duration::from_millis(50), 0);
        s.endpoints[1].observe_latency(Duration::from_micros(100), 0);
        let rr = AtomicUsize::new(0);
        for _ in 0..20 {
            assert_eq!(pick(&s, want(Balance::PowerOfTwoChoices, &[]), &rr), Ok(1));
        }
    }

    #[test]
    fn gray_users_go_to_gray_instances_and_fall_back_to_stable() {
        let s = set(&["stable", "gray", "stable"]);
        let rr = AtomicUsize::new(0);
        let gray = |tried| Want {
            gray: true,
            ..want(Balance::RoundRobin, tried)
        };
        for _ in 0..5 {
            assert_eq!(pick(&s, gray(&[]), &rr), Ok(1));
            assert_ne!(
                pick(&s, want(Balance::RoundRobin, &[]), &rr),
                Ok(1),
                "stable users avoid gray"
            );
        }
        // The gray instance is ejected: gray users fall back to stable ones.
        s.endpoints[1].failed(true, 0);
        assert_ne!(
            pick(
                &s,
                Want {
                    now_ms: 1,
                    ..gray(&[])
                },
                &rr
            ),
            Ok(1)
        );
    }

    #[test]
    fn ejected_instances_are_skipped_unless_nothing_else_is_left() {
        let s = set(&["stable", "stable"]);
        s.endpoints[0].failed(true, 0);
        let rr = AtomicUsize::new(0);
        for _ in 0..5 {
            assert_eq!(
                pick(
                    &s,
                    Want {
                        now_ms: 1,
                        ..want(Balance::RoundRobin, &[])
                    },
                    &rr
                ),
                Ok(1)
            );
        }
        assert_eq!(
            pick(
                &s,
                Want {
                    now_ms: 1,
                    ..want(Balance::RoundRobin, &[1])
                },
                &rr
            ),
            Ok(0)
        );
    }

    #[test]
    fn consistent_hash_routes_a_key_to_its_owner_then_successors() {
        let s = set(&["stable", "stable", "stable", "stable"]);
        let rr = AtomicUsize::new(0);
        let owner = s.ring.node(7).expect("owner");
        let keyed = |tried| Want {
            routing_key: Some(7),
            ..want(Balance::ConsistentHash, tried)
        };
        for _ in 0..5 {
            assert_eq!(pick(&s, keyed(&[]), &rr), Ok(owner));
        }
        let second = s.ring.nodes_from(7).nth(1).expect("successor");
        assert_eq!(pick(&s, keyed(&[owner]), &rr), Ok(second));
    }

    #[test]
    fn sharded_routes_only_to_the_owner_even_when_it_is_ejected_or_was_tried() {
        let s = set(&["stable", "stable", "stable", "gray"]);
        let rr = AtomicUsize::new(0);
        for key in 0..50u64 {
            let owner = s.ring.node(key).expect("owner");
            let keyed = |tried| Want {
                routing_key: Some(key),
                gray: true,
                ..want(Balance::Sharded, tried)
            };
            assert_eq!(pick(&s, keyed(&[]), &rr), Ok(owner));
            assert_eq!(pick(&s, keyed(&[owner]), &rr), Err(NoPick::Empty));
        }
        let unkeyed = want(Balance::Sharded, &[]);
        assert_eq!(pick(&s, unkeyed, &rr), Err(NoPick::Empty));
    }
}
