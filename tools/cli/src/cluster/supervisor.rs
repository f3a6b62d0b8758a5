//! The supervisor `svrkit up` runs: one task per instance that starts its process, reads
//! its addresses from its first lines of output, probes `/readyz`, restarts it when it
//! crashes, and stops it with SIGTERM (SIGKILL after a grace period) when told to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use svrkit::selector::Track;

use anyhow::{Context as _, anyhow};
use svrkit::config::Selector;
use svrkit::launch::Announcement;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::certs::ClusterCerts;
use super::state::{ControlReply, ControlRequest, InstanceView, StateFile, write_state};
use crate::http;

/// How long an instance may take to drain after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long an instance may take to become ready after it starts.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Restart back-off: first delay and ceiling; a run this long resets it.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// Crashes before first becoming ready after which `up` gives up on an instance.
const START_ATTEMPTS: u32 = 3;

/// Everything needed to run one instance.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    pub(crate) service: String,
    pub(crate) id: String,
    pub(crate) version: Track,
    pub(crate) binary: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) listen: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) gray_users: Option<Selector>,
}

struct Running {
    unit: Unit,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The supervisor of one deployment.
pub(crate) struct Supervisor {
    dir: PathBuf,
    registry: String,
    state: Mutex<StateFile>,
    running: Mutex<Vec<Running>>,
    changed: watch::Sender<u64>,
    /// The cluster CA when instances talk mutual TLS.
    certs: Option<Arc<ClusterCerts>>,
    /// The cluster secret every instance gets (`svrkit::secret`), in hex.
    secret: String,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("dir", &self.dir)
            .finish()
    }
}

impl Supervisor {
    pub(crate) fn new(
        dir: PathBuf,
        manifest: PathBuf,
        registry: String,
        profile: String,
        certs: Option<Arc<ClusterCerts>>,
        secret: String,
    ) -> Arc<Supervisor> {
        let state = StateFile {
            supervisor_pid: std::process::id(),
            manifest,
            registry: registry.clone(),
            profile,
            ready: false,
            instances: Vec::new(),
        };
        Arc::new(Supervisor {
            dir,
            registry,
            state: Mutex::new(state),
            running: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
            certs,
            secret,
        })
    }

    /// Notified on every change of the state.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A copy of the state.
    pub(crate) fn snapshot(&self) -> StateFile {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut StateFile)) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state);
        if let Err(e) = write_state(&self.dir, &state) {
            tracing::warn!(error = %e, "cannot write the state file");
        }
        drop(state);
        self.changed.send_modify(|n| *n += 1);
    }

    fn update_instance(&self, id: &str, f: impl FnOnce(&mut InstanceView)) {
        self.update(|state| {
            if let Some(view) = state.instances.iter_mut().find(|v| v.id == id) {
                f(view);
            }
        });
    }

    pub(crate) fn mark_ready(&self) {
        self.update(|s| s.ready = true);
    }

    /// Starts `unit` (replacing the view of an instance with the same id).
    pub(crate) fn start(self: &Arc<Self>, unit: Unit) {
        let view = InstanceView {
            service: unit.service.clone(),
            id: unit.id.clone(),
            version: unit.version,
            pid: None,
            status: "starting".to_string(),
            restarts: 0,
            listen: None,
            admin: None,
            endpoints: BTreeMap::new(),
            log: self.dir.join("logs").join(format!("{}.log", unit.id)),
            binary: unit.binary.clone(),
            last_exit: None,
        };
        self.update(
            |state| match state.instances.iter_mut().find(|v| v.id == unit.id) {
                Some(old) => *old = view,
                None => state.instances.push(view),
            },
        );
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(Arc::clone(self).supervise(unit.clone(), stop_rx));
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Running { unit, stop, task });
    }

    /// Stops the instances `which` selects and waits until they exited; returns how many.
    pub(crate) async fn stop(&self, which: impl Fn(&Unit) -> bool) -> usize {
        let stopping: Vec<Running> = {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            let (stop, keep) = running.drain(..).partition(|r| which(&r.unit));
            *running = keep;
            stop
        };
        let n = stopping.len();
        for r in &stopping {
            let _ = r.stop.send(true);
        }
        for r in stopping {
            let _ = r.task.await;
        }
        n
    }

    /// The units now running.
    pub(crate) fn units(&self) -> Vec<Unit> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|r| r.unit.clone())
            .collect()
    }

    /// Waits until every instance in `ids` is ready; fails naming the first that is not in
    /// time or that crashed while starting.
    pub(crate) async fn wait_ready(&self, ids: &[String], timeout: Duration) -> anyhow::Result<()> {
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = self.snapshot();
            let pending: Vec<&InstanceView> = state
                .instances
                .iter()
                .filter(|v| ids.contains(&v.id) && v.status != "ready")
                .collect();
            let Some(first) = pending.first() else {
                return Ok(());
            };
            // Cannot start, or keeps dying before it is ever ready: say so now rather than
            // at the timeout.
            let hopeless = |v: &&&InstanceView| {
                v.status == "failed" || (v.status == "crashed" && v.restarts >= START_ATTEMPTS)
            };
            if let Some(v) = pending.iter().find(hopeless) {
                return Err(anyhow!(
                    "{} failed to start ({}); see {}",
                    v.id,
                    v.last_exit.as_deref().unwrap_or("unknown"),
                    v.log.display()
                ));
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(anyhow!(
                        "{} not ready after {:?} (status {}; see {})",
                        first.id,
                        timeout,
                        first.status,
                        first.log.display()
                    ));
                }
            }
        }
    }

    /// Runs one instance until told to stop, restarting it when it exits by itself.
    async fn supervise(self: Arc<Self>, mut unit: Unit, mut stop: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_FIRST;
        let mut restarts = 0u32;
        loop {
            let started = Instant::now();
            let exit = match self.run_once(&unit, &mut stop).await {
                Ok(Some(exit)) => exit,
                Ok(None) => {
                    self.update_instance(&unit.id, |v| {
                        v.status = "stopped".to_string();
                        v.pid = None;
                    });
                    return;
                }
                Err(e) => {
                    self.update_instance(&unit.id, |v| {
                        v.status = "failed".to_string();
                        v.last_exit = Some(format!("{e:#}"));
                    });
                    format!("{e:#}")
                }
            };
            tracing::warn!(instance = %unit.id, %exit, "instance exited; restarting");
            // Come back on the ports the instance had (when the manifest let it pick), so
            // the addresses clients and registries hold stay right.
            let view = self.snapshot();
            if let Some(v) = view.instances.iter().find(|v| v.id == unit.id) {
                let parse = |a: &Option<String>| a.as_deref().and_then(|a| a.parse().ok());
                if unit.listen.port() == 0 {
                    unit.listen = parse(&v.listen).unwrap_or(unit.listen);
                }
                if unit.admin.port() == 0 {
                    unit.admin = parse(&v.admin).unwrap_or(unit.admin);
                }
            }
            if started.elapsed() >= HEALTHY_RUN {
                backoff = BACKOFF_FIRST;
            }
            restarts += 1;
            self.update_instance(&unit.id, |v| {
                if v.status != "failed" {
                    v.status = "crashed".to_string();
                }
                v.pid = None;
                v.restarts = restarts;
                v.last_exit = Some(exit);
            });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => {
                    self.update_instance(&unit.id, |v| v.status = "stopped".to_string());
                    return;
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One run of the process: `Ok(None)` when stopped on request, `Ok(Some(exit))` when
    /// it exited by itself.
    async fn run_once(
        self: &Arc<Self>,
        unit: &Unit,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<Option<String>> {
        let log_path = self.dir.join("logs").join(format!("{}.log", unit.id));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        {
            use std::io::Write as _;
            let _ = writeln!(log, "--- svrkit up: starting {} ---", unit.binary.display());
        }
        let data = self.dir.join("data").join(&unit.id);
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let mut command = tokio::process::Command::new(&unit.binary);
        command
            .args(&unit.args)
            .env("SVRKIT_LISTEN", unit.listen.to_string())
            .env("SVRKIT_ADMIN", unit.admin.to_string())
            .env("SVRKIT_REGISTRY", &self.registry)
            .env("SVRKIT_INSTANCE_ID", &unit.id)
            .env("SVRKIT_DATA_DIR", &data)
            .env(svrkit::secret::CLUSTER_SECRET_VAR, &self.secret)
            .env_remove("SVRKIT_GRAY_USERS")
            .envs(&unit.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?)
            // Its own process group: a Ctrl-C at the terminal reaches the supervisor only,
            // which then stops instances in order.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(selector) = &unit.gray_users {
            command.env("SVRKIT_GRAY_USERS", serde_json::to_string(selector)?);
        }
        if let Some(certs) = &self.certs {
            // Its own certificate, naming its service (gray instances too).
            command.envs(certs.env(&unit.service, &unit.id)?);
        }
        let mut child = spawn_busy_tolerant(&mut command)
            .await
            .with_context(|| format!("starting {}", unit.binary.display()))?;
        let pid = child.id();
        self.update_instance(&unit.id, |v| {
            v.pid = pid;
            v.status = "starting".to_string();
            v.listen = None;
            v.admin = None;
            v.endpoints.clear();
        });
        // Reads the instance's output into its log and marks it ready; ends with the run.
        let watcher = child.stdout.take().map(|out| {
            tokio::spawn(Arc::clone(self).watch_output(
                out,
                tokio::fs::File::from_std(log),
                unit.id.clone(),
            ))
        });
        let _abort = watcher.as_ref().map(|w| AbortOnDrop(w.abort_handle()));
        let result = tokio::select! {
            status = child.wait() => Some(describe(status?)),
            _ = stop.wait_for(|s| *s) => None,
        };
        if result.is_none() {
            self.update_instance(&unit.id, |v| v.status = "stopping".to_string());
            if let Some(pid) = pid {
                super::state::signal(pid, false);
            }
            if tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
            {
                tracing::warn!(instance = %unit.id, "did not stop in time; killing");
                let _ = child.kill().await;
            }
        }
        Ok(result)
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Supervisor {
    /// Copies the instance's stdout into its log, noting the addresses it prints
    /// (`listening on ADDR`, `admin on http://ADDR`), then probes `/readyz` until it answers
    /// 200 (an instance without an admin endpoint is ready once it listens).
    async fn watch_output(
        self: Arc<Self>,
        out: tokio::process::ChildStdout,
        mut log: tokio::fs::File,
        id: String,
    ) {
        let mut lines = BufReader::new(out).lines();
        let mut listening = false;
        let mut admin: Option<SocketAddr> = None;
        let mut ready = false;
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = log.write_all(line.as_bytes()).await;
            let _ = log.write_all(b"\n").await;
            if ready {
                continue;
            }
            match Announcement::parse(&line) {
                Some(Announcement::Listening(addr)) => {
                    listening = true;
                    self.update_instance(&id, |v| v.listen = Some(addr.to_string()));
                }
                Some(Announcement::Admin(addr)) => {
                    admin = Some(addr);
                    self.update_instance(&id, |v| v.admin = Some(addr.to_string()));
                }
                Some(Announcement::Endpoint { name, addr }) => {
                    self.update_instance(&id, |v| {
                        v.endpoints.insert(name, addr);
                    });
                    continue;
                }
                None => continue,
            }
            if let (true, Some(addr)) = (listening, admin) {
                // Probe inline: the instance just printed its addresses and is about to
                // answer; its further output waits in the pipe meanwhile.
                let deadline = Instant::now() + READY_TIMEOUT;
                while Instant::now() < deadline {
                    if let Some((200, _)) = http::get(addr, "/readyz").await {
                        self.update_instance(&id, |v| v.status = "ready".to_string());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ready = true;
            }
        }
        // Output ended (the process closed stdout or exited): an instance without an admin
        // endpoint that said where it listens counts as ready from then on.
        if listening && admin.is_none() {
            self.update_instance(&id, |v| {
                if v.status == "starting" {
                    v.status = "ready".to_string();
                }
            });
        }
        let _ = log.flush().await;
    }

    /// Handles one control request.
    pub(crate) async fn handle(self: &Arc<Self>, request: ControlRequest) -> ControlReply {
        let result = match request {
            // The main loop answers `down` itself, once everything has stopped.
            ControlRequest::Down => Err(anyhow!("down is handled by the supervisor's main loop")),
            ControlRequest::Deploy {
                service,
                binary,
                selector,
                instances,
                env,
            } => {
                self.deploy(&service, binary, selector, instances, env)
                    .await
            }
            ControlRequest::Promote { service } => self.promote(&service).await,
            ControlRequest::Rollback { service } => {
                let n = self
                    .stop(|u| u.service == service && u.version.is_gray())
                    .await;
                self.forget(|v| v.service == service && v.version.is_gray());
                if n == 0 {
                    Err(anyhow!("{service} has no gray instances"))
                } else {
                    Ok(format!(
                        "{service}: rolled back; {n} gray instance(s) stopped"
                    ))
                }
            }
        };
        match result {
            Ok(message) => ControlReply {
                error: None,
                message,
            },
            Err(e) => ControlReply {
                error: Some(format!("{e:#}")),
                message: String::new(),
            },
        }
    }

    fn forget(&self, which: impl Fn(&InstanceView) -> bool) {
        self.update(|s| s.instances.retain(|v| !which(v)));
    }

    async fn deploy(
        self: &Arc<Self>,
        service: &str,
        binary: PathBuf,
        selector: Selector,
        instances: u16,
        env: BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        let units = self.units();
        if units
            .iter()
            .any(|u| u.service == service && u.version.is_gray())
        {
            return Err(anyhow!(
                "{service} already has a gray release; promote or roll it back first"
            ));
        }
        let template = units
            .iter()
            .find(|u| u.service == service)
            .cloned()
            .ok_or_else(|| anyhow!("no running service {service:?}"))?;
        let binary = self.keep_binary(&binary, &format!("{service}-gray"))?;
        let mut ids = Vec::new();
        let mut gray_env = template.env.clone();
        gray_env.extend(env);
        for i in 0..instances.max(1) {
            let unit = Unit {
                id: format!("{service}-gray-{}", i + 1),
                version: Track::Gray,
                binary: binary.clone(),
                listen: SocketAddr::new(template.listen.ip(), 0),
                admin: SocketAddr::new(template.admin.ip(), 0),
                gray_users: Some(selector.clone()),
                env: gray_env.clone(),
                ..template.clone()
            };
            ids.push(unit.id.clone());
            self.start(unit);
        }
        if let Err(e) = self.wait_ready(&ids, READY_TIMEOUT).await {
            self.stop(|u| u.service == service && u.version.is_gray())
                .await;
            self.forget(|v| v.service == service && v.version.is_gray());
            return Err(e.context("the gray release was stopped"));
        }
        Ok(format!(
            "{service}: {} gray instance(s) ready for {}",
            ids.len(),
            super::deploy::describe_selector(&selector)
        ))
    }

    async fn promote(self: &Arc<Self>, service: &str) -> anyhow::Result<String> {
        let units = self.units();
        let gray = units
            .iter()
            .find(|u| u.service == service && u.version.is_gray())
            .cloned()
            .ok_or_else(|| anyhow!("{service} has no gray instances to promote"))?;
        let stable: Vec<Unit> = units
            .into_iter()
            .filter(|u| u.service == service && u.version == Track::Stable)
            .collect();
        // Rolling: one stable instance at a time moves to the new binary and must be
        // ready before the next one stops.
        for old in &stable {
            self.stop(|u| u.id == old.id).await;
            let unit = Unit {
                binary: gray.binary.clone(),
                ..old.clone()
            };
            self.start(unit);
            self.wait_ready(std::slice::from_ref(&old.id), READY_TIMEOUT)
                .await?;
        }
        let n = self
            .stop(|u| u.service == service && u.version.is_gray())
            .await;
        self.forget(|v| v.service == service && v.version.is_gray());
        Ok(format!(
            "{service}: promoted; {} stable instance(s) now run the new binary, {n} gray instance(s) stopped",
            stable.len()
        ))
    }

    /// Copies `binary` into the state directory as `NAME-N` (a fresh N), so later builds
    /// never change what a running instance executes.
    pub(crate) fn keep_binary(&self, binary: &Path, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join("bin");
        std::fs::create_dir_all(&dir)?;
        let mut n = 1;
        let path = loop {
            let path = dir.join(format!("{name}-{n}"));
            if !path.exists() {
                break path;
            }
            n += 1;
        };
        // Written under a temporary name and renamed: the name an instance executes only
        // ever holds a complete binary that nothing has open for writing.
        let partial = dir.join(format!(".{name}-{n}.partial-{}", std::process::id()));
        std::fs::copy(binary, &partial)
            .with_context(|| format!("copying {} to {}", binary.display(), partial.display()))?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
        Ok(path)
    }
}

/// Spawns `command`, trying again a few times while the kernel answers "text file busy"
/// (ETXTBSY): a binary just written can still be open for writing in a child that another
/// thread forked at that moment and that has not yet run its own program.
async fn spawn_busy_tolerant(
    command: &mut tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    const ETXTBSY: i32 = 26;
    let mut pause = std::time::Duration::from_millis(10);
    for _ in 0..5 {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
    command.spawn()
}
