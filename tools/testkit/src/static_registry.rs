//! A registry that is a list in memory, for tests — written against svrkit's public API
//! only, as any third-party registry would be (see `svrkit::discovery`).

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use svrkit::BoxFuture;
use svrkit::discovery::{DiscoveryError, Instance, Instances, Registration, Registry, follow};

/// Instances held in memory by this process; watches see registrations at once.
#[derive(Debug, Clone, Default)]
pub struct StaticRegistry {
    inner: Arc<Mutex<Vec<Instance>>>,
    changes: Arc<watch::Sender<u64>>,
}

impl StaticRegistry {
    /// A registry holding `instances`.
    pub fn new(instances: impl IntoIterator<Item = Instance>) -> StaticRegistry {
        let (tx, _) = watch::channel(0);
        StaticRegistry {
            inner: Arc::new(Mutex::new(instances.into_iter().collect())),
            changes: Arc::new(tx),
        }
    }

    fn list(&self, service: &str) -> Instances {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|i| i.service == service)
            .cloned()
            .collect()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

impl Registry for StaticRegistry {
    fn register(
        &self,
        instance: Instance,
    ) -> BoxFuture<'static, Result<Registration, DiscoveryError>> {
        let this = self.clone();
        Box::pin(async move {
            let id = instance.id.clone();
            this.inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(instance);
            this.changed();
            Ok(Registration::new(None, move || {
                Box::pin(async move {
                    this.inner
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .retain(|i| i.id != id);
                    this.changed();
                    Ok(())
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
            // Shared with each read `follow` starts, which waits for the next change.
            let changes = Arc::new(tokio::sync::Mutex::new(this.changes.subscribe()));
            let first = this.list(&service);
            Ok(follow(first, move || {
                let changes = Arc::clone(&changes);
                let (registry, name) = (this.clone(), service.clone());
                async move {
                    let changed = changes.lock().await.changed().await;
                    match changed {
                        Ok(()) => Some(registry.list(&name)),
                        // The registry is gone: nothing will change again.
                        Err(_) => std::future::pending().await,
                    }
                }
            }))
        })
    }
}
