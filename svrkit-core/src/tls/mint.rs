//! Minting certificates: a cluster CA and a certificate per service, as `svrkit up` does
//! on a cluster's first start (feature `mint`).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use std::time::{Duration, SystemTime};

use super::{CLUSTER_SERVER_NAME, TlsError, spiffe_uri};

/// How long a certificate from [`ClusterCa::issue`] is valid.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long a cluster CA made by [`ClusterCa::new`] is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far back a new certificate's validity starts, for clocks a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

fn config_error(e: rcgen::Error) -> TlsError {
    TlsError::Config(e.to_string())
}

/// A cluster's certificate authority.
pub struct ClusterCa {
    cluster: String,
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (keep it 0600).
    pub key_pem: String,
    /// When it stops being valid.
    pub not_after: SystemTime,
}

/// The CA certificate's fields (the same every time, so a reloaded CA issues
/// certificates naming the saved one).
fn ca_params(cluster: &str) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(config_error)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("svrkit cluster {cluster} CA"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

impl ClusterCa {
    /// A new CA for `cluster` (ECDSA P-256).
    pub fn new(cluster: &str) -> Result<ClusterCa, TlsError> {
        let key = KeyPair::generate().map_err(config_error)?;
        let mut params = ca_params(cluster)?;
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_VALIDITY).into();
        let cert = params.self_signed(&key).map_err(config_error)?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        ClusterCa::load(cluster, &cert_pem, &key_pem)
    }

    /// The CA saved as PEM by [`ClusterCa::cert_pem`] and [`ClusterCa::key_pem`] (the
    /// certificates it issues name the CA by the subject `new` gave it).
    pub fn load(cluster: &str, cert_pem: &str, key_pem: &str) -> Result<ClusterCa, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(config_error)?;
        let issuer = Issuer::new(ca_params(cluster)?, key);
        Ok(ClusterCa {
            cluster: cluster.to_string(),
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    /// The CA certificate (what every member trusts).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (keep it 0600).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate naming `service` (`spiffe://CLUSTER/service/SERVICE`), for both
    /// serving and calling, valid for [`DEFAULT_VALIDITY`].
    pub fn issue(&self, service: &str) -> Result<Issued, TlsError> {
        self.issue_for(service, DEFAULT_VALIDITY)
    }

    /// As [`ClusterCa::issue`], valid for `validity` from now (short-lived instance
    /// certificates, renewed before they end).
    pub fn issue_for(&self, service: &str, validity: Duration) -> Result<Issued, TlsError> {
        let now = SystemTime::now();
        self.issue_between(&self.cluster, service, now - BACKDATE, now + validity)
    }

    /// A certificate naming `service` of another trust domain, `cluster`, signed by this
    /// CA (one CA shared by several clusters, or a test that it does not blur them).
    pub fn issue_in(&self, cluster: &str, service: &str) -> Result<Issued, TlsError> {
        let now = SystemTime::now();
        self.issue_between(cluster, service, now - BACKDATE, now + DEFAULT_VALIDITY)
    }

    /// As [`ClusterCa::issue_for`], also naming `hosts` (DNS names or IP addresses):
    /// for a gateway's public HTTPS or an etcd member, which clients reach by such names.
    pub fn issue_for_hosts(
        &self,
        service: &str,
        hosts: &[String],
        validity: Duration,
    ) -> Result<Issued, TlsError> {
        let now = SystemTime::now();
        self.issue_full(
            &self.cluster,
            service,
            hosts,
            now - BACKDATE,
            now + validity,
        )
    }

    /// A certificate naming `service` of `cluster`, valid from `not_before` to
    /// `not_after` (tests make expired and not-yet-valid ones with it).
    pub fn issue_between(
        &self,
        cluster: &str,
        service: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, TlsError> {
        self.issue_full(cluster, service, &[], not_before, not_after)
    }

    fn issue_full(
        &self,
        cluster: &str,
        service: &str,
        hosts: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, TlsError> {
        let mut params =
            CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_string()]).map_err(config_error)?;
        for host in hosts {
            let san = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.clone().try_into().map_err(config_error)?),
            };
            params.subject_alt_names.push(san);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, service.to_string());
        let uri = spiffe_uri(cluster, service)
            .try_into()
            .map_err(config_error)?;
        params.subject_alt_names.push(SanType::URI(uri));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let key = KeyPair::generate().map_err(config_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(config_error)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }
}
