//! The relations services decide by (who sees a Moments post, who may get a red
//! envelope), read from contactstore at the moment of each request.
//!
//! Friendship is stored on both users' shards, and a block or a removal changes only the
//! acting side's edge. So "friends both ways" reads both directions: the viewer's edges
//! (one `GetEdges` on the viewer's shard) and the others' edges to the viewer (one
//! `GetEdgesTo` per contactstore shard that holds some of them).

use std::collections::{HashMap, HashSet};

use crate::by_uid;
use crate::storage::{
    ContactStoreClient, EdgeState, GetEdgesRequest, GetEdgesToRequest, ListEdgesRequest,
};
use futures_util::future::join_all;
use svrkit::{Channel, Status};

/// Relation reads over contactstore.
#[derive(Debug, Clone)]
pub struct Relations {
    store: ContactStoreClient,
    shards: Channel,
}

impl Relations {
    /// Reads through `shards`, contactstore's sharded channel.
    pub fn new(shards: Channel) -> Relations {
        Relations {
            store: ContactStoreClient::new(shards.clone()),
            shards,
        }
    }

    /// Every friend of `owner` by `owner`'s own edges (at most the 5,000-friend ceiling).
    pub async fn friends(&self, owner: u64) -> Result<Vec<u64>, Status> {
        let mut friends = Vec::new();
        let mut after_peer = 0;
        // Pages of 10,000 (the store's ceiling): one page for any user within the limits;
        // bounded anyway.
        for _ in 0..4 {
            let page = self
                .store
                .list_edges_with(
                    ListEdgesRequest {
                        owner,
                        state: EdgeState::Friend as i32,
                        after_peer,
                        limit: 0,
                    },
                    by_uid(owner),
                )
                .await?;
            let full = page.edges.len() >= 10_000;
            friends.extend(page.edges.iter().map(|e| e.peer));
            match page.edges.last() {
                Some(last) if full => after_peer = last.peer,
                _ => break,
            }
        }
        Ok(friends)
    }

    /// Which of `others` are friends of `viewer` both ways (`viewer` is not among them).
    pub async fn mutual(&self, viewer: u64, others: &[u64]) -> Result<HashSet<u64>, Status> {
        let mut others: Vec<u64> = others
            .iter()
            .copied()
            .filter(|o| *o != viewer && *o != 0)
            .collect();
        others.sort_unstable();
        others.dedup();
        if others.is_empty() || viewer == 0 {
            return Ok(HashSet::new());
        }
        let mine = self.store.get_edges_with(
            GetEdgesRequest {
                owner: viewer,
                peers: others.clone(),
            },
            by_uid(viewer),
        );
        let mut by_shard: HashMap<String, Vec<u64>> = HashMap::new();
        for &o in &others {
            let shard = self.shards.owner_of(o).unwrap_or_default();
            by_shard.entry(shard).or_default().push(o);
        }
        let theirs = by_shard.into_values().map(|owners| {
            let key = owners[0];
            self.store.get_edges_to_with(
                GetEdgesToRequest {
                    owners,
                    peer: viewer,
                },
                by_uid(key),
            )
        });
        let (mine, theirs) = tokio::join!(mine, join_all(theirs));
        let friend = |state: EdgeState| state == EdgeState::Friend;
        let mine: HashSet<u64> = mine?
            .edges
            .iter()
            .filter(|e| friend(e.state()))
            .map(|e| e.peer)
            .collect();
        let mut both = HashSet::new();
        for reply in theirs {
            for e in reply?.edges {
                if friend(e.state()) && mine.contains(&e.owner) {
                    both.insert(e.owner);
                }
            }
        }
        Ok(both)
    }
}
