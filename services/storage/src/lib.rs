//! The storage tier of the backend: one service per data type — `accountstore`
//! ([`AccountStoreService`]), `contactstore` ([`ContactStoreService`]), `msgstore`
//! ([`MsgStoreService`], mailboxes), `seqstore` ([`SeqStoreService`], the sequence
//! allocator's sections) and `momentsstore` ([`MomentsStoreService`], posts, likes,
//! comments and timelines) — each run as
//! shards that callers pick by uid on a consistent-hash ring of the instances discovery
//! reports (`svrkit::balance::Balance::Sharded`: only the owner, never a neighbour).
//!
//! ## The engine
//!
//! Every shard keeps its data in [fjall](https://docs.rs/fjall), an LSM tree (journal,
//! memtables, sorted tables, background compaction), through [`Engine`]. It was chosen
//! over a B-tree engine (redb, sled's successor generation) because the backend's write
//! pattern is many small, independent records (edges, sessions, later messages) written
//! at a high rate, which an LSM tree absorbs as sequential journal appends; and because
//! it lets many concurrent writers share one fsync (group commit, see [`engine`]) rather
//! than paying one per transaction. Every acknowledged write is on disk: a test kills a
//! storage process with SIGKILL right after acknowledged writes and reads them back.
//!
//! Group commit multiplies durable writes per second under many concurrent writers and
//! gains nothing for a single one, which waits for its own fsync either way
//! (`svrkit-bench storage`; figures in `docs/MEASUREMENTS.md`).
//!
//! Records are protobuf messages from `idl/wx/storage.proto` with a version each, so two
//! writers racing on one record are told apart (the loser gets ABORTED and re-reads).

pub mod engine;

mod account_store;
mod codec;
mod contact_store;
pub mod moments_store;
pub mod msg_store;
pub mod queue;
mod seq_store;

pub use account_store::AccountStoreService;
pub use contact_store::ContactStoreService;
pub use engine::{Engine, StorageError};
pub use moments_store::MomentsStoreService;
pub use msg_store::MsgStoreService;
pub use seq_store::SeqStoreService;
