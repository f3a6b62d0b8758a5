//! `wx.storage.ContactStore`: each user's edges to other users, and their friend count,
//! kept on the user's own shard. Writes to one owner's edges are serialised, so the count
//! and the 5,000-friend ceiling hold under concurrent accepts.

use fjall::Keyspace;
use prost::Message;
use svrkit::Status;
use wx_api::storage::contact_store_server::ContactStore;
use wx_api::storage::{
    ChangesReply, CountFriendsReply, CountFriendsRequest, Edge, EdgeChange, EdgeState, EdgesReply,
    GetEdgesRequest, GetEdgesToRequest, ListChangesRequest, ListEdgesRequest, PutEdgeReply,
    PutEdgeRequest,
};

use crate::codec::{decode, get, id_key, pair_key};
use crate::engine::{Engine, StorageError};

/// The most edges one ListEdges returns.
const MAX_LIST: usize = 10_000;
/// How many of each owner's newest edge changes are kept for sync.
const KEPT_CHANGES: u64 = 10_000;
/// The most changes one ListChanges returns.
const MAX_CHANGES_LIST: usize = 500;

/// The contact store of one shard.
#[derive(Clone)]
pub struct ContactStoreService {
    engine: Engine,
    edges: Keyspace,
    counts: Keyspace,
    changes: Keyspace,
    change_counters: Keyspace,
}

impl std::fmt::Debug for ContactStoreService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactStoreService")
            .field("engine", &self.engine)
            .finish()
    }
}

impl ContactStoreService {
    /// The store on `engine`.
    pub fn new(engine: Engine) -> Result<ContactStoreService, StorageError> {
        Ok(ContactStoreService {
            edges: engine.keyspace("edges")?,
            counts: engine.keyspace("friend_counts")?,
            changes: engine.keyspace("edge_changes")?,
            change_counters: engine.keyspace("edge_change_counters")?,
            engine,
        })
    }

    fn change_counter(&self, owner: u64) -> Result<u64, StorageError> {
        Ok(self
            .change_counters
            .get(id_key(owner))?
            .and_then(|b| b.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    fn friends(&self, owner: u64) -> Result<u32, StorageError> {
        Ok(self
            .counts
            .get(id_key(owner))?
            .and_then(|b| b.as_ref().try_into().ok().map(u32::from_be_bytes))
            .unwrap_or(0))
    }
}

impl ContactStore for ContactStoreService {
    async fn get_edges(&self, request: GetEdgesRequest) -> Result<EdgesReply, Status> {
        let mut edges = Vec::with_capacity(request.peers.len());
        for peer in request.peers {
            if let Some(edge) = get::<Edge>(&self.edges, &pair_key(request.owner, peer))? {
                edges.push(edge);
            }
        }
        Ok(EdgesReply { edges })
    }

    async fn get_edges_to(&self, request: GetEdgesToRequest) -> Result<EdgesReply, Status> {
        let mut edges = Vec::with_capacity(request.owners.len());
        for owner in request.owners {
            if let Some(edge) = get::<Edge>(&self.edges, &pair_key(owner, request.peer))? {
                edges.push(edge);
            }
        }
        Ok(EdgesReply { edges })
    }

    async fn put_edge(&self, request: PutEdgeRequest) -> Result<PutEdgeReply, Status> {
        let mut edge = request
            .edge
            .ok_or_else(|| Status::invalid_argument("no edge given"))?;
        if edge.owner == 0 || edge.peer == 0 || edge.owner == edge.peer {
            return Err(Status::invalid_argument(
                "an edge joins two different, non-zero uids",
            ));
        }
        let max = match request.max_friends {
            0 => wx_api::MAX_FRIENDS,
            n => n,
        };
        let key = pair_key(edge.owner, edge.peer);
        let _guard = self.engine.lock(&id_key(edge.owner)).await;
        let current: Option<Edge> = get(&self.edges, &key)?;
        let current_version = current.as_ref().map_or(0, |e| e.version);
        if current_version != request.expected_version {
            return Err(Status::aborted(format!(
                "edge {} -> {} is at version {current_version}, not {}",
                edge.owner, edge.peer, request.expected_version
            )));
        }
        let was_friend = current
            .as_ref()
            .is_some_and(|e| e.state() == EdgeState::Friend);
        let is_friend = edge.state() == EdgeState::Friend;
        let count = self.friends(edge.owner)?;
        let new_count = match (was_friend, is_friend) {
            (false, true) if count >= max => {
                return Err(Status::resource_exhausted(format!(
                    "user {} already has {count} friends, the most allowed",
                    edge.owner
                )));
            }
            (false, true) => count + 1,
            (true, false) => count.saturating_sub(1),
            _ => count,
        };
        let mut batch = self.engine.batch();
        let version = if edge.state() == EdgeState::None {
            batch.remove(&self.edges, key.to_vec());
            0
        } else {
            edge.version = current_version + 1;
            if edge.updated_ms == 0 {
                edge.updated_ms = wx_api::now_ms();
            }
            batch.insert(&self.edges, key.to_vec(), edge.encode_to_vec());
            edge.version
        };
        if new_count != count {
            batch.insert(
                &self.counts,
                id_key(edge.owner).to_vec(),
                new_count.to_be_bytes().to_vec(),
            );
        }
        // The change log for sync, in the same write.
        let counter = self.change_counter(edge.owner)? + 1;
        let change = EdgeChange {
            counter,
            peer: edge.peer,
            state: edge.state,
            updated_ms: if edge.updated_ms == 0 {
                wx_api::now_ms()
            } else {
                edge.updated_ms
            },
        };
        batch.insert(
            &self.changes,
            pair_key(edge.owner, counter).to_vec(),
            change.encode_to_vec(),
        );
        batch.insert(
            &self.change_counters,
            id_key(edge.owner).to_vec(),
            counter.to_be_bytes().to_vec(),
        );
        if counter > KEPT_CHANGES {
            batch.remove(
                &self.changes,
                pair_key(edge.owner, counter - KEPT_CHANGES).to_vec(),
            );
        }
        self.engine.commit(batch).await?;
        Ok(PutEdgeReply { version })
    }

    async fn list_edges(&self, request: ListEdgesRequest) -> Result<EdgesReply, Status> {
        let limit = match request.limit as usize {
            0 => MAX_LIST,
            n => n.min(MAX_LIST),
        };
        let from = pair_key(request.owner, request.after_peer.saturating_add(1));
        let to = pair_key(request.owner, u64::MAX);
        let want = request.state();
        let mut edges = Vec::new();
        for item in self.edges.range(from..=to) {
            let (key, value) = item.into_inner().map_err(StorageError::from)?;
            let edge: Edge = decode(&key, &value)?;
            if want == EdgeState::None || edge.state() == want {
                edges.push(edge);
                if edges.len() == limit {
                    break;
                }
            }
        }
        Ok(EdgesReply { edges })
    }

    async fn count_friends(
        &self,
        request: CountFriendsRequest,
    ) -> Result<CountFriendsReply, Status> {
        Ok(CountFriendsReply {
            friends: self.friends(request.owner)?,
        })
    }

    async fn list_changes(&self, request: ListChangesRequest) -> Result<ChangesReply, Status> {
        let limit = match request.limit as usize {
            0 => MAX_CHANGES_LIST,
            n => n.min(MAX_CHANGES_LIST),
        };
        let counter = self.change_counter(request.owner)?;
        let from = pair_key(request.owner, request.after.saturating_add(1));
        let to = pair_key(request.owner, u64::MAX);
        let mut changes = Vec::new();
        let mut has_more = false;
        for item in self.changes.range(from..=to) {
            let (key, value) = item.into_inner().map_err(StorageError::from)?;
            if changes.len() == limit {
                has_more = true;
                break;
            }
            changes.push(decode::<EdgeChange>(&key, &value)?);
        }
        Ok(ChangesReply {
            changes,
            has_more,
            counter,
            trimmed_to: counter.saturating_sub(KEPT_CHANGES),
        })
    }
}
