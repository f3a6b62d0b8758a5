//! Consistent hashing with fall-over to the ring's next instance.

use super::{Balancer, Call, Candidate, RoundRobin};

/// The candidate that owns the call's routing key on the ring, or the first candidate
/// after it on the ring when the owner was narrowed away (unhealthy, tried, shedding):
/// affinity, for caches. Calls without a key go round robin.
#[derive(Debug, Default)]
pub struct ConsistentHash {
    unkeyed: RoundRobin,
}

impl Balancer for ConsistentHash {
    fn choose(&self, call: &Call<'_>, candidates: &[Candidate<'_>]) -> usize {
        let Some(key) = call.routing_key else {
            return self.unkeyed.next(candidates);
        };
        call.ring
            .nodes_from(key)
            .find_map(|node| candidates.iter().position(|c| c.index == node))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Ring;
    use crate::balance::test_support::candidates;

    #[test]
    fn a_key_goes_to_its_owner_then_to_the_next_on_the_ring() {
        let names: Vec<String> = (0..4).map(|i| format!("e{i}")).collect();
        let ring = Ring::new(&["e0", "e1", "e2", "e3"]);
        let all = candidates(&names, &[100; 4], &[1; 4]);
        let hash = ConsistentHash::default();
        for key in 0..100u64 {
            let call = Call {
                routing_key: Some(key),
                ring: &ring,
            };
            let owner = ring.node(key).expect("owner");
            assert_eq!(all[hash.choose(&call, &all)].index, owner);
            let without: Vec<_> = all.iter().copied().filter(|c| c.index != owner).collect();
            let second = ring.nodes_from(key).nth(1).expect("successor");
            assert_eq!(without[hash.choose(&call, &without)].index, second);
        }
    }
}
