//! The cluster's certificates: a CA made on the first `svrkit up` (in `STATE/tls/`, or
//! the manifest's `[tls] ca_dir`), a certificate per instance naming its service
//! (`spiffe://CLUSTER/service/NAME`), and the operator's, which `svrkit call` presents.
//!
//! Only the supervisor issues certificates. The CA's key lives in a directory of its own
//! (`ca/ca.key`, the directory 0700, the key 0600) that no instance is told of: an
//! instance gets the CA certificate, its own certificate and its own key, nothing else.
//! (Processes of one uid can still read each other's files: to keep instances from the
//! CA key, run them under their own uids, as a host or Kubernetes deployment does.)
//!
//! Certificates are short-lived ([`INSTANCE_VALIDITY`], 24 h): a stolen one is worth a
//! day at most. Each has a sidecar `NAME.expires` (its end in Unix seconds and its
//! service); [`ClusterCerts::renew_due`], which the supervisor runs every
//! [`RENEW_CHECK`], issues a fresh one over the files once a third of its life is
//! left, and the processes load it without a restart (`svrkit::tls::CertSlot`). Keys are
//! written 0600.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use svrkit::tls::Credentials;
use svrkit::tls::mint::ClusterCa;

/// The identity `svrkit call` and other operator tools present.
pub(crate) const OPERATOR: &str = "operator";
/// How long an instance's (and the operator's) certificate is valid.
pub(crate) const INSTANCE_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// How often the supervisor looks for certificates due for renewal.
pub(crate) const RENEW_CHECK: Duration = Duration::from_secs(60);

/// A cluster CA and the directory its certificates live in.
pub(crate) struct ClusterCerts {
    dir: PathBuf,
    ca: ClusterCa,
    /// Whether gateways serve HTTPS with their certificate too.
    edge: bool,
    /// How long the certificates it issues are valid.
    validity: Duration,
}

impl std::fmt::Debug for ClusterCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCerts")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A temporary name beside `path`, this process's own (writers on several hosts may
/// share the directory).
fn temporary(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// Runs `f` holding an exclusive lock on `dir/.lock` (flock): supervisors of several
/// hosts that share a directory (the CA's, on a shared filesystem) make its CA and the
/// cluster secret once, not each their own. Released when `f` returns, or when the
/// process dies.
pub(crate) fn locked<T>(dir: &Path, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("locking {}", path.display()))?;
    let result = f();
    let _ = rustix::fs::flock(&file, rustix::fs::FlockOperation::Unlock);
    result
}

/// Writes `contents` to `path` readable by the owner only (a new file).
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = temporary(path);
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
    /// Opens the CA in `dir`, making it first if there is none. A CA key of an older
    /// layout (`dir/ca.key`, beside the instances' files) is moved into `dir/ca/`.
    pub(crate) fn open(dir: &Path, cluster: &str, edge: bool) -> anyhow::Result<ClusterCerts> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let private = dir.join("ca");
        std::fs::create_dir_all(&private)
            .with_context(|| format!("creating {}", private.display()))?;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", private.display()))?;
        let ca = locked(dir, || ClusterCerts::open_or_make(dir, &private, cluster))?;
        Ok(ClusterCerts {
            dir: dir.to_path_buf(),
            ca,
            edge,
            validity: INSTANCE_VALIDITY,
        })
    }

    /// The CA in `dir` (its key in `private`), made first if there is none.
    fn open_or_make(dir: &Path, private: &Path, cluster: &str) -> anyhow::Result<ClusterCa> {
        let (cert, key) = (dir.join("ca.crt"), private.join("ca.key"));
        let old_key = dir.join("ca.key");
        if old_key.exists() && !key.exists() {
            std::fs::rename(&old_key, &key).with_context(|| {
                format!("moving {} into {}", old_key.display(), private.display())
            })?;
        }
        let ca = if cert.exists() && key.exists() {
            let read = |p: &Path| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            ClusterCa::load(cluster, &read(&cert)?, &read(&key)?)?
        } else {
            let ca = ClusterCa::new(cluster)?;
            write_private(&key, ca.key_pem())?;
            write_public(&cert, ca.cert_pem())?;
            ca
        };
        Ok(ca)
    }

    /// The same CA issuing certificates valid for `validity` (tests of renewal).
    #[cfg(test)]
    fn with_validity(mut self, validity: Duration) -> ClusterCerts {
        self.validity = validity;
        self
    }

    /// A certificate naming `service`, valid for `validity`, returned rather than written
    /// to the directory (a Kubernetes Secret's).
    pub(crate) fn mint(
        &self,
        service: &str,
        validity: Duration,
    ) -> anyhow::Result<svrkit::tls::mint::Issued> {
        Ok(self.ca.issue_for_hosts(service, &[], validity)?)
    }

    /// The CA certificate's file.
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The certificate and key files of `name` (an instance id), naming `service`; issued
    /// if missing or due for renewal.
    pub(crate) fn ensure(&self, service: &str, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (cert, key) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        let due = self.expiry(name).is_none_or(|(ends, _)| self.due(ends));
        if !(cert.exists() && key.exists()) || due {
            self.issue(service, name)?;
        }
        Ok((cert, key))
    }

    /// Issues `name`'s certificate (naming `service`) over its files. The key is written
    /// before the certificate, each by rename, and processes reject a pair whose key does
    /// not match, so a reload between the two keeps the old pair.
    fn issue(&self, service: &str, name: &str) -> anyhow::Result<()> {
        let issued = self.ca.issue_for(service, self.validity)?;
        let ends = issued
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        write_private(&self.dir.join(format!("{name}.key")), &issued.key_pem)?;
        write_public(&self.dir.join(format!("{name}.crt")), &issued.cert_pem)?;
        write_public(
            &self.dir.join(format!("{name}.expires")),
            &format!("{ends} {service}\n"),
        )?;
        Ok(())
    }

    /// When `name`'s certificate ends (Unix seconds) and the service it names, from its
    /// sidecar.
    fn expiry(&self, name: &str) -> Option<(u64, String)> {
        let text = std::fs::read_to_string(self.dir.join(format!("{name}.expires"))).ok()?;
        let (ends, service) = text.trim().split_once(' ')?;
        Some((ends.parse().ok()?, service.to_string()))
    }

    /// Whether a certificate ending at `ends` (Unix seconds) has a third of its life or
    /// less left.
    fn due(&self, ends: u64) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ends.saturating_sub(now) <= self.validity.as_secs() / 3
    }

    /// Renews every certificate in the directory with a third of its life or less left;
    /// returns the names renewed.
    pub(crate) fn renew_due(&self) -> anyhow::Result<Vec<String>> {
        let mut renewed = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("listing {}", self.dir.display()))?;
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".expires")) else {
                continue;
            };
            if let Some((ends, service)) = self.expiry(name)
                && self.due(ends)
            {
                self.issue(&service, name)?;
                renewed.push(name.to_string());
            }
        }
        Ok(renewed)
    }

    /// The `SVRKIT_TLS_*` environment of instance `id` of `service`: its own certificate
    /// and key and the CA certificate, never the CA key.
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

/// `svrkit certs`: a cluster CA and certificates as files, for hosts and Kubernetes
/// Secrets (what `svrkit up` does for its own instances, without `up`).
#[derive(Debug, clap::Args)]
pub(crate) struct CertsArgs {
    /// The certificate's file names: NAME.crt and NAME.key (an instance id, `operator`,
    /// a gateway's name).
    name: String,
    /// The service it names (`spiffe://CLUSTER/service/SERVICE`; default: NAME).
    #[arg(long)]
    service: Option<String>,
    /// Where the CA and the certificates live (the CA is made there if missing; its key
    /// goes to DIR/ca/ca.key).
    #[arg(long, default_value = ".svrkit/tls")]
    dir: PathBuf,
    /// The cluster's name (the trust domain).
    #[arg(long, default_value = "svrkit")]
    cluster: String,
    /// How long the certificate is valid, in days.
    #[arg(long, default_value_t = 90)]
    days: u64,
    /// A DNS name or IP address clients reach it by (a gateway's public name, an etcd
    /// member's address); repeatable.
    #[arg(long = "host")]
    hosts: Vec<String>,
}

/// Issues one certificate as `args` say, and prints where it went.
pub(crate) async fn certs(args: CertsArgs) -> Result<(), crate::Failure> {
    let usage = |e: anyhow::Error| crate::Failure::Usage(e);
    if args.days == 0 || args.days > 3650 {
        return Err(usage(anyhow::anyhow!("--days must be 1 to 3650")));
    }
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.len() <= 128
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && !n.starts_with('.')
    };
    let service = args.service.clone().unwrap_or_else(|| args.name.clone());
    if !valid_name(&args.name) || !valid_name(&service) {
        return Err(usage(anyhow::anyhow!(
            "names are letters, digits, '-', '_' and '.' (not first), at most 128"
        )));
    }
    let certs = ClusterCerts::open(&args.dir, &args.cluster, false)?;
    let validity = Duration::from_secs(args.days * 24 * 3600);
    let issued = certs
        .ca
        .issue_for_hosts(&service, &args.hosts, validity)
        .map_err(|e| usage(anyhow::anyhow!("{e}")))?;
    let (cert, key) = (
        args.dir.join(format!("{}.crt", args.name)),
        args.dir.join(format!("{}.key", args.name)),
    );
    write_private(&key, &issued.key_pem)?;
    write_public(&cert, &issued.cert_pem)?;
    println!("{}", cert.display());
    println!("{}", key.display());
    println!("{}", certs.ca_file().display());
    Ok(())
}

/// Writes `contents` to `path` (world-readable: certificates), by rename.
fn write_public(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = temporary(path);
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
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

    #[test]
    fn supervisors_sharing_a_directory_make_one_ca_and_one_secret() {
        let path = std::env::temp_dir().join(format!("svrkit-shared-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let made: Vec<(String, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let certs = ClusterCerts::open(&path, "wx", false).expect("a CA");
                        certs.ensure(OPERATOR, OPERATOR).expect("the operator's");
                        let secret = crate::cluster::up::cluster_secret(&path).expect("a secret");
                        (certs.ca.cert_pem().to_string(), secret)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a thread"))
                .collect()
        });
        assert!(made.windows(2).all(|w| w[0] == w[1]), "one CA, one secret");
        let leftovers: Vec<_> = std::fs::read_dir(&path)
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn a_ca_is_made_once_and_keys_are_private() {
        let dir = std::env::temp_dir().join(format!("svrkit-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let certs = ClusterCerts::open(&dir, "test", false).expect("CA");
        let (cert, key) = certs.ensure("account", "account-1").expect("issued");
        let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The CA key is in a private directory of its own, named in no instance's
        // environment.
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("ca").join("ca.key")), 0o600);
        assert_eq!(mode(&dir.join("ca")), 0o700);
        assert!(!dir.join("ca.key").exists());
        let env = certs.env("account", "account-1").expect("env");
        for (name, value) in &env {
            assert!(
                !value.contains("ca.key") && !Path::new(value).starts_with(dir.join("ca")),
                "{name}={value}"
            );
        }
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

    #[test]
    fn certificates_are_short_lived_and_renewed_when_a_third_is_left() {
        let dir = std::env::temp_dir().join(format!("svrkit-renew-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // An older layout's CA key beside the instances' files is moved out of their way.
        let old = ClusterCa::new("test").expect("CA");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("ca.crt"), old.cert_pem()).expect("write");
        std::fs::write(dir.join("ca.key"), old.key_pem()).expect("write");
        let certs = ClusterCerts::open(&dir, "test", false)
            .expect("CA")
            .with_validity(Duration::from_secs(3000));
        assert!(!dir.join("ca.key").exists() && dir.join("ca").join("ca.key").exists());
        let (cert, key) = certs.ensure("account", "account-1").expect("issued");
        let first = std::fs::read(&cert).expect("cert");
        let (ends, service) = certs.expiry("account-1").expect("sidecar");
        assert_eq!(service, "account");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(ends > now + 2900 && ends <= now + 3000, "{ends} vs {now}");
        assert!(
            certs.renew_due().expect("renewal").is_empty(),
            "nothing is due"
        );
        assert_eq!(std::fs::read(&cert).expect("cert"), first);

        // A third of its life left (as a clock a day later would see it): renewed over the
        // same files, still naming its service, trusted by the same CA.
        std::fs::write(
            dir.join("account-1.expires"),
            format!("{} account\n", now + 999),
        )
        .expect("write");
        assert_eq!(certs.renew_due().expect("renewal"), ["account-1"]);
        assert_ne!(std::fs::read(&cert).expect("cert"), first);
        let (renewed_end, _) = certs.expiry("account-1").expect("sidecar");
        assert!(renewed_end > now + 2900);
        let account =
            Credentials::from_pem_files(&cert, &key, &dir.join("ca.crt")).expect("account");
        assert_eq!(account.identity().as_deref(), Some("account"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
