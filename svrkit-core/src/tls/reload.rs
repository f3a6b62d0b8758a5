//! A process's own certificate, replaceable while it serves: renewed certificates are
//! picked up without a restart.
//!
//! Both the server and the client configurations built from one
//! [`Credentials`](super::Credentials) ask a [`CertSlot`] for the certificate on every
//! handshake, so replacing what the slot holds changes what every *new* connection
//! presents; established connections keep theirs. [`CertSlot::watch_files`] rereads the
//! certificate and key files when either changes on disk (a supervisor or cert-manager
//! renewing them); a pair that does not load, or whose key does not match, is logged
//! and the current certificate kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::SignatureScheme;
use rustls::crypto::CryptoProvider;
use rustls::server::ClientHello;
use rustls::sign::CertifiedKey;

use super::{TlsError, chain_and_key};

/// How often [`CertSlot::watch_files`] looks at the files unless told otherwise.
pub const DEFAULT_RELOAD_PERIOD: Duration = Duration::from_secs(10);

/// The certificate and key this process presents, as a server and as a client.
#[derive(Debug)]
pub struct CertSlot {
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl CertSlot {
    /// A slot holding `cert` and `key` (PEM), signing with ring (for a configuration
    /// of one's own, such as a gateway's public HTTPS).
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<CertSlot, TlsError> {
        CertSlot::new(
            cert,
            key,
            Arc::new(rustls::crypto::ring::default_provider()),
        )
    }

    /// A slot holding `cert` and `key` (PEM), signing with `provider`.
    pub(crate) fn new(
        cert: &[u8],
        key: &[u8],
        provider: Arc<CryptoProvider>,
    ) -> Result<CertSlot, TlsError> {
        let certified = certify(cert, key, &provider)?;
        Ok(CertSlot {
            current: RwLock::new(Arc::new(certified)),
            provider,
        })
    }

    /// What new connections present now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Presents `cert` and `key` (PEM) on new connections from now on; on an error the
    /// current certificate stays.
    pub fn replace(&self, cert: &[u8], key: &[u8]) -> Result<(), TlsError> {
        let certified = certify(cert, key, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        Ok(())
    }

    /// Reads `cert` and `key` from disk and presents them, as [`CertSlot::replace`].
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| TlsError::Pem {
                what: path.display().to_string(),
                message: e.to_string(),
            })
        };
        self.replace(&read(cert)?, &read(key)?)
    }

    /// Rereads `cert` and `key` every `period` when either file changed (its modification
    /// time or size), for as long as the slot is in use. Outside a Tokio runtime it
    /// cannot, and says so in the log.
    pub fn watch_files(self: &Arc<Self>, cert: PathBuf, key: PathBuf, period: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(cert = %cert.display(), "no runtime: a renewed certificate will not be reloaded");
            return;
        };
        let slot = Arc::downgrade(self);
        let stamp = move || (file_stamp(&cert), file_stamp(&key));
        runtime.spawn(async move {
            let mut seen = stamp();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(slot) = slot.upgrade() else {
                    return;
                };
                let now = stamp();
                if now == seen {
                    continue;
                }
                seen = now;
                let (cert, key) = (&seen.0.0, &seen.1.0);
                match slot.reload(cert, key) {
                    Ok(()) => tracing::info!(cert = %cert.display(), "certificate reloaded"),
                    Err(e) => tracing::warn!(
                        cert = %cert.display(),
                        error = %e,
                        "a changed certificate did not load; keeping the current one"
                    ),
                }
            }
        });
    }
}

/// A file's path with its modification time and size, to notice a rewrite.
fn file_stamp(path: &Path) -> (PathBuf, Option<(SystemTime, u64)>) {
    let meta = std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())));
    (path.to_path_buf(), meta)
}

/// A chain and key (PEM) whose key matches the certificate.
fn certify(cert: &[u8], key: &[u8], provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let (chain, key) = chain_and_key(cert, key)?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Config(e.to_string()))
}

impl rustls::server::ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for CertSlot {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(all(test, feature = "mint"))]
mod tests {
    use super::*;
    use crate::tls::mint::ClusterCa;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn a_replacement_is_presented_and_a_bad_one_keeps_the_current() {
        let ca = ClusterCa::new("wx").expect("ca");
        let (one, two) = (ca.issue("one").expect("one"), ca.issue("two").expect("two"));
        let slot = CertSlot::new(one.cert_pem.as_bytes(), one.key_pem.as_bytes(), provider())
            .expect("slot");
        let names = |slot: &CertSlot| crate::tls::identity_of(slot.current().cert[0].as_ref());
        assert_eq!(names(&slot).as_deref(), Some("one"));
        slot.replace(two.cert_pem.as_bytes(), two.key_pem.as_bytes())
            .expect("replaced");
        assert_eq!(names(&slot).as_deref(), Some("two"));
        // One's certificate with two's key: refused, two stays.
        let mismatched = slot.replace(one.cert_pem.as_bytes(), two.key_pem.as_bytes());
        assert!(mismatched.is_err(), "a key that does not match was taken");
        assert!(slot.replace(b"junk", b"junk").is_err());
        assert_eq!(names(&slot).as_deref(), Some("two"));
    }
}
