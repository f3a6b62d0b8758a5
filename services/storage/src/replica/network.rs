//! Raft messages between the replicas of a shard, over svrkit RPC (`wx.storage.Replication`):
//! the client side openraft sends through ([`Network`]) and the service every replicated
//! storage process answers on ([`ReplicationService`]).
//!
//! Peers are instances of the same storage service, found in the registry by instance id
//! (a Raft node id is the instance's position in the shard map, from 1). Each message
//! names its shard, since a process hosts a replica of many.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use svrkit::discovery::Instances;
use svrkit::{CallOptions, Channel, Code, Status};
use tokio::sync::{mpsc, oneshot};
use wx_api::storage::replication_client::ReplicationClient;
use wx_api::storage::replication_server::Replication;
use wx_api::storage::{
    BackupChunk, BackupRequest, MembershipReply, MembershipRequest, RaftBatch, RaftMessage,
};

use super::Groups;
use super::faults::Faults;
use super::log_store::{decode, encode};
use super::types::TypeConfig;

/// Where the other instances of this storage service are.
#[derive(Debug)]
pub struct Peers {
    /// Node id - 1 → instance id (only grows: see `ShardMap::nodes`).
    names: RwLock<Vec<String>>,
    live: tokio::sync::watch::Receiver<Instances>,
    channels: Mutex<HashMap<String, (SocketAddr, Channel)>>,
    /// Peers cut off by fault injection (see [`Faults`]).
    faults: Faults,
    /// Told when `names` grows.
    grown: tokio::sync::Notify,
    /// Heartbeats waiting to go to each peer together (see [`Peers::heartbeat`]).
    outboxes: Mutex<HashMap<u64, mpsc::Sender<Heartbeat>>>,
}

/// One shard's heartbeat to a peer and where its answer goes.
type Heartbeat = (RaftMessage, oneshot::Sender<Result<RaftMessage, Status>>);

/// How long the first heartbeat to a peer waits for the other shards' (all triggered at
/// the same tick, see `ReplicaSet::open`).
pub const BATCH_WINDOW: Duration = Duration::from_millis(1);
/// The most messages in one batch.
pub const MAX_BATCH: usize = 4096;

impl Peers {
    /// Peers named `names` (node id - 1 → instance id), at the addresses `live` reports,
    /// minus those `faults` cuts off.
    pub fn new(
        names: Vec<String>,
        live: tokio::sync::watch::Receiver<Instances>,
        faults: Faults,
    ) -> Peers {
        Peers {
            names: RwLock::new(names),
            live,
            channels: Mutex::new(HashMap::new()),
            faults,
            grown: tokio::sync::Notify::new(),
            outboxes: Mutex::new(HashMap::new()),
        }
    }

    /// The instance id of node `id`.
    pub fn name(&self, id: u64) -> Option<String> {
        let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
        node_name(&names, id).map(str::to_string)
    }

    /// The node id of instance `name`.
    pub fn id(&self, name: &str) -> Option<u64> {
        self.names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .position(|n| n == name)
            .map(|i| i as u64 + 1)
    }

    /// Takes the shard map's nodes (which only grow; a shorter or different list is
    /// ignored, since node ids must not move).
    pub fn set_names(&self, nodes: &[String]) {
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        if nodes.len() > names.len() && nodes.starts_with(&names) {
            *names = nodes.to_vec();
            self.grown.notify_waiters();
        }
    }

    /// The node id of instance `name`, waiting up to `patience` for a shard map that
    /// names it (one just published may not have reached this process yet).
    pub async fn id_within(&self, name: &str, patience: std::time::Duration) -> Option<u64> {
        let until = tokio::time::Instant::now() + patience;
        loop {
            let grown = self.grown.notified();
            if let Some(id) = self.id(name) {
                return Some(id);
            }
            if tokio::time::timeout_at(until, grown).await.is_err() {
                return self.id(name);
            }
        }
    }

    /// Sends a shard's heartbeat (an AppendEntries without entries) to node `id` together
    /// with the other shards' heartbeats to it: they go out as one `AppendBatch`.
    async fn heartbeat(
        self: &Arc<Self>,
        id: u64,
        message: RaftMessage,
    ) -> Result<RaftMessage, Status> {
        let (done, answer) = oneshot::channel();
        let outbox = {
            let mut outboxes = self.outboxes.lock().unwrap_or_else(PoisonError::into_inner);
            outboxes
                .entry(id)
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(MAX_BATCH);
                    tokio::spawn(send_batches(Arc::downgrade(self), id, rx));
                    tx
                })
                .clone()
        };
        outbox.send((message, done)).await.map_err(|_| {
            Status::unavailable("the heartbeat sender stopped").with_not_processed()
        })?;
        answer
            .await
            .map_err(|_| Status::unavailable("the heartbeat sender stopped").with_not_processed())?
    }

    /// A client to node `id`, if it is registered now.
    fn client(&self, id: u64) -> Result<ReplicationClient, String> {
        // Borrowed under the read lock: no copy of the name per Raft message.
        let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
        let name = node_name(&names, id).ok_or_else(|| format!("no node {id}"))?;
        if self.faults.is_cut(name) {
            return Err(format!("{name} is cut off (fault injection)"));
        }
        let addr = self
            .live
            .borrow()
            .iter()
            .find(|i| i.id == name)
            .map(|i| i.addr)
            .ok_or_else(|| format!("{name} is not registered"))?;
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let channel = match channels.get(name) {
            Some((known, channel)) if *known == addr => channel.clone(),
            _ => {
                let channel = Channel::builder().max_attempts(1).lazy([addr]);
                channels.insert(name.to_string(), (addr, channel.clone()));
                channel
            }
        };
        Ok(ReplicationClient::new(channel))
    }
}

/// Sends the heartbeats queued for node `id`, one batch per window, until the peers are
/// gone.
async fn send_batches(
    peers: std::sync::Weak<Peers>,
    id: u64,
    mut queue: mpsc::Receiver<Heartbeat>,
) {
    while let Some(first) = queue.recv().await {
        tokio::time::sleep(BATCH_WINDOW).await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH
            && let Ok(more) = queue.try_recv()
        {
            batch.push(more);
        }
        let Some(peers) = peers.upgrade() else { return };
        let client = match peers.client(id) {
            Ok(client) => client,
            Err(e) => {
                for (_, done) in batch {
                    let _ = done.send(Err(Status::unavailable(e.clone()).with_not_processed()));
                }
                continue;
            }
        };
        drop(peers);
        metrics::counter!("wx_storage_raft_heartbeat_batches_total").increment(1);
        metrics::counter!("wx_storage_raft_heartbeats_total").increment(batch.len() as u64);
        let (messages, waiting): (Vec<RaftMessage>, Vec<_>) = batch.into_iter().unzip();
        let sent = messages.len();
        // Kept to send one by one if the peer refuses batches (cheap: bodies are Bytes).
        let returned = messages.clone();
        let options = CallOptions::new().timeout(Duration::from_millis(1000));
        match client
            .append_batch_with(RaftBatch { messages }, options)
            .await
        {
            Ok(reply) if reply.messages.len() == sent => {
                for (answer, done) in reply.messages.into_iter().zip(waiting) {
                    let answer = if answer.error.is_empty() {
                        Ok(answer)
                    } else {
                        Err(Status::internal(answer.error))
                    };
                    let _ = done.send(answer);
                }
            }
            Ok(reply) => {
                let e = Status::internal(format!(
                    "a batch of {sent} heartbeats answered with {}",
                    reply.messages.len()
                ));
                for done in waiting {
                    let _ = done.send(Err(e.clone()));
                }
            }
            Err(e) if matches!(e.code(), Code::Unimplemented | Code::PermissionDenied) => {
                // A peer that does not take batches (an older release during an
                // upgrade, a policy without AppendBatch): one message each, as before.
                tracing::debug!(error = %e, "heartbeats sent one by one");
                for (message, done) in returned.into_iter().zip(waiting) {
                    let options = CallOptions::new().timeout(Duration::from_millis(1000));
                    let _ = done.send(client.append_with(message, options).await);
                }
            }
            Err(e) => {
                for done in waiting {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The instance id of node `id` in `names` (node id - 1 → instance id).
fn node_name(names: &[String], id: u64) -> Option<&str> {
    let index = usize::try_from(id.checked_sub(1)?).ok()?;
    names.get(index).map(String::as_str)
}

/// openraft's connections of one shard's replica.
#[derive(Clone)]
pub struct NetworkFactory {
    pub(super) shard: u32,
    pub(super) peers: Arc<Peers>,
    /// The process's heartbeat ticks that reached this shard (see `ReplicaSet`'s `beat`).
    pub(super) beats: Arc<AtomicU64>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Network {
        Network {
            shard: self.shard,
            target,
            peers: Arc::clone(&self.peers),
            beats: Arc::clone(&self.beats),
            beaten: 0,
        }
    }
}

/// The connection of one replica to one peer.
pub struct Network {
    shard: u32,
    target: u64,
    peers: Arc<Peers>,
    beats: Arc<AtomicU64>,
    /// The last tick whose heartbeat went to this peer.
    beaten: u64,
}

type Failure<E> = RPCError<u64, BasicNode, RaftError<u64, E>>;

/// A transport failure openraft understands: unreachable peers are backed off.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Transport(String);

impl Network {
    async fn exchange<Req, Resp, E>(
        &self,
        method: Method,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, Failure<E>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let client = self
            .peers
            .client(self.target)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&Transport(e))))?;
        let body = encode(request)
            .map_err(|e| RPCError::Network(NetworkError::new(&Transport(e.to_string()))))?;
        let message = RaftMessage {
            shard: self.shard,
            body: body.into(),
            error: String::new(),
        };
        let options = CallOptions::new().timeout(timeout);
        let reply = match method {
            Method::Heartbeat => self.peers.heartbeat(self.target, message).await,
            Method::Append => client.append_with(message, options).await,
            Method::Vote => client.vote_with(message, options).await,
            Method::Snapshot => client.snapshot_with(message, options).await,
        }
        .map_err(|status| {
            let e = Transport(status.to_string());
            if status.is_not_processed() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        let result: Result<Resp, RaftError<u64, E>> = decode(&reply.body)
            .map_err(|e| RPCError::Network(NetworkError::new(&Transport(e.to_string()))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Method {
    /// An AppendEntries without entries: batched with other shards' (see
    /// [`Peers::heartbeat`]).
    Heartbeat,
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, Failure<openraft::error::Infallible>> {
        // The first message without entries after a tick is that tick's heartbeat, sent
        // with the other shards'; any other (the leader passing on its commit index, say)
        // goes at once, so as not to hold up the entries queued behind it.
        let tick = self.beats.load(Ordering::Relaxed);
        let method = if rpc.entries.is_empty() && tick > self.beaten {
            self.beaten = tick;
            Method::Heartbeat
        } else {
            Method::Append
        };
        self.exchange(method, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, Failure<InstallSnapshotError>> {
        self.exchange(Method::Snapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, Failure<openraft::error::Infallible>> {
        self.exchange(Method::Vote, &rpc, option.hard_ttl()).await
    }
}

/// The replication service of a process: hands each message to its shard's replica.
#[derive(Clone)]
pub struct ReplicationService {
    pub(super) groups: Arc<Groups>,
}

impl std::fmt::Debug for ReplicationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicationService")
    }
}

fn reply<T: serde::Serialize>(shard: u32, value: &T) -> Result<RaftMessage, Status> {
    Ok(RaftMessage {
        shard,
        body: encode(value)
            .map_err(|e| Status::internal(e.to_string()))?
            .into(),
        error: String::new(),
    })
}

fn request<T: serde::de::DeserializeOwned>(message: &RaftMessage) -> Result<T, Status> {
    decode(&message.body)
        .map_err(|e| Status::invalid_argument(format!("a Raft message that does not decode: {e}")))
}

impl Replication for ReplicationService {
    async fn append(&self, message: RaftMessage) -> Result<RaftMessage, Status> {
        let group = self.groups.get(message.shard)?;
        let rpc: AppendEntriesRequest<TypeConfig> = request(&message)?;
        let result = group.raft().append_entries(rpc).await;
        reply(message.shard, &result)
    }

    async fn append_batch(&self, batch: RaftBatch) -> Result<RaftBatch, Status> {
        if batch.messages.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "a batch of {} messages (at most {MAX_BATCH})",
                batch.messages.len()
            )));
        }
        let answers = batch.messages.into_iter().map(|message| async move {
            let shard = message.shard;
            self.append(message)
                .await
                .unwrap_or_else(|status| RaftMessage {
                    shard,
                    body: bytes::Bytes::new(),
                    error: status.to_string(),
                })
        });
        Ok(RaftBatch {
            messages: futures_util::future::join_all(answers).await,
        })
    }

    async fn vote(&self, message: RaftMessage) -> Result<RaftMessage, Status> {
        let group = self.groups.get(message.shard)?;
        let rpc: VoteRequest<u64> = request(&message)?;
        if group.rejoining() {
            // Back with an empty directory into a group that exists: it may have voted
            // in this term before it lost its disk, so it votes for nobody until a
            // leader has given it the log (see `Group::rejoining`).
            let metrics = group.raft().metrics().borrow().clone();
            let refused: Result<VoteResponse<u64>, RaftError<u64>> =
                Ok(VoteResponse::new(metrics.vote, None, false));
            return reply(message.shard, &refused);
        }
        let result = group.raft().vote(rpc).await;
        reply(message.shard, &result)
    }

    async fn backup(&self, request: BackupRequest) -> Result<BackupChunk, Status> {
        let group = self.groups.get(request.shard)?;
        group
            .backup_chunk(request.offset, &request.snapshot_id)
            .await
    }

    async fn membership(&self, request: MembershipRequest) -> Result<MembershipReply, Status> {
        let group = self.groups.get(request.shard)?;
        let (voters, log_index) = group.change_voters(&request.voters).await?;
        Ok(MembershipReply { voters, log_index })
    }

    async fn snapshot(&self, message: RaftMessage) -> Result<RaftMessage, Status> {
        let group = self.groups.get(message.shard)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = request(&message)?;
        let result = group.raft().install_snapshot(rpc).await;
        reply(message.shard, &result)
    }
}

impl std::fmt::Debug for NetworkFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkFactory").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").finish_non_exhaustive()
    }
}
