//! The backend's IDL (`idl/wx`), compiled: every tier talks to the others only through
//! these generated clients and server traits.
//!
//! - [`storage`]: `AccountStore`, `ContactStore` — sharded by uid ([`sharded`]).
//! - [`account`]: registration, login sessions, profiles.
//! - [`contact`]: friend requests, friends, blocks.
//! - [`access`]: `Push`, served by the long-connection gateways.
//! - [`message`], [`seq`], [`moments`]: messaging, sequences, Moments.
//! - [`wallet`]: wallets and red envelopes.
//!
//! Conventions shared by the services live here too: who the acting user is
//! ([`acting_user`]), how storage calls are routed ([`by_uid`], [`name_key`]) and the
//! clock ([`now_ms`]).

mod conflict;
pub mod fanout;
mod metric_help;
pub mod money;
pub mod relations;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use svrkit::balance::Balance;
use svrkit::discovery::{DiscoveryError, Registry, discover};
use svrkit::launch::Launch;
use svrkit::{CallOptions, Channel, ChannelBuilder, Context, Status};

pub use conflict::retry_on_conflict;

/// `wx.storage`: the storage tier.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod storage {
    svrkit::include_proto!("wx.storage");
    pub use account_store_client::AccountStoreClient;
    pub use contact_store_client::ContactStoreClient;
    pub use moments_store_client::MomentsStoreClient;
    pub use msg_store_client::MsgStoreClient;
    pub use seq_store_client::SeqStoreClient;
    pub use wallet_store_client::WalletStoreClient;
}

/// `wx.wallet`: wallets and red envelopes.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod wallet {
    svrkit::include_proto!("wx.wallet");
    pub use wallet_client::WalletClient;
}

/// `wx.message`: messaging and sync.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod message {
    svrkit::include_proto!("wx.message");
    pub use message_client::MessageClient;
}

/// `wx.moments`: posts, albums, timelines, likes and comments.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod moments {
    svrkit::include_proto!("wx.moments");
    pub use moments_client::MomentsClient;
}

/// `wx.seq`: per-user sequence numbers.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod seq {
    svrkit::include_proto!("wx.seq");
    pub use seq_client::SeqClient;
}

/// `wx.account`: the account service.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod account {
    svrkit::include_proto!("wx.account");
    pub use account_client::AccountClient;
}

/// `wx.contact`: the contact service.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod contact {
    svrkit::include_proto!("wx.contact");
    pub use contact_client::ContactClient;
}

/// `wx.access`: the access tier's push service.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod access {
    svrkit::include_proto!("wx.access");
    pub use push_client::PushClient;
}

/// How many sections the sequence allocator's users are grouped in.
///
/// seqsvr groups 100,000 adjacent uids per section so that persisted state stays tiny;
/// this backend's uids are random 53-bit numbers, so adjacency would group nobody.
/// Instead a uid's section is a hash of the uid modulo this fixed count: with 1,024
/// sections, a million users put ~1,000 in each, and the persisted state is 1,024 small
/// records however many users there are. The count is fixed for the life of a
/// deployment: changing it would move users to sections whose `max_seq` may be lower,
/// and their sequences would go back.
pub const SEQ_SECTIONS: u32 = 1024;

/// The sequence section of `uid` (see [`SEQ_SECTIONS`]); callers of `wx.seq.Seq` route
/// by it ([`by_section`]).
pub fn seq_section(uid: u64) -> u32 {
    (svrkit::balance::ring_hash(&uid.to_be_bytes()) % u64::from(SEQ_SECTIONS)) as u32
}

/// Call options routing a `wx.seq.Seq` call, or a `SeqStore` call, by `uid`'s section.
pub fn by_section(section: u32) -> CallOptions {
    CallOptions::new().routing_key(u64::from(section))
}

/// The most members a group chat holds (WeChat's published limit).
pub const MAX_GROUP_MEMBERS: u32 = 500;

/// The most friends one user may have.
pub const MAX_FRIENDS: u32 = 5_000;

/// The most media references one Moments post carries (WeChat's nine pictures).
pub const MAX_POST_MEDIA: usize = 9;

/// The user a request acts for: the uid the access tier stamped on its context.
pub fn acting_user() -> Result<u64, Status> {
    match Context::current().uid() {
        0 => Err(Status::unauthenticated(
            "no user on this request (the access tier stamps one after login)",
        )),
        uid => Ok(uid),
    }
}

/// The metadata entry naming the long connection a request came through (8 bytes, big
/// endian): the gateway sets it, and a service pushing news of that request's own change
/// to its author skips that connection ([`access::DeliverRequest::except_connection`]),
/// which has the answer already.
pub const ORIGIN_CONNECTION: &str = "wx-origin-connection";

/// The long connection the current request came through, from its metadata
/// ([`ORIGIN_CONNECTION`]); 0 when it came otherwise (HTTP, another service).
pub fn origin_connection() -> u64 {
    svrkit::Context::current()
        .metadata()
        .get(ORIGIN_CONNECTION)
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Call options routing a storage call to the shard owning `uid`.
pub fn by_uid(uid: u64) -> CallOptions {
    CallOptions::new().routing_key(uid)
}

/// The routing key of red envelope (`sender`, `seq`): every request for one envelope goes
/// to the `wx.wallet.Wallet` instance owning this key on the ring, and waits in that
/// envelope's queue there.
pub fn envelope_key(sender: u64, seq: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&sender.to_be_bytes());
    bytes[8..].copy_from_slice(&seq.to_be_bytes());
    svrkit::balance::ring_hash(&bytes)
}

/// The routing key of a user name in the name index (case-insensitive).
pub fn name_key(name: &str) -> u64 {
    svrkit::balance::ring_hash(name.to_lowercase().as_bytes())
}

/// How a client of a sharded storage service balances: strictly by key, never to
/// another shard.
pub fn sharded() -> ChannelBuilder {
    svrkit::Channel::builder().balance(Balance::Sharded)
}

/// The services a process calls, found through the registry it joined.
#[derive(Clone)]
pub struct Peers {
    registry: Arc<dyn Registry>,
    /// Where shard maps are kept (the registry's configuration store).
    config: Option<Arc<dyn svrkit::config::ConfigStore>>,
    /// This process's zone, preferred by load-balanced channels.
    zone: Option<String>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peers")
    }
}

/// Why a process cannot reach the services it calls.
#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    /// The process was started without a registry.
    #[error("the backend's services find each other through a registry; set SVRKIT_REGISTRY")]
    NoRegistry,
    /// The registry failed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// A shard map could not be read.
    #[error(transparent)]
    ShardMap(#[from] svrkit::discovery::shard_map::ShardMapError),
}

impl Peers {
    /// The registry of `launch`.
    pub fn of(launch: &Launch) -> Result<Peers, PeersError> {
        Ok(Peers {
            registry: launch.registry().ok_or(PeersError::NoRegistry)?,
            config: launch.config_store(),
            zone: launch.zone().map(str::to_string),
        })
    }

    /// A channel to `service` balancing by load (power of two choices, weighted), in this
    /// process's zone first (`SVRKIT_ZONE`).
    pub async fn balanced(&self, service: &str) -> Result<Channel, PeersError> {
        let builder = match &self.zone {
            Some(zone) => Channel::builder().zone(zone.clone()),
            None => Channel::builder(),
        };
        Ok(discover(&*self.registry, service, builder).await?)
    }

    /// A channel to `service` routed by key on a consistent-hash ring, moving to the next
    /// instance when the key's is down or answers "not mine" (`wx.seq.Seq` by section).
    pub async fn by_key(&self, service: &str) -> Result<Channel, PeersError> {
        Ok(discover(
            &*self.registry,
            service,
            Channel::builder().balance(Balance::ConsistentHash),
        )
        .await?)
    }

    /// A channel to the shards of a storage service ([`sharded`]): on the ring of its
    /// shard map when it has one (`svrkit up` makes them), so a key goes to its shard or,
    /// with that shard down, nowhere (`unavailable`, not processed).
    pub async fn sharded(&self, service: &str) -> Result<Channel, PeersError> {
        let channel = discover(&*self.registry, service, sharded()).await?;
        if let Some(store) = &self.config {
            svrkit::discovery::shard_map::follow(Arc::clone(store), service, &channel).await?;
        }
        Ok(channel)
    }

    /// A channel to the presence owners of `wx.access.Push` ([`presence`]).
    pub async fn presence(&self) -> Result<Channel, PeersError> {
        Ok(discover(
            &*self.registry,
            access::push_methods::SERVICE_NAME,
            presence(),
        )
        .await?)
    }
}

/// What is logged without `RUST_LOG`: warnings, each served call at INFO, and openraft's
/// own messages only when they are errors (its warnings, on every unreachable peer, are
/// what a replica expects while one is down; `wx_storage::replica` reports roles).
pub const DEFAULT_LOG_FILTER: &str = "warn,svrkit::server::call=info,openraft=error";

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings, inside each request's
/// `rpc` span so every line names its trace, span and parent), and installs the metrics
/// recorder with every backend metric described: every backend binary calls it first.
pub fn init_tracing() {
    match svrkit::admin::install_metrics() {
        Ok(_) => metric_help::describe(),
        Err(e) => eprintln!("metrics recorder: {e}"),
    }
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        );
    let registry = tracing_subscriber::registry().with(logs);
    #[cfg(feature = "otlp")]
    let registry = registry.with(otlp_layer());
    if let Err(e) = registry.try_init() {
        eprintln!("tracing: {e}");
    }
}

/// With feature `otlp` and `SVRKIT_OTLP_ENDPOINT` set: svrkit's and the gateways' spans
/// (at INFO, whatever the log filter says) exported over OTLP/HTTP in batches, as service
/// `service.name` = the binary's name.
#[cfg(feature = "otlp")]
fn otlp_layer<S>() -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    let service = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "wx".to_string());
    match svrkit::otel::init_from_env(&service) {
        Ok(layer) => layer.map(|layer| {
            layer.with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("svrkit", tracing::Level::INFO)
                    .with_target("access", tracing::Level::INFO),
            )
        }),
        Err(e) => {
            eprintln!("{e}; spans are not exported");
            None
        }
    }
}

/// How a client of `wx.access.Push` balances: by uid on the consistent-hash ring of
/// access-long instances, moving to the next instance when the owner is down. Presence is
/// soft state (re-announced periodically), so a new owner rebuilds it, unlike a storage
/// shard whose data cannot move ([`sharded`]).
pub fn presence() -> ChannelBuilder {
    svrkit::Channel::builder().balance(Balance::ConsistentHash)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}
