//! The etcd registry, for clusters.
//!
//! Records live under `/svrkit/services/SERVICE/INSTANCE_ID` as JSON, attached to a lease
//! the instance keeps alive; when the instance dies the lease expires and etcd deletes the
//! record. Registration survives etcd trouble: if the keep-alive stream breaks or the
//! lease is lost (an etcd restart with lost data, a long partition), the instance grants a
//! new lease and writes its record again, retrying until etcd answers.
//!
//! A watch reads the prefix, then watches from the next revision, so no change between
//! the two is lost. When etcd becomes unreachable the watch keeps serving the last known
//! instances, logs it, and sets `svrkit_discovery_stale{service}` to 1; on reconnection it
//! reads the prefix afresh and resumes watching.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::sync::watch;

use super::{DiscoveryError, Instance, Instances, Registration, Registry};
use crate::BoxFuture;
use crate::config::{ConfigDoc, ConfigStore};

/// Key prefix of instance records.
pub const PREFIX: &str = "/svrkit/services/";
/// Key prefix of configuration documents.
pub const CONFIG_PREFIX: &str = "/svrkit/config/";
/// Lease time-to-live of a registration, in seconds (3).
pub const DEFAULT_LEASE_TTL_SECS: i64 = 3;
/// Pause between attempts to reach etcd again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A registry in an etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdRegistry {
    endpoints: Vec<String>,
    lease_ttl: i64,
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
        }
    }

    /// Every registered instance of every service.
    pub async fn all(&self) -> Result<Vec<Instance>, DiscoveryError> {
        let mut client = self.client().await?;
        Ok(EtcdRegistry::read(&mut client, PREFIX)
            .await?
            .0
            .into_values()
            .collect())
    }

    /// Sets the lease time-to-live in seconds: how long a dead instance stays listed.
    pub fn lease_ttl(mut self, secs: i64) -> EtcdRegistry {
        self.lease_ttl = secs.max(1);
        self
    }

    async fn client(&self) -> Result<Client, DiscoveryError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(2));
        Client::connect(&self.endpoints, Some(options))
            .await
            .map_err(backend)
    }

    fn key(instance: &Instance) -> String {
        format!("{PREFIX}{}/{}", instance.service, instance.id)
    }

    /// Grants a lease and writes the record under it.
    async fn put(&self, instance: &Instance) -> Result<(Client, i64), DiscoveryError> {
        let mut client = self.client().await?;
        let lease = client
            .lease_grant(self.lease_ttl, None)
            .await
            .map_err(backend)?
            .id();
        let value = serde_json::to_vec(instance)?;
        client
            .put(
                Self::key(instance),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(backend)?;
        Ok((client, lease))
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

    /// The live instances under `prefix` and the revision they were read at.
    async fn read(
        client: &mut Client,
        prefix: &str,
    ) -> Result<(BTreeMap<String, Instance>, i64), DiscoveryError> {
        let response = client
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(backend)?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut live = BTreeMap::new();
        for kv in response.kvs() {
            match serde_json::from_slice::<Instance>(kv.value()) {
                Ok(instance) => {
                    live.insert(String::from_utf8_lossy(kv.key()).into_owned(), instance);
                }
                Err(e) => tracing::warn!(error = %e, "unreadable instance record in etcd"),
            }
        }
        Ok((live, revision))
    }
}

fn publish(tx: &watch::Sender<Instances>, live: &BTreeMap<String, Instance>) {
    super::publish_if_changed(tx, live.values().cloned().collect::<Instances>());
}

impl Registry for EtcdRegistry {
    fn register(
        &self,
        instance: Instance,
    ) -> BoxFuture<'static, Result<Registration, DiscoveryError>> {
        let this = self.clone();
        Box::pin(async move {
            let (mut client, mut lease) = this.put(&instance).await?;
            let keeper = this.clone();
            let kept = instance.clone();
            let keepalive = tokio::spawn(async move {
                loop {
                    keeper.keep_alive(&mut client, lease).await;
                    tracing::warn!(id = %kept.id, "etcd lease lost or unreachable; registering again");
                    loop {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        match keeper.put(&kept).await {
                            Ok((c, l)) => {
                                (client, lease) = (c, l);
                                tracing::info!(id = %kept.id, "registered in etcd again");
                                break;
                            }
                            Err(e) => tracing::debug!(error = %e, "etcd still unreachable"),
                        }
                    }
                }
            });
            let remover = this.clone();
            Ok(Registration::new(
                Some(keepalive.abort_handle()),
                move || {
                    Box::pin(async move {
                        let mut client = remover.client().await?;
                        client
                            .delete(EtcdRegistry::key(&instance), None)
                            .await
                            .map_err(backend)?;
                        Ok(())
                    })
                },
            ))
        })
    }

    fn watch(
        &self,
        service: &str,
    ) -> BoxFuture<'static, Result<watch::Receiver<Instances>, DiscoveryError>> {
        let this = self.clone();
        let service = service.to_string();
        Box::pin(async move {
            let prefix = format!("{PREFIX}{service}/");
            let mut client = this.client().await?;
            let (mut live, mut revision) = EtcdRegistry::read(&mut client, &prefix).await?;
            let (tx, rx) = watch::channel(live.values().cloned().collect::<Instances>());
            let stale = metrics::gauge!("svrkit_discovery_stale", "service" => service.clone());
            stale.set(0.0);
            tokio::spawn(async move {
                loop {
                    let options = WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1);
                    if let Ok(mut stream) = client.watch(prefix.as_str(), Some(options)).await {
                        while let Ok(Some(response)) = stream.message().await {
                            if response.canceled() {
                                break;
                            }
                            for event in response.events() {
                                let Some(kv) = event.kv() else { continue };
                                let key = String::from_utf8_lossy(kv.key()).into_owned();
                                revision = revision.max(kv.mod_revision());
                                match event.event_type() {
                                    EventType::Put => {
                                        match serde_json::from_slice::<Instance>(kv.value()) {
                                            Ok(instance) => {
                                                live.insert(key, instance);
                                            }
                                            Err(e) => {
                                                tracing::warn!(error = %e, "unreadable instance record in etcd")
                                            }
                                        }
                                    }
                                    EventType::Delete => {
                                        live.remove(&key);
                                    }
                                }
                            }
                            if let Some(header) = response.header() {
                                revision = revision.max(header.revision());
                            }
                            publish(&tx, &live);
                        }
                    }
                    if tx.is_closed() {
                        return;
                    }
                    // etcd is gone: keep serving what we knew, say so, and resync when back.
                    tracing::warn!(%service, instances = live.len(), "etcd unreachable; serving the last known instances");
                    stale.set(1.0);
                    loop {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        if tx.is_closed() {
                            return;
                        }
                        let Ok(mut fresh) = this.client().await else {
                            continue;
                        };
                        if let Ok((now, rev)) = EtcdRegistry::read(&mut fresh, &prefix).await {
                            (live, revision, client) = (now, rev, fresh);
                            publish(&tx, &live);
                            stale.set(0.0);
                            tracing::info!(%service, instances = live.len(), "etcd reachable again");
                            break;
                        }
                    }
                }
            });
            Ok(rx)
        })
    }
}

impl EtcdRegistry {
    async fn read_config(
        client: &mut Client,
        key: &str,
    ) -> Result<(ConfigDoc, i64), DiscoveryError> {
        let response = client.get(key, None).await.map_err(backend)?;
        let revision = response.header().map_or(0, |h| h.revision());
        let doc = match response.kvs().first() {
            Some(kv) => serde_json::from_slice(kv.value())?,
            None => ConfigDoc::default(),
        };
        Ok((doc, revision))
    }
}

fn publish_doc(tx: &watch::Sender<std::sync::Arc<ConfigDoc>>, now: ConfigDoc) {
    super::publish_if_changed(tx, std::sync::Arc::new(now));
}

impl ConfigStore for EtcdRegistry {
    fn load(&self, service: &str) -> BoxFuture<'static, Result<ConfigDoc, DiscoveryError>> {
        let (this, key) = (self.clone(), format!("{CONFIG_PREFIX}{service}"));
        Box::pin(async move {
            let mut client = this.client().await?;
            Ok(EtcdRegistry::read_config(&mut client, &key).await?.0)
        })
    }

    fn store(
        &self,
        service: &str,
        doc: ConfigDoc,
    ) -> BoxFuture<'static, Result<(), DiscoveryError>> {
        let (this, key) = (self.clone(), format!("{CONFIG_PREFIX}{service}"));
        Box::pin(async move {
            let mut client = this.client().await?;
            client
                .put(key, serde_json::to_vec_pretty(&doc)?, None)
                .await
                .map_err(backend)?;
            Ok(())
        })
    }

    fn watch_config(
        &self,
        service: &str,
    ) -> BoxFuture<'static, Result<watch::Receiver<std::sync::Arc<ConfigDoc>>, DiscoveryError>>
    {
        let (this, key) = (self.clone(), format!("{CONFIG_PREFIX}{service}"));
        Box::pin(async move {
            let mut client = this.client().await?;
            let (doc, mut revision) = EtcdRegistry::read_config(&mut client, &key).await?;
            let (tx, rx) = watch::channel(std::sync::Arc::new(doc));
            tokio::spawn(async move {
                loop {
                    let options = WatchOptions::new().with_start_revision(revision + 1);
                    if let Ok(mut stream) = client.watch(key.as_str(), Some(options)).await {
                        while let Ok(Some(response)) = stream.message().await {
                            if response.canceled() {
                                break;
                            }
                            for event in response.events() {
                                let Some(kv) = event.kv() else { continue };
                                revision = revision.max(kv.mod_revision());
                                let now = match event.event_type() {
                                    EventType::Put => match serde_json::from_slice(kv.value()) {
                                        Ok(doc) => doc,
                                        Err(e) => {
                                            tracing::warn!(error = %e, "unreadable config document in etcd");
                                            continue;
                                        }
                                    },
                                    EventType::Delete => ConfigDoc::default(),
                                };
                                publish_doc(&tx, now);
                            }
                        }
                    }
                    if tx.is_closed() {
                        return;
                    }
                    tracing::warn!(%key, "etcd unreachable; keeping the last config document");
                    loop {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        if tx.is_closed() {
                            return;
                        }
                        let Ok(mut fresh) = this.client().await else {
                            continue;
                        };
                        if let Ok((doc, rev)) = EtcdRegistry::read_config(&mut fresh, &key).await {
                            (revision, client) = (rev, fresh);
                            publish_doc(&tx, doc);
                            break;
                        }
                    }
                }
            });
            Ok(rx)
        })
    }
}
