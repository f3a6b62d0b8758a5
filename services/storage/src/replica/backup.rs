//! Backup and restore of a replicated store: a consistent snapshot of every shard, taken
//! from its leader, to a directory; and that directory seeded into a fresh cluster's
//! replicas, which start from it as if they had installed it from a leader.
//!
//! A backup directory holds `backup.json` (the service, its shards and replicas, and
//! per shard the snapshot's id, last log index and size) and `shard-N.snapshot` (the
//! leader's snapshot file: every record of the shard as of one applied log index, so
//! every write acknowledged before the backup began is in it). Restoring writes each
//! shard's file into the directory of each of its replicas as `restore.snapshot` before
//! the cluster's first start; a replica that starts with an empty log and that file
//! installs it (its records, applied index and membership) and renames it
//! `restore.snapshot.applied`. The new cluster must have the same shards and replicas
//! (instance ids), which `svrkit up` gives it from the same manifest.

use std::io::Cursor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage as _, RaftStateMachine as _};
use serde::{Deserialize, Serialize};
use svrkit::discovery::shard_map::ShardMap;
use wx_api::storage::BackupRequest;

use super::ReplicaError;
use super::log_store::LogStore;
use super::state_machine::{StateMachine, StoredSnapshot};

/// Bytes per backup chunk.
pub const CHUNK: usize = 1 << 20;
/// The largest snapshot file a backup copies (a shard above it needs a streaming
/// backup, not built yet).
pub const MAX_SNAPSHOT: u64 = 4 << 30;
/// The file a restore seeds into a replica's directory.
const SEED: &str = "restore.snapshot";

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A shard's leader could not be reached or refused.
    #[error("shard {shard}: {message}")]
    Shard {
        /// The shard (from 1).
        shard: usize,
        /// What happened.
        message: String,
    },
    /// The backup does not fit the cluster, or is not a backup.
    #[error("{0}")]
    Mismatch(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `backup.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The service (`wx.storage.AccountStore`).
    pub service: String,
    /// Its shards and their replicas.
    pub map: ShardMap,
    /// One entry per shard, in map order.
    pub snapshots: Vec<ShardBackup>,
}

/// One shard's part of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardBackup {
    /// The shard (from 1).
    pub shard: usize,
    /// Its file in the backup directory.
    pub file: String,
    /// The snapshot's id.
    pub snapshot_id: String,
    /// The last log index it holds.
    pub last_index: u64,
    /// Its size.
    pub bytes: u64,
}

/// Copies a fresh snapshot of every shard of `service` (its map `map`; its instances at
/// `addrs`, by instance id) into `to`, from each shard's leader. Channels are built
/// with the process's defaults (its TLS credentials, when it has them).
pub async fn save(
    service: &str,
    map: &ShardMap,
    addrs: &[(String, SocketAddr)],
    to: &Path,
) -> Result<Manifest, BackupError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    let mut snapshots = Vec::new();
    for index in 0..map.shards.len() {
        let shard = index + 1;
        let failed = |message: String| BackupError::Shard { shard, message };
        let request = || BackupRequest {
            shard: index as u32,
            offset: 0,
            snapshot_id: String::new(),
        };
        let (first, client) = super::leader::on_leader(&map.replicas_of(index), addrs, |c| {
            let request = request();
            async move { c.backup(request).await }
        })
        .await
        .map_err(failed)?;
        if first.total > MAX_SNAPSHOT {
            return Err(failed(format!(
                "a snapshot of {} bytes is too large",
                first.total
            )));
        }
        let mut bytes = first.data.to_vec();
        while (bytes.len() as u64) < first.total {
            let chunk = client
                .backup(BackupRequest {
                    shard: index as u32,
                    offset: bytes.len() as u64,
                    snapshot_id: first.snapshot_id.clone(),
                })
                .await
                .map_err(|e| failed(e.to_string()))?;
            if chunk.data.is_empty() {
                return Err(failed("the snapshot ended early".into()));
            }
            bytes.extend_from_slice(&chunk.data);
        }
        // Check it is whole before keeping it.
        StoredSnapshot::decode(&bytes).map_err(|e| failed(e.to_string()))?;
        let file = format!("shard-{shard}.snapshot");
        let path = to.join(&file);
        std::fs::write(&path, &bytes).map_err(io(&path))?;
        snapshots.push(ShardBackup {
            shard,
            file,
            snapshot_id: first.snapshot_id,
            last_index: first.last_index,
            bytes: bytes.len() as u64,
        });
    }
    let manifest = Manifest {
        service: service.to_string(),
        map: map.clone(),
        snapshots,
    };
    let path = to.join("backup.json");
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| BackupError::Mismatch(e.to_string()))?;
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(manifest)
}

/// Reads a backup directory's `backup.json`.
pub fn read_manifest(from: &Path) -> Result<Manifest, BackupError> {
    let path = from.join("backup.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text)
        .map_err(|e| BackupError::Mismatch(format!("{}: not a backup: {e}", path.display())))
}

/// Seeds the backup in `from` into a fresh cluster: for every replica of every shard,
/// `data_dir(instance)/name/shard-N/restore.snapshot` (`name`: the store's directory
/// name, `accountstore`). Refuses a replica that already holds data. Returns how many
/// files it wrote.
pub fn seed(
    from: &Path,
    name: &str,
    data_dir: impl Fn(&str) -> PathBuf,
) -> Result<usize, BackupError> {
    let manifest = read_manifest(from)?;
    if manifest.snapshots.len() != manifest.map.shards.len() {
        return Err(BackupError::Mismatch("the backup misses shards".into()));
    }
    let mut written = 0;
    for (index, shard) in manifest.snapshots.iter().enumerate() {
        if shard.file.contains('/') || shard.file.contains("..") {
            return Err(BackupError::Mismatch(format!(
                "a file name {:?}",
                shard.file
            )));
        }
        let source = from.join(&shard.file);
        for replica in manifest.map.replicas_of(index) {
            let dir = data_dir(&replica)
                .join(name)
                .join(format!("shard-{}", index + 1));
            if dir.join("db").exists() {
                return Err(BackupError::Mismatch(format!(
                    "{} holds data already: restore into a fresh cluster",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let target = dir.join(SEED);
            std::fs::copy(&source, &target).map_err(io(&target))?;
            written += 1;
        }
    }
    Ok(written)
}

/// At a replica's first start: installs a seeded backup of its shard, if there is one.
/// True when it did.
pub(crate) async fn restore_seeded(
    shard_dir: &Path,
    machine: &mut StateMachine,
    log: &mut LogStore,
    map: &ShardMap,
    me: u64,
) -> Result<bool, ReplicaError> {
    let path = shard_dir.join(SEED);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ReplicaError::Launch(format!("{}: {e}", path.display()))),
    };
    let stored = StoredSnapshot::decode(&bytes).map_err(|e| ReplicaError::Raft(e.to_string()))?;
    // Its members must be this cluster's instances under the same node ids.
    for (id, node) in stored.meta.last_membership.membership().nodes() {
        let expected = usize::try_from(*id)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| map.shards.get(i));
        if expected != Some(&node.addr) {
            return Err(ReplicaError::Launch(format!(
                "the backup's replica {} (node {id}) is not this cluster's",
                node.addr
            )));
        }
    }
    let last = stored.meta.last_log_id;
    machine
        .install_snapshot(&stored.meta, Box::new(Cursor::new(stored.data)))
        .await
        .map_err(|e| ReplicaError::Raft(e.to_string()))?;
    if let Some(last) = last {
        log.purge(last)
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        // A vote is never older than the log: this replica starts in the term of the
        // last entry it holds (voting for itself there, in a cluster with no history).
        log.save_vote(&openraft::Vote::new(last.leader_id.term, me))
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
    }
    let applied = shard_dir.join("restore.snapshot.applied");
    std::fs::rename(&path, &applied)
        .map_err(|e| ReplicaError::Launch(format!("{}: {e}", path.display())))?;
    tracing::warn!(
        shard = %shard_dir.display(),
        last_index = last.map_or(0, |l| l.index),
        "restored from a backup"
    );
    Ok(true)
}
