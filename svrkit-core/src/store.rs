//! What registries and configuration stores share: the error of a store operation.
//!
//! The embedded directory and etcd each serve both as a service registry
//! ([`crate::discovery`]) and as a configuration store ([`crate::config`]); both modules
//! name this error (as `DiscoveryError` in discovery), and neither depends on the other
//! for it.

/// Why a registry or configuration store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the registry's storage failed.
    #[error("registry storage: {0}")]
    Io(#[from] std::io::Error),
    /// A record could not be encoded or decoded.
    #[error("registry record: {0}")]
    Record(#[from] serde_json::Error),
    /// The registry's backend refused or could not be reached.
    #[error("registry backend: {0}")]
    Backend(String),
}
