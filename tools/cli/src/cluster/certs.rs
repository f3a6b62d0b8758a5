//! The cluster's certificates: a CA made on the first `svrkit up` (in `STATE/tls/`, or
//! the manifest's `[tls] ca_dir`), a certificate per instance naming its service
//! (`spiffe://CLUSTER/service/NAME`), and the operator's, which `svrkit call` presents.
//! Keys are written 0600; existing files are reused, so restarts keep their identity.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use svrkit::tls::Credentials;
use svrkit::tls::mint::ClusterCa;

/// The identity `svrkit call` and other operator tools present.
pub(crate) const OPERATOR: &str = "operator";

/// A cluster CA and the directory its certificates live in.
pub(crate) struct ClusterCerts {
    dir: PathBuf,
    ca: ClusterCa,
    /// Whether gateways serve HTTPS with their certificate too.
    edge: bool,
}

impl std::fmt::Debug for ClusterCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCerts")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Writes `contents` to `path` readable by the owner only (a new file).
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

impl ClusterCerts {
    /// Opens the CA in `dir`, making it first if there is none.
    pub(crate) fn open(dir: &Path, cluster: &str, edge: bool) -> anyhow::Result<ClusterCerts> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let ca = if cert.exists() && key.exists() {
            let read = |p: &Path| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            ClusterCa::load(cluster, &read(&cert)?, &read(&key)?)?
        } else {
            let ca = ClusterCa::new(cluster)?;
            write_private(&key, ca.key_pem())?;
            std::fs::write(&cert, ca.cert_pem())
                .with_context(|| format!("writing {}", cert.display()))?;
            ca
        };
        Ok(ClusterCerts {
            dir: dir.to_path_buf(),
            ca,
            edge,
        })
    }

    /// The CA certificate's file.
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The certificate and key files of `name` (an instance id), naming `service`; made
    /// if missing.
    pub(crate) fn ensure(&self, service: &str, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (cert, key) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        if !(cert.exists() && key.exists()) {
            let issued = self.ca.issue(service)?;
            write_private(&key, &issued.key_pem)?;
            std::fs::write(&cert, &issued.cert_pem)
                .with_context(|| format!("writing {}", cert.display()))?;
        }
        Ok((cert, key))
    }

    /// The `SVRKIT_TLS_*` environment of instance `id` of `service`.
    pub(crate) fn env(&self, service: &str, id: &str) -> anyhow::Result<Vec<(String, String)>> {
        let (cert, key) = self.ensure(service, id)?;
        let mut env = vec![
            ("SVRKIT_TLS_CERT".into(), cert.display().to_string()),
            ("SVRKIT_TLS_KEY".into(), key.display().to_string()),
            ("SVRKIT_TLS_CA".into(), self.ca_file().display().to_string()),
        ];
        if self.edge {
            env.push(("WX_TLS_CERT".into(), cert.display().to_string()));
            env.push(("WX_TLS_KEY".into(), key.display().to_string()));
        }
        Ok(env)
    }
}

/// The operator's credentials of the deployment whose certificates are in `dir`, if any.
pub(crate) fn operator(dir: &Path) -> anyhow::Result<Option<Credentials>> {
    let (cert, key, ca) = (
        dir.join(format!("{OPERATOR}.crt")),
        dir.join(format!("{OPERATOR}.key")),
        dir.join("ca.crt"),
    );
    if !(cert.exists() && key.exists() && ca.exists()) {
        return Ok(None);
    }
    Ok(Some(Credentials::from_pem_files(&cert, &key, &ca)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_ca_is_made_once_and_keys_are_private() {
        let dir = std::env::temp_dir().join(format!("svrkit-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let certs = ClusterCerts::open(&dir, "test", false).expect("CA");
        let (cert, key) = certs.ensure("account", "account-1").expect("issued");
        let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ca_mode = std::fs::metadata(dir.join("ca.key"))
            .expect("ca key")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(ca_mode, 0o600);
        let first = std::fs::read(&cert).expect("cert");
        // Reopened, the same CA and the same certificate.
        let again = ClusterCerts::open(&dir, "test", false).expect("reopened");
        again.ensure("account", "account-1").expect("kept");
        assert_eq!(std::fs::read(&cert).expect("cert"), first);
        // A certificate the reopened CA issues verifies against the saved CA.
        again.ensure(OPERATOR, OPERATOR).expect("operator");
        let operator = operator(&dir).expect("reads").expect("present");
        assert_eq!(operator.identity().as_deref(), Some(OPERATOR));
        let account =
            Credentials::from_pem_files(&cert, &key, &dir.join("ca.crt")).expect("account");
        assert_eq!(account.identity().as_deref(), Some("account"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
