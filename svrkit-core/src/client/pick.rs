//! Choosing the instance for one attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::endpoint::Endpoint;
use crate::balance::{Balancer, Call, Candidate, Ring};
use crate::selector::Selector;

/// The instances a channel currently sends to, and their ring.
#[derive(Debug, Default)]
pub(crate) struct EndpointSet {
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    pub(crate) ring: Ring,
    /// The users binary gray releases send to the gray instances of this set.
    gray_users: Vec<Selector>,
    /// A replicated service's shards, in ring order (the ring is theirs, not the
    /// endpoints'); empty when each shard is one endpoint.
    pub(crate) groups: Vec<Group>,
}

/// One replicated shard: its replicas among the set's endpoints and which of them is
/// believed to lead it.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) name: String,
    /// Indexes into [`EndpointSet::endpoints`], in the map's order.
    pub(crate) members: Vec<usize>,
    /// Position in `members` of the believed leader; shared across set rebuilds.
    pub(crate) leader: Arc<AtomicUsize>,
}

impl EndpointSet {
    pub(crate) fn new(endpoints: Vec<Arc<Endpoint>>) -> EndpointSet {
        let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
        EndpointSet {
            ring: Ring::new(&names),
            endpoints,
            gray_users: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// A set whose ring is `groups` (replicated shards) rather than its endpoints.
    pub(crate) fn grouped(endpoints: Vec<Arc<Endpoint>>, groups: Vec<Group>) -> EndpointSet {
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        EndpointSet {
            ring: Ring::new(&names),
            endpoints,
            gray_users: Vec::new(),
            groups,
        }
    }

    /// The replicated shard holding `key`, when this set has groups.
    pub(crate) fn group_of(&self, key: u64) -> Option<&Group> {
        if self.groups.is_empty() {
            return None;
        }
        self.ring.node(key).and_then(|i| self.groups.get(i))
    }

    /// A follower said `leader` leads `key`'s shard: calls go there from now on.
    pub(crate) fn follow_leader(&self, key: u64, leader: &str) -> bool {
        let Some(group) = self.group_of(key) else {
            return false;
        };
        match group
            .members
            .iter()
            .position(|&m| self.endpoints[m].name == leader)
        {
            Some(position) => {
                group.leader.store(position, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The believed leader of `key`'s shard (endpoint `index`) did not answer: the next
    /// replica is tried first from now on, until a leader hint says otherwise.
    pub(crate) fn leader_failed(&self, key: u64, index: usize) {
        if let Some(group) = self.group_of(key) {
            let current = group.leader.load(Ordering::Relaxed);
            if group.members.get(current) == Some(&index) {
                let next = (current + 1) % group.members.len().max(1);
                let _ = group.leader.compare_exchange(
                    current,
                    next,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
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
    pub(crate) balancer: &'a dyn Balancer,
    /// The caller's zone, when it has one: instances there are preferred.
    pub(crate) zone: Option<&'a str>,
    pub(crate) routing_key: Option<u64>,
    /// The method is a stale read (`(svrkit.stale_read)`): any replica of a replicated
    /// shard may answer it, not only the believed leader.
    pub(crate) any_replica: bool,
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
/// to stable ones), falling back to any; the caller's zone first, falling back to any;
/// skipping ejected ones unless nothing else is left, and weight-0 ones likewise; never one
/// already tried by this call; never one whose level would shed the request. The balancer
/// chooses among what is left.
pub(crate) fn pick(set: &EndpointSet, want: Want<'_>) -> Result<usize, NoPick> {
    let n = set.endpoints.len();
    let fresh = |i: &usize| !want.tried.contains(i);
    let label_ok = |i: &usize| set.endpoints[*i].is_gray() == want.gray;
    let healthy = |i: &usize| !set.endpoints[*i].is_ejected(want.now_ms);
    let admits = |i: &usize| !set.endpoints[*i].would_shed(want.priority, || want.now_ms);

    if want.balancer.owner_only() {
        if let Some(group) = want.routing_key.and_then(|key| set.group_of(key)) {
            // A replicated shard: its believed leader first, then its other replicas
            // (a follower answers with the leader's name); never another shard. A stale
            // read starts at a replica chosen by its key instead, so that reads spread
            // over every copy and each key's go to the same one.
            let len = group.members.len();
            let start = match (want.any_replica, want.routing_key) {
                (true, Some(key)) => {
                    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % len.max(1)
                }
                _ => group.leader.load(Ordering::Relaxed),
            };
            let member = (0..len)
                .map(|k| group.members[(start + k) % len])
                .find(fresh)
                .ok_or(NoPick::Empty)?;
            return if admits(&member) {
                Ok(member)
            } else {
                Err(NoPick::AllShedding)
            };
        }
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
    // Narrow step by step, keeping the wider set when a step empties it: a gray user goes
    // to a healthy gray instance in its zone, else to a healthy gray one elsewhere, else
    // to a healthy stable one…
    let narrow = |pool: Vec<usize>, keep: &dyn Fn(&usize) -> bool| {
        let narrower: Vec<usize> = pool.iter().copied().filter(keep).collect();
        if narrower.is_empty() { pool } else { narrower }
    };
    let pool = narrow(admitting, &healthy);
    let pool = narrow(pool, &|i| set.endpoints[*i].weight > 0);
    let pool = narrow(pool, &label_ok);
    let pool = match want.zone.filter(|z| !z.is_empty()) {
        Some(zone) => narrow(pool, &|i| set.endpoints[*i].zone == zone),
        None => pool,
    };
    let candidates: Vec<Candidate<'_>> = pool
        .iter()
        .map(|&i| {
            let e = &set.endpoints[i];
            Candidate {
                index: i,
                addr: e.addr,
                name: &e.name,
                zone: &e.zone,
                weight: e.weight,
                in_flight: e.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                load: e.load(want.now_ms),
            }
        })
        .collect();
    let call = Call {
        routing_key: want.routing_key,
        ring: &set.ring,
    };
    let chosen = want.balancer.choose(&call, &candidates);
    Ok(candidates
        .get(chosen)
        .map_or(candidates[0].index, |c| c.index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{ConsistentHash, PowerOfTwoChoices, RoundRobin, Sharded};
    use crate::selector::Track;
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
                        label.parse().expect("a track"),
                        1,
                    ))
                })
                .collect(),
        )
    }

    fn want<'a>(balancer: &'a dyn Balancer, tried: &'a [usize]) -> Want<'a> {
        Want {
            balancer,
            zone: None,
            routing_key: None,
            any_replica: false,
            gray: false,
            priority: 0,
            now_ms: 0,
            tried,
        }
    }

    #[test]
    fn a_replicated_shard_goes_to_its_leader_and_a_stale_read_to_any_replica() {
        let endpoints = set(&["stable", "stable", "stable"]).endpoints;
        let group = Group {
            name: "shard-1".into(),
            members: vec![0, 1, 2],
            leader: Arc::new(AtomicUsize::new(1)),
        };
        let set = EndpointSet::grouped(endpoints, vec![group]);
        let sharded = Sharded;
        let mut used = [0usize; 3];
        for key in 0..300u64 {
            let strict = Want {
                routing_key: Some(key),
                ..want(&sharded, &[])
            };
            assert_eq!(pick(&set, strict), Ok(1), "the believed leader");
            let stale = Want {
                any_replica: true,
                ..strict
            };
            let first = pick(&set, stale).expect("a replica");
            assert_eq!(pick(&set, stale), Ok(first), "a key keeps its replica");
            used[first] += 1;
            let tried = [first];
            let next = pick(
                &set,
                Want {
                    tried: &tried,
                    ..stale
                },
            )
            .expect("another");
            assert_ne!(next, first, "a retry goes to another replica");
        }
        assert!(used.iter().all(|n| *n > 50), "spread: {used:?}");
    }

    #[test]
    fn round_robin_visits_each_and_skips_tried() {
        let s = set(&["stable", "stable", "stable"]);
        let rr = RoundRobin::default();
        let picks: Vec<usize> = (0..6)
            .map(|_| pick(&s, want(&rr, &[])).expect("pick"))
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        for _ in 0..10 {
            assert_ne!(pick(&s, want(&rr, &[1])), Ok(1));
        }
        assert_eq!(pick(&s, want(&rr, &[0, 1, 2])), Err(NoPick::Empty));
    }

    #[test]
    fn two_choices_avoid_the_loaded_instance() {
        let s = set(&["stable", "stable"]);
        s.endpoints[0].observe_latency(Duration::from_millis(50), 0);
        s.endpoints[1].observe_latency(Duration::from_micros(100), 0);
        for _ in 0..20 {
            assert_eq!(pick(&s, want(&PowerOfTwoChoices, &[])), Ok(1));
        }
    }

    #[test]
    fn gray_users_go_to_gray_instances_and_fall_back_to_stable() {
        let s = set(&["stable", "gray", "stable"]);
        let rr = RoundRobin::default();
        let gray = |tried| Want {
            gray: true,
            ..want(&rr, tried)
        };
        for _ in 0..5 {
            assert_eq!(pick(&s, gray(&[])), Ok(1));
            assert_ne!(pick(&s, want(&rr, &[])), Ok(1), "stable users avoid gray");
        }
        // The gray instance is ejected: gray users fall back to stable ones.
        s.endpoints[1].failed(true, 0);
        assert_ne!(
            pick(
                &s,
                Want {
                    now_ms: 1,
                    ..gray(&[])
                }
            ),
            Ok(1)
        );
    }

    #[test]
    fn ejected_instances_are_skipped_unless_nothing_else_is_left() {
        let s = set(&["stable", "stable"]);
        s.endpoints[0].failed(true, 0);
        let rr = RoundRobin::default();
        for _ in 0..5 {
            assert_eq!(
                pick(
                    &s,
                    Want {
                        now_ms: 1,
                        ..want(&rr, &[])
                    },
                ),
                Ok(1)
            );
        }
        assert_eq!(
            pick(
                &s,
                Want {
                    now_ms: 1,
                    ..want(&rr, &[1])
                }
            ),
            Ok(0)
        );
    }

    #[test]
    fn consistent_hash_routes_a_key_to_its_owner_then_successors() {
        let s = set(&["stable", "stable", "stable", "stable"]);
        let hash = ConsistentHash::default();
        let owner = s.ring.node(7).expect("owner");
        let keyed = |tried| Want {
            routing_key: Some(7),
            ..want(&hash, tried)
        };
        for _ in 0..5 {
            assert_eq!(pick(&s, keyed(&[])), Ok(owner));
        }
        let second = s.ring.nodes_from(7).nth(1).expect("successor");
        assert_eq!(pick(&s, keyed(&[owner])), Ok(second));
    }

    #[test]
    fn sharded_routes_only_to_the_owner_even_when_it_is_ejected_or_was_tried() {
        let s = set(&["stable", "stable", "stable", "gray"]);
        for key in 0..50u64 {
            let owner = s.ring.node(key).expect("owner");
            let keyed = |tried| Want {
                routing_key: Some(key),
                gray: true,
                ..want(&Sharded, tried)
            };
            assert_eq!(pick(&s, keyed(&[])), Ok(owner));
            assert_eq!(pick(&s, keyed(&[owner])), Err(NoPick::Empty));
        }
        let unkeyed = want(&Sharded, &[]);
        assert_eq!(pick(&s, unkeyed), Err(NoPick::Empty));
    }

    #[test]
    fn the_callers_zone_is_preferred_and_weight_zero_only_when_nothing_else_is_left() {
        let placed = |zone: &str, weight: u32, i: u16| {
            Arc::new(
                Endpoint::new(
                    ([127, 0, 0, 1], 2000 + i).into(),
                    format!("z{i}"),
                    Track::Stable,
                    1,
                )
                .placed(weight, zone.to_string()),
            )
        };
        let s = EndpointSet::new(vec![
            placed("a", 100, 0),
            placed("b", 100, 1),
            placed("b", 0, 2),
            placed("c", 100, 3),
        ]);
        let rr = RoundRobin::default();
        let in_zone = |zone, tried| Want {
            zone: Some(zone),
            ..want(&rr, tried)
        };
        for _ in 0..8 {
            assert_eq!(pick(&s, in_zone("a", &[])), Ok(0));
            assert_eq!(pick(&s, in_zone("b", &[])), Ok(1), "weight 0 waits");
        }
        // The zone's instances tried: the others take the call; the drained one last.
        for _ in 0..8 {
            assert!(matches!(pick(&s, in_zone("b", &[1])), Ok(0 | 3)));
        }
        assert_eq!(pick(&s, in_zone("b", &[0, 1, 3])), Ok(2));
        // Without a zone, every weighted instance shares.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..12 {
            seen.insert(pick(&s, want(&rr, &[])).expect("pick"));
        }
        assert_eq!(seen, [0, 1, 3].into_iter().collect());
    }
}
