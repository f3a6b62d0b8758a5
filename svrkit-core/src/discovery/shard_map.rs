//! Shard maps: which shards a sharded service has, fixed when it is created, so that a
//! key's shard never depends on who happens to be alive.
//!
//! Without a map, a sharded service's ring is built from its live instances: a process
//! that starts while a shard is paused builds a ring without it, and sends that shard's
//! keys to a neighbour, which accepts them (its own ownership check follows the same
//! live set) — acknowledged writes then vanish when the shard comes back. With a map,
//! the ring is the map's shards, live or not: clients send a key to its shard or, when
//! that shard has no live instance, refuse the call `unavailable` without sending it
//! (not processed, so it is safe to retry later); servers own exactly the map's share.
//!
//! A map lives in the registry's configuration store as the stable value of the
//! document `SERVICE.shards` ([`map_doc`]): `{"version":1,"shards":["store-1",…]}`,
//! shard names being the instance ids that serve them. [`ensure`] creates it once and
//! afterwards only checks that it is unchanged: the shard count of a service is fixed.
//!
//! A replicated service's map also names each shard's replicas (`"replicas":[["store-1",
//! "store-2","store-3"],…]`): the instances that each hold a copy of that shard, one of
//! them its leader at a time (a Raft group per shard; see `wx-storage`'s `replica`
//! module). Clients send a shard's keys to the replica they believe leads it and follow
//! the leader hint a follower answers with. Without `replicas` a shard's only replica is
//! the instance named like it.

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::DiscoveryError;
use crate::Channel;
use crate::config::ConfigStore;

/// The most shards a map may name.
pub const MAX_SHARDS: usize = 4096;

/// A sharded service's shards, in ring order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Changes when the map does (membership changes, later); 1 when created.
    pub version: u64,
    /// The shards' names: the instance ids serving them.
    pub shards: Vec<String>,
    /// Each shard's replicas (instance ids), in the order of `shards`; empty when every
    /// shard is one instance (the one named like it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Vec<String>>,
}

impl ShardMap {
    /// The replicas of shard `index`: the instances holding a copy of it.
    pub fn replicas_of(&self, index: usize) -> Vec<String> {
        match self.replicas.get(index) {
            Some(replicas) if !replicas.is_empty() => replicas.clone(),
            _ => self.shards.get(index).cloned().into_iter().collect(),
        }
    }

    /// The indexes of the shards `instance` holds a replica of.
    pub fn hosted_by(&self, instance: &str) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|&i| self.replicas_of(i).iter().any(|r| r == instance))
            .collect()
    }

    /// How many copies each shard has.
    pub fn replication(&self) -> usize {
        self.replicas.first().map_or(1, |r| r.len().max(1))
    }
}

/// Where the replicas of `shards` go when each has `replicas` copies: shard `i` on the
/// instances named by shards `i`, `i + 1`, … (wrapping), so every instance holds the same
/// number of replicas and no two copies of a shard share an instance. `None` when there
/// are fewer instances than copies.
pub fn place(shards: &[String], replicas: usize) -> Option<Vec<Vec<String>>> {
    if replicas <= 1 {
        return Some(Vec::new());
    }
    if replicas > shards.len() {
        return None;
    }
    Some(
        (0..shards.len())
            .map(|i| {
                (0..replicas)
                    .map(|k| shards[(i + k) % shards.len()].clone())
                    .collect()
            })
            .collect(),
    )
}

/// Why a shard map is refused.
#[derive(Debug, thiserror::Error)]
pub enum ShardMapError {
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] DiscoveryError),
    /// The stored map is not a map.
    #[error("the shard map of {service} does not parse: {message}")]
    Corrupt {
        /// The service.
        service: String,
        /// What the parser said.
        message: String,
    },
    /// A map with other shards exists: a service's shard count is fixed at creation.
    #[error(
        "{service} was created with shards {existing:?}; it cannot become {wanted:?} (the shard count is fixed when a service is created)"
    )]
    Changed {
        /// The service.
        service: String,
        /// Its shards.
        existing: Vec<String>,
        /// What was asked for.
        wanted: Vec<String>,
    },
    /// The shards asked for are not a valid map.
    #[error("a shard map needs 1 to {MAX_SHARDS} distinct, non-empty shard names")]
    Invalid,
    /// More copies of each shard than instances to hold them.
    #[error("{replicas} replicas of each shard need at least {replicas} instances, not {shards}")]
    TooFewInstances {
        /// Copies asked for.
        replicas: usize,
        /// Instances (shards) there are.
        shards: usize,
    },
    /// A map with another replication exists.
    #[error("{service} was created with {existing} replica(s) per shard, not {wanted}")]
    ReplicationChanged {
        /// The service.
        service: String,
        /// Copies it has.
        existing: usize,
        /// Copies asked for.
        wanted: usize,
    },
}

/// The configuration document holding `service`'s shard map.
pub fn map_doc(service: &str) -> String {
    format!("{service}.shards")
}

/// `service`'s shard map, if it has one.
pub async fn load(
    store: &dyn ConfigStore,
    service: &str,
) -> Result<Option<ShardMap>, ShardMapError> {
    let doc = store.load(&map_doc(service)).await?;
    if doc.stable_version == 0 {
        return Ok(None);
    }
    serde_json::from_str(&doc.stable)
        .map(Some)
        .map_err(|e| ShardMapError::Corrupt {
            service: service.to_string(),
            message: e.to_string(),
        })
}

/// Creates `service`'s shard map with `shards` unless it has one; an existing map must
/// name the same shards. Returns the map in force.
pub async fn ensure(
    store: &dyn ConfigStore,
    service: &str,
    shards: Vec<String>,
) -> Result<ShardMap, ShardMapError> {
    ensure_replicated(store, service, shards, 1).await
}

/// [`ensure`] for a service whose shards have `replicas` copies each, placed by
/// [`place`]; an existing map must have the same shards and replication.
pub async fn ensure_replicated(
    store: &dyn ConfigStore,
    service: &str,
    shards: Vec<String>,
    replicas: usize,
) -> Result<ShardMap, ShardMapError> {
    let mut distinct = shards.clone();
    distinct.sort();
    distinct.dedup();
    if shards.is_empty()
        || shards.len() > MAX_SHARDS
        || distinct.len() != shards.len()
        || shards.iter().any(String::is_empty)
    {
        return Err(ShardMapError::Invalid);
    }
    let placed = place(&shards, replicas).ok_or(ShardMapError::TooFewInstances {
        replicas,
        shards: shards.len(),
    })?;
    if let Some(existing) = load(store, service).await? {
        if existing.shards != shards {
            return Err(ShardMapError::Changed {
                service: service.to_string(),
                existing: existing.shards,
                wanted: shards,
            });
        }
        if existing.replication() != replicas.max(1) {
            return Err(ShardMapError::ReplicationChanged {
                service: service.to_string(),
                existing: existing.replication(),
                wanted: replicas.max(1),
            });
        }
        return Ok(existing);
    }
    let map = ShardMap {
        version: 1,
        shards,
        replicas: placed,
    };
    let text = serde_json::to_string(&map).map_err(|e| DiscoveryError::Backend(e.to_string()))?;
    crate::config::publish_stable(store, &map_doc(service), text).await?;
    Ok(map)
}

/// Puts `channel` (to `service`'s shards) on the ring of `service`'s shard map: at once
/// when there is one, else as soon as one is made (the shards may start after their
/// callers), for as long as the channel lives.
pub async fn follow(
    store: Arc<dyn ConfigStore>,
    service: &str,
    channel: &Channel,
) -> Result<(), ShardMapError> {
    if let Some(map) = load(&*store, service).await? {
        channel.set_shard_map(&map);
        return Ok(());
    }
    let mut watch = store.watch_config(&map_doc(service)).await?;
    let weak = channel.downgrade();
    let service = service.to_string();
    let task = tokio::spawn(async move {
        loop {
            let doc = watch.borrow_and_update().clone();
            if doc.stable_version > 0 {
                match serde_json::from_str::<ShardMap>(&doc.stable) {
                    Ok(map) => {
                        if let Some(channel) = weak.upgrade() {
                            tracing::info!(
                                service,
                                shards = map.shards.len(),
                                "following the shard map"
                            );
                            channel.set_shard_map(&map);
                        }
                    }
                    Err(e) => {
                        tracing::error!(service, error = %e, "a shard map that does not parse")
                    }
                }
                return;
            }
            if watch.changed().await.is_err() {
                return;
            }
        }
    });
    channel.own_task(task.abort_handle());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::EmbeddedRegistry;

    #[tokio::test]
    async fn a_map_is_made_once_and_its_shards_are_fixed() {
        let dir = std::env::temp_dir().join(format!(
            "svrkit-shardmap-{}-{:x}",
            std::process::id(),
            crate::context::random_u64()
        ));
        let registry = EmbeddedRegistry::new(&dir);
        let names = |n: usize| (1..=n).map(|i| format!("store-{i}")).collect::<Vec<_>>();
        assert!(load(&registry, "s").await.expect("read").is_none());
        let made = ensure(&registry, "s", names(3)).await.expect("made");
        assert_eq!(made.version, 1);
        // Reopened (a restart): the same map.
        let again = EmbeddedRegistry::new(&dir);
        assert_eq!(load(&again, "s").await.expect("read"), Some(made.clone()));
        assert_eq!(ensure(&again, "s", names(3)).await.expect("same"), made);
        assert!(matches!(
            ensure(&again, "s", names(2)).await,
            Err(ShardMapError::Changed { .. })
        ));
        for bad in [vec![], vec!["a".into(), "a".into()], vec![String::new()]] {
            assert!(matches!(
                ensure(&again, "t", bad).await,
                Err(ShardMapError::Invalid)
            ));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn replicas_go_to_distinct_instances_evenly() {
        let names: Vec<String> = (1..=4).map(|i| format!("s-{i}")).collect();
        let placed = place(&names, 3).expect("enough instances");
        for replicas in &placed {
            let mut distinct = replicas.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), 3);
        }
        let map = ShardMap {
            version: 1,
            shards: names.clone(),
            replicas: placed,
        };
        for name in &names {
            assert_eq!(map.hosted_by(name).len(), 3, "{name}");
        }
        assert_eq!(map.replication(), 3);
        assert!(place(&names, 5).is_none());
        let single = ShardMap {
            version: 1,
            shards: names.clone(),
            replicas: Vec::new(),
        };
        assert_eq!(single.replicas_of(1), vec!["s-2".to_string()]);
        assert_eq!(single.hosted_by("s-2"), vec![1]);
    }
}
