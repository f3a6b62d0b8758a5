//! Changing a shard's replicas online: add one, remove one, or replace one with another
//! (what `wx-replica` runs). Three steps, each safe to repeat after a failure:
//!
//! 1. The shard map names every replica the shard will have and every one it has now
//!    (a new replica opens an empty copy of the shard and waits for its leader).
//! 2. The shard's leader adds each new replica as a learner, gives it the log or a
//!    snapshot until it has caught up, and moves the group to the new voters in one
//!    joint-consensus change (`wx.storage.Replication/Membership`).
//! 3. The map names only the voters; a replica it no longer names shuts its copy down.

use std::net::SocketAddr;

use svrkit::config::ConfigStore;
use svrkit::discovery::shard_map::{self, ShardMap, ShardMapError};
use wx_api::storage::MembershipRequest;

/// A change of one shard's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new replica on this instance.
    Add(String),
    /// The replica on this instance goes.
    Remove(String),
    /// The replica on `old` moves to `new`.
    Replace {
        /// The instance losing its replica.
        old: String,
        /// The instance gaining it.
        new: String,
    },
}

/// Why a change was refused or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The map could not be read or written, or the change makes no valid map.
    #[error(transparent)]
    Map(#[from] ShardMapError),
    /// The service has no shard map (it is not sharded, or never started).
    #[error("{0} has no shard map")]
    NoMap(String),
    /// The change does not apply to the shard as it is.
    #[error("{0}")]
    Refused(String),
    /// The shard's leader could not make the change.
    #[error("shard {shard}: {message}")]
    Leader {
        /// The shard (from 1).
        shard: usize,
        /// What happened.
        message: String,
    },
}

/// What a finished change left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The shard's voters now.
    pub voters: Vec<String>,
    /// The map's version now.
    pub map_version: u64,
}

/// The voters `change` leaves of `current`, or why it does not apply.
pub fn voters_after(current: &[String], change: &Change) -> Result<Vec<String>, String> {
    let has = |name: &String| current.contains(name);
    let mut voters = current.to_vec();
    match change {
        Change::Add(new) if has(new) => return Err(format!("{new} already holds the shard")),
        Change::Add(new) => voters.push(new.clone()),
        Change::Remove(old) if !has(old) => return Err(format!("{old} holds no replica of it")),
        Change::Remove(_) if current.len() == 1 => {
            return Err("the shard's last replica cannot be removed".into());
        }
        Change::Remove(old) => voters.retain(|v| v != old),
        Change::Replace { old, .. } if !has(old) => {
            return Err(format!("{old} holds no replica of it"));
        }
        Change::Replace { new, .. } if has(new) => {
            return Err(format!("{new} already holds the shard"));
        }
        Change::Replace { old, new } => {
            for voter in &mut voters {
                if voter == old {
                    *voter = new.clone();
                }
            }
        }
    }
    if voters.len() > 7 {
        return Err("a shard has at most 7 replicas".into());
    }
    Ok(voters)
}

/// Makes `change` to shard `shard` (from 1) of `service`, whose instances are at
/// `addrs`; `progress` hears each step.
pub async fn change(
    store: &dyn ConfigStore,
    service: &str,
    addrs: &[(String, SocketAddr)],
    shard: usize,
    change: &Change,
    progress: impl Fn(&str),
) -> Result<Changed, MembershipError> {
    let map: ShardMap = shard_map::load(store, service)
        .await?
        .ok_or_else(|| MembershipError::NoMap(service.to_string()))?;
    let index = shard
        .checked_sub(1)
        .filter(|i| *i < map.shards.len())
        .ok_or_else(|| {
            MembershipError::Refused(format!(
                "{service} has shards 1 to {}, not {shard}",
                map.shards.len()
            ))
        })?;
    let current = map.replicas_of(index);
    let voters = voters_after(&current, change)
        .map_err(|e| MembershipError::Refused(format!("shard {shard}: {e}")))?;
    for new in voters.iter().filter(|v| !current.contains(v)) {
        if !addrs.iter().any(|(id, _)| id == new) {
            return Err(MembershipError::Refused(format!(
                "{new} is not running (not registered): start it first, as a spare of {service}"
            )));
        }
    }
    // 1. Everyone the shard has or will have is in the map.
    let mut staged = current.clone();
    staged.extend(voters.iter().filter(|v| !current.contains(v)).cloned());
    let mut map = map;
    if staged != current {
        map = publish(store, service, &map, index, &staged, &progress).await?;
    }
    // 2. The leader moves the group; new replicas catch up first.
    progress(&format!(
        "shard {shard}: the leader moves the group to {}",
        voters.join(", ")
    ));
    let request = MembershipRequest {
        shard: index as u32,
        voters: voters.clone(),
    };
    let (reply, _) = super::leader::on_leader(&staged, addrs, |client| {
        let request = request.clone();
        async move { client.membership(request).await }
    })
    .await
    .map_err(|message| MembershipError::Leader { shard, message })?;
    progress(&format!(
        "shard {shard}: voters {} (log index {})",
        reply.voters.join(", "),
        reply.log_index
    ));
    // 3. The map names only the voters.
    if staged != voters {
        map = publish(store, service, &map, index, &voters, &progress).await?;
    }
    Ok(Changed {
        voters,
        map_version: map.version,
    })
}

/// Publishes the next version of `map`, with shard `index` held by `replicas`, and says
/// so.
async fn publish(
    store: &dyn ConfigStore,
    service: &str,
    map: &ShardMap,
    index: usize,
    replicas: &[String],
    progress: &impl Fn(&str),
) -> Result<ShardMap, MembershipError> {
    let next = map.with_replicas(index, replicas.to_vec())?;
    shard_map::replace(store, service, &next).await?;
    progress(&format!(
        "map v{}: shard {} held by {}",
        next.version,
        index + 1,
        replicas.join(", ")
    ));
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_change_says_which_voters_it_leaves_or_why_not() {
        let now = names(&["a", "b", "c"]);
        assert_eq!(
            voters_after(&now, &Change::Add("d".into())),
            Ok(names(&["a", "b", "c", "d"]))
        );
        assert_eq!(
            voters_after(&now, &Change::Remove("b".into())),
            Ok(names(&["a", "c"]))
        );
        assert_eq!(
            voters_after(
                &now,
                &Change::Replace {
                    old: "a".into(),
                    new: "d".into()
                }
            ),
            Ok(names(&["d", "b", "c"]))
        );
        assert!(voters_after(&now, &Change::Add("a".into())).is_err());
        assert!(voters_after(&now, &Change::Remove("z".into())).is_err());
        assert!(voters_after(&names(&["a"]), &Change::Remove("a".into())).is_err());
        assert!(
            voters_after(
                &now,
                &Change::Replace {
                    old: "a".into(),
                    new: "b".into()
                }
            )
            .is_err()
        );
        let seven = names(&["a", "b", "c", "d", "e", "f", "g"]);
        assert!(voters_after(&seven, &Change::Add("h".into())).is_err());
    }
}
