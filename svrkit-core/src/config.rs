//! Gray-release configuration: one versioned document per service, published first to a
//! gray selector, then promoted to everyone or rolled back.
//!
//! A [`ConfigDoc`] holds the stable value and, during a release, a gray value with a
//! [`Selector`]: a percentage of users (by a hash of the uid every process computes the
//! same way), a uid allow-list, or named instances. Operators change documents with
//! [`publish_gray`], [`promote`] and [`rollback`] through a [`ConfigStore`] (the same
//! embedded directory or etcd cluster that holds the service registry). Instances hold a
//! [`LiveConfig`] that follows the document without restarts; a handler asks it for the
//! value that applies to the current request with [`LiveConfig::for_request`].
//!
//! Values are opaque strings (JSON, TOML, …): svrkit versions and routes them, the
//! service parses them.

use std::sync::Arc;

use tokio::sync::watch;

use crate::BoxFuture;
use crate::context::Context;
pub use crate::selector::Selector;
use crate::store::StoreError as DiscoveryError;

/// A value in a release.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gray {
    /// Its version.
    pub version: u64,
    /// The value.
    pub value: String,
    /// Who sees it.
    pub selector: Selector,
}

/// A service's configuration document.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigDoc {
    /// Version of the stable value (0: none published yet).
    pub stable_version: u64,
    /// The value everyone sees unless selected for gray.
    pub stable: String,
    /// The release in progress, if any.
    pub gray: Option<Gray>,
}

impl ConfigDoc {
    /// The highest version in the document.
    pub fn latest_version(&self) -> u64 {
        self.gray
            .as_ref()
            .map_or(self.stable_version, |g| g.version.max(self.stable_version))
    }

    /// The `(version, value)` a request for `uid` on `instance` sees.
    pub fn resolve(&self, uid: u64, instance: &str) -> (u64, &str) {
        match &self.gray {
            Some(g) if g.selector.selects(uid, instance) => (g.version, &g.value),
            _ => (self.stable_version, &self.stable),
        }
    }
}

/// Where configuration documents live.
pub trait ConfigStore: Send + Sync + 'static {
    /// The document of `service` (empty when none was published).
    fn load(&self, service: &str) -> BoxFuture<'static, Result<ConfigDoc, DiscoveryError>>;

    /// Replaces the document of `service`.
    fn store(
        &self,
        service: &str,
        doc: ConfigDoc,
    ) -> BoxFuture<'static, Result<(), DiscoveryError>>;

    /// The document now and after every change.
    fn watch_config(
        &self,
        service: &str,
    ) -> BoxFuture<'static, Result<watch::Receiver<Arc<ConfigDoc>>, DiscoveryError>>;
}

/// Starts a release: `value` goes to the users or instances `selector` picks. Returns the
/// new version. A release already in progress is replaced.
pub async fn publish_gray(
    store: &dyn ConfigStore,
    service: &str,
    value: impl Into<String>,
    selector: Selector,
) -> Result<u64, DiscoveryError> {
    let mut doc = store.load(service).await?;
    let version = doc.latest_version() + 1;
    doc.gray = Some(Gray {
        version,
        value: value.into(),
        selector,
    });
    store.store(service, doc).await?;
    Ok(version)
}

/// Publishes `value` to everyone at once (no release). Returns the new version.
pub async fn publish_stable(
    store: &dyn ConfigStore,
    service: &str,
    value: impl Into<String>,
) -> Result<u64, DiscoveryError> {
    let mut doc = store.load(service).await?;
    let version = doc.latest_version() + 1;
    doc.stable_version = version;
    doc.stable = value.into();
    store.store(service, doc).await?;
    Ok(version)
}

/// Ends the release by giving its value to everyone. Returns the now-stable version.
pub async fn promote(store: &dyn ConfigStore, service: &str) -> Result<u64, DiscoveryError> {
    let mut doc = store.load(service).await?;
    let gray = doc
        .gray
        .take()
        .ok_or_else(|| DiscoveryError::Backend(format!("{service} has no release to promote")))?;
    doc.stable_version = gray.version;
    doc.stable = gray.value;
    store.store(service, doc).await?;
    Ok(gray.version)
}

/// Ends the release by dropping its value: everyone sees the stable value again.
pub async fn rollback(store: &dyn ConfigStore, service: &str) -> Result<u64, DiscoveryError> {
    let mut doc = store.load(service).await?;
    if doc.gray.take().is_none() {
        return Err(DiscoveryError::Backend(format!(
            "{service} has no release to roll back"
        )));
    }
    let stable = doc.stable_version;
    store.store(service, doc).await?;
    Ok(stable)
}

/// An instance's live view of its service's configuration.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    instance: Arc<str>,
    doc: watch::Receiver<Arc<ConfigDoc>>,
}

impl LiveConfig {
    /// Follows the document of `service` for the instance `instance_id`.
    pub async fn follow(
        store: &dyn ConfigStore,
        service: &str,
        instance_id: impl Into<Arc<str>>,
    ) -> Result<LiveConfig, DiscoveryError> {
        Ok(LiveConfig {
            instance: instance_id.into(),
            doc: store.watch_config(service).await?,
        })
    }

    /// The whole document now.
    pub fn document(&self) -> Arc<ConfigDoc> {
        Arc::clone(&self.doc.borrow())
    }

    /// The `(version, value)` that applies to the current request (its uid, this instance).
    pub fn for_request(&self) -> (u64, String) {
        let uid = Context::with_current(|c| c.map_or(0, Context::uid));
        let doc = self.doc.borrow();
        let (version, value) = doc.resolve(uid, &self.instance);
        (version, value.to_string())
    }

    /// The version this instance applies to requests not selected by uid: the gray version
    /// when the release names this instance, else the stable one. For `/status`.
    pub fn applied_version(&self) -> u64 {
        self.doc.borrow().resolve(0, &self.instance).0
    }

    /// Waits until the document changes.
    pub async fn changed(&mut self) -> bool {
        self.doc.changed().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_pick_users_and_instances() {
        let pct = Selector::Percent(10);
        let chosen = (1..=10_000u64).filter(|u| pct.selects(*u, "i")).count();
        assert!((800..1_200).contains(&chosen), "{chosen} of 10,000 at 10 %");
        assert!(!pct.selects(0, "i"), "anonymous requests stay stable");
        assert!(Selector::Percent(100).selects(5, "i"));
        assert!(!Selector::Percent(0).selects(5, "i"));
        let uids = Selector::Uids(vec![7, 9]);
        assert!(uids.selects(7, "x") && !uids.selects(8, "x"));
        let inst = Selector::Instances(vec!["b".into()]);
        assert!(inst.selects(1, "b") && !inst.selects(1, "a"));
    }

    #[test]
    fn a_document_resolves_per_request() {
        let doc = ConfigDoc {
            stable_version: 3,
            stable: "old".into(),
            gray: Some(Gray {
                version: 4,
                value: "new".into(),
                selector: Selector::Uids(vec![42]),
            }),
        };
        assert_eq!(doc.resolve(42, "a"), (4, "new"));
        assert_eq!(doc.resolve(41, "a"), (3, "old"));
        assert_eq!(doc.latest_version(), 4);
    }
}
