//! Mutual TLS between services: TLS 1.3 (rustls, ring), both sides presenting a
//! certificate from the cluster's CA that names their service with a SPIFFE-style URI,
//! `spiffe://CLUSTER/service/NAME`.
//!
//! A server built with [`crate::Server::tls`] accepts only clients holding such a
//! certificate, and hands each request's handler the client's verified service name
//! ([`crate::Context::peer_identity`]), which call policies ([`crate::policy`]) check
//! before a request body is decoded. Clients verify the server's certificate against
//! the same CA. Certificates carry the DNS name [`CLUSTER_SERVER_NAME`] for the
//! handshake's name check; identity is the URI, not an address, since instances move.
//!
//! A process sets its client credentials once ([`set_process_client`]; `svrkit::launch`
//! does it from `SVRKIT_TLS_*`), and every channel it builds afterwards uses them.
//! `mint` (feature `mint`) makes a cluster CA and per-service certificates.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

#[cfg(feature = "mint")]
pub mod mint;
pub mod reload;
mod san;

pub use reload::CertSlot;

pub use san::uri_sans;

/// The DNS name every svrkit certificate carries and every client expects.
pub const CLUSTER_SERVER_NAME: &str = "svrkit.cluster";

/// The URI naming `service` in `cluster`.
pub fn spiffe_uri(cluster: &str, service: &str) -> String {
    format!("spiffe://{cluster}/service/{service}")
}

/// The service a certificate (DER) names, from its first `spiffe://…/service/NAME` URI.
pub fn identity_of(der: &[u8]) -> Option<String> {
    spiffe_id_of(der).map(|(_, service)| service)
}

/// The trust domain (cluster) and service a certificate (DER) names, from its first
/// `spiffe://CLUSTER/service/NAME` URI.
pub fn spiffe_id_of(der: &[u8]) -> Option<(String, String)> {
    uri_sans(der).into_iter().find_map(|uri| {
        let rest = uri.strip_prefix("spiffe://")?;
        let (cluster, service) = rest.split_once("/service/")?;
        (!cluster.is_empty() && !service.is_empty() && !service.contains('/'))
            .then(|| (cluster.to_string(), service.to_string()))
    })
}

/// Whether `bytes` start like a TLS record (a handshake or an alert), which is what a
/// plain svrkit peer receives from a TLS one.
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, ..])
}

/// Why credentials could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file or text could not be read or parsed.
    #[error("reading {what}: {message}")]
    Pem {
        /// Which input.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn pem_error(what: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// A certificate chain and its private key from PEM (at least one certificate).
pub fn chain_and_key(
    cert: &[u8],
    key: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("the certificate", e))?;
    if chain.is_empty() {
        return Err(pem_error("the certificate", "no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| pem_error("the key", e))?;
    Ok((chain, key))
}

/// A service's credentials: its certificate chain and private key (in a [`CertSlot`],
/// replaceable while in use), and the CA it trusts.
#[derive(Debug)]
pub struct Credentials {
    slot: Arc<CertSlot>,
    roots: Arc<RootCertStore>,
}

impl Credentials {
    /// From PEM text: the certificate (chain), its key and the cluster CA certificate.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Credentials, TlsError> {
        let slot = CertSlot::new(cert, key, Credentials::provider())?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca) {
            let ca = ca.map_err(|e| pem_error("the CA certificate", e))?;
            roots
                .add(ca)
                .map_err(|e| pem_error("the CA certificate", e))?;
        }
        if roots.is_empty() {
            return Err(pem_error("the CA certificate", "no CERTIFICATE block"));
        }
        Ok(Credentials {
            slot: Arc::new(slot),
            roots: Arc::new(roots),
        })
    }

    /// Where this process's certificate lives: replace it there and every new
    /// connection, served or made with configurations built from these credentials,
    /// presents the new one ([`CertSlot::watch_files`] follows renewed files).
    pub fn slot(&self) -> &Arc<CertSlot> {
        &self.slot
    }

    /// From PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<Credentials, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| pem_error(&path.display().to_string(), e))
        };
        Credentials::from_pem(&read(cert)?, &read(key)?, &read(ca)?)
    }

    /// The service this certificate names, if it names one.
    pub fn identity(&self) -> Option<String> {
        self.slot
            .current()
            .cert
            .first()
            .and_then(|c| identity_of(c.as_ref()))
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// The server side: TLS 1.3 only, client certificates from the CA required. A
    /// client's identity counts only in this certificate's own trust domain (a CA shared
    /// by several clusters still cannot make one cluster's service another's).
    pub fn server(&self) -> Result<ServerTls, TlsError> {
        let provider = Credentials::provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&self.roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(
                Arc::clone(&self.slot) as Arc<dyn rustls::server::ResolvesServerCert>
            );
        // A client offering h2 speaks gRPC ([`crate::grpc`]); svrkit's own clients offer
        // no protocol, and get none.
        config.alpn_protocols = vec![b"h2".to_vec()];
        // A renewed certificate is of the same cluster: the trust domain is fixed here.
        let trust_domain = self
            .slot
            .current()
            .cert
            .first()
            .and_then(|c| spiffe_id_of(c.as_ref()))
            .map(|(cluster, _)| Arc::<str>::from(cluster));
        Ok(ServerTls {
            config: Arc::new(config),
            trust_domain,
        })
    }

    /// The client side: TLS 1.3 only, the server verified against the CA, this
    /// certificate presented.
    pub fn client(&self) -> Result<ClientTls, TlsError> {
        let config = rustls::ClientConfig::builder_with_provider(Credentials::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(Arc::clone(&self.roots))
            .with_client_cert_resolver(
                Arc::clone(&self.slot) as Arc<dyn rustls::client::ResolvesClientCert>
            );
        Ok(ClientTls(Arc::new(config)))
    }
}

/// A server's TLS settings (cheap to clone).
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    /// The cluster of the server's own certificate; peers must be of the same one.
    trust_domain: Option<Arc<str>>,
}

impl ServerTls {
    pub(crate) fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.config)
    }

    /// The service a client's certificate (DER) names, when it names one in this
    /// server's trust domain; `None` otherwise (its calls then carry no identity, and a
    /// call policy refuses them).
    pub fn peer_identity(&self, der: &[u8]) -> Option<String> {
        let (cluster, service) = spiffe_id_of(der)?;
        match &self.trust_domain {
            Some(ours) if **ours != *cluster => {
                tracing::warn!(
                    peer_cluster = %cluster,
                    cluster = %ours,
                    service,
                    "a certificate of another trust domain: its identity is not accepted"
                );
                None
            }
            _ => Some(service),
        }
    }
}

/// A client's TLS settings (cheap to clone).
#[derive(Debug, Clone)]
pub struct ClientTls(Arc<rustls::ClientConfig>);

impl ClientTls {
    pub(crate) fn config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.0)
    }

    /// The same settings offering ALPN `h2`: what a gRPC connection presents.
    pub(crate) fn with_h2(&self) -> ClientTls {
        let mut config = (*self.0).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        ClientTls(Arc::new(config))
    }

    pub(crate) fn server_name(&self) -> ServerName<'static> {
        ServerName::DnsName(
            rustls::pki_types::DnsName::try_from(CLUSTER_SERVER_NAME)
                .unwrap_or_else(|_| unreachable!("a valid DNS name"))
                .to_owned(),
        )
    }
}

static PROCESS_CLIENT: OnceLock<ClientTls> = OnceLock::new();

/// Sets the credentials every channel of this process uses from now on, unless built
/// with its own ([`crate::ChannelBuilder::tls`]). Only the first call counts; returns
/// whether this one did.
pub fn set_process_client(tls: ClientTls) -> bool {
    PROCESS_CLIENT.set(tls).is_ok()
}

/// The process's client credentials, if set.
pub(crate) fn process_client() -> Option<ClientTls> {
    PROCESS_CLIENT.get().cloned()
}
