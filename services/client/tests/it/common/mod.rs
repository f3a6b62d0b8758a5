//! The whole backend as separate processes on loopback, and the scenarios the end-to-end
//! suites run against it (once with the embedded registry, once with etcd).

#![allow(dead_code, unreachable_pub)]

pub mod edge;
pub mod messaging;
pub mod metrics;
pub mod moments;

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
use wx_client::{Answer, Http, Ws};

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
            "account",
            "contact",
            "seq",
            "message",
            "moments",
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
            ];
            env.extend(tls);
            env.extend(extra);
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
        for i in 1..=2 {
            add(&format!("accountstore-{i}"), "accountstore", &[], vec![]);
            add(&format!("contactstore-{i}"), "contactstore", &[], vec![]);
            add(&format!("seqstore-{i}"), "seqstore", &[], vec![]);
            add(&format!("msgstore-{i}"), "msgstore", &[], vec![]);
            add(&format!("momentsstore-{i}"), "momentsstore", &[], vec![]);
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
        };
        backend.wait_serving().await;
        backend
    }

    /// Waits until access-short reaches account and account reaches its store (each
    /// process finds the others through the registry, which takes a moment).
    async fn wait_serving(&self) {
        let deadline = Instant::now() + PATIENCE * 3;
        let probe = json!({ "name": "nobody_here", "password": "irrelevant" });
        loop {
            if let Ok(answer) = self.http.call("login", &probe, None).await {
                if answer.code() == "not_found" {
                    return;
                }
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
            for secret in ["correct horse battery", "not the password", "$argon2"] {
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

/// `user.find` finds a user by their exact name and shows what a stranger may see;
/// unknown and impossible names get precise refusals; `endpoint` names an access-long
/// WebSocket that accepts the caller's token.
pub async fn finding_people_and_the_long_connection(backend: &Backend) {
    let http = &backend.http;
    let finder = backend.user(&unique("finder")).await;
    let found = backend.user(&unique("found")).await;
    let token = Some(finder.token.as_str());
    call(
        http,
        "profile.update",
        json!({ "region": "Shenzhen", "signature": "hi", "private_fields": ["region"] }),
        Some(&found.token),
    )
    .await;
    let reply = call(http, "user.find", json!({ "name": found.name }), token).await;
    let profile = &reply["profile"];
    assert_eq!(profile["uid"], found.uid);
    assert_eq!(profile["signature"], "hi");
    assert_eq!(
        profile["region"], "",
        "a stranger does not see a private field"
    );
    assert_eq!(profile["hidden"], json!(["region"]));
    let nobody = refused(
        http,
        "user.find",
        json!({ "name": unique("nobody") }),
        token,
        404,
        "not_found",
    )
    .await;
    assert_eq!(nobody.reason(), "unknown_user");
    for bad in [
        json!({ "name": "no spaces" }),
        json!({ "name": "x".repeat(10_000) }),
        json!({}),
    ] {
        refused(http, "user.find", bad, token, 400, "invalid_argument").await;
    }
    refused(
        http,
        "user.find",
        json!({ "name": found.name }),
        None,
        401,
        "unauthenticated",
    )
    .await;
    refused(http, "endpoint", json!({}), None, 401, "unauthenticated").await;

    let endpoint = call(http, "endpoint", json!({}), token).await;
    let url = endpoint["websocket_url"].as_str().expect("a URL");
    let addr: SocketAddr = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.strip_suffix("/v1/ws"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not a WebSocket URL of the gateway: {url}"));
    assert!(
        backend.ws.contains(&addr),
        "{addr} is not an access-long instance"
    );
    let mut ws = wx_client::Ws::connect(addr, &finder.token)
        .await
        .expect("connects")
        .expect("the token is accepted");
    let listed = ws.call("friends.list", json!({})).await.expect("an answer");
    assert_eq!(listed["ok"], true, "{listed}");
}

/// Register two users, befriend them (the request is pushed over the long connection),
/// read profiles as a stranger and as a friend, list friends both ways.
pub async fn scripted_session(backend: &Backend) {
    let http = &backend.http;
    let alice = backend.user(&unique("alice")).await;
    let bob = backend.user(&unique("bob")).await;
    let (ta, tb) = (Some(alice.token.as_str()), Some(bob.token.as_str()));
    call(
        http,
        "profile.update",
        json!({ "region": "Shenzhen", "signature": "hi", "phone": "555", "private_fields": ["region", "phone"] }),
        ta,
    )
    .await;

    // As a stranger, Bob sees Alice's public fields only.
    let seen = call(http, "profile.get", json!({ "uid": alice.uid }), tb).await;
    let p = &seen["profile"];
    assert_eq!(
        (p["nickname"].as_str(), p["signature"].as_str()),
        (Some(alice.name.to_uppercase().as_str()), Some("hi"))
    );
    assert_eq!(
        (p["region"].as_str(), p["phone"].as_str()),
        (Some(""), Some(""))
    );
    assert_eq!(p["hidden"], json!(["region", "phone"]));
    assert_eq!(
        p["private_fields"],
        json!([]),
        "which fields are private is private"
    );
    // Alice sees all of her own.
    let own = call(http, "profile.get", json!({}), ta).await;
    assert_eq!(own["profile"]["region"], "Shenzhen");
    // A stranger cannot read her friends list.
    refused(
        http,
        "friends.list",
        json!({ "uid": alice.uid }),
        tb,
        403,
        "permission_denied",
    )
    .await;

    // Bob holds long connections on both access-long instances; Alice's request reaches
    // both, wherever the presence owner is.
    let mut bob_ws = Vec::new();
    for addr in &backend.ws {
        let ws = Ws::connect(*addr, &bob.token)
            .await
            .expect("connect")
            .expect("auth");
        assert_eq!(ws.uid, bob.uid);
        bob_ws.push(ws);
    }
    let sent = call(
        http,
        "friends.request",
        json!({ "peer": bob.uid, "greeting": "hello" }),
        ta,
    )
    .await;
    assert_eq!(sent["relation"], "request_sent");
    for ws in &mut bob_ws {
        let push = ws.push(PATIENCE).await.expect("a push on every connection");
        assert_eq!(push["push"], "friend_request");
        assert_eq!(
            (
                push["body"]["from"].as_u64(),
                push["body"]["greeting"].as_str()
            ),
            (Some(alice.uid), Some("hello"))
        );
    }
    let pending = call(http, "friends.requests", json!({}), tb).await;
    assert_eq!(pending["requests"][0]["from"], alice.uid);
    assert_eq!(pending["requests"][0]["greeting"], "hello");
    // Bob accepts over the long connection.
    let accepted = bob_ws[0]
        .call("friends.accept", json!({ "peer": alice.uid }))
        .await
        .expect("answer");
    assert_eq!(accepted["ok"], true, "{accepted}");
    assert_eq!(accepted["result"]["relation"], "friend");

    // Friends see private fields; both lists hold the other, with profiles.
    let seen = call(http, "profile.get", json!({ "uid": alice.uid }), tb).await;
    assert_eq!(
        (
            seen["profile"]["region"].as_str(),
            seen["profile"]["phone"].as_str()
        ),
        (Some("Shenzhen"), Some("555"))
    );
    for (me, other) in [(&alice, &bob), (&bob, &alice)] {
        let list = call(http, "friends.list", json!({}), Some(&me.token)).await;
        let friends = list["friends"].as_array().expect("list");
        assert_eq!(friends.len(), 1);
        assert_eq!(friends[0]["profile"]["uid"], other.uid);
        assert_eq!(friends[0]["profile"]["name"], other.name.as_str());
    }
    let relations = call(
        http,
        "relation.check",
        json!({ "peers": [bob.uid, 12345] }),
        ta,
    )
    .await;
    assert_eq!(relations["relations"][bob.uid.to_string()], "friend");
    assert_eq!(relations["relations"]["12345"], "none");

    // After Alice removes Bob, he is a stranger again.
    call(http, "friends.remove", json!({ "peer": bob.uid }), ta).await;
    let seen = call(http, "profile.get", json!({ "uid": alice.uid }), tb).await;
    assert_eq!(seen["profile"]["region"], "");
    let list = call(http, "friends.list", json!({}), tb).await;
    assert_eq!(list["friends"], json!([]));
}

/// Blocks, the friend ceiling (3 in these backends) and every refusal in between.
pub async fn relations_and_their_limits(backend: &Backend) {
    let http = &backend.http;
    let a = backend.user(&unique("ann")).await;
    let b = backend.user(&unique("ben")).await;
    let (ta, tb) = (Some(a.token.as_str()), Some(b.token.as_str()));
    refused(
        http,
        "friends.request",
        json!({ "peer": a.uid }),
        ta,
        400,
        "invalid_argument",
    )
    .await;
    refused(
        http,
        "friends.request",
        json!({ "peer": 42 }),
        ta,
        404,
        "not_found",
    )
    .await;
    refused(
        http,
        "friends.accept",
        json!({ "peer": b.uid }),
        ta,
        409,
        "failed_precondition",
    )
    .await;
    // Ben blocks Ann: her request is answered as any other ("sent"), so the block is not
    // revealed, and Ben never hears of it.
    call(http, "friends.block", json!({ "peer": a.uid }), tb).await;
    let sent = call(http, "friends.request", json!({ "peer": b.uid }), ta).await;
    assert_eq!(sent["relation"], "request_sent", "{sent}");
    let seen = call(http, "relation.check", json!({ "peers": [b.uid] }), ta).await;
    assert_eq!(seen["relations"][b.uid.to_string()], "request_sent");
    let requests = call(http, "friends.requests", json!({}), tb).await;
    assert_eq!(requests["requests"], json!([]), "{requests}");
    // Ben cannot ask Ann either while he blocks her; unblocking lifts it.
    refused(
        http,
        "friends.request",
        json!({ "peer": a.uid }),
        tb,
        409,
        "failed_precondition",
    )
    .await;
    call(http, "friends.unblock", json!({ "peer": a.uid }), tb).await;
    // Asking someone who already asked you is accepting (her unheard request counts).
    call(http, "friends.request", json!({ "peer": b.uid }), ta).await;
    let mutual = call(http, "friends.request", json!({ "peer": a.uid }), tb).await;
    assert_eq!(mutual["relation"], "friend");
    refused(
        http,
        "friends.request",
        json!({ "peer": b.uid }),
        ta,
        409,
        "already_exists",
    )
    .await;

    // Ann reaches the ceiling of 3 friends: the 4th acceptance is refused, clearly.
    for name in ["cat", "dan"] {
        let u = backend.user(&unique(name)).await;
        call(
            http,
            "friends.request",
            json!({ "peer": a.uid }),
            Some(&u.token),
        )
        .await;
        call(http, "friends.accept", json!({ "peer": u.uid }), ta).await;
    }
    let eve = backend.user(&unique("eve")).await;
    call(
        http,
        "friends.request",
        json!({ "peer": a.uid }),
        Some(&eve.token),
    )
    .await;
    let full = refused(
        http,
        "friends.accept",
        json!({ "peer": eve.uid }),
        ta,
        429,
        "resource_exhausted",
    )
    .await;
    assert!(
        full.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("3 friends"),
        "{}",
        full.body
    );
    let list = call(http, "friends.list", json!({}), ta).await;
    assert_eq!(list["friends"].as_array().map(Vec::len), Some(3));
    // The refusal left Eve's request pending and Eve friendless.
    let eves = call(http, "friends.list", json!({}), Some(&eve.token)).await;
    assert_eq!(eves["friends"], json!([]));
    // Blocking a friend ends the friendship on both sides.
    call(http, "friends.block", json!({ "peer": b.uid }), ta).await;
    let bens = call(http, "friends.list", json!({}), tb).await;
    assert_eq!(bens["friends"], json!([]));
}

/// Every kind of bad input gets its precise status, and the backend keeps serving.
pub async fn bad_input_gets_precise_errors(backend: &Backend) {
    let http = &backend.http;
    let u = backend.user(&unique("val")).await;
    let t = Some(u.token.as_str());
    // Accounts.
    refused(
        http,
        "register",
        json!({ "name": u.name, "password": "long enough pw" }),
        None,
        409,
        "already_exists",
    )
    .await;
    refused(
        http,
        "register",
        json!({ "name": "x", "password": "long enough pw" }),
        None,
        400,
        "invalid_argument",
    )
    .await;
    refused(
        http,
        "register",
        json!({ "name": unique("shorty"), "password": "short" }),
        None,
        400,
        "invalid_argument",
    )
    .await;
    refused(
        http,
        "register",
        json!({ "name": unique("nopw") }),
        None,
        400,
        "invalid_argument",
    )
    .await;
    let wrong = refused(
        http,
        "login",
        json!({ "name": u.name, "password": "not it at all" }),
        None,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(wrong.reason(), "wrong_password");
    let unknown = refused(
        http,
        "login",
        json!({ "name": unique("ghost"), "password": "whatever123" }),
        None,
        404,
        "not_found",
    )
    .await;
    assert_eq!(unknown.reason(), "unknown_user");
    // Tokens: missing, forged, expired.
    let missing = refused(
        http,
        "friends.list",
        json!({}),
        None,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(missing.reason(), "token_missing");
    let forged = format!("{}.{}", u.uid, "0123456789abcdef0123456789abcdef");
    let bad = refused(
        http,
        "friends.list",
        json!({}),
        Some(&forged),
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(bad.reason(), "token_invalid");
    let garbage = refused(
        http,
        "friends.list",
        json!({}),
        Some("not-a-token"),
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(garbage.reason(), "token_invalid");
    let expired = expired_token(backend, u.uid).await;
    let old = refused(
        http,
        "friends.list",
        json!({}),
        Some(&expired),
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(old.reason(), "token_expired");
    // Requests: unknown action, malformed JSON, wrong types, oversized body.
    let unknown = refused(http, "friends.teleport", json!({}), t, 404, "not_found").await;
    assert_eq!(unknown.reason(), "unknown_action");
    let malformed = http
        .raw("POST", "/v1/friends.list", b"{not json", t)
        .await
        .expect("answer");
    assert_eq!(
        (malformed.status, malformed.code()),
        (400, "invalid_argument"),
        "{}",
        malformed.body
    );
    let not_object = http
        .raw("POST", "/v1/friends.list", b"[1,2]", t)
        .await
        .expect("answer");
    assert_eq!(
        (not_object.status, not_object.code()),
        (400, "invalid_argument")
    );
    refused(
        http,
        "friends.request",
        json!({ "peer": "seven" }),
        t,
        400,
        "invalid_argument",
    )
    .await;
    refused(
        http,
        "profile.update",
        json!({ "private_fields": ["nickname"] }),
        t,
        400,
        "invalid_argument",
    )
    .await;
    refused(
        http,
        "profile.update",
        json!({ "password": "x" }),
        t,
        400,
        "invalid_argument",
    )
    .await;
    let huge = format!("{{\"greeting\":\"{}\"}}", "x".repeat(100 * 1024));
    let too_big = http
        .raw("POST", "/v1/friends.request", huge.as_bytes(), t)
        .await
        .expect("answer");
    assert_eq!(
        (too_big.status, too_big.code()),
        (413, "resource_exhausted"),
        "{}",
        too_big.body
    );
    // The long connection: a refused token, then garbage frames on a good one.
    let refused_ws = Ws::connect(backend.ws[0], &forged).await.expect("connect");
    let error = refused_ws.expect_err("a forged token is refused");
    assert_eq!(error["error"]["reason"], "token_invalid");
    let mut ws = Ws::connect(backend.ws[0], &u.token)
        .await
        .expect("connect")
        .expect("auth");
    ws.send_text("{oops").await.expect("send");
    let answer = ws.answer().await.expect("an error frame");
    assert_eq!(answer["error"]["code"], "invalid_argument");
    let answer = ws
        .call("friends.teleport", json!({}))
        .await
        .expect("answer");
    assert_eq!(answer["error"]["reason"], "unknown_action");
    // Everyone still serves.
    let ok = ws.call("friends.list", json!({})).await.expect("answer");
    assert_eq!(ok["ok"], true, "{ok}");
    call(http, "profile.get", json!({}), t).await;
    // Logging out ends the session everywhere.
    call(http, "logout", json!({}), t).await;
    let gone = refused(http, "friends.list", json!({}), t, 401, "unauthenticated").await;
    assert_eq!(gone.reason(), "token_invalid");
}

/// A client of one of the backend's storage services, as the logic tier holds it: with
/// the certificate of process `as_process` (the only kind of caller the store admits).
async fn store_channel(backend: &Backend, service: &str, as_process: &str) -> svrkit::Channel {
    use std::sync::Arc;
    use svrkit::discovery::{EmbeddedRegistry, EtcdRegistry, Registry, discover};
    use svrkit::launch::RegistryKind;
    // The spec the processes were given, read the way they read it.
    let registry: Arc<dyn Registry> = match RegistryKind::parse(&backend.registry) {
        Ok(RegistryKind::Dir(path)) => Arc::new(EmbeddedRegistry::new(path)),
        Ok(RegistryKind::Etcd(urls)) => Arc::new(EtcdRegistry::new(urls)),
        other => panic!("no registry in {}: {other:?}", backend.registry),
    };
    let tls = backend
        .credentials(as_process)
        .client()
        .expect("client TLS");
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

/// A session stored already expired, through the store's own RPC (no waiting for a
/// real one to expire).
async fn expired_token(backend: &Backend, uid: u64) -> String {
    use wx_api::storage::{
        AccountStoreClient, PutSessionRequest, SessionRecord, account_store_methods,
    };
    let channel = store_channel(backend, account_store_methods::SERVICE_NAME, "account-1").await;
    let session_id = "00112233445566778899aabbccddeeff".to_string();
    let past = wx_api::now_ms() - 1_000;
    AccountStoreClient::new(channel)
        .put_session_with(
            PutSessionRequest {
                session: Some(SessionRecord {
                    session_id: session_id.clone(),
                    uid,
                    created_ms: past - 60_000,
                    expires_ms: past,
                }),
            },
            wx_api::by_uid(uid),
        )
        .await
        .expect("stored");
    format!("{uid}.{session_id}")
}

/// An accept that stopped between its two writes (their side FRIEND, ours still
/// REQUEST_RECEIVED, as a crash would leave it) is finished by accepting again.
pub async fn an_interrupted_accept_is_finished_by_accepting_again(backend: &Backend) {
    use wx_api::storage::{
        ContactStoreClient, Edge, EdgeState, PutEdgeRequest, contact_store_methods,
    };
    let http = &backend.http;
    let asker = backend.user(&unique("una")).await;
    let accepter = backend.user(&unique("vic")).await;
    call(
        http,
        "friends.request",
        json!({ "peer": accepter.uid }),
        Some(&asker.token),
    )
    .await;
    // The first half of the accept: the asker's edge becomes FRIEND (version 1 -> 2).
    let store = ContactStoreClient::new(
        store_channel(backend, contact_store_methods::SERVICE_NAME, "contact-1").await,
    );
    store
        .put_edge_with(
            PutEdgeRequest {
                edge: Some(Edge {
                    owner: asker.uid,
                    peer: accepter.uid,
                    state: EdgeState::Friend as i32,
                    ..Edge::default()
                }),
                expected_version: 1,
                max_friends: 0,
            },
            wx_api::by_uid(asker.uid),
        )
        .await
        .expect("half an accept");
    // The accepter still sees the request, and accepting again completes both sides.
    let pending = call(http, "friends.requests", json!({}), Some(&accepter.token)).await;
    assert_eq!(pending["requests"][0]["from"], asker.uid);
    call(
        http,
        "friends.accept",
        json!({ "peer": asker.uid }),
        Some(&accepter.token),
    )
    .await;
    for (me, other) in [(&asker, &accepter), (&accepter, &asker)] {
        let list = call(http, "friends.list", json!({}), Some(&me.token)).await;
        assert_eq!(list["friends"][0]["profile"]["uid"], other.uid, "{list}");
        assert_eq!(list["friends"].as_array().map(Vec::len), Some(1));
    }
}

/// Everything written before every process restarts is there afterwards: accounts,
/// passwords, sessions, profiles, friendships, pending requests.
pub async fn restarting_every_process_loses_nothing(backend: &mut Backend, kill: bool) {
    let http = backend.http;
    let a = backend.user(&unique("rita")).await;
    let b = backend.user(&unique("sam")).await;
    let c = backend.user(&unique("tom")).await;
    call(
        &http,
        "profile.update",
        json!({ "signature": "before the restart" }),
        Some(&a.token),
    )
    .await;
    call(
        &http,
        "friends.request",
        json!({ "peer": b.uid }),
        Some(&a.token),
    )
    .await;
    call(
        &http,
        "friends.accept",
        json!({ "peer": a.uid }),
        Some(&b.token),
    )
    .await;
    call(
        &http,
        "friends.request",
        json!({ "peer": a.uid, "greeting": "pending" }),
        Some(&c.token),
    )
    .await;

    backend.restart_all(kill).await;

    // The old session still works; so does signing in again.
    let me = call(&http, "profile.get", json!({}), Some(&a.token)).await;
    assert_eq!(me["profile"]["signature"], "before the restart");
    call(
        &http,
        "login",
        json!({ "name": b.name, "password": "correct horse battery" }),
        None,
    )
    .await;
    let friends = call(&http, "friends.list", json!({}), Some(&b.token)).await;
    assert_eq!(friends["friends"][0]["profile"]["uid"], a.uid);
    let pending = call(&http, "friends.requests", json!({}), Some(&a.token)).await;
    assert_eq!(pending["requests"][0]["from"], c.uid);
    assert_eq!(pending["requests"][0]["greeting"], "pending");
    refused(
        &http,
        "register",
        json!({ "name": a.name, "password": "another password" }),
        None,
        409,
        "already_exists",
    )
    .await;
}

/// Each user has their own request budget on each gateway (`burst` requests here, and
/// practically no refill): past it, 429 `rate_limited`; other users go on.
pub async fn each_user_is_rate_limited(backend: &Backend, burst: usize) {
    let http = &backend.http;
    let a = backend.user(&unique("greedy")).await;
    let b = backend.user(&unique("patient")).await;
    for _ in 0..burst {
        call(http, "friends.list", json!({}), Some(&a.token)).await;
    }
    let limited = refused(
        http,
        "friends.list",
        json!({}),
        Some(&a.token),
        429,
        "resource_exhausted",
    )
    .await;
    assert_eq!(limited.reason(), "rate_limited");
    // The long connection is limited the same way.
    let mut ws = Ws::connect(backend.ws[0], &a.token)
        .await
        .expect("connect")
        .expect("auth");
    for _ in 0..burst {
        let answer = ws.call("friends.list", json!({})).await.expect("answer");
        assert_eq!(answer["ok"], true, "{answer}");
    }
    let answer = ws.call("friends.list", json!({})).await.expect("answer");
    assert_eq!(answer["error"]["reason"], "rate_limited", "{answer}");
    // Another user is not affected.
    call(http, "friends.list", json!({}), Some(&b.token)).await;
}
