//! A shard replica's Raft log and vote, in its own fjall database: keyspace `raft_log`
//! (entry index, big-endian → the entry, bincode) and `raft_meta` (the vote, the last
//! purged log id, the committed log id). Appends are durable before openraft is told
//! they are: they share the engine's group-committed fsync with every other write. The
//! wait for the disk is not openraft's: an append returns once its entries are written,
//! and a flusher task tells openraft, in append order, as each reaches the disk, so the
//! next batch is written and sent while the previous one is being synced.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use fjall::Keyspace;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, OptionalSend, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{LogId, StorageError, TypeConfig};
use crate::engine::{Engine, WriteBatch};

const VOTE: &[u8] = b"vote";
const PURGED: &[u8] = b"purged";
const COMMITTED: &[u8] = b"committed";

/// The log store of one replica.
#[derive(Clone)]
pub struct LogStore {
    engine: Engine,
    log: Keyspace,
    meta: Keyspace,
    /// Appends waiting for their sync, in order.
    flushes: tokio::sync::mpsc::UnboundedSender<(u64, LogFlushed<TypeConfig>)>,
    /// The last committed index openraft saved, plus one (0: none), for status pages.
    committed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Tells openraft of each append once its sync is done, in append order.
async fn flusher(
    engine: Engine,
    mut flushes: tokio::sync::mpsc::UnboundedReceiver<(u64, LogFlushed<TypeConfig>)>,
) {
    while let Some((ticket, callback)) = flushes.recv().await {
        let done = engine
            .synced(ticket)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(done);
    }
}

fn io_error(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    bincode::serialize(value).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))
}

/// The most a decoded value may allocate: a length prefix from a peer (or a damaged file)
/// claiming more is refused rather than allocated.
const DECODE_LIMIT: u64 = 256 << 20;

/// Decodes what [`encode`] wrote (the same fixed-width encoding), within [`DECODE_LIMIT`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    use bincode::Options as _;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(DECODE_LIMIT)
        .deserialize(bytes)
        .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))
}

impl LogStore {
    /// The log of the replica whose data is in `engine`.
    pub fn open(engine: &Engine) -> Result<LogStore, crate::engine::StorageError> {
        let (flushes, pending) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(flusher(engine.clone(), pending));
        let store = LogStore {
            log: engine.keyspace("raft_log")?,
            meta: engine.keyspace("raft_meta")?,
            engine: engine.clone(),
            flushes,
            committed: std::sync::Arc::default(),
        };
        if let Ok(Some(Some(id))) = store.read_meta::<Option<LogId>>(COMMITTED) {
            store.note_committed(Some(id));
        }
        Ok(store)
    }

    /// The last committed index this replica knows, plus one (0: none), kept up to date.
    pub fn committed(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        std::sync::Arc::clone(&self.committed)
    }

    fn note_committed(&self, committed: Option<LogId>) {
        self.committed.store(
            committed.map_or(0, |id| id.index + 1),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self
            .meta
            .get(key)
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))?
        {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, StorageError> {
        match self.log.last_key_value() {
            Some(item) => {
                let (_, value) = item
                    .into_inner()
                    .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                decode(&value).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Removes the entries from `from` (inclusive) to `to` (exclusive), with `extra`
    /// writes, in one durable batch.
    async fn remove_range(
        &self,
        from: u64,
        to: Bound<u64>,
        extra: WriteBatch,
    ) -> Result<(), StorageError> {
        let mut batch = extra;
        let range = (
            Bound::Included(from.to_be_bytes()),
            to.map(u64::to_be_bytes),
        );
        for item in self.log.range(range) {
            let key = item
                .key()
                .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(&self.log, key.to_vec());
        }
        self.engine
            .commit_local(batch)
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = range.start_bound().map(|i| i.to_be_bytes());
        let end = range.end_bound().map(|i| i.to_be_bytes());
        let mut out = Vec::new();
        for item in self.log.range((start, end)) {
            let (_, value) = item
                .into_inner()
                .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            out.push(decode(&value)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId> = self.read_meta(PURGED)?;
        let last = self.last_entry()?.map(|e| e.log_id).or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.insert(&self.meta, VOTE, encode(vote)?);
        self.engine
            .commit_local(batch)
            .await
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not waited for: after a crash the leader tells this replica again.
        self.note_committed(committed);
        let mut batch = WriteBatch::default();
        batch.insert(&self.meta, COMMITTED, encode(&committed)?);
        self.engine
            .apply_local(batch)
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.insert(&self.log, entry.log_id.index.to_be_bytes(), encode(&entry)?);
        }
        self.engine
            .apply_local(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let ticket = self.engine.sync_ticket();
        self.flushes
            .send((ticket, callback))
            .map_err(|_| io_error(ErrorSubject::Logs, ErrorVerb::Write, "the flusher stopped"))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(log_id.index, Bound::Unbounded, WriteBatch::default())
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.insert(&self.meta, PURGED, encode(&log_id)?);
        self.remove_range(0, Bound::Included(log_id.index), batch)
            .await
    }
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_reads_what_encoding_wrote_and_refuses_a_huge_length() {
        let value: Vec<Vec<u8>> = vec![b"abc".to_vec(), Vec::new()];
        let bytes = encode(&value).expect("encoded");
        assert_eq!(decode::<Vec<Vec<u8>>>(&bytes).expect("decoded"), value);
        // A length prefix of 2^62 elements: refused, not allocated.
        let mut hostile = (1u64 << 62).to_le_bytes().to_vec();
        hostile.extend_from_slice(&[0; 16]);
        assert!(decode::<Vec<u8>>(&hostile).is_err());
    }
}
