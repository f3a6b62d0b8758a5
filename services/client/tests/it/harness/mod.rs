//! The harness of the end-to-end suites: the whole backend as separate processes on
//! loopback ([`Backend`]), signed-in users ([`User`], and [`Session`] for a user's typed
//! actions), and the call helpers the scenarios share. The scenarios themselves are in
//! `scenarios/`.

#![allow(dead_code, unreachable_pub)]

mod session;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use svrkit::launch::Announcement;
use svrkit_testkit::{PATIENCE, tempdir};
use wx_client::{Answer, Http};

/// The backend's binaries, built once by `tools/test` (see
/// [`svrkit_testkit::workspace_binary`]).
fn binaries() -> &'static HashMap<String, PathBuf> {
    static BINARIES: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BINARIES.get_or_init(|| {
        [
            "accountstore",
            "contactstore",
            "seqstore",
            "msgstore",
            "momentsstore",
            "walletstore",
            "account",
            "contact",
            "seq",
            "message",
            "moments",
            "wallet",
            "access",
        ]
        .into_iter()
        .map(|n| (n.to_string(), svrkit_testkit::workspace_binary(n)))
        .collect()
    })
}

/// One service process.
struct Proc {
    id: String,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Whether it has listened once (its ports are then its own).
    started: bool,
    /// Its admin endpoint, when it runs one.
    admin: Option<SocketAddr>,
}

/// The variables that hold an address a process listens on.
const PORT_VARIABLES: [&str; 3] = ["SVRKIT_LISTEN", "WX_HTTP", "WX_WS"];

/// A loopback address on a port that stays the process's across restarts (see
/// [`svrkit_testkit::free_port`]).
/// Each manifest service's call policy (`services/svrkit.toml`), as the JSON
/// `SVRKIT_CALL_POLICY` takes: the harness enforces what `svrkit up` does.
fn manifest_policies() -> HashMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../svrkit.toml");
    let text = std::fs::read_to_string(&path).expect("services/svrkit.toml");
    let manifest: toml::Table = toml::from_str(&text).expect("the manifest parses");
    let services = manifest
        .get("service")
        .and_then(toml::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let json = |v: Option<&toml::Value>| -> Value {
        v.map_or(Value::Null, |v| {
            serde_json::to_value(v).expect("TOML as JSON")
        })
    };
    services
        .iter()
        .filter_map(|s| {
            let name = s.get("name")?.as_str()?.to_string();
            let mut policy = serde_json::Map::new();
            for (from, to) in [
                ("callers", "callers"),
                ("uid_callers", "uid_callers"),
                ("method_callers", "methods"),
            ] {
                let value = json(s.get(from));
                if !value.is_null() {
                    policy.insert(to.to_string(), value);
                }
            }
            (!policy.is_empty()).then(|| (name, Value::Object(policy).to_string()))
        })
        .collect()
}

/// The manifest service an instance id belongs to (`access-long-2` -> `access-long`).
fn service_of(id: &str) -> &str {
    id.rsplit_once('-').map_or(id, |(service, _)| service)
}

fn loopback_address() -> String {
    format!("127.0.0.1:{}", svrkit_testkit::free_port())
}

impl Proc {
    /// Starts the process and waits until it listens. Its first start may find a port
    /// taken by another test between picking and binding it: it then tries other ports
    /// (twice at most). A restart keeps its ports, which nothing else takes meanwhile (see
    /// [`svrkit_testkit::free_port`]).
    fn spawn(&mut self, logs: &Path) {
        let first = !self.started;
        for attempt in 0.. {
            match self.try_spawn(logs) {
                Ok(()) => {
                    self.started = true;
                    return;
                }
                Err(log) if first && attempt < 2 && log.contains("Address already in use") => {
                    for (k, v) in &mut self.env {
                        if PORT_VARIABLES.contains(&k.as_str()) {
                            *v = loopback_address();
                        }
                    }
                }
                Err(log) => panic!("{} exited before listening; its log:\n{log}", self.id),
            }
        }
    }

    /// One start; the log of this start when it exits before listening.
    fn try_spawn(&mut self, logs: &Path) -> Result<(), String> {
        let log_path = logs.join(format!("{}.log", self.id));
        let log_start = std::fs::metadata(&log_path).map_or(0, |m| m.len());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{}.log", self.id)))
            .expect("log file");
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("SVRKIT_INSTANCE_ID", &self.id)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Each address the process announces is the one it comes back on when restarted.
        let mut listening = false;
        for line in lines.by_ref().map_while(Result::ok) {
            let (key, addr) = match Announcement::parse(&line) {
                Some(Announcement::Listening(addr)) => ("SVRKIT_LISTEN", addr.to_string()),
                Some(Announcement::Endpoint { name, addr }) if name == "http" => ("WX_HTTP", addr),
                Some(Announcement::Endpoint { name, addr }) if name == "ws" => ("WX_WS", addr),
                _ => continue,
            };
            self.env.retain(|(k, _)| k != key);
            self.env.push((key.to_string(), addr));
            if key == "SVRKIT_LISTEN" {
                listening = true;
                break;
            }
        }
        // The admin address follows the listening line, when there is one.
        let admin_off = self
            .env
            .iter()
            .any(|(k, v)| k == "SVRKIT_ADMIN" && v == "off");
        if listening && !admin_off {
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(Announcement::Admin(addr)) = Announcement::parse(&line) {
                    self.admin = Some(addr);
                    break;
                }
            }
        }
        if !listening {
            let _ = child.wait();
            let log = std::fs::read(&log_path).unwrap_or_default();
            let start = usize::try_from(log_start).unwrap_or(0).min(log.len());
            return Err(String::from_utf8_lossy(&log[start..]).into_owned());
        }
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
        Ok(())
    }

    /// The address the process announced as `key` (`WX_HTTP`, `WX_WS`, `SVRKIT_LISTEN`).
    fn announced(&self, key: &str) -> Option<SocketAddr> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
    }

    fn stop(&mut self, kill: bool) {
        if let Some(mut child) = self.child.take() {
            if kill {
                let _ = child.kill();
            } else {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    /// A test that fails half-way through starting the backend leaves no process behind.
    fn drop(&mut self) {
        self.stop(true);
    }
}

/// Which registry the backend uses.
#[derive(Debug, Clone)]
pub enum Registry {
    /// The embedded registry in the backend's directory.
    Embedded,
    /// An etcd cluster.
    Etcd(String),
}

/// The backend: two shards of each store, account, contact, two seq allocators, message,
/// one access-short and two access-long instances, each its own process.
pub struct Backend {
    /// Removed when the backend is dropped, unless a test failed (its logs are kept).
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    /// access-short.
    pub http: Http,
    /// The access-long instances.
    pub ws: Vec<SocketAddr>,
    /// The registry spec the processes were given.
    pub registry: String,
    /// The cluster's certificates: `ca.crt`, `ID.crt`/`ID.key` per process, and the
    /// operator's (`operator.crt`/`operator.key`), as `svrkit up` lays them out.
    pub tls_dir: PathBuf,
    /// The cluster secret every process was given (no log may hold it).
    cluster_secret: String,
}

impl Backend {
    /// Starts everything and waits until a request crosses all three tiers.
    pub async fn start(registry: Registry) -> Backend {
        Backend::start_with(registry, &[]).await
    }

    /// [`Backend::start`] with extra environment for every process (it wins over the
    /// defaults).
    pub async fn start_with(registry: Registry, overrides: &[(&str, &str)]) -> Backend {
        let guard = tempdir("backend");
        let dir = guard.path().to_path_buf();
        let bins = binaries();
        let spec = match &registry {
            Registry::Embedded => format!("dir:{}", dir.join("registry").display()),
            Registry::Etcd(url) => format!("etcd:{url}"),
        };
        let mut procs = Vec::new();
        // Mutual TLS and the manifest's call policies, as under `svrkit up`.
        let tls_dir = dir.join("tls");
        std::fs::create_dir_all(&tls_dir).expect("tls dir");
        let ca = svrkit::tls::mint::ClusterCa::new("wx").expect("a cluster CA");
        std::fs::write(tls_dir.join("ca.crt"), ca.cert_pem()).expect("ca.crt");
        let issue = |service: &str, name: &str| -> (PathBuf, PathBuf) {
            let issued = ca.issue(service).expect("a certificate");
            let (cert, key) = (
                tls_dir.join(format!("{name}.crt")),
                tls_dir.join(format!("{name}.key")),
            );
            std::fs::write(&cert, issued.cert_pem).expect("cert");
            std::fs::write(&key, issued.key_pem).expect("key");
            (cert, key)
        };
        issue("operator", "operator");
        let policies = manifest_policies();
        // One cluster secret for every process, as `svrkit up` hands out.
        let secret = svrkit::secret::ClusterSecret::generate_hex().expect("a secret");
        let mut add = |id: &str, bin: &str, args: &[&str], extra: Vec<(String, String)>| {
            let service = service_of(id);
            let (cert, key) = issue(service, id);
            let mut tls = vec![
                ("SVRKIT_TLS_CERT".to_string(), cert.display().to_string()),
                ("SVRKIT_TLS_KEY".to_string(), key.display().to_string()),
                (
                    "SVRKIT_TLS_CA".to_string(),
                    tls_dir.join("ca.crt").display().to_string(),
                ),
            ];
            if let Some(policy) = policies.get(service) {
                tls.push(("SVRKIT_CALL_POLICY".to_string(), policy.clone()));
            }
            // A restarted process comes back where it was, as under a real supervisor, so
            // addresses others cached stay right.
            let mut env = vec![
                ("SVRKIT_REGISTRY".to_string(), spec.clone()),
                ("SVRKIT_LISTEN".into(), loopback_address()),
                ("SVRKIT_ADMIN".into(), "off".into()),
                (
                    "SVRKIT_DATA_DIR".into(),
                    dir.join("data").join(id).display().to_string(),
                ),
                ("WX_MAX_FRIENDS".into(), "3".into()),
                ("WX_RATE_PER_SEC".into(), "200".into()),
                ("WX_RATE_BURST".into(), "400".into()),
                ("RUST_LOG".into(), "info,svrkit=warn".into()),
                (svrkit::secret::CLUSTER_SECRET_VAR.into(), secret.clone()),
            ];
            env.extend(tls);
            for (k, v) in extra {
                env.retain(|(name, _)| *name != k);
                env.push((k, v));
            }
            for (k, v) in overrides {
                env.retain(|(name, _)| name != k);
                env.push((k.to_string(), v.to_string()));
            }
            procs.push(Proc {
                id: id.to_string(),
                bin: bins
                    .get(bin)
                    .unwrap_or_else(|| panic!("no binary {bin}"))
                    .clone(),
                args: args.iter().map(|a| a.to_string()).collect(),
                env,
                child: None,
                started: false,
                admin: None,
            });
        };
        // SVRKIT_REPLICAS=3 among the overrides: three instances per store, each shard
        // a Raft group of three replicas (the manifest's `replicas = 3`); else two
        // single-copy shards per store.
        let replicated = overrides
            .iter()
            .any(|(k, v)| *k == "SVRKIT_REPLICAS" && *v != "1");
        let instances = if replicated { 3 } else { 2 };
        for i in 1..=instances {
            for store in [
                "accountstore",
                "contactstore",
                "seqstore",
                "msgstore",
                "momentsstore",
                "walletstore",
            ] {
                // Each store is created with its shards, as `svrkit up` does.
                let shards: Vec<String> = (1..=instances).map(|n| format!("{store}-{n}")).collect();
                let mut env = vec![("SVRKIT_SHARDS".to_string(), shards.join(","))];
                if replicated {
                    // Only its own replicas replicate (the CLI's manifest policy).
                    let mut policy: Value = policies
                        .get(store)
                        .and_then(|p| serde_json::from_str(p).ok())
                        .unwrap_or_else(|| json!({}));
                    for method in ["Append", "AppendBatch", "Vote", "Snapshot"] {
                        policy["methods"][format!("wx.storage.Replication/{method}")] =
                            json!([store]);
                    }
                    env.push(("SVRKIT_CALL_POLICY".to_string(), policy.to_string()));
                }
                add(&format!("{store}-{i}"), store, &[], env);
            }
        }
        add("account-1", "account", &[], vec![]);
        add("contact-1", "contact", &[], vec![]);
        for i in 1..=2 {
            add(
                &format!("seq-{i}"),
                "seq",
                &[],
                vec![("WX_SEQ_LEASE_MS".into(), "1000".into())],
            );
        }
        add("message-1", "message", &[], vec![]);
        add(
            "moments-1",
            "moments",
            &[],
            vec![("WX_MOMENTS_LEASE_MS".into(), "500".into())],
        );
        // Two wallet instances: an envelope's requests go to the one owning it.
        for i in 1..=2 {
            add(
                &format!("wallet-{i}"),
                "wallet",
                &[],
                vec![("WX_DEV_TOPUP".into(), "1".into())],
            );
        }
        add(
            "access-short-1",
            "access",
            &["short"],
            vec![("WX_HTTP".into(), loopback_address())],
        );
        for i in 1..=2 {
            add(
                &format!("access-long-{i}"),
                "access",
                &["long"],
                vec![("WX_WS".into(), loopback_address())],
            );
        }
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).expect("logs dir");
        for p in &mut procs {
            p.spawn(&logs);
        }
        let http = procs
            .iter()
            .find_map(|p| p.announced("WX_HTTP"))
            .expect("access-short announced its HTTP address");
        let ws = procs.iter().filter_map(|p| p.announced("WX_WS")).collect();
        let backend = Backend {
            dir: guard,
            procs,
            http: Http::new(http),
            ws,
            registry: spec,
            tls_dir,
            cluster_secret: secret,
        };
        backend.wait_serving().await;
        if replicated {
            backend.wait_for_leaders().await;
        }
        backend
    }

    /// Waits until every replica of every store knows its shards' leaders (the groups
    /// elect them in the first second or so): each answers `/readyz` 200 only then.
    async fn wait_for_leaders(&self) {
        let deadline = Instant::now() + PATIENCE * 3;
        for (id, admin) in self.admin_endpoints() {
            if !id.contains("store-") {
                continue;
            }
            while svrkit_testkit::http_get(admin, "/readyz").await.0 != 200 {
                assert!(Instant::now() < deadline, "{id}'s shards have no leaders");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Waits until access-short reaches account and account reaches its store (each
    /// process finds the others through the registry, which takes a moment).
    async fn wait_serving(&self) {
        let deadline = Instant::now() + PATIENCE * 3;
        loop {
            // Through a puzzle first if the backend asks for one (WX_LOGIN_POW=always).
            if let Ok(answer) = self.http.login("nobody_here", "irrelevant", None).await
                && answer.code() == "not_found"
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the backend did not start serving"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every process (SIGKILL when `kill`, else SIGTERM) and starts them again on
    /// the same data.
    pub async fn restart_all(&mut self, kill: bool) {
        let logs = self.dir.path().join("logs");
        for p in &mut self.procs {
            p.stop(kill);
        }
        for p in &mut self.procs {
            p.spawn(&logs);
        }
        self.wait_serving().await;
    }

    /// Sends process `id` a signal by name (`STOP`, `CONT`), as `kill -NAME` does.
    pub fn signal(&self, id: &str, signal: &str) {
        let pid = self
            .procs
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| p.child.as_ref())
            .unwrap_or_else(|| panic!("no running process {id}"))
            .id();
        let sent = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} {id}");
    }

    /// Waits (up to three patiences) until instance `id` of `service` is (or is not)
    /// among the live instances in the registry.
    pub async fn wait_registered(&self, service: &str, id: &str, present: bool) {
        let registry = svrkit::discovery::EmbeddedRegistry::new(self.dir.path().join("registry"));
        let deadline = Instant::now() + PATIENCE * 3;
        loop {
            let live = registry.live(service).expect("the registry reads");
            if live.iter().any(|i| i.id == id) == present {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never {}",
                if present { "came back" } else { "left" }
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The resident memory of process `id` now, in KiB (`None` when it is not running).
    pub fn rss_kib(&self, id: &str) -> Option<u64> {
        let pid = self.procs.iter().find(|p| p.id == id)?.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
    }

    /// The certificate of `name` (a process id, or `operator`) from the cluster CA.
    pub fn credentials(&self, name: &str) -> svrkit::tls::Credentials {
        svrkit::tls::Credentials::from_pem_files(
            &self.tls_dir.join(format!("{name}.crt")),
            &self.tls_dir.join(format!("{name}.key")),
            &self.tls_dir.join("ca.crt"),
        )
        .unwrap_or_else(|e| panic!("credentials of {name}: {e}"))
    }

    /// Every process's admin endpoint, by instance id (none when admin is off).
    pub fn admin_endpoints(&self) -> Vec<(String, SocketAddr)> {
        self.procs
            .iter()
            .filter_map(|p| Some((p.id.clone(), p.admin?)))
            .collect()
    }

    /// Fails if any process's log holds a secret: a password the tests use, a session
    /// token (`uid.` and 32 hex digits) or a password hash.
    pub fn assert_logs_hold_no_secrets(&self) {
        let logs = self.dir.path().join("logs");
        let entries = std::fs::read_dir(&logs).expect("the logs directory");
        let mut read = 0;
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            read += 1;
            for secret in [
                "correct horse battery",
                "not the password",
                "$argon2",
                &self.cluster_secret,
            ] {
                assert!(
                    !text.contains(secret),
                    "{} holds {secret:?}",
                    entry.path().display()
                );
            }
            assert!(
                !holds_token(&text),
                "{} holds a session token",
                entry.path().display()
            );
        }
        assert!(read > 10, "only {read} logs read");
    }

    /// Kills process `id` with SIGKILL and starts it again on the same data and address.
    pub fn kill_and_restart(&mut self, id: &str) {
        let logs = self.dir.path().join("logs");
        let proc = self
            .procs
            .iter_mut()
            .find(|p| p.id == id)
            .unwrap_or_else(|| panic!("no process {id}"));
        proc.stop(true);
        proc.spawn(&logs);
    }

    /// Waits (up to the patience) until process `id` has exited by itself, as a failpoint
    /// makes it, then starts it again on the same data and address without the variables
    /// `unset`. False if it did not exit.
    pub fn restart_after_exit(&mut self, id: &str, unset: &[&str]) -> bool {
        let logs = self.dir.path().join("logs");
        let proc = self
            .procs
            .iter_mut()
            .find(|p| p.id == id)
            .unwrap_or_else(|| panic!("no process {id}"));
        let deadline = Instant::now() + PATIENCE;
        let exited = loop {
            match proc.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) | None => break true,
                _ if Instant::now() > deadline => break false,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        if exited {
            proc.child = None;
            proc.env.retain(|(k, _)| !unset.contains(&k.as_str()));
            proc.spawn(&logs);
        }
        exited
    }

    /// A channel to `service` as the operator's tools hold it (the operator's certificate),
    /// balanced on a consistent-hash ring of its instances (so [`svrkit::Channel::owner_of`]
    /// names the instance a key goes to), once it knows `instances` of them.
    pub async fn operator_channel(&self, service: &str, instances: usize) -> svrkit::Channel {
        use std::sync::Arc;
        use svrkit::discovery::{EmbeddedRegistry, EtcdRegistry, Registry, discover};
        use svrkit::launch::RegistryKind;
        let registry: Arc<dyn Registry> = match RegistryKind::parse(&self.registry) {
            Ok(RegistryKind::Dir(path)) => Arc::new(EmbeddedRegistry::new(path)),
            Ok(RegistryKind::Etcd(urls)) => Arc::new(EtcdRegistry::new(urls)),
            other => panic!("no registry in {}: {other:?}", self.registry),
        };
        let tls = self.credentials("operator").client().expect("client TLS");
        let builder = svrkit::Channel::builder()
            .balance(svrkit::balance::Balance::ConsistentHash)
            .tls(tls);
        let channel = discover(&*registry, service, builder)
            .await
            .expect("discover");
        let mut changes = channel.subscribe_targets();
        tokio::time::timeout(PATIENCE, async {
            while channel.addresses().len() < instances {
                changes.changed().await.expect("alive");
            }
        })
        .await
        .expect("every instance found");
        channel
    }

    /// A client of one of the backend's storage services, as the logic tier holds it: with
    /// the certificate of process `as_process` (the only kind of caller the store admits).
    pub async fn store_channel(&self, service: &str, as_process: &str) -> svrkit::Channel {
        use std::sync::Arc;
        use svrkit::discovery::{EmbeddedRegistry, EtcdRegistry, Registry, discover};
        use svrkit::launch::RegistryKind;
        // The spec the processes were given, read the way they read it.
        let registry: Arc<dyn Registry> = match RegistryKind::parse(&self.registry) {
            Ok(RegistryKind::Dir(path)) => Arc::new(EmbeddedRegistry::new(path)),
            Ok(RegistryKind::Etcd(urls)) => Arc::new(EtcdRegistry::new(urls)),
            other => panic!("no registry in {}: {other:?}", self.registry),
        };
        let tls = self.credentials(as_process).client().expect("client TLS");
        let channel = discover(&*registry, service, wx_api::sharded().tls(tls))
            .await
            .expect("discover");
        let mut changes = channel.subscribe_targets();
        tokio::time::timeout(PATIENCE, async {
            while channel.addresses().len() < 2 {
                changes.changed().await.expect("alive");
            }
        })
        .await
        .expect("both shards found");
        channel
    }

    /// A registered, signed-in user.
    pub async fn user(&self, name: &str) -> User {
        let password = "correct horse battery";
        let reply = call(
            &self.http,
            "register",
            json!({ "name": name, "password": password, "nickname": name.to_uppercase() }),
            None,
        )
        .await;
        let uid = reply["uid"].as_u64().expect("uid");
        let session = call(
            &self.http,
            "login",
            json!({ "name": name, "password": password }),
            None,
        )
        .await;
        User {
            name: name.to_string(),
            uid,
            token: session["token"].as_str().expect("token").to_string(),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.stop(true);
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "the backend's logs are kept in {}",
                self.dir.path().join("logs").display()
            );
        }
    }
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u64,
    pub token: String,
}

/// Calls an action that must succeed.
pub async fn call(http: &Http, action: &str, body: Value, token: Option<&str>) -> Value {
    let answer = http.call(action, &body, token).await.expect("an answer");
    assert!(
        answer.ok(),
        "{action} {body}: {} {}",
        answer.status,
        answer.body
    );
    answer.body
}

/// Calls an action that must fail with `status` and error `code`.
pub async fn refused(
    http: &Http,
    action: &str,
    body: Value,
    token: Option<&str>,
    status: u16,
    code: &str,
) -> Answer {
    let answer = http.call(action, &body, token).await.expect("an answer");
    assert_eq!(
        (answer.status, answer.code()),
        (status, code),
        "{action} {body}: {}",
        answer.body
    );
    answer
}

/// Whether `text` holds something shaped like a session token: digits, `.`, then 32
/// lowercase hex digits.
pub fn holds_token(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| {
        b == b'.'
            && i > 0
            && bytes[i - 1].is_ascii_digit()
            && bytes.len() >= i + 33
            && bytes[i + 1..i + 33]
                .iter()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    })
}

pub fn unique(base: &str) -> String {
    format!("{base}_{:x}", svrkit::context::random_u64() & 0xff_ffff)
}
