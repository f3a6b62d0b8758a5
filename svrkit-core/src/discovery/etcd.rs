//! The etcd registry, for clusters.
//!
//! Records live under `/svrkit/services/SERVICE/INSTANCE_ID` as JSON (or, for a registry of
//! a named cluster, [`EtcdRegistry::cluster`], under `/svrkit/CLUSTER/services/…`, so that
//! two clusters sharing one etcd never see each other's instances), attached to a lease
//! the instance keeps alive; when the instance dies the lease expires and etcd deletes the
//! record. Registration survives etcd trouble: if the keep-alive stream breaks or the
//! lease is lost (an etcd restart with lost data, a long partition), the instance grants a
//! new lease and writes its record again, retrying until etcd answers.
//!
//! Watches of instances and of configuration documents (`/svrkit/config/SERVICE`, or
//! `/svrkit/CLUSTER/config/SERVICE`) are one
//! mechanism, `mirror`: read the keys, then watch from the next revision, so no change
//! between the two is lost. When etcd becomes unreachable a watch keeps serving the last
//! known state, logs it (instance watches also set `svrkit_discovery_stale{service}` to 1),
//! and on reconnection reads afresh and resumes watching.
//!
//! A registry and its clones share one connection (HTTP/2: every watch, keep-alive and
//! request of a process on it), to one member at a time: the one that last answered, else
//! the next in the list that answers a probe read (a linearizable read, which a member
//! cut off from its cluster's quorum cannot answer). A failed request, a broken watch or
//! a lost keep-alive drops that connection, and whoever needs etcd next connects again,
//! to the next member that answers; the others then share the new connection. HTTP/2
//! keep-alive pings ([`KEEPALIVE`]) find a member that went silent, and watches require
//! a leader, so a member that lost its quorum ends them.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::sync::watch;

use crate::BoxFuture;
use crate::config::{ConfigDoc, ConfigStore};
use crate::discovery::{
    DiscoveryError, Instance, Instances, Registration, Registry, publish_if_changed,
};

/// Key prefix of instance records.
pub const PREFIX: &str = "/svrkit/services/";
/// Key prefix of configuration documents.
pub const CONFIG_PREFIX: &str = "/svrkit/config/";
/// Lease time-to-live of a registration, in seconds (3).
pub const DEFAULT_LEASE_TTL_SECS: i64 = 3;
/// Pause between attempts to reach etcd again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// The HTTP/2 keep-alive of a connection to etcd: a ping this often, and the connection
/// given up when one is not answered within [`KEEPALIVE_TIMEOUT`]. (etcd refuses pings
/// more often than every 5 s, its `--grpc-keepalive-min-time`.)
const KEEPALIVE: Duration = Duration::from_secs(5);
/// See [`KEEPALIVE`].
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// How a registry proves itself to etcd and checks etcd: TLS with the CA that signed
/// etcd's certificate and, for etcd's `--client-cert-auth`, a client certificate.
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA certificate (PEM) etcd's server certificate must chain to.
    pub ca_pem: Vec<u8>,
    /// This client's certificate and key (PEM), if etcd asks for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name etcd's certificate must carry, when it is not the endpoints' host (a
    /// cluster certificate names `svrkit.cluster`).
    pub server_name: Option<String>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A user name and password for etcd's authentication.
#[derive(Clone)]
struct EtcdUser {
    name: String,
    password: String,
}

impl std::fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A registry in an etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdRegistry {
    endpoints: Vec<String>,
    lease_ttl: i64,
    tls: Option<EtcdTls>,
    user: Option<EtcdUser>,
    /// The prefix of instance records ([`PREFIX`], or the cluster's).
    services: String,
    /// The prefix of configuration documents ([`CONFIG_PREFIX`], or the cluster's).
    config: String,
    /// The connection its clones share.
    shared: std::sync::Arc<Shared>,
}

/// What the clones of a registry share: the connection, and the endpoint that answered
/// last (where the next connection goes first).
#[derive(Default)]
struct Shared {
    current: std::sync::atomic::AtomicUsize,
    conn: tokio::sync::Mutex<Option<Conn>>,
    made: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

/// A connection to etcd, and which one it is (a number that grows with each made).
#[derive(Clone)]
struct Conn {
    generation: u64,
    client: Client,
}

fn backend(e: etcd_client::Error) -> DiscoveryError {
    DiscoveryError::Backend(e.to_string())
}

impl EtcdRegistry {
    /// A registry using the etcd cluster at `endpoints` (`http://127.0.0.1:2379`, …).
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdRegistry {
        EtcdRegistry {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            lease_ttl: DEFAULT_LEASE_TTL_SECS,
            tls: None,
            user: None,
            services: PREFIX.to_string(),
            config: CONFIG_PREFIX.to_string(),
            shared: std::sync::Arc::default(),
        }
    }

    /// Talks to etcd over TLS (`https://` endpoints) as `tls` says.
    pub fn tls(mut self, tls: EtcdTls) -> EtcdRegistry {
        self.tls = Some(tls);
        // Not the connection of the clone this came from, made without it.
        self.shared = std::sync::Arc::default();
        self
    }

    /// Signs in to etcd as `name` with `password` (etcd's `auth enable`).
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> EtcdRegistry {
        self.user = Some(EtcdUser {
            name: name.into(),
            password: password.into(),
        });
        self.shared = std::sync::Arc::default();
        self
    }

    /// Keeps this registry's keys under `/svrkit/CLUSTER/` (`services/…`, `config/…`):
    /// clusters sharing one etcd stay apart. `cluster` is 1 to 64 letters, digits, `-` or
    /// `_`.
    pub fn cluster(mut self, cluster: &str) -> Result<EtcdRegistry, DiscoveryError> {
        let valid = !cluster.is_empty()
            && cluster.len() <= 64
            && cluster
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && cluster != "services"
            && cluster != "config";
        if !valid {
            return Err(DiscoveryError::Backend(format!(
                "{cluster:?} is not a cluster name (1 to 64 letters, digits, - or _)"
            )));
        }
        self.services = format!("/svrkit/{cluster}/services/");
        self.config = format!("/svrkit/{cluster}/config/");
        self.shared = std::sync::Arc::default();
        Ok(self)
    }

    /// Every registered instance of every service.
    pub async fn all(&self) -> Result<Vec<Instance>, DiscoveryError> {
        let conn = self.conn().await?;
        let (raw, _) = self
            .checked(
                &conn,
                Self::read_raw(&mut conn.client.clone(), &self.services, true),
            )
            .await?;
        Ok(instances(&raw).map(|i| i.to_vec()).unwrap_or_default())
    }

    /// Sets the lease time-to-live in seconds: how long a dead instance stays listed.
    pub fn lease_ttl(mut self, secs: i64) -> EtcdRegistry {
        self.lease_ttl = secs.max(1);
        self
    }

    /// The shared connection, made first if there is none.
    async fn conn(&self) -> Result<Conn, DiscoveryError> {
        let mut slot = self.shared.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let client = self.client().await?;
        let generation = self
            .shared
            .made
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let conn = Conn { generation, client };
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Drops `conn` as the shared connection (it failed), unless another took its place.
    async fn forget(&self, conn: &Conn) {
        let mut slot = self.shared.conn.lock().await;
        if slot
            .as_ref()
            .is_some_and(|c| c.generation == conn.generation)
        {
            *slot = None;
        }
    }

    /// `work`'s result; when it failed, `conn` (which it used) is forgotten.
    async fn checked<T>(
        &self,
        conn: &Conn,
        work: impl std::future::Future<Output = Result<T, DiscoveryError>>,
    ) -> Result<T, DiscoveryError> {
        let result = work.await;
        if result.is_err() {
            self.forget(conn).await;
        }
        result
    }

    /// A new connection to the first endpoint, from the one that answered last, that
    /// answers a probe read.
    async fn client(&self) -> Result<Client, DiscoveryError> {
        use std::sync::atomic::Ordering;
        let n = self.endpoints.len();
        let start = self.shared.current.load(Ordering::Relaxed);
        let mut last = DiscoveryError::Backend("no etcd endpoints".to_string());
        for k in 0..n {
            let i = (start + k) % n;
            match self.connect_to(&self.endpoints[i]).await {
                Ok(client) => {
                    if i != start {
                        tracing::info!(endpoint = %self.endpoints[i], "etcd: using another member");
                    }
                    self.shared.current.store(i, Ordering::Relaxed);
                    return Ok(client);
                }
                Err(e) => {
                    tracing::debug!(endpoint = %self.endpoints[i], error = %e, "etcd member does not answer");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// A connection to `endpoint`, once it answered a linearizable read.
    async fn connect_to(&self, endpoint: &str) -> Result<Client, DiscoveryError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(2))
            .with_keep_alive(KEEPALIVE, KEEPALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some(tls) = &self.tls {
            let mut config = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(etcd_client::Identity::from_pem(cert, key));
            }
            if let Some(name) = &tls.server_name {
                config = config.domain_name(name.clone());
            }
            options = options.with_tls(config);
        }
        if let Some(user) = &self.user {
            options = options.with_user(user.name.clone(), user.password.clone());
        }
        let mut client = Client::connect([endpoint], Some(options))
            .await
            .map_err(backend)?;
        client
            .get(
                self.services.as_str(),
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(backend)?;
        Ok(client)
    }

    fn key(&self, instance: &Instance) -> String {
        format!("{}{}/{}", self.services, instance.service, instance.id)
    }

    /// Grants a lease and writes the record under it.
    async fn put(&self, instance: &Instance) -> Result<(Conn, i64), DiscoveryError> {
        let conn = self.conn().await?;
        let mut client = conn.client.clone();
        let work = async {
            let lease = client
                .lease_grant(self.lease_ttl, None)
                .await
                .map_err(backend)?
                .id();
            let value = serde_json::to_vec(instance)?;
            client
                .put(
                    self.key(instance),
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await
                .map_err(backend)?;
            Ok(lease)
        };
        let lease = self.checked(&conn, work).await?;
        Ok((conn, lease))
    }

    /// Keeps `lease` alive until the stream breaks or etcd says the lease is gone.
    async fn keep_alive(&self, client: &mut Client, lease: i64) {
        let Ok((mut keeper, mut stream)) = client.lease_keep_alive(lease).await else {
            return;
        };
        let period = Duration::from_millis((self.lease_ttl as u64 * 1000) / 3);
        loop {
            if keeper.keep_alive().await.is_err() {
                return;
            }
            match tokio::time::timeout(period * 2, stream.message()).await {
                Ok(Ok(Some(response))) if response.ttl() > 0 => {}
                _ => return,
            }
            tokio::time::sleep(period).await;
        }
    }

    /// The raw values under `key` (every key with that prefix when `prefix`), and the
    /// revision they were read at.
    async fn read_raw(
        client: &mut Client,
        key: &str,
        prefix: bool,
    ) -> Result<(Raw, i64), DiscoveryError> {
        let options = prefix.then(|| GetOptions::new().with_prefix());
        let response = client.get(key, options).await.map_err(backend)?;
        let revision = response.header().map_or(0, |h| h.revision());
        let raw = response
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        Ok((raw, revision))
    }

    /// Mirrors the keys under `key` into a watch of `project(keys)`.
    ///
    /// Reads them, then watches from the next revision, so no change between the two is
    /// lost. When etcd becomes unreachable the watch keeps its last value, logs it and sets
    /// `stale` (if given) to 1; once etcd answers again it re-reads everything and resumes.
    /// A projection that returns `None` (an unreadable document) publishes nothing, so the
    /// last good value stays.
    async fn mirror<T>(
        &self,
        key: String,
        prefix: bool,
        project: fn(&Raw) -> Option<T>,
        stale: Option<metrics::Gauge>,
    ) -> Result<watch::Receiver<T>, DiscoveryError>
    where
        T: PartialEq + Send + Sync + 'static,
    {
        let mut conn = self.conn().await?;
        let (mut raw, mut revision) = self
            .checked(
                &conn,
                Self::read_raw(&mut conn.client.clone(), &key, prefix),
            )
            .await?;
        let first = project(&raw)
            .ok_or_else(|| DiscoveryError::Backend(format!("unreadable record at {key}")))?;
        let (tx, rx) = watch::channel(first);
        let this = self.clone();
        let set_stale = move |value: f64| {
            if let Some(gauge) = &stale {
                gauge.set(value);
            }
        };
        set_stale(0.0);
        tokio::spawn(async move {
            loop {
                let mut options = WatchOptions::new().with_start_revision(revision + 1);
                if prefix {
                    options = options.with_prefix();
                }
                if let Ok(mut stream) = conn.client.watch(key.as_str(), Some(options)).await {
                    while let Ok(Some(response)) = stream.message().await {
                        if response.canceled() {
                            break;
                        }
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            revision = revision.max(kv.mod_revision());
                            let changed = String::from_utf8_lossy(kv.key()).into_owned();
                            match event.event_type() {
                                EventType::Put => {
                                    raw.insert(changed, kv.value().to_vec());
                                }
                                EventType::Delete => {
                                    raw.remove(&changed);
                                }
                            }
                        }
                        if let Some(header) = response.header() {
                            revision = revision.max(header.revision());
                        }
                        if let Some(now) = project(&raw) {
                            publish_if_changed(&tx, now);
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tracing::warn!(%key, "etcd unreachable; keeping the last known state");
                set_stale(1.0);
                this.forget(&conn).await;
                loop {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    if tx.is_closed() {
                        return;
                    }
                    let Ok(fresh) = this.conn().await else {
                        continue;
                    };
                    let mut client = fresh.client.clone();
                    let read = Self::read_raw(&mut client, &key, prefix);
                    if let Ok((now, rev)) = this.checked(&fresh, read).await {
                        (raw, revision, conn) = (now, rev, fresh);
                        if let Some(now) = project(&raw) {
                            publish_if_changed(&tx, now);
                        }
                        set_stale(0.0);
                        tracing::info!(%key, "etcd reachable again");
                        break;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// Raw values by key, as read from etcd.
type Raw = BTreeMap<String, Vec<u8>>;

/// The instances among raw records (unreadable records are skipped, with a warning).
fn instances(raw: &Raw) -> Option<Instances> {
    Some(
        raw.values()
            .filter_map(|value| {
                serde_json::from_slice::<Instance>(value)
                    .map_err(|e| tracing::warn!(error = %e, "unreadable instance record in etcd"))
                    .ok()
            })
            .collect(),
    )
}

/// The configuration document among raw records (empty when there is none; `None` when
/// it is unreadable).
fn config_doc(raw: &Raw) -> Option<std::sync::Arc<ConfigDoc>> {
    match raw.values().next() {
        None => Some(std::sync::Arc::default()),
        Some(value) => serde_json::from_slice(value)
            .map(std::sync::Arc::new)
            .map_err(|e| tracing::warn!(error = %e, "unreadable config document in etcd"))
            .ok(),
    }
}

impl Registry for EtcdRegistry {
    fn register(
        &self,
        instance: Instance,
    ) -> BoxFuture<'static, Result<Registration, DiscoveryError>> {
        let this = self.clone();
        Box::pin(async move {
            let (mut conn, mut lease) = this.put(&instance).await?;
            let keeper = this.clone();
            let kept = instance.clone();
            let leases = async move {
                loop {
                    keeper.keep_alive(&mut conn.client.clone(), lease).await;
                    tracing::warn!(id = %kept.id, "etcd lease lost or unreachable; registering again");
                    keeper.forget(&conn).await;
                    loop {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        match keeper.put(&kept).await {
                            Ok((c, l)) => {
                                (conn, lease) = (c, l);
                                tracing::info!(id = %kept.id, "registered in etcd again");
                                break;
                            }
                            Err(e) => tracing::debug!(error = %e, "etcd still unreachable"),
                        }
                    }
                }
            };
            let remover = this.clone();
            Ok(Registration::kept_alive(leases, move || {
                Box::pin(async move {
                    let conn = remover.conn().await?;
                    let key = remover.key(&instance);
                    let mut client = conn.client.clone();
                    let delete =
                        async move { client.delete(key, None).await.map_err(backend).map(drop) };
                    remover.checked(&conn, delete).await
                })
            }))
        })
    }

    fn watch(
        &self,
        service: &str,
    ) -> BoxFuture<'static, Result<watch::Receiver<Instances>, DiscoveryError>> {
        let this = self.clone();
        let service = service.to_string();
        Box::pin(async move {
            let stale = metrics::gauge!("svrkit_discovery_stale", "service" => service.clone());
            this.mirror(
                format!("{}{service}/", this.services),
                true,
                instances,
                Some(stale),
            )
            .await
        })
    }
}

impl ConfigStore for EtcdRegistry {
    fn load(&self, service: &str) -> BoxFuture<'static, Result<ConfigDoc, DiscoveryError>> {
        let (this, key) = (self.clone(), format!("{}{service}", self.config));
        Box::pin(async move {
            let conn = this.conn().await?;
            let mut client = conn.client.clone();
            let read = EtcdRegistry::read_raw(&mut client, &key, false);
            let (raw, _) = this.checked(&conn, read).await?;
            config_doc(&raw).map(|doc| (*doc).clone()).ok_or_else(|| {
                DiscoveryError::Backend(format!("unreadable config document at {key}"))
            })
        })
    }

    fn store(
        &self,
        service: &str,
        doc: ConfigDoc,
    ) -> BoxFuture<'static, Result<(), DiscoveryError>> {
        let (this, key) = (self.clone(), format!("{}{service}", self.config));
        Box::pin(async move {
            let conn = this.conn().await?;
            let value = serde_json::to_vec_pretty(&doc)?;
            let mut client = conn.client.clone();
            let put = async move {
                client
                    .put(key, value, None)
                    .await
                    .map_err(backend)
                    .map(drop)
            };
            this.checked(&conn, put).await
        })
    }

    fn watch_config(
        &self,
        service: &str,
    ) -> BoxFuture<'static, Result<watch::Receiver<std::sync::Arc<ConfigDoc>>, DiscoveryError>>
    {
        let (this, key) = (self.clone(), format!("{}{service}", self.config));
        Box::pin(async move { this.mirror(key, false, config_doc, None).await })
    }
}
