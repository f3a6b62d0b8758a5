//! Key ownership for sharded services: which keys this instance owns on its service's
//! consistent-hash ring, as the registry describes the ring now.
//!
//! Clients of a sharded service ([`crate::balance::Balance::Sharded`]) send each request
//! to the owner of its routing key and say which key (`RequestHeader.routing_key`). A
//! server with [`Ownership`] checks the key against its own view of the ring and answers
//! a key it does not own with [`Status::not_mine`](crate::Status::not_mine) before the
//! handler runs, so a misrouted write — a client with a stale view, a bug, a hand-made
//! call — never lands on the wrong shard. When this instance is missing from its own
//! view (a registry that has not caught up), it cannot judge and serves.

use std::sync::{Arc, RwLock};

use crate::balance::Ring;
use crate::discovery::{DiscoveryError, Registry};

/// This instance's view of its service's ring.
#[derive(Debug)]
pub struct Ownership {
    me: String,
    /// The ring of shard names, and each shard's holders (its replicas).
    ring: Arc<RwLock<(Ring, Vec<Vec<String>>)>>,
}

fn build(names: Vec<String>) -> (Ring, Vec<Vec<String>>) {
    (
        Ring::new(&names),
        names.into_iter().map(|n| vec![n]).collect(),
    )
}

/// The ring of `map`'s shards, and each shard's holders (its replicas).
fn map_view(map: &crate::discovery::shard_map::ShardMap) -> (Ring, Vec<Vec<String>>) {
    (
        Ring::new(&map.shards),
        (0..map.shards.len()).map(|i| map.replicas_of(i)).collect(),
    )
}

impl Ownership {
    /// Follows `service`'s instances in `registry`; this instance is the one registered
    /// as `instance_id`.
    pub async fn follow(
        registry: &dyn Registry,
        service: &str,
        instance_id: &str,
    ) -> Result<Ownership, DiscoveryError> {
        let watch = registry.watch(service).await?;
        Ok(Ownership::following(instance_id, watch, |instances| {
            build(instances.iter().map(|i| i.id.clone()).collect())
        }))
    }

    /// This instance (`me`) with the ring `view` makes of what `watch` holds, now and
    /// after every change, for as long as the ownership lives.
    fn following<T: Send + Sync + 'static>(
        me: &str,
        mut watch: tokio::sync::watch::Receiver<T>,
        view: impl Fn(&T) -> (Ring, Vec<Vec<String>>) + Send + 'static,
    ) -> Ownership {
        let ring = Arc::new(RwLock::new(view(&watch.borrow_and_update())));
        let shared = Arc::downgrade(&ring);
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                let Some(ring) = shared.upgrade() else {
                    return;
                };
                let fresh = view(&watch.borrow_and_update());
                *ring
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
            }
        });
        Ownership {
            me: me.to_string(),
            ring,
        }
    }

    /// A fixed ring of `names`, this instance being `me` (tests, static deployments).
    pub fn fixed(me: &str, names: Vec<String>) -> Ownership {
        Ownership {
            me: me.to_string(),
            ring: Arc::new(RwLock::new(build(names))),
        }
    }

    /// The shards of `map`, this instance being `me`: it owns the keys of every shard it
    /// holds a replica of (whether it leads that shard is the replica's to judge).
    pub fn of_map(me: &str, map: &crate::discovery::shard_map::ShardMap) -> Ownership {
        Ownership {
            me: me.to_string(),
            ring: Arc::new(RwLock::new(map_view(map))),
        }
    }

    /// The shards of the map `maps` holds now and after every change (see
    /// [`crate::discovery::shard_map::watch`]), this instance being `me`: a replica
    /// added to a shard owns its keys from the version that names it.
    pub fn follow_map(
        me: &str,
        maps: tokio::sync::watch::Receiver<Option<crate::discovery::shard_map::ShardMap>>,
    ) -> Ownership {
        Ownership::following(me, maps, |map| match map {
            Some(map) => map_view(map),
            None => build(Vec::new()),
        })
    }

    /// Whether this instance owns `key`: the error names the owner when another does.
    pub fn owns(&self, key: u64) -> Result<(), NotMine> {
        let guard = self
            .ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (ring, holders) = &*guard;
        if !holders.iter().flatten().any(|n| *n == self.me) {
            return Ok(());
        }
        match ring.node(key).and_then(|i| holders.get(i)) {
            Some(owners) if !owners.contains(&self.me) => Err(NotMine {
                owner: owners.first().cloned().unwrap_or_default(),
            }),
            _ => Ok(()),
        }
    }
}

/// A key another instance owns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the key belongs to {owner}")]
pub struct NotMine {
    /// The owner's name on the ring (its instance id).
    pub owner: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_exactly_one_owner_and_strangers_cannot_judge() {
        let names: Vec<String> = (1..=3).map(|i| format!("store-{i}")).collect();
        let views: Vec<Ownership> = names
            .iter()
            .map(|me| Ownership::fixed(me, names.clone()))
            .collect();
        for key in 0..2_000u64 {
            let owners = views.iter().filter(|v| v.owns(key).is_ok()).count();
            assert_eq!(owners, 1, "key {key}");
        }
        let map = crate::discovery::shard_map::ShardMap {
            version: 1,
            shards: names.clone(),
            replicas: crate::discovery::shard_map::place(&names, 2).expect("placed"),
            nodes: Vec::new(),
            copies: 2,
        };
        let views: Vec<Ownership> = names.iter().map(|me| Ownership::of_map(me, &map)).collect();
        for key in 0..2_000u64 {
            let owners = views.iter().filter(|v| v.owns(key).is_ok()).count();
            assert_eq!(owners, 2, "two replicas of key {key}");
        }
        let outsider = Ownership::fixed("store-9", names);
        assert!(
            outsider.owns(42).is_ok(),
            "not on its own ring: cannot judge"
        );
    }
}
