//! Load balancing: how a channel picks an instance for each call.
//!
//! The channel narrows the instances first — never one this call already tried, never one
//! whose admission level would shed the call, healthy ones before ejected ones, the
//! caller's version label (gray users to gray instances) and zone before others, and
//! instances of weight 0 only when nothing else is left — and then a [`Balancer`] picks
//! among what remains. Strategies, one file each:
//!
//! - [`PowerOfTwoChoices`] (default): two weighted-random candidates, the less loaded per
//!   unit of weight wins, where load is in-flight calls times a moving average of latency.
//!   It avoids the herding of least-loaded and reacts to slow instances within a few calls.
//! - [`RoundRobin`]: each instance in turn, in proportion to its weight.
//! - [`ConsistentHash`]: the instance that owns the call's routing key (usually a uid) on
//!   a [`Ring`] every client computes identically, or the next one on the ring.
//! - [`Sharded`]: the routing key's owner only, healthy or not; for sharded storage.
//!
//! [`Balance`] names the built-in ones for `ChannelBuilder::balance`; a strategy of your own
//! implements [`Balancer`] and plugs in with `ChannelBuilder::balancer`. Weights and zones
//! come from the registry's records ([`Instance::weight`](crate::discovery::Instance),
//! `Instance::zone`); hashing strategies ignore weights, so that every client computes the
//! same owner.

mod consistent_hash;
mod p2c;
mod ring;
mod round_robin;
mod sharded;

use std::net::SocketAddr;
use std::sync::Arc;

pub use consistent_hash::ConsistentHash;
pub use p2c::PowerOfTwoChoices;
pub use ring::{POINTS_PER_NODE, Ring, key_position, ring_hash};
pub use round_robin::RoundRobin;
pub use sharded::Sharded;

/// One instance a [`Balancer`] may pick, as the channel sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Its position in the channel's instance list, which is also its node on the ring.
    pub index: usize,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its instance id (the address when it has none).
    pub name: &'a str,
    /// The zone its record names (empty when none).
    pub zone: &'a str,
    /// Its relative share of traffic (100 by default; never 0 here unless all are 0).
    pub weight: u32,
    /// Calls in flight to it from this channel.
    pub in_flight: usize,
    /// In-flight calls (plus one) times its latency average in microseconds, which halves
    /// for every second without a sample: lower is better.
    pub load: u64,
}

/// What a [`Balancer`] knows of the call.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The call's routing key, when it has one.
    pub routing_key: Option<u64>,
    /// The channel's consistent-hash ring over all its instances (nodes are
    /// [`Candidate::index`]).
    pub ring: &'a Ring,
}

/// A load-balancing strategy: picks one of the candidates the channel left for an attempt.
pub trait Balancer: std::fmt::Debug + Send + Sync + 'static {
    /// The position in `candidates` (never empty) of the instance to send to.
    fn choose(&self, call: &Call<'_>, candidates: &[Candidate<'_>]) -> usize;

    /// True when only the routing key's owner may take a call, whatever its health, and
    /// no other instance ever (sharded data). The channel then skips narrowing and
    /// [`choose`](Self::choose), and keeps a departed instance on the ring.
    fn owner_only(&self) -> bool {
        false
    }
}

/// The built-in strategies, by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    /// [`PowerOfTwoChoices`].
    #[default]
    PowerOfTwoChoices,
    /// [`RoundRobin`].
    RoundRobin,
    /// [`ConsistentHash`]: by routing key on a consistent-hash ring (calls without a key go
    /// round robin). When the key's instance is unhealthy, the next one on the ring takes
    /// the call: affinity, for caches.
    ConsistentHash,
    /// [`Sharded`]: by routing key on a consistent-hash ring, strictly: only the key's
    /// owner ever gets the call, healthy or not, because only it holds the key's data.
    /// Calls without a key fail. A shard that leaves stays on the ring (its keys fail
    /// fast) until an instance with its id returns; gray instances never join it.
    Sharded,
}

impl Balance {
    /// A new balancer of this strategy (each channel has its own state).
    pub fn balancer(self) -> Arc<dyn Balancer> {
        match self {
            Balance::PowerOfTwoChoices => Arc::new(PowerOfTwoChoices),
            Balance::RoundRobin => Arc::new(RoundRobin::default()),
            Balance::ConsistentHash => Arc::new(ConsistentHash::default()),
            Balance::Sharded => Arc::new(Sharded),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Candidate;

    /// Candidates e0, e1, … with these weights and loads.
    pub(crate) fn candidates<'a>(
        names: &'a [String],
        weights: &[u32],
        loads: &[u64],
    ) -> Vec<Candidate<'a>> {
        weights
            .iter()
            .zip(loads)
            .enumerate()
            .map(|(i, (&weight, &load))| Candidate {
                index: i,
                addr: ([127, 0, 0, 1], 1000 + i as u16).into(),
                name: &names[i],
                zone: "",
                weight,
                in_flight: 0,
                load,
            })
            .collect()
    }
}
