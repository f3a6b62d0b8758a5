//! Where a command finds services: a fixed address, the embedded registry or etcd.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use serde_json::Value;
use svrkit::config::ConfigStore;
use svrkit::discovery::{EmbeddedRegistry, EtcdRegistry, Instance, Registry};
use svrkit::launch::RegistryKind;

/// Registry options shared by the commands.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RegistryArgs {
    /// The embedded registry's directory (default: $SVRKIT_HOME/registry or .svrkit/registry).
    #[arg(long, global = true)]
    pub(crate) registry_dir: Option<PathBuf>,
    /// Use the etcd cluster at this endpoint instead (http://127.0.0.1:2379).
    #[arg(long, global = true, conflicts_with = "registry_dir")]
    pub(crate) etcd: Option<String>,
    /// With `--etcd`: the svrkit cluster whose keys to read (`/svrkit/CLUSTER/…`; `svrkit
    /// up` names it after the manifest's `[tls] cluster`, `svrkit` by default).
    #[arg(long, global = true, requires = "etcd")]
    pub(crate) cluster: Option<String>,
    /// The registry as services are told it: `dir:PATH`, `etcd:URL[,URL...]` or
    /// `etcd@CLUSTER:URL[,URL...]`.
    #[arg(long, global = true, conflicts_with_all = ["registry_dir", "etcd"], value_parser = parse_registry)]
    pub(crate) registry: Option<RegistryKind>,
}

fn parse_registry(spec: &str) -> Result<RegistryKind, String> {
    match RegistryKind::parse(spec).map_err(|e| e.to_string())? {
        RegistryKind::None => Err("`none` names no registry to read".to_string()),
        kind => Ok(kind),
    }
}

/// The chosen registry, as each role it plays.
pub(crate) enum Store {
    Embedded(EmbeddedRegistry),
    Etcd(EtcdRegistry),
}

impl RegistryArgs {
    /// Every instance in the registry, of `service` or of all services.
    pub(crate) async fn instances(&self, service: Option<&str>) -> anyhow::Result<Vec<Instance>> {
        Ok(match self.store() {
            Store::Embedded(registry) => {
                let services = match service {
                    Some(service) => vec![service.to_string()],
                    None => registry.services()?,
                };
                let mut all = Vec::new();
                for service in services {
                    all.extend(registry.live(&service)?);
                }
                all
            }
            Store::Etcd(registry) => registry
                .all()
                .await
                .map_err(|e| anyhow!("{e}"))?
                .into_iter()
                .filter(|i| service.is_none_or(|s| s == i.service))
                .collect(),
        })
    }

    /// The embedded registry's directory, when one was named.
    pub(crate) fn embedded_dir(&self) -> Option<PathBuf> {
        match (&self.registry, &self.registry_dir) {
            (Some(RegistryKind::Dir(dir)), _) => Some(dir.clone()),
            (None, Some(dir)) => Some(dir.clone()),
            _ => None,
        }
    }

    pub(crate) fn store(&self) -> Store {
        match self.store_plain() {
            // TLS and a user from SVRKIT_ETCD_*, as the services have them.
            Store::Etcd(registry) => match svrkit::launch::etcd_from_env(registry.clone()) {
                Ok(registry) => Store::Etcd(registry),
                Err(e) => {
                    eprintln!("warning: {e}; reading etcd without it");
                    Store::Etcd(registry)
                }
            },
            embedded => embedded,
        }
    }

    fn store_plain(&self) -> Store {
        match &self.registry {
            Some(RegistryKind::Dir(dir)) => return Store::Embedded(EmbeddedRegistry::new(dir)),
            Some(RegistryKind::Etcd(urls)) => return Store::Etcd(EtcdRegistry::new(urls.clone())),
            Some(RegistryKind::EtcdIn { cluster, urls }) => {
                let registry = EtcdRegistry::new(urls.clone());
                match registry.clone().cluster(cluster) {
                    Ok(named) => return Store::Etcd(named),
                    Err(e) => {
                        eprintln!("warning: {e}; using the etcd registry without a cluster");
                        return Store::Etcd(registry);
                    }
                }
            }
            Some(RegistryKind::None) | None => {}
        }
        match (&self.registry_dir, &self.etcd) {
            (_, Some(endpoint)) => {
                let registry = EtcdRegistry::new([endpoint.clone()]);
                match self.cluster.as_deref().map(|c| registry.clone().cluster(c)) {
                    Some(Ok(named)) => Store::Etcd(named),
                    Some(Err(e)) => {
                        eprintln!("warning: {e}; reading etcd without a cluster");
                        Store::Etcd(registry)
                    }
                    None => Store::Etcd(registry),
                }
            }
            (Some(dir), None) => Store::Embedded(EmbeddedRegistry::new(dir)),
            (None, None) => match local_deployment_etcd() {
                // A deployment `svrkit up` runs here over etcd (on one host of several):
                // its registry, as its instances reach it.
                Some(registry) => Store::Etcd(registry),
                None => Store::Embedded(EmbeddedRegistry::new(EmbeddedRegistry::default_root())),
            },
        }
    }
}

impl Store {
    pub(crate) fn registry(&self) -> Arc<dyn Registry> {
        match self {
            Store::Embedded(r) => Arc::new(r.clone()),
            Store::Etcd(r) => Arc::new(r.clone()),
        }
    }

    pub(crate) fn config(&self) -> Arc<dyn ConfigStore> {
        match self {
            Store::Embedded(r) => Arc::new(r.clone()),
            Store::Etcd(r) => Arc::new(r.clone()),
        }
    }
}

/// How an instance looks from its admin endpoint.
pub(crate) fn health(instance: &Instance, status: Option<&Value>) -> &'static str {
    match (&instance.admin, status) {
        (None, _) => "unknown",
        (Some(_), None) => "down",
        (Some(_), Some(s)) if s["ready"] == true => "ready",
        (Some(_), Some(_)) => "not ready",
    }
}

/// The etcd registry of the deployment in the default state directory (`$SVRKIT_HOME`,
/// else `.svrkit`), when one is there and uses etcd.
fn local_deployment_etcd() -> Option<EtcdRegistry> {
    let dir = std::env::var_os("SVRKIT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".svrkit"));
    let state = crate::cluster::read_state(&dir).ok()??;
    match crate::cluster::etcd_of(&state)? {
        Ok(registry) => Some(registry),
        Err(e) => {
            eprintln!("warning: the deployment in {}: {e:#}", dir.display());
            None
        }
    }
}
