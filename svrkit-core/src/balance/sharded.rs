//! Sharding: the routing key's owner, and nobody else.

use super::{Balancer, Call, Candidate};

/// Only the routing key's owner on the ring takes a call, healthy or not, because only it
/// holds the key's data; calls without a key fail (see [`Balancer::owner_only`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Sharded;

impl Balancer for Sharded {
    fn choose(&self, call: &Call<'_>, candidates: &[Candidate<'_>]) -> usize {
        call.routing_key
            .and_then(|key| call.ring.node(key))
            .and_then(|owner| candidates.iter().position(|c| c.index == owner))
            .unwrap_or(0)
    }

    fn owner_only(&self) -> bool {
        true
    }
}
