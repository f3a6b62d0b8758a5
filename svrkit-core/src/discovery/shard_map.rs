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
//!
//! A shard's replicas change online (a replica added, removed or replaced): each change
//! is a new version of the map ([`ShardMap::with_replicas`], published by [`replace`]),
//! which clients ([`follow`]), servers ([`crate::server::Ownership::follow_map`]) and
//! the replicas themselves ([`watch`]) follow. `nodes` lists every instance that ever
//! held a replica, in the order they were first given one, so that a replica's number
//! (a Raft node id: its position, from 1) never changes; `copies` is the replication the
//! service was created with, which a change in progress (a fourth replica joining before
//! the one it replaces leaves) does not alter.

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
    /// Every instance ever given a replica, first the shards' own names; empty means
    /// `shards` (see [`ShardMap::nodes`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Copies per shard the service was created with; 0 in maps written before this
    /// field (then the first shard's count).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub copies: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The most replicas one shard may have (during a change, one more than `copies`).
pub const MAX_REPLICAS: usize = 8;

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

    /// How many copies each shard has (as the service was created).
    pub fn replication(&self) -> usize {
        if self.copies > 0 {
            return self.copies;
        }
        self.replicas.first().map_or(1, |r| r.len().max(1))
    }

    /// The replicas shard `index` was created with (its Raft group's founding members,
    /// whatever changed since).
    pub fn founders_of(&self, index: usize) -> Vec<String> {
        match place(&self.shards, self.replication()) {
            Some(placed) if !placed.is_empty() => placed.get(index).cloned().unwrap_or_default(),
            _ => self.shards.get(index).cloned().into_iter().collect(),
        }
    }

    /// Every instance that ever held a replica; a replica's node number is its position
    /// here plus one, and never changes.
    pub fn nodes(&self) -> &[String] {
        if self.nodes.is_empty() {
            &self.shards
        } else {
            &self.nodes
        }
    }

    /// This map with shard `index` held by `replicas` (1 to [`MAX_REPLICAS`] distinct
    /// instance ids), as the next version. New instances are appended to the nodes.
    pub fn with_replicas(
        &self,
        index: usize,
        replicas: Vec<String>,
    ) -> Result<ShardMap, ShardMapError> {
        let mut distinct = replicas.clone();
        distinct.sort();
        distinct.dedup();
        if index >= self.shards.len()
            || replicas.is_empty()
            || replicas.len() > MAX_REPLICAS
            || distinct.len() != replicas.len()
            || replicas.iter().any(|r| r.is_empty() || r.len() > 128)
        {
            return Err(ShardMapError::BadReplicas {
                shard: index + 1,
                replicas,
            });
        }
        let mut next = self.clone();
        next.version += 1;
        if next.replicas.is_empty() {
            next.replicas = (0..self.shards.len())
                .map(|i| self.replicas_of(i))
                .collect();
        }
        next.copies = self.replication();
        next.nodes = self.nodes().to_vec();
        for replica in &replicas {
            if !next.nodes.contains(replica) {
                next.nodes.push(replica.clone());
            }
        }
        next.replicas[index] = replicas;
        Ok(next)
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
    /// A shard's replicas must be 1 to [`MAX_REPLICAS`] distinct instance ids, of a
    /// shard the map has.
    #[error("shard {shard} cannot be held by {replicas:?}")]
    BadReplicas {
        /// The shard (from 1).
        shard: usize,
        /// The replicas asked for.
        replicas: Vec<String>,
    },
    /// The map changed since it was read: read it again and redo the change.
    #[error("the shard map of {service} is at version {found}, not {expected}")]
    Moved {
        /// The service.
        service: String,
        /// The version the change was made from.
        expected: u64,
        /// The version found.
        found: u64,
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
        nodes: Vec::new(),
        copies: replicas.max(1),
    };
    let text = serde_json::to_string(&map).map_err(|e| DiscoveryError::Backend(e.to_string()))?;
    crate::config::publish_stable(store, &map_doc(service), text).await?;
    Ok(map)
}

/// Publishes `next` as `service`'s map if the map is still at `next.version - 1` (made by
/// [`ShardMap::with_replicas`] from it); [`ShardMapError::Moved`] when another change got
/// there first. (The registry has no compare-and-set: two changes at the same moment
/// can still race, so make one at a time.)
pub async fn replace(
    store: &dyn ConfigStore,
    service: &str,
    next: &ShardMap,
) -> Result<(), ShardMapError> {
    let found = load(store, service).await?.map_or(0, |m| m.version);
    if found + 1 != next.version {
        return Err(ShardMapError::Moved {
            service: service.to_string(),
            expected: next.version.saturating_sub(1),
            found,
        });
    }
    let text = serde_json::to_string(next).map_err(|e| DiscoveryError::Backend(e.to_string()))?;
    crate::config::publish_stable(store, &map_doc(service), text).await?;
    Ok(())
}

/// `service`'s shard map now and after every change (`None` until one is made), for as
/// long as a receiver lives. A version that does not parse is logged and skipped.
pub async fn watch(
    store: Arc<dyn ConfigStore>,
    service: &str,
) -> Result<tokio::sync::watch::Receiver<Option<ShardMap>>, ShardMapError> {
    let first = load(&*store, service).await?;
    let (tx, rx) = tokio::sync::watch::channel(first);
    let mut docs = store.watch_config(&map_doc(service)).await?;
    let service = service.to_string();
    tokio::spawn(async move {
        loop {
            let doc = docs.borrow_and_update().clone();
            if doc.stable_version > 0 {
                match serde_json::from_str::<ShardMap>(&doc.stable) {
                    Ok(map) => {
                        tx.send_if_modified(|known| {
                            let newer = known.as_ref().is_none_or(|k| k.version < map.version);
                            if newer {
                                *known = Some(map);
                            }
                            newer
                        });
                    }
                    Err(e) => {
                        tracing::error!(service, error = %e, "a shard map that does not parse")
                    }
                }
            }
            tokio::select! {
                changed = docs.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}

/// Puts `channel` (to `service`'s shards) on the ring of `service`'s shard map: at once
/// when there is one, else as soon as one is made (the shards may start after their
/// callers), and again at every change of its replicas, for as long as the channel
/// lives.
pub async fn follow(
    store: Arc<dyn ConfigStore>,
    service: &str,
    channel: &Channel,
) -> Result<(), ShardMapError> {
    let mut maps = watch(store, service).await?;
    if let Some(map) = &*maps.borrow_and_update() {
        channel.set_shard_map(map);
    }
    let weak = channel.downgrade();
    let service = service.to_string();
    let task = tokio::spawn(async move {
        while maps.changed().await.is_ok() {
            let Some(map) = maps.borrow_and_update().clone() else {
                continue;
            };
            let Some(channel) = weak.upgrade() else {
                return;
            };
            tracing::info!(
                service,
                version = map.version,
                shards = map.shards.len(),
                "following the shard map"
            );
            channel.set_shard_map(&map);
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
            nodes: Vec::new(),
            copies: 3,
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
            nodes: Vec::new(),
            copies: 0,
        };
        assert_eq!(single.replicas_of(1), vec!["s-2".to_string()]);
        assert_eq!(single.hosted_by("s-2"), vec![1]);
    }

    #[test]
    fn a_replica_change_is_the_next_version_and_keeps_node_numbers() {
        let names: Vec<String> = (1..=3).map(|i| format!("s-{i}")).collect();
        let map = ShardMap {
            version: 1,
            shards: names.clone(),
            replicas: place(&names, 3).expect("placed"),
            nodes: Vec::new(),
            copies: 3,
        };
        let joined = map
            .with_replicas(
                0,
                vec!["s-1".into(), "s-2".into(), "s-3".into(), "s-4".into()],
            )
            .expect("a fourth replica");
        assert_eq!(joined.version, 2);
        assert_eq!(joined.nodes(), ["s-1", "s-2", "s-3", "s-4"]);
        assert_eq!(
            joined.replication(),
            3,
            "a change in progress is not the replication"
        );
        assert_eq!(joined.hosted_by("s-4"), vec![0]);
        assert_eq!(
            joined.founders_of(0),
            ["s-1", "s-2", "s-3"],
            "founders stay"
        );
        let replaced = joined
            .with_replicas(0, vec!["s-2".into(), "s-3".into(), "s-4".into()])
            .expect("s-1 leaves");
        assert_eq!(replaced.nodes(), joined.nodes(), "node numbers stay");
        assert!(!replaced.hosted_by("s-1").contains(&0));
        for bad in [
            vec![],
            vec!["s-2".to_string(), "s-2".to_string()],
            vec![String::new()],
        ] {
            assert!(matches!(
                map.with_replicas(0, bad),
                Err(ShardMapError::BadReplicas { .. })
            ));
        }
        assert!(
            map.with_replicas(3, vec!["s-1".into()]).is_err(),
            "no shard 4"
        );
        // An older map without nodes or copies still reads.
        let old: ShardMap =
            serde_json::from_str(r#"{"version":1,"shards":["a","b"]}"#).expect("parses");
        assert_eq!((old.replication(), old.nodes().len()), (1, 2));
    }

    #[tokio::test]
    async fn a_change_from_a_stale_map_is_refused_and_watchers_see_each_version() {
        let dir = std::env::temp_dir().join(format!(
            "svrkit-shardmap-moves-{}-{:x}",
            std::process::id(),
            crate::context::random_u64()
        ));
        let registry: Arc<dyn ConfigStore> = Arc::new(EmbeddedRegistry::new(&dir));
        let names: Vec<String> = (1..=3).map(|i| format!("s-{i}")).collect();
        let map = ensure_replicated(&*registry, "svc", names, 3)
            .await
            .expect("made");
        let mut maps = watch(Arc::clone(&registry), "svc").await.expect("watch");
        assert_eq!(
            maps.borrow_and_update().as_ref().map(|m| m.version),
            Some(1)
        );
        let next = map
            .with_replicas(1, vec!["s-2".into(), "s-3".into(), "s-9".into()])
            .expect("valid");
        replace(&*registry, "svc", &next).await.expect("published");
        assert!(matches!(
            replace(&*registry, "svc", &next).await,
            Err(ShardMapError::Moved { found: 2, .. })
        ));
        tokio::time::timeout(std::time::Duration::from_secs(10), maps.changed())
            .await
            .expect("in time")
            .expect("a change");
        assert_eq!(maps.borrow().as_ref(), Some(&next));
        // A restart with the manifest's replication still matches the map.
        let names: Vec<String> = (1..=3).map(|i| format!("s-{i}")).collect();
        assert_eq!(
            ensure_replicated(&*registry, "svc", names, 3)
                .await
                .expect("same service"),
            next
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
