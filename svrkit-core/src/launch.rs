//! Running a service as a process: where it listens, which registry it joins, its admin
//! endpoint and its shutdown — read from the environment, so that `svrkit up`, a test
//! harness or an operator's unit file can start any svrkit binary the same way.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SVRKIT_LISTEN` | RPC address (port 0 picks one) | `127.0.0.1:0` |
//! | `SVRKIT_ADMIN` | admin HTTP address, or `off` | `127.0.0.1:0` |
//! | `SVRKIT_ADVERTISE` | the IP address others reach this instance at, or the name of the network interface that has it (`eth0`: its IPv4 address, else its first IPv6 address that is not link-local): what the registry gets (with the bound ports) when it listens on a wildcard such as `0.0.0.0` or behind NAT; a wildcard is never registered | the bound address |
//! | `SVRKIT_REGISTRY` | `dir:PATH`, `etcd:URL[,URL…]` or `none` | `dir:` [`EmbeddedRegistry::default_root`] |
//! | `SVRKIT_INSTANCE_ID` | the id registered (stable across restarts) | generated |
//! | `SVRKIT_GRAY_USERS` | a [`Selector`] in JSON: run as a gray release for these users | stable |
//! | `SVRKIT_DATA_DIR` | where a stateful service keeps its files | `.svrkit/data/<instance id>` |
//! | `SVRKIT_TLS_CERT`, `SVRKIT_TLS_KEY`, `SVRKIT_TLS_CA` | PEM files: this service's certificate and key, and the cluster CA; all three turn on mutual TLS for the server and every channel ([`crate::tls`]) | plain TCP |
//! | `SVRKIT_ETCD_CA`, `SVRKIT_ETCD_CERT`, `SVRKIT_ETCD_KEY`, `SVRKIT_ETCD_SERVER_NAME` | etcd over TLS: the CA of etcd's certificate, a client certificate and key for etcd's `--client-cert-auth`, the name etcd's certificate carries if not the endpoints' host | plain HTTP |
//! | `SVRKIT_ETCD_USER`, `SVRKIT_ETCD_PASSWORD_FILE` | etcd authentication: the user, and a file holding its password | none |
//! | `SVRKIT_SHARDS` | a sharded service's shards (its instance ids, comma-separated): the shard map it is created with on first start, and must match after ([`crate::discovery::shard_map`]) | the map in the registry if any, else the live instances |
//! | `SVRKIT_REPLICAS` | copies of each shard of a sharded service, each on another of its instances (a Raft group per shard in `wx-storage`); fixed with the map | 1 |
//! | `SVRKIT_TLS_RELOAD_SECS` | how often the certificate and key files are checked for a renewal, which new connections then present ([`crate::tls::CertSlot`]) | 10 |
//! | `SVRKIT_MAX_OPEN_FILES` | the soft limit on open files this process sets at start | the hard limit ([`crate::process_limits`]) |
//! | `SVRKIT_CALL_POLICY` | who may call what, JSON ([`crate::policy`]) | everyone |
//! | `SVRKIT_ZONE` | the zone registered with the instance; [`Launch::zone`] gives it to channels, which then prefer instances of the same zone | none |
//! | `SVRKIT_CLUSTER_SECRET` | the cluster secret in hex, from which services derive the keys they sign with ([`crate::secret`]; `svrkit up` makes one per cluster) | none |
//! | `SVRKIT_WEIGHT` | the instance's share of traffic relative to its peers (0: only when no other can take it) | 100 |
//!
//! A service's `main` reads a [`Launch`], builds its clients with [`Launch::registry`],
//! then hands its [`Server`] to [`Launch::serve`], which prints `listening on ADDR` and
//! `admin on http://ADDR` (supervisors read them), registers the instance, and drains on
//! SIGTERM or Ctrl-C.
//!
//! A whole service binary (`svrkit new` writes one like it):
//!
//! ```no_run
//! use echo::{EchoServer, EchoService};
//! use svrkit::Server;
//! use svrkit::launch::Launch;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // First: it installs the metrics recorder every later handle records into.
//!     let launch = Launch::from_env("svrkit.demo.Echo")?;
//!     let service = EchoService::new(launch.instance_id().to_string());
//!     launch
//!         .serve(Server::builder().add_service(EchoServer::new(service)))
//!         .await?;
//!     Ok(())
//! }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpListener;
use tower_layer::Layer;
use tower_service::Service;

use crate::admin::{AdminError, AdminServer, InstanceInfo};
use crate::config::{ConfigStore, LiveConfig, Selector};
use crate::discovery::{EmbeddedRegistry, Instance, Registry};
use crate::selector::Track;
use crate::server::{Routed, Server, ServerRequest};
use crate::status::BoxError;

/// Why a process could not be launched or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// An environment variable does not parse.
    #[error("{name}={value:?}: {reason}")]
    BadVariable {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Binding or serving failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The admin endpoint could not start.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The configuration could not be followed.
    #[error("following the configuration: {0}")]
    Config(String),
}

/// A registry spec that is none of the forms [`RegistryKind::parse`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected dir:PATH, etcd:URL[,URL...], etcd@CLUSTER:URL[,URL...] or none")]
pub struct RegistrySpecError;

/// The registry a process joins.
#[derive(Debug, Clone)]
pub enum RegistryKind {
    /// No registry: clients must be given addresses.
    None,
    /// The embedded registry rooted at this directory.
    Dir(PathBuf),
    /// An etcd cluster.
    Etcd(Vec<String>),
    /// An etcd cluster, this svrkit cluster's keys under `/svrkit/CLUSTER/` (see
    /// `EtcdRegistry::cluster`): several svrkit clusters may share one etcd.
    EtcdIn {
        /// The svrkit cluster's name.
        cluster: String,
        /// The etcd endpoints.
        urls: Vec<String>,
    },
}

impl RegistryKind {
    /// Parses `dir:PATH`, `etcd:URL[,URL…]`, `etcd@CLUSTER:URL[,URL…]` or `none`.
    pub fn parse(spec: &str) -> Result<RegistryKind, RegistrySpecError> {
        let urls = |urls: &str| urls.split(',').map(str::to_string).collect();
        match spec.split_once(':') {
            _ if spec == "none" => Ok(RegistryKind::None),
            Some(("dir", path)) if !path.is_empty() => Ok(RegistryKind::Dir(path.into())),
            Some(("etcd", list)) if !list.is_empty() => Ok(RegistryKind::Etcd(urls(list))),
            Some((kind, list)) if !list.is_empty() => match kind.strip_prefix("etcd@") {
                Some(cluster) if !cluster.is_empty() => Ok(RegistryKind::EtcdIn {
                    cluster: cluster.to_string(),
                    urls: urls(list),
                }),
                _ => Err(RegistrySpecError),
            },
            _ => Err(RegistrySpecError),
        }
    }

    /// The spec string [`RegistryKind::parse`] reads back.
    pub fn spec(&self) -> String {
        match self {
            RegistryKind::None => "none".to_string(),
            RegistryKind::Dir(path) => format!("dir:{}", path.display()),
            RegistryKind::Etcd(urls) => format!("etcd:{}", urls.join(",")),
            RegistryKind::EtcdIn { cluster, urls } => {
                format!("etcd@{cluster}:{}", urls.join(","))
            }
        }
    }
}

/// The shared handle to a registry that is also a configuration store.
#[derive(Debug, Clone)]
enum Store {
    Embedded(Arc<EmbeddedRegistry>),
    #[cfg(feature = "etcd")]
    Etcd(Arc<crate::discovery::EtcdRegistry>),
}

/// How this process runs: see the [module documentation](self).
#[derive(Debug)]
pub struct Launch {
    service: String,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    registry: RegistryKind,
    store: Option<Store>,
    instance_id: String,
    gray_users: Option<Selector>,
    zone: Option<String>,
    weight: Option<u32>,
    data_dir: PathBuf,
    bound: Option<TcpListener>,
    config: Option<LiveConfig>,
    tls: Option<crate::tls::ServerTls>,
    policy: Option<crate::policy::CallPolicy>,
    sharded: bool,
    /// `SVRKIT_ADVERTISE`: the address others reach this instance at, when it listens on
    /// a wildcard (or behind NAT).
    advertise: Option<std::net::IpAddr>,
    /// `SVRKIT_ETCD_*`: TLS and a user for an etcd registry.
    #[cfg(feature = "etcd")]
    etcd_access: EtcdAccess,
    /// `SVRKIT_SHARDS`: the shards a sharded service is created with.
    shards: Option<Vec<String>>,
    /// `SVRKIT_REPLICAS`: copies of each shard.
    replicas: usize,
    /// The service's own parts of `/status`.
    sections: crate::admin::Sections,
    /// The service's own conditions for `/readyz`.
    readiness: crate::admin::Readiness,
}

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Whether `name` can be a network interface's name (Linux: 1 to 15 bytes, no `/` or
/// space), as `SVRKIT_ADVERTISE` and a manifest's host address may give one.
pub fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

/// The address a network interface named `name` has (`SVRKIT_ADVERTISE=eth0`): its IPv4
/// address, else its first IPv6 address that is not link-local.
fn interface_address(name: &str) -> Result<std::net::IpAddr, String> {
    if !is_interface_name(name) {
        return Err("neither an IP address nor an interface name".to_string());
    }
    let interfaces = if_addrs::get_if_addrs()
        .map_err(|e| format!("listing the network interfaces failed: {e}"))?;
    let mine: Vec<std::net::IpAddr> = interfaces
        .iter()
        .filter(|i| i.name == name)
        .map(if_addrs::Interface::ip)
        .collect();
    let unicast_v6 = |ip: &std::net::IpAddr| match ip {
        std::net::IpAddr::V6(v6) => !v6.is_unicast_link_local(),
        std::net::IpAddr::V4(_) => false,
    };
    mine.iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| mine.iter().find(|ip| unicast_v6(ip)))
        .copied()
        .ok_or_else(|| {
            let names: std::collections::BTreeSet<&str> =
                interfaces.iter().map(|i| i.name.as_str()).collect();
            format!(
                "not an IP address, and no interface of that name has one (interfaces: {})",
                names.into_iter().collect::<Vec<_>>().join(", ")
            )
        })
}

fn bad(name: &'static str, value: &str, reason: impl ToString) -> LaunchError {
    LaunchError::BadVariable {
        name,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn addr(name: &'static str, default: &str) -> Result<Option<SocketAddr>, LaunchError> {
    let value = var(name).unwrap_or_else(|| default.to_string());
    if value == "off" {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|e| bad(name, &value, e))
}

impl Launch {
    /// Reads the environment for `service` (its full IDL name) and installs the metrics
    /// recorder, so call it first in `main`, before any client or server exists.
    ///
    /// # Errors
    ///
    /// A variable of the table above that does not parse (named in the error), a
    /// registry that cannot be opened, TLS files that cannot be read.
    pub fn from_env(service: impl Into<String>) -> Result<Launch, LaunchError> {
        let service = service.into();
        let max_open_files = match var("SVRKIT_MAX_OPEN_FILES") {
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|e| bad("SVRKIT_MAX_OPEN_FILES", &v, e))?,
            ),
            None => None,
        };
        // Connections are descriptors: take what the hard limit allows.
        if let Err(e) = crate::process_limits::raise_open_files(max_open_files) {
            tracing::warn!(error = %e, "the open-file limit could not be changed");
        }
        let listen = addr("SVRKIT_LISTEN", "127.0.0.1:0")?
            .ok_or_else(|| bad("SVRKIT_LISTEN", "off", "the RPC address is required"))?;
        let admin = addr("SVRKIT_ADMIN", "127.0.0.1:0")?;
        let advertise = match var("SVRKIT_ADVERTISE") {
            Some(text) => {
                let ip = match text.parse::<std::net::IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => interface_address(&text)
                        .map_err(|reason| bad("SVRKIT_ADVERTISE", &text, reason))?,
                };
                if ip.is_unspecified() {
                    return Err(bad(
                        "SVRKIT_ADVERTISE",
                        &text,
                        "a wildcard cannot be reached; name this host's address",
                    ));
                }
                Some(ip)
            }
            None => None,
        };
        let registry = match var("SVRKIT_REGISTRY") {
            Some(spec) => {
                RegistryKind::parse(&spec).map_err(|e| bad("SVRKIT_REGISTRY", &spec, e))?
            }
            None => RegistryKind::Dir(EmbeddedRegistry::default_root()),
        };
        let zone = var("SVRKIT_ZONE");
        let weight = match var("SVRKIT_WEIGHT") {
            Some(w) => Some(w.parse().map_err(|e| bad("SVRKIT_WEIGHT", &w, e))?),
            None => None,
        };
        let gray_users = match var("SVRKIT_GRAY_USERS") {
            Some(json) => {
                Some(serde_json::from_str(&json).map_err(|e| bad("SVRKIT_GRAY_USERS", &json, e))?)
            }
            None => None,
        };
        let instance_id = var("SVRKIT_INSTANCE_ID").unwrap_or_else(|| {
            format!(
                "{}-{}",
                short_name(&service),
                crate::context::random_u64() & 0xffff_ffff
            )
        });
        let data_dir = var("SVRKIT_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".svrkit/data").join(&instance_id));
        let tls = match (
            var("SVRKIT_TLS_CERT"),
            var("SVRKIT_TLS_KEY"),
            var("SVRKIT_TLS_CA"),
        ) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => {
                let credentials = crate::tls::Credentials::from_pem_files(
                    cert.as_ref(),
                    key.as_ref(),
                    ca.as_ref(),
                )
                .map_err(|e| bad("SVRKIT_TLS_CERT", &cert, e))?;
                let client = credentials
                    .client()
                    .map_err(|e| bad("SVRKIT_TLS_CERT", &cert, e))?;
                // A renewed certificate (same files) is presented without a restart.
                let period = match var("SVRKIT_TLS_RELOAD_SECS") {
                    Some(secs) => std::time::Duration::from_secs(
                        secs.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                            bad(
                                "SVRKIT_TLS_RELOAD_SECS",
                                &secs,
                                "not a positive number of seconds",
                            )
                        })?,
                    ),
                    None => crate::tls::reload::DEFAULT_RELOAD_PERIOD,
                };
                credentials
                    .slot()
                    .watch_files(PathBuf::from(&cert), PathBuf::from(&key), period);
                // Every channel this process builds from now on presents the certificate.
                crate::tls::set_process_client(client);
                Some(
                    credentials
                        .server()
                        .map_err(|e| bad("SVRKIT_TLS_CERT", &cert, e))?,
                )
            }
            _ => {
                return Err(bad(
                    "SVRKIT_TLS_CERT",
                    &var("SVRKIT_TLS_CERT").unwrap_or_default(),
                    "mutual TLS needs SVRKIT_TLS_CERT, SVRKIT_TLS_KEY and SVRKIT_TLS_CA together",
                ));
            }
        };
        let policy = match var("SVRKIT_CALL_POLICY") {
            Some(json) => Some(
                crate::policy::CallPolicy::from_json(&json)
                    .map_err(|e| bad("SVRKIT_CALL_POLICY", &json, e))?,
            ),
            None => None,
        };
        let mut launch = Launch {
            tls,
            policy,
            sharded: false,
            #[cfg(feature = "etcd")]
            etcd_access: EtcdAccess::from_env()?,
            advertise,
            sections: crate::admin::Sections::default(),
            readiness: crate::admin::Readiness::default(),
            replicas: match var("SVRKIT_REPLICAS") {
                Some(text) => text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=7).contains(n))
                    .ok_or_else(|| bad("SVRKIT_REPLICAS", &text, "1 to 7 copies"))?,
                None => 1,
            },
            shards: var("SVRKIT_SHARDS").map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }),
            service,
            listen,
            admin,
            registry,
            store: None,
            instance_id,
            gray_users,
            zone,
            weight,
            data_dir,
            bound: None,
            config: None,
        };
        launch.store = launch.open_store()?;
        crate::admin::install_metrics()?;
        Ok(launch)
    }

    /// Marks this service as sharded by key: the server follows its service's ring in
    /// the registry and refuses keys this instance does not own
    /// ([`crate::server::Ownership`]).
    pub fn sharded(mut self) -> Launch {
        self.sharded = true;
        self
    }

    /// Overrides the RPC address.
    pub fn with_listen(mut self, listen: SocketAddr) -> Launch {
        self.listen = listen;
        self
    }

    /// Overrides the advertised address (`SVRKIT_ADVERTISE`; see [`Launch::advertised`]).
    pub fn with_advertise(mut self, advertise: Option<std::net::IpAddr>) -> Launch {
        self.advertise = advertise;
        self
    }

    /// Overrides the admin address (`None`: no admin endpoint).
    pub fn with_admin(mut self, admin: Option<SocketAddr>) -> Launch {
        self.admin = admin;
        self
    }

    /// Overrides the registry.
    pub fn with_registry(mut self, registry: RegistryKind) -> Result<Launch, LaunchError> {
        self.registry = registry;
        self.store = self.open_store()?;
        Ok(self)
    }

    /// The zone this process runs in (`SVRKIT_ZONE`), for `ChannelBuilder::zone`.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// Overrides the instance id.
    pub fn with_instance_id(mut self, id: impl Into<String>) -> Launch {
        self.instance_id = id.into();
        self
    }

    fn open_store(&self) -> Result<Option<Store>, LaunchError> {
        Ok(match &self.registry {
            RegistryKind::None => None,
            RegistryKind::Dir(dir) => Some(Store::Embedded(Arc::new(EmbeddedRegistry::new(dir)))),
            #[cfg(feature = "etcd")]
            RegistryKind::Etcd(urls) => Some(Store::Etcd(Arc::new(
                self.etcd_access
                    .apply(crate::discovery::EtcdRegistry::new(urls.clone())),
            ))),
            #[cfg(feature = "etcd")]
            RegistryKind::EtcdIn { cluster, urls } => Some(Store::Etcd(Arc::new(
                self.etcd_access.apply(
                    crate::discovery::EtcdRegistry::new(urls.clone())
                        .cluster(cluster)
                        .map_err(|e| bad("SVRKIT_REGISTRY", &self.registry.spec(), e))?,
                ),
            ))),
            #[cfg(not(feature = "etcd"))]
            RegistryKind::Etcd(_) | RegistryKind::EtcdIn { .. } => {
                return Err(bad(
                    "SVRKIT_REGISTRY",
                    &self.registry.spec(),
                    "this build has no etcd support (feature `etcd`)",
                ));
            }
        })
    }

    /// Where others reach an address this process bound: the same port on
    /// `SVRKIT_ADVERTISE` when set, else the bound address itself, which must then not be
    /// a wildcard (a wildcard is never registered: nobody could call it).
    pub fn advertised(&self, bound: SocketAddr) -> Result<SocketAddr, LaunchError> {
        match self.advertise {
            Some(ip) => Ok(SocketAddr::new(ip, bound.port())),
            None if bound.ip().is_unspecified() => Err(bad(
                "SVRKIT_LISTEN",
                &bound.to_string(),
                "a wildcard address needs SVRKIT_ADVERTISE, the address others reach this instance at",
            )),
            None => Ok(bound),
        }
    }

    /// Binds the RPC address now (before [`Launch::serve`]) and returns where others
    /// reach it ([`Launch::advertised`]): for a process that must tell others where it
    /// serves before it starts serving.
    pub async fn bind(&mut self) -> Result<SocketAddr, LaunchError> {
        let listener = match self.bound.take() {
            Some(listener) => listener,
            None => TcpListener::bind(self.listen)
                .await
                .map_err(|source| LaunchError::Io {
                    what: format!("binding {}", self.listen),
                    source,
                })?,
        };
        let local = listener.local_addr().map_err(|source| LaunchError::Io {
            what: "reading the local address".into(),
            source,
        });
        self.bound = Some(listener);
        self.advertised(local?)
    }

    /// Follows this service's gray-release configuration in the registry; the admin
    /// endpoint's `/status` then reports the version this instance applies. `None` when
    /// the process has no registry.
    pub async fn config(&mut self) -> Result<Option<LiveConfig>, LaunchError> {
        if self.config.is_none() {
            let Some(store) = self.config_store() else {
                return Ok(None);
            };
            let live = LiveConfig::follow(&*store, &self.service, self.instance_id.as_str())
                .await
                .map_err(|e| LaunchError::Config(e.to_string()))?;
            self.config = Some(live);
        }
        Ok(self.config.clone())
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The instance id this process registers under.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// [`Track::Gray`] when launched as a gray release, else stable.
    pub fn track(&self) -> Track {
        if self.gray_users.is_some() {
            Track::Gray
        } else {
            Track::Stable
        }
    }

    /// Where this instance keeps its files.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The registry spec (`dir:…`, `etcd:…`, `none`).
    pub fn registry_kind(&self) -> &RegistryKind {
        &self.registry
    }

    /// The registry, for discovering the services this one calls.
    pub fn registry(&self) -> Option<Arc<dyn Registry>> {
        match self.store.as_ref()? {
            Store::Embedded(r) => Some(Arc::clone(r) as Arc<dyn Registry>),
            #[cfg(feature = "etcd")]
            Store::Etcd(r) => Some(Arc::clone(r) as Arc<dyn Registry>),
        }
    }

    /// The same registry as a configuration store (for [`crate::config::LiveConfig`]).
    pub fn config_store(&self) -> Option<Arc<dyn ConfigStore>> {
        match self.store.as_ref()? {
            Store::Embedded(r) => Some(Arc::clone(r) as Arc<dyn ConfigStore>),
            #[cfg(feature = "etcd")]
            Store::Etcd(r) => Some(Arc::clone(r) as Arc<dyn ConfigStore>),
        }
    }

    /// The admin endpoint's `/readyz` also waits for `check` (see
    /// [`AdminServer::ready_when`]).
    pub fn with_readiness(mut self, check: Arc<dyn Fn() -> bool + Send + Sync>) -> Launch {
        self.readiness.0.push(check);
        self
    }

    /// Adds `name` to the admin endpoint's `/status`, as `section` says when asked.
    pub fn with_status(
        mut self,
        name: impl Into<String>,
        section: crate::admin::Section,
    ) -> Launch {
        self.sections.0.push((name.into(), section));
        self
    }

    /// This sharded service's shard map: created from `SVRKIT_SHARDS` and
    /// `SVRKIT_REPLICAS` on the first start (and checked against them after), else the
    /// one in the registry; `None` without either.
    pub async fn shard_map(
        &self,
    ) -> Result<Option<crate::discovery::shard_map::ShardMap>, LaunchError> {
        use crate::discovery::shard_map;
        let map_error = |e: shard_map::ShardMapError| LaunchError::Io {
            what: "the shard map".into(),
            source: std::io::Error::other(e.to_string()),
        };
        match (self.config_store(), &self.shards) {
            (Some(store), Some(shards)) => Ok(Some(
                shard_map::ensure_replicated(&*store, &self.service, shards.clone(), self.replicas)
                    .await
                    .map_err(map_error)?,
            )),
            (Some(store), None) => shard_map::load(&*store, &self.service)
                .await
                .map_err(map_error),
            (None, _) => Ok(None),
        }
    }

    /// Binds, registers, starts the admin endpoint, prints both addresses, and serves
    /// until SIGTERM or Ctrl-C; then deregisters and drains.
    ///
    /// # Errors
    ///
    /// The listen or admin address cannot be bound, registering fails, or serving fails
    /// with an I/O error of the listener.
    pub async fn serve<L, S>(self, server: Server<L>) -> Result<(), LaunchError>
    where
        L: Layer<Routed, Service = S>,
        S: Service<ServerRequest, Response = Bytes> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        self.serve_until(server, shutdown_signal()).await
    }

    /// [`Launch::serve`] with a shutdown of the caller's choosing.
    pub async fn serve_until<L, S>(
        mut self,
        server: Server<L>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), LaunchError>
    where
        L: Layer<Routed, Service = S>,
        S: Service<ServerRequest, Response = Bytes> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let io = |what: String| move |source| LaunchError::Io { what, source };
        let listener = match self.bound.take() {
            Some(listener) => listener,
            None => TcpListener::bind(self.listen)
                .await
                .map_err(io(format!("binding {}", self.listen)))?,
        };
        let local = listener
            .local_addr()
            .map_err(io("reading the local address".into()))?;
        let admin_listener = match self.admin {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(io(format!("binding the admin address {addr}")))?,
            ),
            None => None,
        };
        let admin_addr = match &admin_listener {
            Some(l) => Some(
                l.local_addr()
                    .map_err(io("reading the admin address".into()))?,
            ),
            None => None,
        };
        let mut server = server;
        if let Some(tls) = self.tls.clone() {
            server = server.tls(tls);
        }
        if let Some(policy) = self.policy.clone() {
            server = server.policy(policy);
        }
        if let Some(registry) = self.registry()
            && self.sharded
        {
            // A service with a shard map owns exactly its map's share (see
            // `discovery::shard_map`); one without follows its live instances.
            let map = self.shard_map().await?;
            let ownership = match (map, self.config_store()) {
                (Some(map), Some(store)) => {
                    // (A gray instance of a shard is upgraded in place and owns nothing;
                    // a spare of a replicated service waits to be given replicas.)
                    if map.hosted_by(&self.instance_id).is_empty()
                        && self.gray_users.is_none()
                        && map.replication() == 1
                    {
                        return Err(LaunchError::Io {
                            what: format!("joining {}", self.service),
                            source: std::io::Error::other(format!(
                                "{} is not one of its shards {:?} (the shard map is fixed when a service is created)",
                                self.instance_id, map.shards
                            )),
                        });
                    }
                    let maps = crate::discovery::shard_map::watch(store, &self.service)
                        .await
                        .map_err(|e| LaunchError::Io {
                            what: "following the shard map".into(),
                            source: std::io::Error::other(e.to_string()),
                        })?;
                    crate::server::Ownership::follow_map(&self.instance_id, maps)
                }
                _ => crate::server::Ownership::follow(&*registry, &self.service, &self.instance_id)
                    .await
                    .map_err(|e| LaunchError::Io {
                        what: "following the shard ring".into(),
                        source: std::io::Error::other(e.to_string()),
                    })?,
            };
            server = server.ownership(ownership);
        }
        if let Some(registry) = self.registry() {
            let mut instance =
                Instance::new(self.service.clone(), self.advertised(local)?).id(&self.instance_id);
            if let Some(zone) = &self.zone {
                instance = instance.zone(zone.clone());
            }
            if let Some(weight) = self.weight {
                instance = instance.weight(weight);
            }
            if let Some(selector) = self.gray_users.clone() {
                instance = instance.gray(selector);
            }
            if let Some(admin) = admin_addr {
                instance = instance.admin(self.advertised(admin)?);
            }
            server = server.register(registry, instance);
        }
        // gRPC health answers as `/readyz` does.
        for check in self.readiness.0.clone() {
            server = server.ready_when(check);
        }
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = match admin_listener {
            Some(listener) => {
                let info = InstanceInfo::new(self.service.clone())
                    .instance_id(self.instance_id.clone())
                    .version_label(self.track());
                let mut admin = AdminServer::new(info)?.attach(server.stats());
                if let Some(config) = self.config.clone() {
                    admin = admin.config_version(move || Some(config.applied_version()));
                }
                for (name, section) in self.sections.0.clone() {
                    admin = admin.section(name, section);
                }
                for check in self.readiness.0.clone() {
                    admin = admin.ready_when(check);
                }
                Some(tokio::spawn(admin.serve(listener, async {
                    let _ = admin_stopped.await;
                })))
            }
            None => None,
        };
        println!("listening on {local}");
        if let Some(admin) = admin_addr {
            println!("admin on http://{admin}");
        }
        tracing::info!(service = %self.service, instance = %self.instance_id, %local, "serving");
        let served = server
            .serve(listener, shutdown)
            .await
            .map_err(io("serving".into()));
        let _ = stop_admin.send(());
        if let Some(task) = admin_task
            && let Ok(Err(e)) = task.await
        {
            tracing::warn!(error = %e, "admin endpoint failed");
        }
        served
    }
}

/// `svrkit.demo.Echo` -> `echo`: the last path segment, lower-cased.
fn short_name(service: &str) -> String {
    service
        .rsplit('.')
        .next()
        .unwrap_or(service)
        .to_ascii_lowercase()
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A line a launched process prints on standard output to say where it serves:
/// `listening on ADDR` (RPC), `admin on http://ADDR`, or `NAME on [SCHEME://]ADDR` for any
/// other endpoint a service offers (`http on …`, `ws on …`). Supervisors, test harnesses
/// and benchmarks read these lines with [`Announcement::parse`] rather than each matching
/// the text anew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// `listening on ADDR`: the RPC address.
    Listening(SocketAddr),
    /// `admin on http://ADDR`: the admin HTTP address.
    Admin(SocketAddr),
    /// `NAME on [SCHEME://]ADDR[/]`: another endpoint, its name and address as printed.
    Endpoint {
        /// Its name (letters, digits, `-`).
        name: String,
        /// The address as printed (`127.0.0.1:80`, `ws://127.0.0.1:9/`).
        addr: String,
    },
}

impl Announcement {
    /// The announcement `line` makes, if it makes one.
    pub fn parse(line: &str) -> Option<Announcement> {
        let (name, addr) = line.trim().split_once(" on ")?;
        let bare = addr.split_once("://").map_or(addr, |(_, rest)| rest);
        let socket: SocketAddr = bare.trim_end_matches('/').parse().ok()?;
        match name {
            "listening" => Some(Announcement::Listening(socket)),
            "admin" => Some(Announcement::Admin(socket)),
            _ if !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                Some(Announcement::Endpoint {
                    name: name.to_string(),
                    addr: addr.to_string(),
                })
            }
            _ => None,
        }
    }

    /// The address, for any kind of announcement whose address is a bare socket address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Announcement::Listening(a) | Announcement::Admin(a) => Some(*a),
            Announcement::Endpoint { addr, .. } => addr.parse().ok(),
        }
    }
}

/// TLS and a user for an etcd registry, from `SVRKIT_ETCD_CA` (the CA of etcd's
/// certificate; TLS on), `SVRKIT_ETCD_CERT` and `SVRKIT_ETCD_KEY` (a client certificate,
/// for etcd's `--client-cert-auth`), `SVRKIT_ETCD_SERVER_NAME` (the name etcd's
/// certificate carries, when not the endpoints' host), `SVRKIT_ETCD_USER` and
/// `SVRKIT_ETCD_PASSWORD_FILE` (a file holding the password, kept out of the
/// environment).
#[cfg(feature = "etcd")]
#[derive(Debug, Clone, Default)]
struct EtcdAccess {
    tls: Option<crate::discovery::EtcdTls>,
    user: Option<(String, String)>,
}

/// `registry` with the TLS and user the `SVRKIT_ETCD_*` variables give (see
/// [`Launch`]'s table), for tools that read the same etcd as the services.
#[cfg(feature = "etcd")]
pub fn etcd_from_env(
    registry: crate::discovery::EtcdRegistry,
) -> Result<crate::discovery::EtcdRegistry, LaunchError> {
    Ok(EtcdAccess::from_env()?.apply(registry))
}

/// `registry` with the TLS and user that `vars` give, named as the `SVRKIT_ETCD_*`
/// variables (a supervisor's view of what its instances are told; unnamed ones are unset).
#[cfg(feature = "etcd")]
pub fn etcd_from_vars(
    registry: crate::discovery::EtcdRegistry,
    vars: &[(String, String)],
) -> Result<crate::discovery::EtcdRegistry, LaunchError> {
    let lookup = |name: &str| {
        vars.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    Ok(EtcdAccess::from_lookup(lookup)?.apply(registry))
}

#[cfg(feature = "etcd")]
impl EtcdAccess {
    fn from_env() -> Result<EtcdAccess, LaunchError> {
        EtcdAccess::from_lookup(var)
    }

    fn from_lookup(
        var: impl Fn(&'static str) -> Option<String>,
    ) -> Result<EtcdAccess, LaunchError> {
        let read =
            |name: &'static str, path: &str| std::fs::read(path).map_err(|e| bad(name, path, e));
        let tls = match var("SVRKIT_ETCD_CA") {
            Some(ca) => {
                let identity = match (var("SVRKIT_ETCD_CERT"), var("SVRKIT_ETCD_KEY")) {
                    (Some(cert), Some(key)) => Some((
                        read("SVRKIT_ETCD_CERT", &cert)?,
                        read("SVRKIT_ETCD_KEY", &key)?,
                    )),
                    (None, None) => None,
                    _ => {
                        return Err(bad(
                            "SVRKIT_ETCD_CERT",
                            "",
                            "a client certificate needs SVRKIT_ETCD_CERT and SVRKIT_ETCD_KEY together",
                        ));
                    }
                };
                Some(crate::discovery::EtcdTls {
                    ca_pem: read("SVRKIT_ETCD_CA", &ca)?,
                    identity,
                    server_name: var("SVRKIT_ETCD_SERVER_NAME"),
                })
            }
            None => None,
        };
        let user = match (var("SVRKIT_ETCD_USER"), var("SVRKIT_ETCD_PASSWORD_FILE")) {
            (Some(user), Some(file)) => {
                let password = String::from_utf8(read("SVRKIT_ETCD_PASSWORD_FILE", &file)?)
                    .map_err(|e| bad("SVRKIT_ETCD_PASSWORD_FILE", &file, e))?;
                Some((user, password.trim_end_matches(['\n', '\r']).to_string()))
            }
            (None, None) => None,
            _ => {
                return Err(bad(
                    "SVRKIT_ETCD_USER",
                    "",
                    "etcd authentication needs SVRKIT_ETCD_USER and SVRKIT_ETCD_PASSWORD_FILE together",
                ));
            }
        };
        Ok(EtcdAccess { tls, user })
    }

    fn apply(
        &self,
        mut registry: crate::discovery::EtcdRegistry,
    ) -> crate::discovery::EtcdRegistry {
        if let Some(tls) = &self.tls {
            registry = registry.tls(tls.clone());
        }
        if let Some((user, password)) = &self.user {
            registry = registry.user(user.clone(), password.clone());
        }
        registry
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_wildcard_is_never_advertised() {
        let launch = super::Launch::from_env("svc").expect("defaults");
        let wildcard: std::net::SocketAddr = "0.0.0.0:7000".parse().expect("addr");
        let bound: std::net::SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let refused = launch.advertised(wildcard).expect_err("a wildcard alone");
        assert!(
            refused.to_string().contains("SVRKIT_ADVERTISE"),
            "{refused}"
        );
        assert_eq!(launch.advertised(bound).expect("as bound"), bound);
        let advertised = launch.with_advertise(Some("10.1.2.3".parse().expect("ip")));
        assert_eq!(
            advertised.advertised(wildcard).expect("advertised"),
            "10.1.2.3:7000"
                .parse::<std::net::SocketAddr>()
                .expect("addr")
        );
    }

    #[test]
    fn an_interface_name_is_advertised_as_its_address() {
        // Every Linux network namespace has `lo`, with 127.0.0.1.
        assert_eq!(
            super::interface_address("lo").expect("lo has an address"),
            std::net::IpAddr::from([127, 0, 0, 1])
        );
        let missing = super::interface_address("nosuchif0").expect_err("no such interface");
        assert!(
            missing.contains("interfaces: ") && missing.contains("lo"),
            "{missing}"
        );
        for bad in ["", "eth0/../x", "a-name-longer-than-15", "10.0.0.300 "] {
            let refused = super::interface_address(bad).expect_err(bad);
            assert!(
                refused.contains("neither an IP address"),
                "{bad:?}: {refused}"
            );
        }
    }

    #[test]
    fn announcements_are_read_from_output_lines() {
        use super::Announcement;
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().expect("addr");
        assert_eq!(
            Announcement::parse("listening on 127.0.0.1:7000"),
            Some(Announcement::Listening(addr("127.0.0.1:7000")))
        );
        assert_eq!(
            Announcement::parse("admin on http://127.0.0.1:9/"),
            Some(Announcement::Admin(addr("127.0.0.1:9")))
        );
        let ws = Announcement::parse("ws on ws://127.0.0.1:9/");
        assert_eq!(
            ws,
            Some(Announcement::Endpoint {
                name: "ws".into(),
                addr: "ws://127.0.0.1:9/".into()
            })
        );
        assert_eq!(
            Announcement::parse("http on 127.0.0.1:80").and_then(|a| a.socket_addr()),
            Some(addr("127.0.0.1:80"))
        );
        assert_eq!(Announcement::parse("turned on something"), None);
        assert_eq!(Announcement::parse("two words on 127.0.0.1:1"), None);
    }

    use super::*;

    #[test]
    fn registry_specs_round_trip() {
        for spec in [
            "none",
            "dir:/tmp/r",
            "etcd:http://127.0.0.1:2379,http://127.0.0.1:2380",
            "etcd@wx:http://127.0.0.1:2379",
        ] {
            let kind = RegistryKind::parse(spec).expect("parses");
            assert_eq!(kind.spec(), spec);
        }
        for bad in [
            "",
            "dir:",
            "etcd:",
            "etcd@:http://x",
            "etcd@wx:",
            "zookeeper:x",
            "/tmp/r",
        ] {
            assert!(RegistryKind::parse(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn short_names() {
        assert_eq!(short_name("svrkit.demo.Echo"), "echo");
        assert_eq!(short_name("Echo"), "echo");
    }
}
