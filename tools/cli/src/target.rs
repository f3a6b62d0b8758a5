//! Where a command finds services: a fixed address, the embedded registry or etcd.

use std::path::PathBuf;
use std::sync::Arc;

use svrkit::config::ConfigStore;
use svrkit::discovery::{EmbeddedRegistry, EtcdRegistry, Registry};
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
    /// The registry as services are told it: `dir:PATH` or `etcd:URL[,URL...]`.
    #[arg(long, global = true, conflicts_with_all = ["registry_dir", "etcd"], value_parser = parse_registry)]
    pub(crate) registry: Option<RegistryKind>,
}

fn parse_registry(spec: &str) -> Result<RegistryKind, String> {
    match RegistryKind::parse(spec)? {
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
    /// The embedded registry's directory, when one was named.
    pub(crate) fn embedded_dir(&self) -> Option<PathBuf> {
        match (&self.registry, &self.registry_dir) {
            (Some(RegistryKind::Dir(dir)), _) => Some(dir.clone()),
            (None, Some(dir)) => Some(dir.clone()),
            _ => None,
        }
    }

    pub(crate) fn store(&self) -> Store {
        match &self.registry {
            Some(RegistryKind::Dir(dir)) => return Store::Embedded(EmbeddedRegistry::new(dir)),
            Some(RegistryKind::Etcd(urls)) => return Store::Etcd(EtcdRegistry::new(urls.clone())),
            Some(RegistryKind::None) | None => {}
        }
        match (&self.registry_dir, &self.etcd) {
            (_, Some(endpoint)) => Store::Etcd(EtcdRegistry::new([endpoint.clone()])),
            (Some(dir), None) => Store::Embedded(EmbeddedRegistry::new(dir)),
            (None, None) => {
                Store::Embedded(EmbeddedRegistry::new(EmbeddedRegistry::default_root()))
            }
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
