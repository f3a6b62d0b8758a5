//! [`ChannelBuilder`]: a channel's settings, and the instances ([`Target`]) it sends to.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::{Channel, ChannelInner};
use crate::balance::{Balance, Balancer};
use crate::client::endpoint::{ConnectFailed, ConnectSettings, DEFAULT_WEIGHT};
use crate::client::hedge::HedgePolicy;
use crate::client::pick::EndpointSet;
use crate::client::retry::{DEFAULT_RETRY_RATIO, RetryPolicy};
use crate::discovery::shard_map::ShardMap;
use crate::grpc::Protocol;
use crate::protocol::DEFAULT_MAX_FRAME_SIZE;
use crate::selector::{Selector, Track};
use crate::status::Status;

/// The timeout of a call when neither the context, the call nor the IDL sets one
/// (WeChat's default RPC timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Attempts per call at most, the first included (Google SRE).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// An instance a channel may send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name on the hash ring: the instance id (the address when there is none).
    pub name: String,
    /// Its release track.
    pub track: Track,
    /// For a gray instance: the users a binary gray release sends to it (besides requests
    /// that carry a gray tag).
    pub gray_users: Option<Selector>,
    /// Its relative share of traffic (100 by default; 0 takes traffic only when no other
    /// instance can).
    pub weight: u32,
    /// Where it runs; callers in the same zone prefer it. Empty: no zone.
    pub zone: String,
    /// What it speaks (svrkit servers speak both; a plain gRPC server only gRPC). A
    /// channel built with [`ChannelBuilder::protocol`] speaks that one to every target.
    pub protocol: Protocol,
}

impl Target {
    /// A stable instance named by its address.
    pub fn stable(addr: SocketAddr) -> Target {
        Target {
            addr,
            name: addr.to_string(),
            track: Track::Stable,
            gray_users: None,
            weight: DEFAULT_WEIGHT,
            zone: String::new(),
            protocol: Protocol::Svrkit,
        }
    }
}

/// Settings of a [`Channel`], from [`Channel::builder`].
///
/// ```
/// use std::time::Duration;
/// use svrkit::Channel;
/// use svrkit::balance::Balance;
///
/// // A sharded store's channel: a call goes to the instance owning its routing key.
/// let channel = Channel::builder()
///     .balance(Balance::ConsistentHash)
///     .connect_timeout(Duration::from_millis(300))
///     .lazy(["127.0.0.1:7001".parse().unwrap()]);
/// assert_eq!(channel.owner_of(42).is_some(), true);
/// ```
#[derive(Debug, Clone)]
pub struct ChannelBuilder {
    pub(super) connect_timeout: Duration,
    pub(super) default_timeout: Duration,
    pub(super) max_frame_size: usize,
    pub(super) connections_per_address: usize,
    pub(super) backoff_base: Duration,
    pub(super) backoff_max: Duration,
    pub(super) caller: &'static str,
    pub(super) balance: Balance,
    /// A strategy of the caller's own, replacing `balance`.
    pub(super) balancer: Option<Arc<dyn Balancer>>,
    /// The caller's zone.
    pub(super) zone: Option<String>,
    pub(super) max_attempts: u32,
    pub(super) retry_ratio: f64,
    pub(super) backup_delay: Option<Duration>,
    pub(super) tls: Option<crate::tls::ClientTls>,
    /// A sharded service's shards from its map, in ring order (see
    /// [`crate::discovery::shard_map`]): the ring is these, whoever is alive.
    pub(super) shards: Option<Arc<ShardMap>>,
    /// The protocol spoken to every target, when set.
    pub(super) protocol: Option<Protocol>,
}

impl Default for ChannelBuilder {
    fn default() -> Self {
        ChannelBuilder {
            connect_timeout: Duration::from_secs(1),
            default_timeout: DEFAULT_TIMEOUT,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            connections_per_address: 1,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            caller: "",
            balance: Balance::default(),
            balancer: None,
            zone: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_ratio: DEFAULT_RETRY_RATIO,
            backup_delay: None,
            tls: crate::tls::process_client(),
            shards: None,
            protocol: None,
        }
    }
}

impl ChannelBuilder {
    /// How long one connection attempt may take (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The timeout of calls that set none anywhere else (default 500 ms).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// The largest frame sent or accepted (default 16 MiB).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Connections kept to each instance (default 1; each one multiplexes any number of
    /// calls, more spread the work over more server threads).
    pub fn connections_per_address(mut self, n: usize) -> Self {
        self.connections_per_address = n.max(1);
        self
    }

    /// First and longest pause before reconnecting to a failed instance (50 ms, 5 s).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }

    /// The service name this channel reports as caller outside of any handler.
    pub fn caller(mut self, name: &'static str) -> Self {
        self.caller = name;
        self
    }

    /// How to pick an instance (default power of two choices).
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// Balances with a strategy of your own (see [`crate::balance::Balancer`]), instead of
    /// a built-in [`Balance`].
    pub fn balancer(mut self, balancer: impl Balancer) -> Self {
        self.balancer = Some(Arc::new(balancer));
        self
    }

    /// The caller's zone: instances whose record names the same zone get its calls while
    /// any of them can take them.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into()).filter(|z: &String| !z.is_empty());
        self
    }

    /// Attempts per call at most, the first included (default 3; 1 turns retries off).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Retries allowed per call made, over time (default 0.1: under 10 % extra load).
    pub fn retry_ratio(mut self, ratio: f64) -> Self {
        self.retry_ratio = ratio.max(0.0);
        self
    }

    /// For idempotent methods, send a backup request to another instance when the first
    /// has not answered after `delay`, and take whichever answers first; backups are
    /// capped at 10 % extra load. Off by default.
    pub fn backup_requests(mut self, delay: Duration) -> Self {
        self.backup_delay = Some(delay);
        self
    }

    /// Connects with mutual TLS using `tls` (by default: the process's credentials, if
    /// [`crate::tls::set_process_client`] set them; else plain TCP).
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Speaks `protocol` to every instance: [`Protocol::Grpc`] calls plain gRPC servers
    /// (tonic, grpc-go, grpcio) with the same balancing, retries, retry budget,
    /// deadlines and DAGOR-aware throttling, and generated clients work unchanged. By
    /// default a channel speaks svrkit's protocol, or gRPC to an instance whose registry
    /// record lists only gRPC.
    ///
    /// ```
    /// use svrkit::Channel;
    /// use svrkit::grpc::Protocol;
    ///
    /// // A tonic or grpc-go server of the company's, called with svrkit's client.
    /// let channel = Channel::builder()
    ///     .protocol(Protocol::Grpc)
    ///     .lazy(["127.0.0.1:50051".parse().unwrap()]);
    /// # drop(channel);
    /// ```
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Connects over plain TCP even where the process has TLS credentials.
    pub fn plaintext(mut self) -> Self {
        self.tls = None;
        self
    }

    /// The ring of a sharded service is `shards` (its shard map, see
    /// [`crate::discovery::shard_map`]), live or not: an instance whose id is not one of
    /// them gets no calls, and a call whose key belongs to a shard with no live instance
    /// is refused `unavailable`, not processed, without being sent anywhere.
    pub fn shards(mut self, shards: Vec<String>) -> Self {
        self.shards = Some(Arc::new(ShardMap {
            version: 1,
            shards,
            replicas: Vec::new(),
            nodes: Vec::new(),
            copies: 1,
        }));
        self
    }

    /// A channel to fixed addresses that connects on first use.
    pub fn lazy(self, addrs: impl IntoIterator<Item = SocketAddr>) -> Channel {
        self.targets(addrs.into_iter().map(Target::stable))
    }

    /// A channel to the given instances that connects on first use; replace them later
    /// with [`Channel::set_targets`] (discovery does).
    pub fn targets(self, targets: impl IntoIterator<Item = Target>) -> Channel {
        let settings = ConnectSettings {
            connect_timeout: self.connect_timeout,
            max_frame_size: self.max_frame_size,
            tls: self.tls.clone(),
            backoff_base: self.backoff_base,
            backoff_max: self.backoff_max,
            protocol: self.protocol,
        };
        let channel = Channel {
            inner: Arc::new(ChannelInner {
                epoch: Instant::now(),
                set: RwLock::new(Arc::new(EndpointSet::default())),
                balancer: self
                    .balancer
                    .clone()
                    .unwrap_or_else(|| self.balance.balancer()),
                retry: RetryPolicy::new(self.max_attempts, self.retry_ratio),
                hedge: HedgePolicy::new(self.backup_delay),
                settings,
                tasks: std::sync::Mutex::new(Vec::new()),
                generation: tokio::sync::watch::Sender::new(0),
                shards: RwLock::new(self.shards.clone()),
                live: std::sync::Mutex::new(Vec::new()),
                config: self,
            }),
        };
        channel.set_targets(targets);
        channel
    }

    /// A channel to `addr`, connected before this returns.
    pub async fn connect(self, addr: SocketAddr) -> Result<Channel, Status> {
        let channel = self.lazy([addr]);
        let set = channel.inner.snapshot();
        let deadline = Instant::now() + channel.inner.settings.connect_timeout;
        for endpoint in &set.endpoints {
            endpoint
                .connection(&channel.inner.settings, deadline)
                .await
                .map_err(|ConnectFailed(e)| Status::unavailable(e).with_not_processed())?;
        }
        Ok(channel)
    }
}
