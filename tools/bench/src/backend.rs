//! The WeChat-like backend, started by a benchmark for itself: release binaries (built
//! with cargo when missing), every service its own process on free loopback ports, the
//! embedded registry in a temporary directory; stopped (SIGKILL) when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, anyhow, bail};
use svrkit::launch::Announcement;

/// Every backend binary and its package.
const BINARIES: &[(&str, &str)] = &[
    ("accountstore", "wx-storage"),
    ("contactstore", "wx-storage"),
    ("msgstore", "wx-storage"),
    ("seqstore", "wx-storage"),
    ("momentsstore", "wx-storage"),
    ("walletstore", "wx-storage"),
    ("account", "account"),
    ("contact", "contact"),
    ("seq", "seq"),
    ("message", "message"),
    ("moments", "moments"),
    ("wallet", "wallet"),
    ("access", "access"),
];

/// A running backend.
pub(crate) struct Backend {
    dir: PathBuf,
    procs: Vec<(String, Child)>,
    /// access-short's HTTP address.
    pub(crate) http: SocketAddr,
    /// The access-long instances' WebSocket addresses.
    pub(crate) ws: Vec<SocketAddr>,
}

/// The directory of this benchmark's executable, where cargo puts the release binaries.
pub(crate) fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("no directory for {}", exe.display()))
}

/// Builds the backend's binaries in release mode unless they are all there.
pub(crate) fn ensure_built(dir: &Path) -> anyhow::Result<()> {
    if BINARIES.iter().all(|(bin, _)| dir.join(bin).is_file()) {
        return Ok(());
    }
    eprintln!("building the backend (release; several minutes the first time)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--release"]);
    for (bin, package) in BINARIES {
        command.args(["-p", package, "--bin", bin]);
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("building the backend failed");
    }
    Ok(())
}

impl Backend {
    /// Starts two shards of each store, account, contact, two seq allocators, message,
    /// moments, two wallet instances, access-short and `long` access-long instances; `env`
    /// goes to every process.
    pub(crate) fn start(long: usize, env: &[(&str, &str)]) -> anyhow::Result<Backend> {
        Backend::start_on(long, env, None)
    }

    /// As [`Backend::start`], with every process on `cpus` when given (see
    /// [`crate::cpus::Split`]).
    pub(crate) fn start_on(
        long: usize,
        env: &[(&str, &str)],
        cpus: Option<&rustix::thread::CpuSet>,
    ) -> anyhow::Result<Backend> {
        let bins = bin_dir()?;
        ensure_built(&bins)?;
        let dir = std::env::temp_dir().join(format!(
            "svrkit-bench-backend-{}-{:x}",
            std::process::id(),
            svrkit::context::random_u64()
        ));
        std::fs::create_dir_all(dir.join("logs"))?;
        let mut backend = Backend {
            dir,
            procs: Vec::new(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            ws: Vec::new(),
        };
        let mut plan: Vec<(String, &str, Vec<&str>)> = Vec::new();
        // SVRKIT_REPLICAS=3 in `env`: three instances per store, every shard a Raft group
        // of three (each store gets its shard map, as under `svrkit up`).
        let replicated = env
            .iter()
            .any(|(k, v)| *k == "SVRKIT_REPLICAS" && *v != "1");
        let instances = if replicated { 3 } else { 2 };
        let mut shards: Vec<(String, String)> = Vec::new();
        for store in [
            "accountstore",
            "contactstore",
            "msgstore",
            "seqstore",
            "momentsstore",
            "walletstore",
        ] {
            let names: Vec<String> = (1..=instances).map(|i| format!("{store}-{i}")).collect();
            for name in &names {
                shards.push((name.clone(), names.join(",")));
                plan.push((name.clone(), store, vec![]));
            }
        }
        for service in ["account", "contact", "message", "moments"] {
            plan.push((format!("{service}-1"), service, vec![]));
        }
        for i in 1..=2 {
            plan.push((format!("seq-{i}"), "seq", vec![]));
            // An envelope's requests go to the wallet instance owning it.
            plan.push((format!("wallet-{i}"), "wallet", vec![]));
        }
        plan.push(("access-short-1".into(), "access", vec!["short"]));
        for i in 1..=long {
            plan.push((format!("access-long-{i}"), "access", vec!["long"]));
        }
        eprintln!("starting {} backend processes", plan.len());
        let start_all = || -> anyhow::Result<()> {
            for (id, bin, args) in plan {
                let mut env: Vec<(&str, &str)> = env.to_vec();
                if let Some((_, map)) = shards.iter().find(|(name, _)| *name == id) {
                    env.push(("SVRKIT_SHARDS", map));
                }
                backend.spawn(&bins.join(bin), &id, &args, &env)?;
            }
            Ok(())
        };
        match cpus {
            Some(cpus) => crate::cpus::on_cpus(cpus, start_all)??,
            None => start_all()?,
        }
        Ok(backend)
    }

    fn spawn(
        &mut self,
        binary: &Path,
        id: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join("logs").join(format!("{id}.log")))?;
        let mut child = Command::new(binary)
            .args(args)
            .env("SVRKIT_LISTEN", "127.0.0.1:0")
            .env("SVRKIT_ADMIN", "off")
            .env(
                "SVRKIT_REGISTRY",
                format!("dir:{}", self.dir.join("registry").display()),
            )
            .env("SVRKIT_INSTANCE_ID", id)
            .env("SVRKIT_DATA_DIR", self.dir.join("data").join(id))
            .env("WX_HTTP", "127.0.0.1:0")
            .env("WX_WS", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut listening = false;
        for line in lines.by_ref().map_while(Result::ok) {
            match Announcement::parse(&line) {
                Some(Announcement::Listening(_)) => {
                    listening = true;
                    break;
                }
                Some(endpoint @ Announcement::Endpoint { .. }) => {
                    let addr = endpoint
                        .socket_addr()
                        .ok_or_else(|| anyhow!("{id} announced {line:?}"))?;
                    match &endpoint {
                        Announcement::Endpoint { name, .. } if name == "http" => self.http = addr,
                        Announcement::Endpoint { name, .. } if name == "ws" => self.ws.push(addr),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if !listening {
            bail!(
                "{id} exited before listening; see {}",
                self.dir.join("logs").display()
            );
        }
        std::thread::spawn(move || lines.for_each(drop));
        self.procs.push((id.to_string(), child));
        Ok(())
    }

    /// The embedded registry the processes joined (for discovering them, and for
    /// publishing configuration).
    pub(crate) fn registry_dir(&self) -> PathBuf {
        self.dir.join("registry")
    }

    /// The process id of the instance `id`.
    pub(crate) fn pid(&self, id: &str) -> Option<u32> {
        self.procs
            .iter()
            .find(|(name, _)| name == id)
            .map(|(_, child)| child.id())
    }

    /// The process ids of every instance.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|(_, child)| child.id()).collect()
    }

    /// Resident memory of every process, in bytes, by instance id.
    pub(crate) fn rss(&self) -> Vec<(String, u64)> {
        self.procs
            .iter()
            .map(|(id, child)| {
                let rss = std::fs::read_to_string(format!("/proc/{}/statm", child.id()))
                    .ok()
                    .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .unwrap_or(0);
                (id.clone(), rss * 4096)
            })
            .collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for (_, child) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The password of every user a benchmark signs up.
pub(crate) const PASSWORD: &str = "bench password";

/// Runs `action` through access-short; an answer that is not ok is an error. A request
/// refused `overloaded` was not run: it is tried again after a growing pause (up to ten
/// times), as a client does while the backend sheds load.
pub(crate) async fn call(
    api: &wx_client::Http,
    action: &str,
    body: serde_json::Value,
    token: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let mut pause = std::time::Duration::from_millis(50);
    for _ in 0..10 {
        let answer = api.call(action, &body, token).await?;
        if answer.ok() {
            return Ok(answer.body);
        }
        if answer.code() != "overloaded" {
            bail!("{action}: {} {}", answer.status, answer.body);
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    bail!("{action}: refused overloaded ten times")
}

/// Registers `name` (with [`PASSWORD`]) and signs in: its uid and token.
pub(crate) async fn sign_up(api: &wx_client::Http, name: &str) -> anyhow::Result<(u64, String)> {
    let body = serde_json::json!({ "name": name, "password": PASSWORD });
    call(api, "register", body.clone(), None).await?;
    let session = call(api, "login", body, None).await?;
    Ok((
        session["uid"].as_u64().unwrap_or_default(),
        session["token"].as_str().unwrap_or_default().to_string(),
    ))
}

/// Makes `a` and `b` friends straight in contactstore (two FRIEND edges), as a benchmark
/// builds its social graph without the access tier (which would spend the run hashing
/// passwords).
pub(crate) async fn befriend(
    contacts: &wx_api::storage::ContactStoreClient,
    a: u64,
    b: u64,
) -> anyhow::Result<()> {
    use wx_api::storage::{Edge, EdgeState, PutEdgeRequest};
    for (owner, peer) in [(a, b), (b, a)] {
        let edge = Edge {
            owner,
            peer,
            state: EdgeState::Friend as i32,
            updated_ms: wx_api::now_ms(),
            ..Edge::default()
        };
        contacts
            .put_edge_with(
                PutEdgeRequest {
                    edge: Some(edge),
                    expected_version: 0,
                    max_friends: 0,
                },
                wx_api::by_uid(owner),
            )
            .await
            .with_context(|| format!("edge {owner} -> {peer}"))?;
    }
    Ok(())
}
