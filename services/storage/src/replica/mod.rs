//! Replicated shards: every shard of a storage service a Raft group of its replicas
//! (openraft), as PaxosStore keeps every write on several replicas.
//!
//! ```text
//!            logic tier (routing key → shard, on the shard map's ring)
//!                 │   to the shard's believed leader; a follower answers
//!                 │   not_mine + "not_leader" + the leader's name, sent there at once
//!        ┌────────┴─────────┬──────────────────┐
//!   store-1               store-2            store-3        one process each
//!   shard 1 (leader)      shard 1            shard 1        a replica of every shard
//!   shard 2               shard 2 (leader)   shard 2        (shard i on instances
//!   shard 3               shard 3            shard 3 (leader)  i, i+1, i+2)
//!        └──── wx.storage.Replication: AppendEntries, Vote, Snapshot ────┘
//! ```
//!
//! - **Writes.** A handler's [`Engine::commit`] proposes its batch as one log entry and
//!   returns once a majority holds it durably and this replica (the leader) applied it.
//!   The handler held its keys' stripe locks throughout, so read-check-write sequences
//!   stay serial on the leader.
//! - **Reads** are served by the leader only, and only while it holds a lease (a quorum
//!   acknowledged it within [`LEASE`], well inside the followers' refusal to elect anyone
//!   else, `election_timeout_max`), else after a ReadIndex round
//!   (`ensure_linearizable`); and only once it applied an entry of its own term, so
//!   everything committed before it was elected is visible.
//! - **Leader changes.** A request reaching a follower waits (bounded) for a leader to be
//!   known and answers `not_mine` with reason [`svrkit::client::NOT_LEADER`] and the
//!   leader's instance id as details: not processed, so the channel sends it there at
//!   once. A new leader rebuilds its handlers, whose in-memory state (queue counters,
//!   leases) derives from the data.
//! - **Rejoining.** Every replica records in the registry that it holds its shard's log
//!   (`SERVICE.shard-N.member-ID`) before it can vote. One that starts with an empty
//!   directory while that record exists lost its disk: it does not bootstrap, and votes
//!   for nobody until a leader has given it the log or a snapshot, since it may have
//!   voted in the current term before.
//! - **Membership.** A shard's replicas change online: the shard map names a new replica
//!   (which opens an empty replica of the shard and waits), the leader adds it as a
//!   learner and sends it the log or a snapshot until it has caught up, then moves the
//!   group to the new voters in one joint-consensus change
//!   (`wx.storage.Replication/Membership`, driven by `wx-replica`); a replica the map no
//!   longer names for a shard shuts its node down. Each process follows the map
//!   ([`ReplicaSet::open`]).

// openraft's storage and RPC error types are what its traits return; they are large
// (224 bytes) and not ours to box.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod faults;
pub mod leader;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod proposer;
pub mod state_machine;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::{BasicNode, Config, SnapshotPolicy};
use svrkit::config::ConfigStore;
use svrkit::context::Context;
use svrkit::discovery::shard_map::{self, ShardMap};
use svrkit::launch::Launch;
use svrkit::method::{MethodDesc, ServiceDesc};
use svrkit::server::ServiceHandler;
use svrkit::{BoxFuture, Status};

use self::log_store::LogStore;
use self::network::{NetworkFactory, Peers, ReplicationService};
use self::state_machine::StateMachine;
use self::types::{Command, Raft};
use crate::engine::{Engine, StorageError};

/// How long after a quorum last acknowledged it a leader serves reads alone. Followers
/// refuse to elect anyone else for their `election_timeout_max` (0.6 s or more, see
/// [`raft_config`]) after hearing from it.
pub const LEASE: Duration = Duration::from_millis(400);
/// How often a leader tells its followers it is alive. Every leader in a process beats at
/// the same tick, so that the heartbeats to each peer go out as one batch
/// (`Replication/AppendBatch`) rather than one message per shard.
pub const HEARTBEAT: Duration = Duration::from_millis(100);
/// How long a replica change waits for this process to see the shard map that names
/// the new replica.
const MAP_WAIT: Duration = Duration::from_secs(10);
/// How long a founding replica other than the first waits for the first to bootstrap the
/// group before it does so itself.
const BOOTSTRAP_GRACE: Duration = Duration::from_secs(3);
/// How long a request waits for its shard to have a leader before it is refused.
const LEADER_WAIT: Duration = Duration::from_secs(3);

/// The Raft settings of a shard's replica: heartbeats every 100 ms; elections after
/// 0.3–0.6 s of silence on the shard's preferred replica (the instance named like it)
/// and 0.5–1 s on the others, so that each instance leads its own shard and the
/// leaders' work is spread over the instances; a snapshot every `snapshot_logs` entries
/// (`WX_RAFT_SNAPSHOT_LOGS`, default 20,000), keeping up to 1,000 entries behind it for
/// slow followers. Followers refuse to elect anyone else for their maximum election
/// timeout after hearing from the leader (at least 0.6 s), which is what makes the
/// [`LEASE`] safe.
pub fn raft_config(
    service: &str,
    snapshot_logs: u64,
    preferred: bool,
) -> Result<Config, openraft::ConfigError> {
    let (min, max) = if preferred { (300, 600) } else { (500, 1000) };
    Config {
        cluster_name: service.to_string(),
        heartbeat_interval: HEARTBEAT.as_millis() as u64,
        election_timeout_min: min,
        election_timeout_max: max,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_logs),
        max_in_snapshot_log_to_keep: (snapshot_logs / 4).min(1000),
        snapshot_max_chunk_size: 1 << 20,
        max_payload_entries: 256,
        purge_batch_size: 256,
        install_snapshot_timeout: 5000,
        ..Config::default()
    }
    .validate()
}

/// One shard's replica in this process: its Raft node and what it knows of its role.
#[derive(Clone)]
pub struct Group {
    inner: Arc<GroupInner>,
}

struct GroupInner {
    raft: Raft,
    me: u64,
    shard: usize,
    peers: Arc<Peers>,
    /// Back with an empty directory in a formed group, and not yet given the log.
    rejoining: AtomicBool,
    /// Heartbeat ticks of the process that this replica, leading, was told to send.
    beats: Arc<AtomicU64>,
    /// The last committed index it knows, plus one (see `LogStore::committed`).
    committed: Arc<AtomicU64>,
    /// When a quorum last acknowledged this replica as leader, in ms since `epoch`
    /// (0: never).
    acked_ms: AtomicU64,
    epoch: Instant,
    /// Writes waiting to go into the log together.
    proposer: proposer::Proposer,
    /// Where this replica keeps its latest snapshot (see [`state_machine`]).
    snapshot_file: std::path::PathBuf,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("shard", &self.inner.shard)
            .field("me", &self.inner.me)
            .finish()
    }
}

/// A replica's role and progress, for `/status` and `/metrics`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardStatus {
    /// The shard's index in the map.
    pub shard: usize,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The leader's instance id, if known.
    pub leader: Option<String>,
    /// The last log index.
    pub last_log: Option<u64>,
    /// The last committed index this replica knows.
    pub committed: Option<u64>,
    /// The last applied index.
    pub applied: Option<u64>,
    /// The last log index its latest snapshot covers.
    pub snapshot: Option<u64>,
    /// The group's voters (instance ids).
    pub voters: Vec<String>,
    /// Replicas being given the log before they vote.
    pub learners: Vec<String>,
    /// On the leader: how many entries each follower is behind.
    pub follower_lag: BTreeMap<String, u64>,
    /// Waiting for a leader to give it the log after losing its directory.
    pub rejoining: bool,
}

impl Group {
    /// The Raft node.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// True while it votes for nobody (see the module documentation).
    pub fn rejoining(&self) -> bool {
        self.inner.rejoining.load(Ordering::Relaxed)
    }

    /// Proposes `command` and waits until it is committed and applied here.
    pub(crate) async fn write(&self, command: Command) -> Result<(), StorageError> {
        self.inner
            .proposer
            .write(command)
            .await
            .map_err(StorageError::Replication)
    }

    fn not_leader(&self, leader: Option<u64>) -> Status {
        let name = leader
            .and_then(|id| self.inner.peers.name(id))
            .unwrap_or_default();
        let status = Status::not_mine(format!(
            "shard {} is led by {}",
            self.inner.shard + 1,
            if name.is_empty() { "nobody yet" } else { &name }
        ))
        .with_reason(svrkit::client::NOT_LEADER);
        if name.is_empty() {
            status
        } else {
            status.with_details(Bytes::copy_from_slice(name.as_bytes()))
        }
    }

    fn lease_held(&self) -> bool {
        let acked = self.inner.acked_ms.load(Ordering::Relaxed);
        let now = self.inner.epoch.elapsed().as_millis() as u64;
        acked > 0 && now.saturating_sub(acked) < LEASE.as_millis() as u64
    }

    /// Waits until this replica may serve: it leads, applied an entry of its term and
    /// holds a lease (or confirmed its leadership with a quorum). Returns the term, or
    /// the status to answer: `not_mine` naming the leader, or `unavailable` (not
    /// processed) when no leader appears within the wait.
    pub async fn serving(&self) -> Result<u64, Status> {
        // Read in place: the request's context is not cloned for two numbers.
        let (remaining, attempt) =
            Context::with_current(|ctx| ctx.map_or((None, 1), |c| (c.remaining(), c.attempt())));
        let until = tokio::time::Instant::now()
            + remaining.map_or(LEADER_WAIT, |left| left.min(LEADER_WAIT));
        // A retry reaching a follower most likely failed at the leader this replica
        // would name: it waits for that leadership to change (an election after the
        // leader died) rather than sending the caller back to it at once.
        let mut suspect = None;
        let retried = attempt > 1;
        let mut metrics = self.inner.raft.metrics();
        loop {
            let (leader, term, applied_term) = {
                let m = metrics.borrow_and_update();
                (
                    m.current_leader,
                    m.current_term,
                    m.last_applied.map(|l| l.leader_id.term),
                )
            };
            if leader == Some(self.inner.me) && applied_term == Some(term) {
                if self.lease_held() {
                    return Ok(term);
                }
                match self.inner.raft.ensure_linearizable().await {
                    Ok(_) => return Ok(term),
                    Err(e) => tracing::debug!(error = %e, "leadership not confirmed"),
                }
            } else if let Some(other) = leader.filter(|l| *l != self.inner.me) {
                if !retried || suspect.is_some_and(|s| s != other) {
                    return Err(self.not_leader(Some(other)));
                }
                suspect = Some(other);
            }
            match tokio::time::timeout_at(until, metrics.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    let leader = metrics.borrow().current_leader;
                    return Err(match leader {
                        Some(other) if other != self.inner.me => self.not_leader(Some(other)),
                        _ => Status::unavailable(format!(
                            "shard {} has no leader now",
                            self.inner.shard + 1
                        ))
                        .with_not_processed(),
                    });
                }
            }
        }
    }

    /// Waits until this replica may answer a stale read (`(svrkit.stale_read)`): at once
    /// when it follows a leader it knows and has applied the log up to some point (what
    /// it answers lags that leader by its replication delay, and by at most an election
    /// timeout once it is cut off, when it stops knowing a leader); else as
    /// [`Group::serving`]. Returns the term.
    pub async fn serving_stale(&self) -> Result<u64, Status> {
        let (leader, term, applied) = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            (m.current_leader, m.current_term, m.last_applied)
        };
        let follows = leader.is_some_and(|l| l != self.inner.me);
        if follows && applied.is_some() && !self.rejoining() {
            metrics::counter!("wx_storage_follower_reads_total").increment(1);
            return Ok(term);
        }
        self.serving().await
    }

    /// A chunk of a fresh snapshot of this shard (see `wx.storage.Replication/Backup`):
    /// only its leader answers.
    pub async fn backup_chunk(
        &self,
        offset: u64,
        snapshot_id: &str,
    ) -> Result<wx_api::storage::BackupChunk, Status> {
        let (leader, applied) = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            (m.current_leader, m.last_applied)
        };
        if leader != Some(self.inner.me) {
            return Err(self.not_leader(leader));
        }
        if offset == 0 && snapshot_id.is_empty() {
            // Everything acknowledged so far is applied here: snapshot at least that.
            let target = applied.map_or(0, |l| l.index);
            self.inner
                .raft
                .trigger()
                .snapshot()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            self.inner
                .raft
                .wait(Some(Duration::from_secs(25)))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= target),
                    "a snapshot for the backup",
                )
                .await
                .map_err(|e| Status::unavailable(format!("no snapshot: {e}")))?;
        }
        let bytes = std::fs::read(&self.inner.snapshot_file)
            .map_err(|e| Status::unavailable(format!("reading the snapshot: {e}")))?;
        let stored = state_machine::StoredSnapshot::decode(&bytes)
            .map_err(|e| Status::internal(e.to_string()))?;
        if !snapshot_id.is_empty() && stored.meta.snapshot_id != snapshot_id {
            return Err(Status::failed_precondition(
                "a newer snapshot replaced the one being copied: start the backup of this shard again",
            ));
        }
        let from = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let to = from.saturating_add(backup::CHUNK).min(bytes.len());
        Ok(wx_api::storage::BackupChunk {
            data: Bytes::copy_from_slice(&bytes[from..to]),
            total: bytes.len() as u64,
            snapshot_id: stored.meta.snapshot_id,
            last_index: stored.meta.last_log_id.map_or(0, |l| l.index),
        })
    }

    /// Makes `voters` (instance ids in the shard map) this shard's voters, on its
    /// leader: each new one becomes a learner and is given the log or a snapshot until it
    /// has caught up, then the group moves to `voters` in one joint-consensus change.
    /// Returns the voters and the change's log index.
    pub async fn change_voters(&self, voters: &[String]) -> Result<(Vec<String>, u64), Status> {
        if voters.is_empty() || voters.len() > 7 {
            return Err(Status::invalid_argument("a shard needs 1 to 7 voters"));
        }
        let (leader, current) = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            let current: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
            (m.current_leader, current)
        };
        if leader != Some(self.inner.me) {
            return Err(self.not_leader(leader));
        }
        let mut members = Vec::with_capacity(voters.len());
        for name in voters {
            let id = self
                .inner
                .peers
                .id_within(name, MAP_WAIT)
                .await
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "{name} holds no replica in the shard map: name it there first"
                    ))
                })?;
            members.push((id, name));
        }
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Status::unavailable(format!("shard {}: {what}: {e}", self.inner.shard + 1))
        };
        for &(id, name) in members.iter().filter(|(id, _)| !current.contains(id)) {
            tracing::info!(shard = self.inner.shard + 1, learner = %name, "adding a learner");
            // Blocking: returns once the learner has caught up with the log.
            self.inner
                .raft
                .add_learner(id, BasicNode::new(name.clone()), true)
                .await
                .map_err(|e| failed("adding a learner", &e))?;
        }
        let ids: BTreeSet<u64> = members.iter().map(|(id, _)| *id).collect();
        let changed = self
            .inner
            .raft
            .change_membership(ids.clone(), false)
            .await
            .map_err(|e| failed("changing the voters", &e))?;
        tracing::info!(shard = self.inner.shard + 1, ?voters, "voters changed");
        let names = ids
            .iter()
            .filter_map(|id| self.inner.peers.name(*id))
            .collect();
        Ok((names, changed.log_id.index))
    }

    /// This replica's role and progress now.
    pub fn status(&self) -> ShardStatus {
        let m = self.inner.raft.metrics().borrow().clone();
        let name = |id: u64| self.inner.peers.name(id).unwrap_or_else(|| id.to_string());
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().map(name).collect();
        let learners = membership.learner_ids().map(name).collect();
        let last_log = m.last_log_index;
        let follower_lag = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.inner.me)
                    .map(|(id, matched)| {
                        let matched = matched.map_or(0, |l| l.index + 1);
                        (
                            name(*id),
                            last_log.map_or(0, |l| (l + 1).saturating_sub(matched)),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        ShardStatus {
            shard: self.inner.shard,
            role: format!("{:?}", m.state).to_lowercase(),
            term: m.current_term,
            leader: m.current_leader.map(name),
            last_log,
            committed: self.inner.committed.load(Ordering::Relaxed).checked_sub(1),
            applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            voters,
            learners,
            follower_lag,
            rejoining: self.rejoining(),
        }
    }

    /// Follows the node's metrics: the lease's acknowledgement time, the end of
    /// rejoining, and gauges.
    fn watch(&self) {
        let weak = Arc::downgrade(&self.inner);
        let mut metrics = self.inner.raft.metrics();
        tokio::spawn(async move {
            // Follower lag is exported at most once a second (it takes a status).
            let mut lag_at = 0u64;
            loop {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let (leader, term, applied, ack, last_log) = {
                    let m = metrics.borrow_and_update();
                    (
                        m.current_leader,
                        m.current_term,
                        m.last_applied,
                        m.millis_since_quorum_ack,
                        m.last_log_index,
                    )
                };
                let now = inner.epoch.elapsed().as_millis() as u64;
                match (leader == Some(inner.me), ack) {
                    (true, Some(age)) => inner
                        .acked_ms
                        .store(now.saturating_sub(age).max(1), Ordering::Relaxed),
                    _ => inner.acked_ms.store(0, Ordering::Relaxed),
                }
                if last_log.is_some() && inner.rejoining.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        shard = inner.shard + 1,
                        "rejoined: the leader gave this replica the log"
                    );
                }
                let shard = (inner.shard + 1).to_string();
                metrics::gauge!("wx_storage_raft_term", "shard" => shard.clone()).set(term as f64);
                metrics::gauge!("wx_storage_raft_leader", "shard" => shard.clone())
                    .set(if leader == Some(inner.me) { 1.0 } else { 0.0 });
                metrics::gauge!("wx_storage_raft_applied_index", "shard" => shard.clone())
                    .set(applied.map_or(0.0, |l| l.index as f64));
                metrics::gauge!("wx_storage_raft_last_log_index", "shard" => shard.clone())
                    .set(last_log.map_or(0.0, |l| l as f64));
                metrics::gauge!("wx_storage_raft_committed_index", "shard" => shard.clone())
                    .set(inner.committed.load(Ordering::Relaxed).saturating_sub(1) as f64);
                if leader == Some(inner.me) && now >= lag_at + 1000 {
                    lag_at = now;
                    let status = (Group {
                        inner: Arc::clone(&inner),
                    })
                    .status();
                    for (follower, lag) in status.follower_lag {
                        metrics::gauge!("wx_storage_raft_follower_lag", "shard" => shard.clone(), "follower" => follower)
                            .set(lag as f64);
                    }
                }
                drop(inner);
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

/// A replica hosted here: its group, its engine and the handler built for the term it
/// leads in.
struct Hosted {
    group: Group,
    engine: Engine,
    built: Mutex<Option<(u64, Arc<dyn ServiceHandler>)>>,
}

impl Hosted {
    fn handler(&self, term: u64, make: &Maker) -> Result<Arc<dyn ServiceHandler>, Status> {
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, handler)) = &*built
            && *at == term
        {
            return Ok(Arc::clone(handler));
        }
        let handler = make(self.engine.clone()).map_err(Status::from)?;
        *built = Some((term, Arc::clone(&handler)));
        Ok(handler)
    }
}

/// The replicas of this process, by shard index; replicas come and go as the shard map
/// changes.
pub struct Groups {
    shards: RwLock<Vec<Option<Arc<Hosted>>>>,
}

impl Groups {
    fn hosted(&self, index: usize) -> Option<Arc<Hosted>> {
        self.shards
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(index)
            .cloned()
            .flatten()
    }

    fn all(&self) -> Vec<Arc<Hosted>> {
        self.shards
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The replica of shard `index` (as a message names it).
    pub(crate) fn get(&self, index: u32) -> Result<Group, Status> {
        self.hosted(index as usize)
            .map(|hosted| hosted.group.clone())
            .ok_or_else(|| Status::not_found(format!("no replica of shard {} here", index + 1)))
    }

    /// True when every replica here knows its shard's leader.
    pub fn all_led(&self) -> bool {
        self.all()
            .iter()
            .all(|h| h.group.raft().metrics().borrow().current_leader.is_some())
    }

    /// Every replica's status.
    pub fn status(&self) -> Vec<ShardStatus> {
        self.all().iter().map(|h| h.group.status()).collect()
    }
}

/// Why a replicated store cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// Its engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// openraft refused its settings or failed to start.
    #[error("raft: {0}")]
    Raft(String),
    /// The launch environment is incomplete.
    #[error("{0}")]
    Launch(String),
}

/// The replicas a storage process hosts: one Raft group per shard of the map it holds a
/// copy of, each with its own engine in `DIR/shard-N`.
pub struct ReplicaSet {
    groups: Arc<Groups>,
    map: ShardMap,
}

/// What opening a replica takes, kept for the replicas the map gives this process later.
struct Opener {
    service: String,
    me_name: String,
    peers: Arc<Peers>,
    store: Option<Arc<dyn ConfigStore>>,
    dir: PathBuf,
    snapshot_logs: u64,
}

impl Opener {
    fn member_doc(&self, index: usize, id: u64) -> String {
        format!("{}.shard-{}.member-{id}", self.service, index + 1)
    }

    async fn has_member_doc(&self, index: usize, id: u64) -> Result<bool, ReplicaError> {
        match &self.store {
            Some(store) => Ok(store
                .load(&self.member_doc(index, id))
                .await
                .map_err(|e| ReplicaError::Launch(e.to_string()))?
                .stable_version
                > 0),
            None => Ok(false),
        }
    }

    /// Opens this process's replica of shard `index` of `map` and starts its node:
    /// bootstrapping the group when it was never formed, rejoining when this replica
    /// lost its directory, else waiting to be given the log.
    async fn open(&self, map: &ShardMap, index: usize) -> Result<Arc<Hosted>, ReplicaError> {
        let me = self.peers.id(&self.me_name).ok_or_else(|| {
            ReplicaError::Launch(format!("{} is not in the shard map", self.me_name))
        })?;
        let shard_dir = self.dir.join(format!("shard-{}", index + 1));
        // Its own database: the replicas' syncs run side by side (one database shared by
        // every replica here measured slower: one sync at a time).
        let engine = Engine::open(&shard_dir.join("db"))?;
        let mut log = LogStore::open(&engine)?;
        let committed = log.committed();
        let fresh = {
            use openraft::storage::RaftLogStorage as _;
            let state = log
                .get_log_state()
                .await
                .map_err(|e| ReplicaError::Raft(e.to_string()))?;
            let vote = log
                .read_vote()
                .await
                .map_err(|e| ReplicaError::Raft(e.to_string()))?;
            state.last_log_id.is_none() && vote.is_none()
        };
        let mut machine = StateMachine::open(&engine, shard_dir.join("raft-snapshot"))
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let restored =
            fresh && backup::restore_seeded(&shard_dir, &mut machine, &mut log, map, me).await?;
        let fresh = fresh && !restored;
        let beats = Arc::new(AtomicU64::new(0));
        let network = NetworkFactory {
            shard: index as u32,
            peers: Arc::clone(&self.peers),
            beats: Arc::clone(&beats),
        };
        let replicas = map.replicas_of(index);
        let preferred = replicas.first() == Some(&self.me_name);
        let config = Arc::new(
            raft_config(&self.service, self.snapshot_logs, preferred)
                .map_err(|e| ReplicaError::Raft(e.to_string()))?,
        );
        let raft = Raft::new(me, config, network, log, machine)
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        // Heartbeats come from the process's common tick (see `beat`), not each node's.
        raft.runtime_config().heartbeat(false);
        // A replica that ever held this shard's log says so in the registry before it can
        // vote; one that comes back empty while its record exists lost its disk (and
        // perhaps a vote it cast), so it rejoins instead of bootstrapping. Only the
        // shard's founding replicas bootstrap its group, all with the same members (the
        // same first entry everywhere); a replica added later starts empty and waits for
        // the leader to give it the log.
        let was_member = self.has_member_doc(index, me).await?;
        let rejoining = fresh && was_member;
        let founders = map.founders_of(index);
        if fresh && !was_member && founders.contains(&self.me_name) {
            let members: BTreeMap<u64, BasicNode> = founders
                .iter()
                .filter_map(|name| {
                    self.peers
                        .id(name)
                        .map(|id| (id, BasicNode::new(name.clone())))
                })
                .collect();
            // The first founder bootstraps at once (and, since that starts an election,
            // leads: each instance leads the shards it is named first for, so leaders
            // are spread); the others wait for it to send them the log, and bootstrap
            // the same way themselves only when it does not within BOOTSTRAP_GRACE.
            let first = founders.first() == Some(&self.me_name);
            let raft = raft.clone();
            let bootstrap = async move {
                if !first {
                    let waited = raft
                        .wait(Some(BOOTSTRAP_GRACE))
                        .metrics(|m| m.last_log_index.is_some(), "the first founder's log")
                        .await;
                    if waited.is_ok() {
                        return;
                    }
                }
                if let Err(e) = raft.initialize(members).await {
                    tracing::info!(shard = index + 1, error = %e, "bootstrap");
                }
            };
            if first {
                bootstrap.await;
            } else {
                tokio::spawn(bootstrap);
            }
        } else if rejoining {
            tracing::warn!(
                shard = index + 1,
                "this replica lost its directory: rejoining from the leader's log"
            );
        } else if fresh {
            tracing::info!(
                shard = index + 1,
                "a replica added to the group: waiting for its leader"
            );
        }
        if !was_member && let Some(store) = &self.store {
            svrkit::config::publish_stable(&**store, &self.member_doc(index, me), "1")
                .await
                .map_err(|e| ReplicaError::Launch(e.to_string()))?;
        }
        let group = Group {
            inner: Arc::new(GroupInner {
                proposer: proposer::Proposer::start(raft.clone()),
                snapshot_file: shard_dir.join("raft-snapshot"),
                raft,
                me,
                shard: index,
                peers: Arc::clone(&self.peers),
                rejoining: AtomicBool::new(rejoining),
                beats,
                committed,
                acked_ms: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        };
        group.watch();
        engine.replicate_through(group.clone());
        Ok(Arc::new(Hosted {
            group,
            engine,
            built: Mutex::new(None),
        }))
    }

    /// Opens the replicas `map` gives this process that it does not hold, and shuts
    /// down those it no longer gives it.
    async fn reconcile(&self, groups: &Groups, map: &ShardMap) {
        self.peers.set_names(map.nodes());
        for index in 0..map.shards.len() {
            let wanted = map.replicas_of(index).contains(&self.me_name);
            let held = groups.hosted(index);
            match (wanted, held) {
                (true, None) => match self.open(map, index).await {
                    Ok(hosted) => {
                        tracing::info!(shard = index + 1, "now a replica of this shard");
                        if let Some(slot) = groups
                            .shards
                            .write()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_mut(index)
                        {
                            *slot = Some(hosted);
                        }
                    }
                    Err(e) => tracing::error!(shard = index + 1, error = %e, "opening a replica"),
                },
                (false, Some(hosted)) => {
                    if let Some(slot) = groups
                        .shards
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_mut(index)
                    {
                        *slot = None;
                    }
                    if let Err(e) = hosted.group.raft().shutdown().await {
                        tracing::warn!(shard = index + 1, error = %e, "shutting a replica down");
                    }
                    tracing::info!(
                        shard = index + 1,
                        "no longer a replica of this shard (its directory stays)"
                    );
                }
                _ => {}
            }
        }
    }
}

/// Every [`HEARTBEAT`], each replica here that leads its shard sends its followers a
/// heartbeat, all at once: those to one peer leave as one batch.
fn beat(groups: std::sync::Weak<Groups>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(groups) = groups.upgrade() else {
                return;
            };
            for hosted in groups.all() {
                let raft = hosted.group.raft();
                let leads = raft.metrics().borrow().current_leader == Some(hosted.group.inner.me);
                if !leads {
                    continue;
                }
                hosted.group.inner.beats.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = raft.trigger().heartbeat().await {
                    tracing::debug!(error = %e, "heartbeat");
                }
            }
        }
    });
}

impl ReplicaSet {
    /// Opens this instance's replicas of `map`'s shards under `dir`, joins their groups
    /// (bootstrapping a group that was never formed) and starts their Raft nodes; then
    /// follows the map, opening and shutting replicas down as their shards' replicas
    /// change. An instance the map gives no replica yet (a spare) holds none until it
    /// does.
    pub async fn open(
        launch: &Launch,
        map: ShardMap,
        dir: &Path,
    ) -> Result<ReplicaSet, ReplicaError> {
        let registry = launch
            .registry()
            .ok_or_else(|| ReplicaError::Launch("replication needs a registry".into()))?;
        let live = registry
            .watch(launch.service())
            .await
            .map_err(|e| ReplicaError::Launch(e.to_string()))?;
        let peers = Arc::new(Peers::new(
            map.nodes().to_vec(),
            live,
            faults::Faults::from_env(),
        ));
        let snapshot_logs = std::env::var("WX_RAFT_SNAPSHOT_LOGS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n >= 10)
            .unwrap_or(20_000);
        let store = launch.config_store();
        let opener = Arc::new(Opener {
            service: launch.service().to_string(),
            me_name: launch.instance_id().to_string(),
            peers,
            store: store.clone(),
            dir: dir.to_path_buf(),
            snapshot_logs,
        });
        let groups = Arc::new(Groups {
            shards: RwLock::new(vec![None; map.shards.len()]),
        });
        for index in map.hosted_by(&opener.me_name) {
            let hosted = opener.open(&map, index).await?;
            groups
                .shards
                .write()
                .unwrap_or_else(PoisonError::into_inner)[index] = Some(hosted);
        }
        beat(Arc::downgrade(&groups));
        if let Some(store) = store {
            let mut maps = shard_map::watch(store, launch.service())
                .await
                .map_err(|e| ReplicaError::Launch(e.to_string()))?;
            let weak = Arc::downgrade(&groups);
            let mut known = map.version;
            tokio::spawn(async move {
                while maps.changed().await.is_ok() {
                    let Some(map) = maps.borrow_and_update().clone() else {
                        continue;
                    };
                    let Some(groups) = weak.upgrade() else {
                        return;
                    };
                    if map.version > known {
                        known = map.version;
                        opener.reconcile(&groups, &map).await;
                    }
                }
            });
        }
        Ok(ReplicaSet { groups, map })
    }

    /// The replication service to serve beside the store.
    pub fn replication(
        &self,
    ) -> wx_api::storage::replication_server::ReplicationServer<ReplicationService> {
        wx_api::storage::replication_server::ReplicationServer::new(ReplicationService {
            groups: Arc::clone(&self.groups),
        })
    }

    /// Every replica here, for status pages and tests.
    pub fn groups(&self) -> Arc<Groups> {
        Arc::clone(&self.groups)
    }

    /// The store service over every replica here: each request goes to its key's shard,
    /// served by `make(engine)` of that shard once this replica leads it (rebuilt at each
    /// new term).
    pub fn dispatch<H, F>(&self, descriptor: &'static ServiceDesc, make: F) -> ShardDispatch
    where
        H: ServiceHandler,
        F: Fn(Engine) -> Result<H, StorageError> + Send + Sync + 'static,
    {
        let make: Arc<Maker> =
            Arc::new(move |engine| Ok(Arc::new(make(engine)?) as Arc<dyn ServiceHandler>));
        ShardDispatch {
            descriptor,
            ring: svrkit::balance::Ring::new(&self.map.shards),
            groups: Arc::clone(&self.groups),
            make,
        }
    }
}

type Maker = dyn Fn(Engine) -> Result<Arc<dyn ServiceHandler>, StorageError> + Send + Sync;

/// A store service over the replicas of a process (see [`ReplicaSet::dispatch`]).
pub struct ShardDispatch {
    descriptor: &'static ServiceDesc,
    ring: svrkit::balance::Ring,
    groups: Arc<Groups>,
    make: Arc<Maker>,
}

impl ServiceHandler for ShardDispatch {
    fn descriptor(&self) -> &'static ServiceDesc {
        self.descriptor
    }

    fn call(
        &self,
        method: &'static MethodDesc,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        let key = Context::with_current(|ctx| ctx.and_then(Context::routing_key));
        let hosted = key
            .and_then(|k| self.ring.node(k))
            .and_then(|i| self.groups.hosted(i));
        let make = Arc::clone(&self.make);
        Box::pin(async move {
            let Some(key) = key else {
                return Err(Status::invalid_argument(
                    "a replicated store needs the routing key of the data it is called for",
                ));
            };
            let hosted =
                hosted.ok_or_else(|| Status::not_mine(format!("key {key} has no replica here")))?;
            let term = if method.stale_read {
                hosted.group.serving_stale().await?
            } else {
                hosted.group.serving().await?
            };
            let handler = hosted.handler(term, &*make)?;
            handler.call(method, body).await
        })
    }
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ReplicaSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaSet").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ShardDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardDispatch").finish_non_exhaustive()
    }
}
