//! Load balancing: how a channel picks an instance for each call.
//!
//! - [`Balance::PowerOfTwoChoices`] (default): pick two instances at random and send to
//!   the less loaded, where load is in-flight calls times a moving average of latency. It
//!   avoids the herding of least-loaded and reacts to slow instances within a few calls.
//! - [`Balance::RoundRobin`]: each instance in turn.
//! - [`Balance::ConsistentHash`]: the instance that owns the call's routing key (usually
//!   a uid) on a [`Ring`] every client computes identically; for sharded storage.

mod ring;

pub use ring::{POINTS_PER_NODE, Ring, key_position, ring_hash};

/// A balancing strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    /// Two random choices, the less loaded wins.
    #[default]
    PowerOfTwoChoices,
    /// Each instance in turn.
    RoundRobin,
    /// By routing key on a consistent-hash ring (calls without a key go round robin).
    /// When the key's instance is unhealthy, the next one on the ring takes the call:
    /// affinity, for caches.
    ConsistentHash,
    /// By routing key on a consistent-hash ring, strictly: only the key's owner ever gets
    /// the call, healthy or not, because only it holds the key's data (sharded storage).
    /// Calls without a key fail. A shard that leaves stays on the ring (its keys fail
    /// fast) until an instance with its id returns; gray instances never join it.
    Sharded,
}
