//! One shard's embedded engine: a fjall database whose writes are acknowledged only once
//! they are on disk.
//!
//! Durability by group commit: a writer appends its batch to fjall's journal, takes a
//! ticket, and waits until a sync covering that ticket finished. One task runs the syncs
//! (`persist(SyncAll)`: journal write-out plus fsync) back to back, each covering every
//! batch appended before it started, so N concurrent writers share one fsync instead of
//! paying N. An acknowledged write therefore survives `kill -9` and power loss alike.
//!
//! A replicated shard's engine ([`Engine::replicated`]) commits differently: a batch
//! becomes one entry of the shard's Raft log ([`crate::replica`]), acknowledged once a
//! majority of its replicas hold it durably, and reaches this database (on every replica)
//! when the entry is applied. The handlers do not tell the two apart.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::{Mutex, MutexGuard, Notify, watch};

use crate::replica::types::{Command, Op};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The engine failed (I/O, corruption it detected).
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    /// A stored record does not decode.
    #[error("corrupt record under {key}: {source}")]
    Corrupt {
        /// The key, hex.
        key: String,
        /// The decode error.
        source: prost::DecodeError,
    },
    /// The sync task is gone (the engine is shutting down or a sync failed).
    #[error("the durability sync failed: {0}")]
    Sync(String),
    /// A replicated write's outcome is unknown: leadership moved or the group failed
    /// while it was in flight (it may or may not be applied; re-read before retrying).
    #[error("replication: {0}")]
    Replication(String),
}

impl From<StorageError> for svrkit::Status {
    fn from(e: StorageError) -> svrkit::Status {
        match e {
            StorageError::Replication(message) => {
                tracing::warn!(%message, "replicated write without an outcome");
                svrkit::Status::unavailable(format!("replication: {message}"))
            }
            e => {
                tracing::error!(error = %e, "storage failure");
                svrkit::Status::internal(e.to_string())
            }
        }
    }
}

/// Writes that apply together: to every keyspace of one engine, atomically, once
/// committed ([`Engine::commit`]).
#[derive(Default)]
pub struct WriteBatch {
    ops: Vec<(Keyspace, Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    /// Sets `key` to `value` in `keyspace`.
    pub fn insert(
        &mut self,
        keyspace: &Keyspace,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) {
        self.ops
            .push((keyspace.clone(), key.into(), Some(value.into())));
    }

    /// Removes `key` from `keyspace`.
    pub fn remove(&mut self, keyspace: &Keyspace, key: impl Into<Vec<u8>>) {
        self.ops.push((keyspace.clone(), key.into(), None));
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The replicated form: keyspaces by name.
    fn into_command(self) -> Command {
        Command {
            ops: self
                .ops
                .into_iter()
                .map(|(keyspace, key, value)| Op {
                    keyspace: keyspace.name().to_string(),
                    key,
                    value,
                })
                .collect(),
        }
    }
}

/// Striped locks serialising read-check-write sequences on the same key.
const STRIPES: usize = 256;

/// A shard's database with durable, group-committed writes.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    /// The shard's Raft group, when it is replicated.
    raft: Arc<OnceLock<crate::replica::Group>>,
}

struct Inner {
    db: Database,
    /// Tickets handed to committed batches.
    appended: AtomicU64,
    /// The highest ticket known to be on disk (or the error that stopped syncing).
    synced: watch::Receiver<Result<u64, String>>,
    wake: Arc<Notify>,
    stripes: Vec<Mutex<()>>,
    /// Keyspaces opened so far, by full name.
    keyspaces: std::sync::Mutex<HashMap<String, Keyspace>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("appended", &self.inner.appended.load(Ordering::Relaxed))
            .finish()
    }
}

impl Engine {
    /// Opens (creating or recovering) the database in `dir`. Needs a tokio runtime: the
    /// sync task runs on it.
    pub fn open(dir: &Path) -> Result<Engine, StorageError> {
        let db = Database::builder(dir).open()?;
        let (synced_tx, synced) = watch::channel(Ok(0));
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            db,
            appended: AtomicU64::new(0),
            synced,
            wake: Arc::clone(&wake),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            keyspaces: std::sync::Mutex::new(HashMap::new()),
        });
        tokio::spawn(sync_loop(Arc::downgrade(&inner), wake, synced_tx));
        Ok(Engine {
            inner,
            raft: Arc::new(OnceLock::new()),
        })
    }

    /// A keyspace (created on first use).
    pub fn keyspace(&self, name: &str) -> Result<Keyspace, StorageError> {
        let mut open = self
            .inner
            .keyspaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(keyspace) = open.get(name) {
            return Ok(keyspace.clone());
        }
        let keyspace = self
            .inner
            .db
            .keyspace(name, KeyspaceCreateOptions::default)?;
        open.insert(name.to_string(), keyspace.clone());
        Ok(keyspace)
    }

    /// An empty batch: its writes apply atomically.
    pub fn batch(&self) -> WriteBatch {
        WriteBatch::default()
    }

    /// Applies `batch` and returns once it is durable: on this disk, or for a replicated
    /// shard in a majority of its replicas' logs (and applied here, on the leader).
    pub async fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(group) = self.raft.get() {
            return group.write(batch.into_command()).await;
        }
        self.fjall_batch(batch).commit()?;
        self.durable().await
    }

    /// The fjall batch of `batch`.
    fn fjall_batch(&self, batch: WriteBatch) -> fjall::OwnedWriteBatch {
        let mut out = self.inner.db.batch();
        for (keyspace, key, value) in batch.ops {
            match value {
                Some(value) => out.insert(&keyspace, key, value),
                None => out.remove(&keyspace, key),
            }
        }
        out
    }

    /// Applies `command` (a replicated entry) here, with `extra` writes in the same
    /// atomic batch, without waiting for the disk (the Raft log is what is durable).
    pub(crate) fn apply_command(
        &self,
        commands: &[&Command],
        extra: WriteBatch,
    ) -> Result<(), StorageError> {
        let mut out = self.fjall_batch(extra);
        for command in commands {
            for op in &command.ops {
                let keyspace = self.keyspace(&op.keyspace)?;
                match &op.value {
                    Some(value) => out.insert(&keyspace, op.key.clone(), value.clone()),
                    None => out.remove(&keyspace, op.key.clone()),
                }
            }
        }
        out.commit()?;
        Ok(())
    }

    /// Commits `batch` here only, durably (the Raft log's own records).
    pub(crate) async fn commit_local(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.fjall_batch(batch).commit()?;
        self.durable().await
    }

    /// Commits `batch` here only, without waiting for the disk.
    pub(crate) fn apply_local(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.fjall_batch(batch).commit()?;
        Ok(())
    }

    /// The database (for the replica's snapshots).
    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }

    /// Makes this engine's commits go through `group` (once, when the replica starts).
    pub(crate) fn replicate_through(&self, group: crate::replica::Group) {
        let _ = self.raft.set(group);
    }

    /// The shard's Raft group, when replicated.
    pub fn group(&self) -> Option<&crate::replica::Group> {
        self.raft.get()
    }

    /// Waits until every write committed to the database so far is on disk.
    pub(crate) async fn durable(&self) -> Result<(), StorageError> {
        let ticket = self.sync_ticket();
        self.synced(ticket).await
    }

    /// Asks for a sync covering every write committed so far; [`Engine::synced`] waits
    /// for it.
    pub(crate) fn sync_ticket(&self) -> u64 {
        let ticket = self.inner.appended.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.wake.notify_one();
        ticket
    }

    /// Waits until the sync of `ticket` (or a later one) is done.
    pub(crate) async fn synced(&self, ticket: u64) -> Result<(), StorageError> {
        let mut synced = self.inner.synced.clone();
        let result = synced
            .wait_for(|s| s.as_ref().map_or(true, |done| *done >= ticket))
            .await
            .map_err(|_| StorageError::Sync("the engine shut down".into()))?;
        match &*result {
            Ok(_) => Ok(()),
            Err(e) => Err(StorageError::Sync(e.clone())),
        }
    }

    /// Applies `batch` without asking for the disk: the next sync for a durable commit
    /// persists it along. Only for writes whose loss in a crash is harmless because a
    /// later one redoes them (a device's acknowledged position, trimming); everything a
    /// client is told is stored goes through [`Engine::commit`]. A replicated shard
    /// replicates these too (they change what every replica holds), and waits for it.
    pub async fn apply(&self, batch: WriteBatch) -> Result<(), StorageError> {
        if self.raft.get().is_some() {
            return self.commit(batch).await;
        }
        self.fjall_batch(batch).commit()?;
        Ok(())
    }

    /// Holds the lock of `key`'s stripe: read-check-write sequences under it do not
    /// interleave with others on the same key.
    pub async fn lock(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        let i = (svrkit::balance::ring_hash(key) % STRIPES as u64) as usize;
        self.inner.stripes[i].lock().await
    }

    /// Holds the locks of every key's stripe (each stripe once, in stripe order, so two
    /// callers never wait on each other crosswise).
    pub async fn lock_all(&self, keys: &[&[u8]]) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys
            .iter()
            .map(|k| (svrkit::balance::ring_hash(k) % STRIPES as u64) as usize)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.inner.stripes[i].lock().await);
        }
        guards
    }

    /// How many syncs covered how many commits so far (for tests and metrics).
    pub fn commits(&self) -> u64 {
        self.inner.appended.load(Ordering::Relaxed)
    }
}

/// Runs syncs while there are commits waiting for one; each covers every batch appended
/// before it started.
async fn sync_loop(
    inner: std::sync::Weak<Inner>,
    wake: Arc<Notify>,
    synced: watch::Sender<Result<u64, String>>,
) {
    let mut done = 0u64;
    loop {
        let Some(engine) = inner.upgrade() else {
            return;
        };
        let target = engine.appended.load(Ordering::SeqCst);
        if target == done {
            drop(engine);
            wake.notified().await;
            continue;
        }
        let db = engine.db.clone();
        drop(engine);
        let result = tokio::task::spawn_blocking(move || db.persist(PersistMode::SyncAll)).await;
        match result {
            Ok(Ok(())) => {
                done = target;
                metrics_sync();
                let _ = synced.send_replace(Ok(done));
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "fsync failed; refusing further writes");
                let _ = synced.send_replace(Err(e.to_string()));
                return;
            }
            Err(e) => {
                let _ = synced.send_replace(Err(e.to_string()));
                return;
            }
        }
    }
}

fn metrics_sync() {
    metrics::counter!("wx_storage_syncs_total").increment(1);
}

impl std::fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBatch").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_are_all_acknowledged_and_there_after_reopening() {
        let dir = std::env::temp_dir().join(format!(
            "wx-engine-{}-{:x}",
            std::process::id(),
            svrkit::context::random_u64()
        ));
        {
            let engine = Engine::open(&dir).expect("open");
            let ks = engine.keyspace("t").expect("keyspace");
            let mut writers = tokio::task::JoinSet::new();
            for i in 0..100u32 {
                let (engine, ks) = (engine.clone(), ks.clone());
                writers.spawn(async move {
                    let mut batch = engine.batch();
                    batch.insert(&ks, i.to_be_bytes().to_vec(), b"v".to_vec());
                    engine.commit(batch).await
                });
            }
            while let Some(done) = writers.join_next().await {
                done.expect("join").expect("acknowledged");
            }
            assert_eq!(engine.commits(), 100);
        }
        let engine = Engine::open(&dir).expect("reopen");
        let ks = engine.keyspace("t").expect("keyspace");
        for i in 0..100u32 {
            assert!(
                ks.get(i.to_be_bytes()).expect("read").is_some(),
                "record {i}"
            );
        }
        drop((ks, engine));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
