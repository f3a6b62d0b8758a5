//! The instance set of a channel: replacing it as discovery reports changes (instances
//! that stay keep their connections and statistics), and reading it (addresses, the
//! owner of a key on the ring, one key per instance, calls in flight).

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};

use super::{Channel, Target};
use crate::client::endpoint::Endpoint;
use crate::client::pick::{EndpointSet, Group};
use crate::discovery::shard_map::ShardMap;

impl Channel {
    /// Replaces the instances this channel sends to. Instances that stay keep their
    /// connections and statistics; calls in flight to removed ones finish undisturbed.
    pub fn set_targets(&self, targets: impl IntoIterator<Item = Target>) {
        let targets: Vec<Target> = targets.into_iter().collect();
        let shards = self
            .inner
            .shards
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone_from(&targets);
        let old = self.inner.snapshot();
        let sharded = self.inner.balancer.owner_only();
        let mut gray_users = Vec::new();
        let endpoints = targets
            .into_iter()
            // A gray instance of a sharded service owns no data: it must never join the
            // ring (shards are upgraded in place, by promotion).
            .filter(|t| !(sharded && t.track.is_gray()))
            .map(|t| {
                if let Some(selector) = t.gray_users.filter(|_| t.track.is_gray())
                    && !gray_users.contains(&selector)
                {
                    gray_users.push(selector);
                }
                old.endpoints
                    .iter()
                    .find(|e| {
                        e.addr == t.addr
                            && e.name == t.name
                            && e.track == t.track
                            && e.weight == t.weight
                            && e.zone == t.zone
                            && e.protocol == t.protocol
                    })
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(
                            Endpoint::new(
                                t.addr,
                                t.name,
                                t.track,
                                self.inner.config.connections_per_address,
                            )
                            .placed(t.weight, t.zone)
                            .speaking(t.protocol),
                        )
                    })
            })
            .collect::<Vec<_>>();
        let mut endpoints = endpoints;
        let mut groups = Vec::new();
        if let Some(map) = shards.as_deref() {
            // The map decides the ring: instances outside it get nothing, and a replica
            // with no live instance is there as an absent endpoint, refusing its calls
            // without sending them.
            let replicas: Vec<Vec<String>> =
                (0..map.shards.len()).map(|i| map.replicas_of(i)).collect();
            let named = |name: &str| replicas.iter().any(|r| r.iter().any(|n| n == name));
            endpoints.retain(|e| named(&e.name));
            for name in replicas.iter().flatten() {
                if !endpoints.iter().any(|e| e.name == *name) {
                    let kept = old.endpoints.iter().find(|e| e.name == *name && e.absent);
                    endpoints.push(kept.cloned().unwrap_or_else(|| {
                        Arc::new(Endpoint::absent(
                            name.clone(),
                            self.inner.config.connections_per_address,
                        ))
                    }));
                }
            }
            if map.replication() > 1 {
                for (shard, members) in map.shards.iter().zip(&replicas) {
                    let leader = old
                        .groups
                        .iter()
                        .find(|g| g.name == *shard)
                        .map(|g| Arc::clone(&g.leader))
                        .unwrap_or_default();
                    groups.push(Group {
                        name: shard.clone(),
                        members: members
                            .iter()
                            .filter_map(|m| endpoints.iter().position(|e| e.name == *m))
                            .collect(),
                        leader,
                    });
                }
            }
        } else if sharded {
            // A shard that left (crashed, or restarting) still owns its keys: it stays on
            // the ring, failing fast, rather than letting a neighbour take its keys and
            // answer without their data. It is replaced when an instance of the same id
            // returns.
            for e in &old.endpoints {
                if !endpoints.iter().any(|n| n.name == e.name) {
                    endpoints.push(Arc::clone(e));
                }
            }
        }
        let set = if groups.is_empty() {
            EndpointSet::new(endpoints)
        } else {
            EndpointSet::grouped(endpoints, groups)
        };
        *self
            .inner
            .set
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(set.with_gray_users(gray_users));
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// From now on the ring is `map`'s shards (see [`crate::ChannelBuilder::shards`]), for
    /// a map that appeared after the channel was built, each shard's keys sent to its
    /// replicas (its believed leader first) when the map names them; see
    /// [`crate::discovery::shard_map`]. Calls for a shard with no live instance are
    /// refused from now on.
    pub fn set_shard_map(&self, map: &ShardMap) {
        let live = self
            .inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        *self
            .inner
            .shards
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(map.clone()));
        self.set_targets(live);
    }

    /// Notifies each time the instance set is replaced (by discovery, say).
    pub fn subscribe_targets(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// The addresses this channel sends to now.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.inner
            .snapshot()
            .endpoints
            .iter()
            .map(|e| e.addr)
            .collect()
    }

    /// The instance (its name on the hash ring: the instance id) that owns `key` on this
    /// channel's consistent-hash ring now, if there is any instance. Callers use it to
    /// group keyed work by destination — one request per shard instead of one per key.
    pub fn owner_of(&self, key: u64) -> Option<String> {
        let set = self.inner.snapshot();
        if let Some(group) = set.group_of(key) {
            return Some(group.name.clone());
        }
        set.ring.node(key).map(|i| set.endpoints[i].name.clone())
    }

    /// One routing key owned by each instance on the hash ring now, so a caller can
    /// address every instance of a sharded service in turn (a sweep across shards, where
    /// routing by a data key reaches only one). Keys are found by search, at most a few
    /// thousand hash lookups per instance.
    pub fn instance_keys(&self) -> Vec<u64> {
        let set = self.inner.snapshot();
        let n = if set.groups.is_empty() {
            set.endpoints.len()
        } else {
            set.groups.len()
        };
        let mut keys: Vec<Option<u64>> = vec![None; n];
        let mut found = 0;
        let mut key = 0u64;
        while found < n && key < (n as u64 + 1) * 4096 {
            if let Some(i) = set.ring.node(key)
                && keys[i].is_none()
            {
                keys[i] = Some(key);
                found += 1;
            }
            key += 1;
        }
        keys.into_iter().flatten().collect()
    }

    /// Calls in flight on this channel's connections.
    pub fn in_flight(&self) -> usize {
        self.inner
            .snapshot()
            .endpoints
            .iter()
            .map(|e| e.connection_in_flight())
            .sum()
    }
}
