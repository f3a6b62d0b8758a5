//! A shard replica's state machine: the shard's own keyspaces in the replica's fjall
//! database, plus `raft_sm` (the last applied log id and membership, written in the same
//! atomic batch as the entries they describe, so the two never disagree after a crash).
//!
//! Applying does not wait for the disk: the Raft log is what is durable, and openraft
//! re-applies what a crash lost. A snapshot first makes everything applied durable
//! (openraft purges the log it covers afterwards), then holds every data keyspace's
//! records as of one fjall snapshot, and is kept in the file `raft-snapshot` beside the
//! database until the next one.

use std::io::Cursor;
use std::path::PathBuf;

use fjall::{Keyspace, PersistMode, Readable};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, SnapshotMeta, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::log_store::{decode, encode};
use super::types::{Applied, Command, LogId, StorageError, TypeConfig};
use crate::engine::{Engine, WriteBatch};

const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";
/// Keyspaces that are the replica's own bookkeeping, not the shard's data.
const OWN: [&str; 3] = ["raft_log", "raft_meta", "raft_sm"];
/// Records per batch when installing a snapshot.
const INSTALL_BATCH: usize = 4096;

type Membership = StoredMembership<u64, openraft::BasicNode>;
type Meta = SnapshotMeta<u64, openraft::BasicNode>;

fn io_error(verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::StateMachine,
        verb,
        std::io::Error::other(e.to_string()),
    )
}

/// The state machine of one replica.
pub struct StateMachine {
    engine: Engine,
    sm: Keyspace,
    snapshot_file: PathBuf,
    applied: Option<LogId>,
    membership: Membership,
}

/// A snapshot as kept on disk (and as a backup holds it): its metadata and data.
#[derive(Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// What it covers: the last log id, the membership, its id.
    pub meta: Meta,
    /// The shard's records.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for StoredSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSnapshot")
            .field("meta", &self.meta)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl StoredSnapshot {
    /// Decodes a snapshot file.
    pub fn decode(bytes: &[u8]) -> Result<StoredSnapshot, StorageError> {
        decode(bytes)
    }
}

impl StateMachine {
    /// The state machine over `engine`; its snapshots go to `snapshot_file`.
    pub fn open(engine: &Engine, snapshot_file: PathBuf) -> Result<StateMachine, StorageError> {
        let sm = engine
            .keyspace("raft_sm")
            .map_err(|e| io_error(ErrorVerb::Read, e))?;
        let read = |key: &[u8]| -> Result<Option<Vec<u8>>, StorageError> {
            sm.get(key)
                .map(|v| v.map(|v| v.to_vec()))
                .map_err(|e| io_error(ErrorVerb::Read, e))
        };
        let applied = match read(APPLIED)? {
            Some(bytes) => decode(&bytes)?,
            None => None,
        };
        let membership = match read(MEMBERSHIP)? {
            Some(bytes) => decode(&bytes)?,
            None => Membership::default(),
        };
        Ok(StateMachine {
            engine: engine.clone(),
            sm,
            snapshot_file,
            applied,
            membership,
        })
    }

    fn bookkeeping(&self) -> Result<WriteBatch, StorageError> {
        let mut batch = WriteBatch::default();
        batch.insert(&self.sm, APPLIED, encode(&self.applied)?);
        batch.insert(&self.sm, MEMBERSHIP, encode(&self.membership)?);
        Ok(batch)
    }

    fn data_keyspaces(&self) -> Result<Vec<(String, Keyspace)>, StorageError> {
        let mut out = Vec::new();
        for name in self.engine.db().list_keyspace_names() {
            let name = name.to_string();
            if OWN.contains(&name.as_str()) {
                continue;
            }
            let keyspace = self
                .engine
                .keyspace(&name)
                .map_err(|e| io_error(ErrorVerb::Read, e))?;
            out.push((name, keyspace));
        }
        Ok(out)
    }

    fn save_snapshot(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        let bytes = encode(stored)?;
        let tmp = self.snapshot_file.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.snapshot_file)
        };
        write().map_err(|e| io_error(ErrorVerb::Write, e))
    }
}

/// Appends one length-prefixed field.
fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

/// Reads one length-prefixed field at `*at`.
fn take<'a>(data: &'a [u8], at: &mut usize) -> Result<&'a [u8], StorageError> {
    let corrupt = || io_error(ErrorVerb::Read, "a snapshot that does not parse");
    let len_bytes = data.get(*at..*at + 4).ok_or_else(corrupt)?;
    let len = u32::from_be_bytes(len_bytes.try_into().map_err(|_| corrupt())?) as usize;
    let field = data.get(*at + 4..*at + 4 + len).ok_or_else(corrupt)?;
    *at += 4 + len;
    Ok(field)
}

/// Builds a snapshot from a consistent view taken between two applies.
pub struct Builder {
    engine: Engine,
    view: fjall::Snapshot,
    keyspaces: Vec<(String, Keyspace)>,
    applied: Option<LogId>,
    membership: Membership,
    snapshot_file: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Everything applied becomes durable first: the log this snapshot covers goes.
        let db = self.engine.db().clone();
        tokio::task::spawn_blocking(move || db.persist(PersistMode::SyncAll))
            .await
            .map_err(|e| io_error(ErrorVerb::Write, e))?
            .map_err(|e| io_error(ErrorVerb::Write, e))?;
        let mut data = Vec::new();
        for (name, keyspace) in &self.keyspaces {
            for item in self.view.iter(keyspace) {
                let (key, value) = item
                    .into_inner()
                    .map_err(|e| io_error(ErrorVerb::Read, e))?;
                put(&mut data, name.as_bytes());
                put(&mut data, &key);
                put(&mut data, &value);
            }
        }
        let snapshot_id = match &self.applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term,
                id.index,
                svrkit::context::random_u64()
            ),
            None => format!("empty-{}", svrkit::context::random_u64()),
        };
        let meta = Meta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot { meta, data };
        let machine = StateMachine {
            engine: self.engine.clone(),
            sm: self
                .engine
                .keyspace("raft_sm")
                .map_err(|e| io_error(ErrorVerb::Read, e))?,
            snapshot_file: self.snapshot_file.clone(),
            applied: self.applied,
            membership: self.membership.clone(),
        };
        machine.save_snapshot(&stored)?;
        metrics::counter!("wx_storage_raft_snapshots_built_total").increment(1);
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<openraft::Entry<TypeConfig>> = entries.into_iter().collect();
        let mut commands: Vec<&Command> = Vec::new();
        for entry in &entries {
            self.applied = Some(entry.log_id);
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(command) => commands.push(command),
                EntryPayload::Membership(membership) => {
                    self.membership = Membership::new(Some(entry.log_id), membership.clone());
                }
            }
        }
        let bookkeeping = self.bookkeeping()?;
        self.engine
            .apply_command(&commands, bookkeeping)
            .map_err(|e| io_error(ErrorVerb::Write, e))?;
        Ok(vec![Applied; entries.len()])
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Taken here, between two applies: the view and the applied id agree.
        Builder {
            engine: self.engine.clone(),
            view: self.engine.db().snapshot(),
            keyspaces: self.data_keyspaces().unwrap_or_default(),
            applied: self.applied,
            membership: self.membership.clone(),
            snapshot_file: self.snapshot_file.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        // Check it whole before touching anything.
        let mut records = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let name = std::str::from_utf8(take(&data, &mut at)?)
                .map_err(|e| io_error(ErrorVerb::Read, e))?
                .to_string();
            let key = take(&data, &mut at)?;
            let value = take(&data, &mut at)?;
            records.push((name, key, value));
        }
        for (_, keyspace) in self.data_keyspaces()? {
            keyspace
                .clear()
                .map_err(|e| io_error(ErrorVerb::Delete, e))?;
        }
        for chunk in records.chunks(INSTALL_BATCH) {
            let mut batch = WriteBatch::default();
            for (name, key, value) in chunk {
                let keyspace = self
                    .engine
                    .keyspace(name)
                    .map_err(|e| io_error(ErrorVerb::Write, e))?;
                batch.insert(&keyspace, *key, *value);
            }
            self.engine
                .apply_local(batch)
                .map_err(|e| io_error(ErrorVerb::Write, e))?;
        }
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let bookkeeping = self.bookkeeping()?;
        self.engine
            .commit_local(bookkeeping)
            .await
            .map_err(|e| io_error(ErrorVerb::Write, e))?;
        self.save_snapshot(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })?;
        metrics::counter!("wx_storage_raft_snapshots_installed_total").increment(1);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let bytes = match std::fs::read(&self.snapshot_file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(ErrorVerb::Read, e)),
        };
        let stored: StoredSnapshot = decode(&bytes)?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_fields_round_trip_and_a_cut_one_is_refused() {
        let mut data = Vec::new();
        put(&mut data, b"accounts");
        put(&mut data, b"");
        put(&mut data, &[7; 300]);
        let mut at = 0;
        assert_eq!(take(&data, &mut at).expect("name"), b"accounts");
        assert_eq!(take(&data, &mut at).expect("key"), b"");
        assert_eq!(take(&data, &mut at).expect("value"), &[7; 300][..]);
        assert_eq!(at, data.len());
        let cut = &data[..data.len() - 1];
        let mut at = 16;
        assert!(take(cut, &mut at).is_err());
    }
}
