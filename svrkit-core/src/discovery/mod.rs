//! Service discovery: instances register themselves, clients watch the live set.
//!
//! A [`Registry`] stores [`Instance`] records. A server registers its instance (and keeps
//! the record alive) for as long as it serves, and deregisters before it drains; clients
//! [`discover`] a service, which gives a [`Channel`] whose instances follow every change.
//!
//! - [`EmbeddedRegistry`] (the default): zero set-up on one machine — a directory of
//!   instance records with heartbeats, shared by every process that points at it; records
//!   whose heartbeat is older than the TTL (say, after kill -9) disappear.
//! - [`EtcdRegistry`] (feature `etcd`, on by default): for clusters; lease-based records,
//!   prefix read then watch from the next revision, re-registration after lease loss, and
//!   the last known instances served while etcd is unreachable.
//!
//! ## Writing a registry
//!
//! A registry for another store (Consul, ZooKeeper, a cloud's service directory) is written
//! against this module's public items only, as the two above are: implement [`Registry`]
//! — `register` publishes the record, starts whatever keeps it alive and returns
//! [`Registration::new`] with that task and a closure that removes the record; `watch`
//! returns a `tokio::sync::watch` of the live [`Instances`], updated with
//! [`publish_if_changed`] — and hand it to `Server::builder().register(…)` and
//! [`discover`]. `svrkit_testkit::StaticRegistry`, an in-memory registry, lives outside
//! this crate to prove it.

mod embedded;
#[cfg(feature = "etcd")]
mod etcd;
pub mod shard_map;

use crate::grpc::Protocol;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

pub use embedded::{DEFAULT_POLL, DEFAULT_TTL, EmbeddedRegistry, IDLE_POLL, QUIET_BEFORE_SLOWING};
#[cfg(feature = "etcd")]
pub use etcd::{
    CONFIG_PREFIX as ETCD_CONFIG_PREFIX, DEFAULT_LEASE_TTL_SECS, EtcdRegistry, EtcdTls,
    PREFIX as ETCD_PREFIX,
};

use crate::BoxFuture;
use crate::client::{Channel, ChannelBuilder, Target};
use crate::selector::{Selector, Track};
pub use crate::store::StoreError as DiscoveryError;

/// One running instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    /// The service name, e.g. `svrkit.demo.Echo`.
    pub service: String,
    /// Where it serves RPC.
    pub addr: SocketAddr,
    /// Unique among the service's instances; also its name on the hash ring.
    pub id: String,
    /// Its release track (`"stable"` or `"gray"` in records).
    pub version: Track,
    /// Relative share of traffic (default 100): weighted balancing sends in proportion, and
    /// 0 takes calls only when no other instance can (draining).
    pub weight: u32,
    /// Where it runs (zone or rack): callers in the same zone
    /// (`ChannelBuilder::zone`) prefer it.
    pub zone: String,
    /// Where its admin HTTP endpoint listens, if it has one.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// For a gray instance of a binary release: the users routed to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gray_users: Option<Selector>,
    /// What it speaks: a svrkit server both svrkit and gRPC on the same port, a plain gRPC
    /// server registered by hand only gRPC (a record without the field: svrkit).
    #[serde(default = "svrkit_only")]
    pub protocols: Vec<Protocol>,
}

fn svrkit_only() -> Vec<Protocol> {
    vec![Protocol::Svrkit]
}

impl Instance {
    /// A stable instance of `service` at `addr` with a fresh id.
    pub fn new(service: impl Into<String>, addr: SocketAddr) -> Instance {
        let service = service.into();
        let id = format!(
            "{}-{}-{:x}",
            service,
            std::process::id(),
            crate::random::random_u64() & 0xffff_ffff
        );
        Instance {
            service,
            addr,
            id,
            version: Track::Stable,
            weight: 100,
            zone: String::new(),
            admin: None,
            gray_users: None,
            protocols: vec![Protocol::Svrkit, Protocol::Grpc],
        }
    }

    /// Sets what the instance speaks (a plain gRPC server: `[Protocol::Grpc]`).
    pub fn protocols(mut self, protocols: Vec<Protocol>) -> Instance {
        self.protocols = protocols;
        self
    }

    /// Sets the release track.
    pub fn version(mut self, version: Track) -> Instance {
        self.version = version;
        self
    }

    /// Sets the instance id.
    pub fn id(mut self, id: impl Into<String>) -> Instance {
        self.id = id.into();
        self
    }

    /// Labels the instance `gray` and routes the users `selector` picks to it (a binary
    /// gray release; requests with a gray tag come too).
    pub fn gray(mut self, selector: Selector) -> Instance {
        self.version = Track::Gray;
        self.gray_users = Some(selector);
        self
    }

    /// Sets the share of traffic (the `weight` field).
    pub fn weight(mut self, weight: u32) -> Instance {
        self.weight = weight;
        self
    }

    /// Sets the zone.
    pub fn zone(mut self, zone: impl Into<String>) -> Instance {
        self.zone = zone.into();
        self
    }

    /// Sets the admin endpoint's address.
    pub fn admin(mut self, admin: SocketAddr) -> Instance {
        self.admin = Some(admin);
        self
    }

    fn target(&self) -> Target {
        Target {
            addr: self.addr,
            name: self.id.clone(),
            track: self.version,
            gray_users: self.gray_users.clone(),
            weight: self.weight,
            zone: self.zone.clone(),
            protocol: if self.protocols.is_empty() || self.protocols.contains(&Protocol::Svrkit) {
                Protocol::Svrkit
            } else {
                Protocol::Grpc
            },
        }
    }
}

/// The live instances of a service, newest first as the registry reported them.
pub type Instances = Arc<[Instance]>;

/// A store of instance records.
pub trait Registry: std::fmt::Debug + Send + Sync + 'static {
    /// Publishes `instance` and keeps it alive until the returned registration is
    /// deregistered (or dropped, after which it expires).
    fn register(
        &self,
        instance: Instance,
    ) -> BoxFuture<'static, Result<Registration, DiscoveryError>>;

    /// The live instances of `service` now and after every change.
    fn watch(
        &self,
        service: &str,
    ) -> BoxFuture<'static, Result<watch::Receiver<Instances>, DiscoveryError>>;
}

/// A registered instance. Deregister it before draining; dropping it only stops the
/// keep-alive, and the record then expires like a crashed instance's.
pub struct Registration {
    keepalive: Option<tokio::task::AbortHandle>,
    deregister: Option<Deregister>,
}

/// Removes a registration's record.
type Deregister = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), DiscoveryError>> + Send>;

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").finish_non_exhaustive()
    }
}

impl Registration {
    /// A registration that `keepalive` (a task refreshing the record, if the registry
    /// needs one) keeps alive and `deregister` ends by removing the record.
    pub fn new(
        keepalive: Option<tokio::task::AbortHandle>,
        deregister: impl FnOnce() -> BoxFuture<'static, Result<(), DiscoveryError>> + Send + 'static,
    ) -> Registration {
        Registration {
            keepalive,
            deregister: Some(Box::new(deregister)),
        }
    }

    /// A registration kept alive by `keepalive`, a loop refreshing the record (a
    /// heartbeat, a lease), spawned here and stopped with the registration; `deregister`
    /// removes the record. The shape every registry that must refresh its records shares.
    pub fn kept_alive(
        keepalive: impl Future<Output = ()> + Send + 'static,
        deregister: impl FnOnce() -> BoxFuture<'static, Result<(), DiscoveryError>> + Send + 'static,
    ) -> Registration {
        let keepalive = tokio::spawn(keepalive).abort_handle();
        Registration::new(Some(keepalive), deregister)
    }

    /// Removes the record now, so clients stop sending before the server drains.
    pub async fn deregister(mut self) -> Result<(), DiscoveryError> {
        if let Some(keepalive) = self.keepalive.take() {
            keepalive.abort();
        }
        match self.deregister.take() {
            Some(remove) => remove().await,
            None => Ok(()),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(keepalive) = self.keepalive.take() {
            keepalive.abort();
        }
    }
}

/// Sends `now` to a registry's watch only when it differs from what watchers last saw, so
/// channels are not rebuilt for a refresh that changed nothing.
pub fn publish_if_changed<T: PartialEq>(tx: &watch::Sender<T>, now: T) {
    tx.send_if_modified(|current| {
        let differs = *current != now;
        if differs {
            *current = now;
        }
        differs
    });
}

/// A watch of a registry's live set: starts at `first`, then publishes each set `next`
/// reads (when it differs from the last one; `None` keeps the last one, as when a read
/// failed), until no receiver is left. The shape every polling or notified registry's
/// `watch` shares; `next` decides how long to wait between reads.
pub fn follow<T, F, Fut>(first: T, mut next: F) -> watch::Receiver<T>
where
    T: PartialEq + Send + Sync + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Option<T>> + Send,
{
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        loop {
            let now = tokio::select! {
                now = next() => now,
                () = tx.closed() => break,
            };
            if let Some(now) = now {
                publish_if_changed(&tx, now);
            }
        }
    });
    rx
}

/// How long a process keeps trying to reach a registry that does not answer yet (one
/// started together with, or just before, its etcd cluster), for [`discover`] and for a
/// server's registration.
pub const REGISTRY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `attempt` until it succeeds, retrying with back-off (0.1 s doubling to 2 s) for up
/// to [`REGISTRY_PATIENCE`]; then the last error stands.
pub(crate) async fn patiently<T>(
    what: &str,
    mut attempt: impl FnMut() -> BoxFuture<'static, Result<T, DiscoveryError>>,
) -> Result<T, DiscoveryError> {
    let deadline = tokio::time::Instant::now() + REGISTRY_PATIENCE;
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::warn!(%what, error = %e, "registry not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A channel to `service` whose instances follow the registry: instances that appear are
/// used at once, and ones that go are dropped (their calls in flight finish). A registry
/// that cannot be read yet is retried for up to [`REGISTRY_PATIENCE`].
pub async fn discover(
    registry: &dyn Registry,
    service: &str,
    builder: ChannelBuilder,
) -> Result<Channel, DiscoveryError> {
    let mut watch = patiently(service, || registry.watch(service)).await?;
    let channel = builder.targets(watch.borrow_and_update().iter().map(Instance::target));
    let weak = channel.downgrade();
    let task = tokio::spawn(async move {
        while watch.changed().await.is_ok() {
            let Some(channel) = weak.upgrade() else {
                break;
            };
            let instances = watch.borrow_and_update().clone();
            channel.set_targets(instances.iter().map(Instance::target));
        }
    });
    channel.own_task(task.abort_handle());
    Ok(channel)
}
