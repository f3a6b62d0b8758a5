//! The deployment manifest `svrkit up` reads (TOML).
//!
//! ```toml
//! # Where `cargo build` runs (relative to this file; default: this file's folder).
//! workspace = ".."
//!
//! [build]
//! profile = "release"        # the cargo profile binaries are built with
//!
//! [registry]
//! kind = "embedded"          # or "etcd", with endpoints = ["http://127.0.0.1:2379"]
//! # etcd over TLS and with a user (each becomes the processes' SVRKIT_ETCD_* variable):
//! # ca = "etcd-ca.pem", cert = "client.pem", key = "client.key", server_name = "…",
//! # user = "svrkit", password_file = "etcd.password"
//!
//! # Hosts (optional): with them, `svrkit up --host NAME` runs on each machine the
//! # instances placed there, all joined by one etcd cluster (`[registry] kind = "etcd"`).
//! [[host]]
//! name = "a"                 # what `--host` names
//! address = "10.0.0.1"       # what its instances advertise: an IP address or an interface
//! listen = "0.0.0.0"         # what they bind (default: `address` when it is an IP, else 0.0.0.0)
//! zone = "campus-1"          # their SVRKIT_ZONE: clients prefer their own zone
//!
//! [[service]]
//! name = "echo"              # the name `ps`, `logs` and `deploy` use
//! hosts = ["a", "b"]         # instance i runs on hosts[i % len] (default: every host, in order);
//!                            # a shard's replicas must land on distinct hosts
//! package = "echo"           # cargo package (default: name)
//! bin = "echo"               # binary in it (default: package)
//! args = ["serve"]           # arguments (default: ["serve"])
//! instances = 2              # default 1
//! replicas = 3               # copies of each shard of a store, a Raft group each (default 1;
//!                            # at most `instances`; fixed when the store is created)
//! port = 0                   # first RPC port, instance i takes port + i; 0 picks free ports
//! admin_port = 0             # the same for admin endpoints
//! env = { RUST_LOG = "info" }
//! public = { WX_HTTP = 8080 } # listeners for clients outside: a fixed port on a host, a
//!                            # Kubernetes Service (see ServiceSpec::public)
//! stateful = true            # keeps data (a StatefulSet; default: replicas > 1)
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;

/// A parsed manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    /// Where cargo builds, relative to the manifest.
    #[serde(default)]
    pub(crate) workspace: Option<PathBuf>,
    #[serde(default)]
    pub(crate) build: Build,
    #[serde(default)]
    pub(crate) registry: RegistrySection,
    #[serde(default)]
    pub(crate) tls: TlsSection,
    #[serde(rename = "host", default)]
    pub(crate) hosts: Vec<HostSpec>,
    #[serde(rename = "service", default)]
    pub(crate) services: Vec<ServiceSpec>,
}

/// One `[[host]]`: a machine that runs a share of the deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostSpec {
    /// What `svrkit up --host` names.
    pub(crate) name: String,
    /// What its instances advertise (`SVRKIT_ADVERTISE`): an IP address or an interface.
    pub(crate) address: String,
    /// What its instances bind (default: `address` when it is an IP, else `0.0.0.0`).
    #[serde(default)]
    pub(crate) listen: Option<IpAddr>,
    /// Its instances' zone (`SVRKIT_ZONE`).
    #[serde(default)]
    pub(crate) zone: Option<String>,
}

impl HostSpec {
    /// The IP address its instances bind.
    pub(crate) fn listen_ip(&self) -> IpAddr {
        self.listen.unwrap_or_else(|| {
            self.address
                .parse()
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
        })
    }
}

/// `[build]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Build {
    #[serde(default = "release")]
    pub(crate) profile: String,
}

fn release() -> String {
    "release".to_string()
}

impl Default for Build {
    fn default() -> Build {
        Build { profile: release() }
    }
}

/// `[registry]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistrySection {
    #[serde(default)]
    pub(crate) kind: RegistryChoice,
    #[serde(default)]
    pub(crate) endpoints: Vec<String>,
    /// etcd over TLS: the CA of etcd's certificate (`SVRKIT_ETCD_CA`).
    #[serde(default)]
    pub(crate) ca: Option<PathBuf>,
    /// A client certificate and key for etcd's `--client-cert-auth`.
    #[serde(default)]
    pub(crate) cert: Option<PathBuf>,
    /// Its key.
    #[serde(default)]
    pub(crate) key: Option<PathBuf>,
    /// The name etcd's certificate carries, if not the endpoints' host.
    #[serde(default)]
    pub(crate) server_name: Option<String>,
    /// etcd authentication: the user, and a file holding its password.
    #[serde(default)]
    pub(crate) user: Option<String>,
    /// The file holding the user's password.
    #[serde(default)]
    pub(crate) password_file: Option<PathBuf>,
}

impl RegistrySection {
    /// The `SVRKIT_ETCD_*` variables of every process (paths as given: relative ones
    /// are resolved against the manifest's directory by the caller).
    pub(crate) fn etcd_env(&self, base: &std::path::Path) -> Vec<(String, String)> {
        let path = |p: &PathBuf| base.join(p).display().to_string();
        let mut env = Vec::new();
        let mut add = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                env.push((name.to_string(), value));
            }
        };
        add("SVRKIT_ETCD_CA", self.ca.as_ref().map(path));
        add("SVRKIT_ETCD_CERT", self.cert.as_ref().map(path));
        add("SVRKIT_ETCD_KEY", self.key.as_ref().map(path));
        add("SVRKIT_ETCD_SERVER_NAME", self.server_name.clone());
        add("SVRKIT_ETCD_USER", self.user.clone());
        add(
            "SVRKIT_ETCD_PASSWORD_FILE",
            self.password_file.as_ref().map(path),
        );
        env
    }
}

/// `[tls]`: mutual TLS between every instance (on unless `enabled = false`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSection {
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    /// The cluster's name in certificates (`spiffe://CLUSTER/service/NAME`).
    #[serde(default = "default_cluster")]
    pub(crate) cluster: String,
    /// Where the CA and certificates live (default `STATE/tls`; relative to the
    /// manifest). With etcd, point every deployment of the cluster at the same CA.
    #[serde(default)]
    pub(crate) ca_dir: Option<PathBuf>,
    /// Gateways serve HTTPS / WSS with their cluster certificate (`WX_TLS_CERT`,
    /// `WX_TLS_KEY`), for clients that trust the cluster CA; browsers need a public
    /// certificate instead (a service's `env`).
    #[serde(default)]
    pub(crate) edge: bool,
}

fn yes() -> bool {
    true
}

fn default_cluster() -> String {
    "svrkit".to_string()
}

impl Default for TlsSection {
    fn default() -> TlsSection {
        TlsSection {
            enabled: true,
            cluster: default_cluster(),
            ca_dir: None,
            edge: false,
        }
    }
}

/// Which registry the deployment uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RegistryChoice {
    /// A directory in the state dir.
    #[default]
    Embedded,
    /// An etcd cluster (not started by svrkit).
    Etcd,
}

/// One `[[service]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceSpec {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) package: Option<String>,
    #[serde(default)]
    pub(crate) bin: Option<String>,
    /// A prebuilt binary to run instead of building one.
    #[serde(default)]
    pub(crate) binary: Option<PathBuf>,
    #[serde(default = "serve")]
    pub(crate) args: Vec<String>,
    #[serde(default = "one")]
    pub(crate) instances: u16,
    /// Copies of each shard (a store's Raft groups); 1 for everything else.
    #[serde(default = "one")]
    pub(crate) replicas: u16,
    #[serde(default)]
    pub(crate) port: u16,
    #[serde(default)]
    pub(crate) admin_port: u16,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    /// The hosts its instances run on, round robin (default: every `[[host]]`).
    #[serde(default)]
    pub(crate) hosts: Option<Vec<String>>,
    /// Listeners clients outside the cluster reach, by the variable that sets their
    /// address and their port (`{ WX_HTTP = 8080 }`): bound on that port on a host
    /// (`svrkit up --host`; a second instance on the same host takes the next port) and
    /// given a Kubernetes Service (`svrkit deploy --render kubernetes`). Without hosts,
    /// `svrkit up` leaves them where the service puts them (loopback, any port).
    #[serde(default)]
    pub(crate) public: BTreeMap<String, u16>,
    /// Whether its instances keep data that must outlive them (a StatefulSet with a
    /// volume per pod under Kubernetes; default: when `replicas > 1`).
    #[serde(default)]
    pub(crate) stateful: Option<bool>,
    /// The services allowed to call this one (with TLS; absent: every member).
    #[serde(default)]
    pub(crate) callers: Option<Vec<String>>,
    /// The services allowed to send it requests that act for a user (absent: callers).
    #[serde(default)]
    pub(crate) uid_callers: Option<Vec<String>>,
    /// Per method (`Method` or `package.Service/Method`): the services allowed instead.
    #[serde(default)]
    pub(crate) method_callers: BTreeMap<String, Vec<String>>,
}

fn serve() -> Vec<String> {
    vec!["serve".to_string()]
}

fn one() -> u16 {
    1
}

impl ServiceSpec {
    /// The cargo package.
    pub(crate) fn package(&self) -> &str {
        self.package.as_deref().unwrap_or(&self.name)
    }

    /// The binary's name.
    pub(crate) fn bin(&self) -> &str {
        self.bin.as_deref().unwrap_or_else(|| self.package())
    }

    /// The call policy its instances enforce, if the manifest declares one. A replicated
    /// store's replication methods are its own replicas' only.
    pub(crate) fn policy(&self) -> Option<svrkit::policy::CallPolicy> {
        if self.callers.is_none()
            && self.uid_callers.is_none()
            && self.method_callers.is_empty()
            && self.replicas <= 1
        {
            return None;
        }
        let set = |v: &Vec<String>| v.iter().cloned().collect();
        let mut methods: BTreeMap<String, std::collections::BTreeSet<String>> = self
            .method_callers
            .iter()
            .map(|(m, v)| (m.clone(), set(v)))
            .collect();
        if self.replicas > 1 {
            for method in ["Append", "AppendBatch", "Vote", "Snapshot"] {
                methods
                    .entry(format!("wx.storage.Replication/{method}"))
                    .or_insert_with(|| [self.name.clone()].into_iter().collect());
            }
            // Backups and replica changes are the operator's (wx-backup and wx-replica
            // with the operator's certificate).
            for method in ["Backup", "Membership"] {
                methods
                    .entry(format!("wx.storage.Replication/{method}"))
                    .or_insert_with(|| {
                        [self.name.clone(), "operator".to_string()]
                            .into_iter()
                            .collect()
                    });
            }
        }
        Some(svrkit::policy::CallPolicy {
            callers: self.callers.as_ref().map(set),
            methods,
            uid_callers: self.uid_callers.as_ref().map(set),
        })
    }

    /// Whether its instances keep data that must outlive them.
    pub(crate) fn is_stateful(&self) -> bool {
        self.stateful.unwrap_or(self.replicas > 1)
    }

    /// The RPC port of instance `i` (0: any).
    pub(crate) fn port_of(&self, i: u16) -> u16 {
        if self.port == 0 { 0 } else { self.port + i }
    }

    /// The admin port of instance `i` (0: any).
    pub(crate) fn admin_port_of(&self, i: u16) -> u16 {
        if self.admin_port == 0 {
            0
        } else {
            self.admin_port + i
        }
    }
}

impl Manifest {
    /// Reads and checks `path`.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the manifest {}", path.display()))?;
        let mut manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        manifest.workspace = Some(base.join(manifest.workspace.take().unwrap_or_default()));
        if let Some(dir) = manifest.tls.ca_dir.take() {
            manifest.tls.ca_dir = Some(base.join(dir));
        }
        for service in &mut manifest.services {
            if let Some(binary) = service.binary.take() {
                service.binary = Some(base.join(binary));
            }
        }
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.services.is_empty() {
            bail!("the manifest lists no [[service]]");
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.services {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!("service name {:?}: use letters, digits, - and _", s.name);
            }
            if !seen.insert(&s.name) {
                bail!("service {:?} is listed twice", s.name);
            }
            if let Some((var, port)) = s.public.iter().find(|(var, port)| {
                **port == 0
                    || var.is_empty()
                    || !var
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            }) {
                bail!(
                    "service {:?}: public {var} = {port}: a variable name (A-Z, 0-9, _) and a port from 1",
                    s.name
                );
            }
            if s.instances == 0 {
                bail!("service {:?}: instances must be at least 1", s.name);
            }
            if s.replicas == 0 || s.replicas > s.instances || s.replicas > 7 {
                bail!(
                    "service {:?}: replicas must be 1 to 7 and at most instances ({})",
                    s.name,
                    s.instances
                );
            }
        }
        self.check_hosts()?;
        if self.registry.kind == RegistryChoice::Etcd && self.registry.endpoints.is_empty() {
            return Err(anyhow!(
                "[registry] kind = \"etcd\" needs endpoints = [\"http://...\"]"
            ));
        }
        Ok(())
    }

    /// Checks the `[[host]]`s and where services are placed on them.
    fn check_hosts(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        for host in &self.hosts {
            if host.name.is_empty()
                || host.name.len() > 63
                || !host
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!("host name {:?}: use letters, digits, - and _", host.name);
            }
            if !names.insert(host.name.as_str()) {
                bail!("host {:?} is listed twice", host.name);
            }
            let ip = host.address.parse::<IpAddr>();
            let interface = svrkit::launch::is_interface_name(&host.address);
            match ip {
                Ok(ip) if ip.is_unspecified() => bail!(
                    "host {:?}: address {} cannot be reached; name the host's own address",
                    host.name,
                    host.address
                ),
                Ok(_) => {}
                Err(_) if interface => {}
                Err(_) => bail!(
                    "host {:?}: address {:?} is neither an IP address nor an interface name",
                    host.name,
                    host.address
                ),
            }
        }
        if self.hosts.len() > 1 && self.registry.kind != RegistryChoice::Etcd {
            bail!(
                "{} hosts need one registry they all reach: [registry] kind = \"etcd\"",
                self.hosts.len()
            );
        }
        for s in &self.services {
            let Some(placed) = &s.hosts else { continue };
            if self.hosts.is_empty() {
                bail!(
                    "service {:?} names hosts but the manifest has no [[host]]",
                    s.name
                );
            }
            if placed.is_empty() {
                bail!("service {:?}: hosts = [] places it nowhere", s.name);
            }
            if let Some(unknown) = placed.iter().find(|h| !names.contains(h.as_str())) {
                bail!("service {:?}: no [[host]] named {unknown:?}", s.name);
            }
        }
        // A shard's copies on distinct hosts (PaxosStore's campuses): losing a host loses
        // one copy of a shard, never a majority of it.
        if !self.hosts.is_empty() {
            for s in self.services.iter().filter(|s| s.replicas > 1) {
                let shards: Vec<String> = (0..s.instances).map(|i| i.to_string()).collect();
                let groups = svrkit::discovery::shard_map::place(&shards, usize::from(s.replicas))
                    .unwrap_or_default();
                for (shard, group) in groups.iter().enumerate() {
                    let mut on: Vec<&str> = group
                        .iter()
                        .filter_map(|i| i.parse::<u16>().ok())
                        .filter_map(|i| self.host_of(s, i).map(|h| h.name.as_str()))
                        .collect();
                    on.sort_unstable();
                    let all = on.len();
                    on.dedup();
                    if on.len() != all {
                        bail!(
                            "service {:?}: shard {} would keep {} copies on {} host(s) ({}); \
                             list at least {} hosts for it",
                            s.name,
                            shard + 1,
                            all,
                            on.len(),
                            on.join(", "),
                            s.replicas
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The host instance `i` (from 0) of `service` runs on, when the manifest has hosts.
    pub(crate) fn host_of(&self, service: &ServiceSpec, i: u16) -> Option<&HostSpec> {
        if self.hosts.is_empty() {
            return None;
        }
        let index = usize::from(i);
        match &service.hosts {
            Some(names) if !names.is_empty() => {
                let name = &names[index % names.len()];
                self.hosts.iter().find(|h| &h.name == name)
            }
            _ => Some(&self.hosts[index % self.hosts.len()]),
        }
    }

    /// The host named `name`.
    pub(crate) fn host(&self, name: &str) -> anyhow::Result<&HostSpec> {
        self.hosts.iter().find(|h| h.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            if names.is_empty() {
                anyhow!("--host {name:?}: the manifest has no [[host]]")
            } else {
                anyhow!(
                    "no host {name:?} in the manifest (it has: {})",
                    names.join(", ")
                )
            }
        })
    }

    /// The service named `name`.
    pub(crate) fn service(&self, name: &str) -> anyhow::Result<&ServiceSpec> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
                anyhow!(
                    "no service {name:?} in the manifest (it has: {})",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let m: Manifest = toml::from_str("[[service]]\nname = \"echo\"\n").expect("parses");
        assert_eq!(m.build.profile, "release");
        assert_eq!(m.registry.kind, RegistryChoice::Embedded);
        let s = &m.services[0];
        assert_eq!((s.package(), s.bin(), s.instances), ("echo", "echo", 1));
        assert_eq!(s.args, ["serve"]);
        assert!(m.check().is_ok());

        let fixed: ServiceSpec =
            toml::from_str("name = \"a\"\nport = 7000\ninstances = 3").expect("parses");
        assert_eq!((fixed.port_of(0), fixed.port_of(2)), (7000, 7002));
        assert_eq!(fixed.admin_port_of(2), 0);

        for bad in [
            "",
            "[[service]]\nname = \"a b\"",
            "[[service]]\nname = \"a\"\n[[service]]\nname = \"a\"",
            "[[service]]\nname = \"a\"\ninstances = 0",
            "[[service]]\nname = \"a\"\ninstances = 2\nreplicas = 3",
            "[registry]\nkind = \"etcd\"\n[[service]]\nname = \"a\"",
        ] {
            let parsed: Result<Manifest, _> = toml::from_str(bad);
            assert!(
                parsed.map(|m| m.check().is_err()).unwrap_or(true),
                "{bad:?}"
            );
        }
        let replicated: ServiceSpec =
            toml::from_str("name = \"store\"\ninstances = 3\nreplicas = 3\ncallers = [\"logic\"]")
                .expect("parses");
        let policy = replicated.policy().expect("a policy");
        assert_eq!(
            policy.methods.get("wx.storage.Replication/Append"),
            Some(&["store".to_string()].into_iter().collect()),
            "only the store's own replicas replicate"
        );
        let unknown: Result<Manifest, _> = toml::from_str("[[service]]\nname = \"a\"\nport5 = 1");
        assert!(unknown.is_err(), "unknown keys are refused");
    }

    const HOSTS: &str = "[registry]\nkind = \"etcd\"\nendpoints = [\"https://10.0.0.1:2379\"]\n\
        [[host]]\nname = \"a\"\naddress = \"10.0.0.1\"\nzone = \"z1\"\n\
        [[host]]\nname = \"b\"\naddress = \"eth0\"\n\
        [[host]]\nname = \"c\"\naddress = \"10.0.0.3\"\nlisten = \"0.0.0.0\"\n";

    fn with_hosts(services: &str) -> anyhow::Result<Manifest> {
        let m: Manifest = toml::from_str(&format!("{HOSTS}{services}"))?;
        m.check()?;
        Ok(m)
    }

    #[test]
    fn instances_are_placed_on_hosts_and_a_shards_copies_on_distinct_ones() {
        let m = with_hosts(
            "[[service]]\nname = \"store\"\ninstances = 3\nreplicas = 3\n\
             [[service]]\nname = \"logic\"\ninstances = 4\nhosts = [\"c\", \"a\"]\n",
        )
        .expect("a good manifest");
        let on = |service: &str| -> Vec<String> {
            let s = m.service(service).expect("service");
            (0..s.instances)
                .map(|i| m.host_of(s, i).expect("placed").name.clone())
                .collect()
        };
        assert_eq!(on("store"), ["a", "b", "c"]);
        assert_eq!(on("logic"), ["c", "a", "c", "a"]);
        let ip = |name: &str| m.host(name).expect("host").listen_ip().to_string();
        assert_eq!(
            (ip("a"), ip("b"), ip("c")),
            ("10.0.0.1".into(), "0.0.0.0".into(), "0.0.0.0".into())
        );
        assert!(m.host("d").is_err());

        for (bad, why) in [
            // Two of a shard's three copies would share host a.
            (
                "[[service]]\nname = \"s\"\ninstances = 3\nreplicas = 3\nhosts = [\"a\", \"b\"]",
                "copies on 2 host",
            ),
            (
                "[[service]]\nname = \"s\"\nhosts = [\"x\"]",
                "no [[host]] named",
            ),
            ("[[service]]\nname = \"s\"\nhosts = []", "places it nowhere"),
            (
                "[[host]]\nname = \"a\"\naddress = \"10.0.0.9\"\n[[service]]\nname = \"s\"",
                "listed twice",
            ),
            (
                "[[host]]\nname = \"d\"\naddress = \"0.0.0.0\"\n[[service]]\nname = \"s\"",
                "cannot be reached",
            ),
            (
                "[[host]]\nname = \"d\"\naddress = \"not an address\"\n[[service]]\nname = \"s\"",
                "neither an IP",
            ),
        ] {
            let err = with_hosts(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        // Hosts share one registry: an embedded one (a directory) cannot be shared.
        let embedded: Manifest = toml::from_str(
            "[[host]]\nname = \"a\"\naddress = \"10.0.0.1\"\n[[host]]\nname = \"b\"\naddress = \"10.0.0.2\"\n[[service]]\nname = \"s\"",
        )
        .expect("parses");
        assert!(
            embedded
                .check()
                .expect_err("embedded")
                .to_string()
                .contains("etcd")
        );
        let stray: Manifest =
            toml::from_str("[[service]]\nname = \"s\"\nhosts = [\"a\"]").expect("parses");
        assert!(stray.check().is_err(), "hosts without [[host]]");
    }
}
