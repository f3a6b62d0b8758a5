//! What a shard's Raft log holds: one entry per committed write batch.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// One write of a replicated batch, by keyspace name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The keyspace.
    pub keyspace: String,
    /// The key.
    pub key: Vec<u8>,
    /// The value, or `None` to remove the key.
    pub value: Option<Vec<u8>>,
}

/// A replicated write batch: every replica applies all of it or none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Its writes, in order.
    pub ops: Vec<Op>,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} write(s)", self.ops.len())
    }
}

/// What applying a command answers (nothing: the handler already knows its reply).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied;

openraft::declare_raft_types!(
    /// The Raft types of a storage shard.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A shard's Raft node.
pub type Raft = openraft::Raft<TypeConfig>;
/// openraft's storage error for this node type.
pub type StorageError = openraft::StorageError<u64>;
/// A log id.
pub type LogId = openraft::LogId<u64>;
