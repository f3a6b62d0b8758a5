//! The storage tier of the backend: one service per data type — `accountstore`
//! ([`AccountStoreService`]), `contactstore` ([`ContactStoreService`]), `msgstore`
//! ([`MsgStoreService`], mailboxes), `seqstore` ([`SeqStoreService`], the sequence
//! allocator's sections), `momentsstore` ([`MomentsStoreService`], posts, likes,
//! comments and timelines) and `walletstore` ([`WalletStoreService`], wallets, ledgers
//! and red envelopes) — each run as
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
//! ## Replication
//!
//! With `SVRKIT_REPLICAS=3` (the manifest's `replicas = 3`) every shard is a Raft group of
//! three replicas on three instances, each instance holding a replica of several shards;
//! see [`replica`]. With 1 (a laptop) a shard is one instance, as above.
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
pub mod replica;
mod seq_store;
pub mod wallet_store;

use svrkit::Server;
use svrkit::codegen::ServiceDesc;
use svrkit::launch::{Launch, LaunchError};
use svrkit::server::ServiceHandler;

pub use account_store::AccountStoreService;
pub use contact_store::ContactStoreService;
pub use engine::{Engine, StorageError};
pub use moments_store::MomentsStoreService;
pub use msg_store::MsgStoreService;
pub use seq_store::SeqStoreService;
pub use wallet_store::WalletStoreService;

/// The stores' names, as their binaries and data directories are called.
pub const STORES: [&str; 6] = [
    "accountstore",
    "contactstore",
    "msgstore",
    "seqstore",
    "momentsstore",
    "walletstore",
];

/// The svrkit service of the store called `store` (one of [`STORES`]).
pub fn store_service(store: &str) -> Option<&'static str> {
    use wx_api::storage::*;
    Some(match store {
        "accountstore" => account_store_methods::SERVICE_NAME,
        "contactstore" => contact_store_methods::SERVICE_NAME,
        "msgstore" => msg_store_methods::SERVICE_NAME,
        "seqstore" => seq_store_methods::SERVICE_NAME,
        "momentsstore" => moments_store_methods::SERVICE_NAME,
        "walletstore" => wallet_store_methods::SERVICE_NAME,
        _ => return None,
    })
}

/// Why a storage process stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Starting or serving failed.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The replicas failed to start.
    #[error(transparent)]
    Replica(#[from] replica::ReplicaError),
}

/// Runs one storage service as `launch` says: its shard map's replicas of several
/// shards, each a Raft group ([`replica`]), when the map has more than one copy of each;
/// else one shard on one engine in `DATA_DIR/NAME`. `make` builds the service over a
/// shard's engine.
pub async fn serve_store<H, F>(
    launch: Launch,
    name: &str,
    descriptor: &'static ServiceDesc,
    make: F,
) -> Result<(), ServeError>
where
    H: ServiceHandler,
    F: Fn(Engine) -> Result<H, StorageError> + Send + Sync + 'static,
{
    let dir = launch.data_dir().join(name);
    match launch.shard_map().await?.filter(|m| m.replication() > 1) {
        Some(map) => {
            let replicas = replica::ReplicaSet::open(&launch, map, &dir).await?;
            let groups = replicas.groups();
            let ready = replicas.groups();
            let server = Server::builder()
                .add_service(replicas.dispatch(descriptor, make))
                .add_service(replicas.replication());
            launch
                .with_status(
                    "shards",
                    std::sync::Arc::new(move || {
                        serde_json::to_value(groups.status()).unwrap_or_default()
                    }),
                )
                // Ready once every shard held here has a leader (a replica cut off from
                // a majority is not).
                .with_readiness(std::sync::Arc::new(move || ready.all_led()))
                .serve(server)
                .await?;
        }
        None => {
            let engine = Engine::open(&dir)?;
            launch
                .serve(Server::builder().add_service(make(engine)?))
                .await?;
        }
    }
    Ok(())
}
