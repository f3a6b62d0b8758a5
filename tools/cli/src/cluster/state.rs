//! What a running deployment leaves in its state directory, and how commands talk to its
//! supervisor.
//!
//! ```text
//! STATE/state.json       the supervisor's view: instances, pids, addresses, status
//! STATE/control.sock     the supervisor's control socket (one JSON line each way)
//! STATE/supervisor.log   the supervisor's own output when detached
//! STATE/logs/ID.log      each instance's stdout and stderr
//! STATE/bin/             the binaries instances run (copied, so rebuilds do not swap them)
//! STATE/registry/        the embedded registry
//! STATE/data/ID/         each instance's data directory
//! ```

use std::path::{Path, PathBuf};
use svrkit::selector::Track;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use svrkit::config::Selector;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One instance as the supervisor sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct InstanceView {
    /// The manifest's service name.
    pub(crate) service: String,
    /// The instance id (also its registry id).
    pub(crate) id: String,
    /// Its release track.
    pub(crate) version: Track,
    /// The process id of the current run.
    pub(crate) pid: Option<u32>,
    /// `starting`, `ready`, `crashed`, `stopping`, `stopped`, `failed`.
    pub(crate) status: String,
    /// How many times it was restarted after crashing.
    pub(crate) restarts: u32,
    /// Where it serves RPC, once it said so.
    pub(crate) listen: Option<String>,
    /// Where its admin endpoint listens, once it said so.
    pub(crate) admin: Option<String>,
    /// Other endpoints it printed as `NAME on ADDR` (`http`, `ws`, ...).
    #[serde(default)]
    pub(crate) endpoints: std::collections::BTreeMap<String, String>,
    /// Its log file.
    pub(crate) log: PathBuf,
    /// The binary it runs.
    pub(crate) binary: PathBuf,
    /// What the last exit looked like, if it exited.
    pub(crate) last_exit: Option<String>,
}

/// The whole deployment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct StateFile {
    /// The supervisor's process id.
    pub(crate) supervisor_pid: u32,
    /// The manifest it runs.
    pub(crate) manifest: PathBuf,
    /// The registry spec instances were given (`dir:…` or `etcd:…`).
    pub(crate) registry: String,
    /// The cargo profile binaries are built with.
    pub(crate) profile: String,
    /// True once every instance was ready at least once.
    pub(crate) ready: bool,
    /// Every instance, in start order.
    pub(crate) instances: Vec<InstanceView>,
}

/// A request on the control socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum ControlRequest {
    /// Stop everything and exit.
    Down,
    /// Start gray instances of `service` running `binary`, for the users `selector` picks.
    Deploy {
        service: String,
        binary: PathBuf,
        selector: Selector,
        instances: u16,
        /// Environment of the gray instances only, over the service's.
        #[serde(default)]
        env: std::collections::BTreeMap<String, String>,
    },
    /// Restart stable instances on the gray binary, then stop the gray ones.
    Promote { service: String },
    /// Stop the gray instances.
    Rollback { service: String },
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ControlReply {
    /// Empty on success.
    #[serde(default)]
    pub(crate) error: Option<String>,
    /// What happened.
    #[serde(default)]
    pub(crate) message: String,
}

pub(crate) fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

pub(crate) fn socket_path(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// Reads the state file; `None` when no deployment ran here.
pub(crate) fn read_state(dir: &Path) -> anyhow::Result<Option<StateFile>> {
    let path = state_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", path.display()))
            .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces the state file, and the Prometheus configuration that follows it, atomically
/// (write then rename).
pub(crate) fn write_state(dir: &Path, state: &StateFile) -> std::io::Result<()> {
    let tmp = dir.join("state.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(tmp, state_path(dir))?;
    let tmp = dir.join("prometheus.yml.tmp");
    std::fs::write(&tmp, prometheus_config(state))?;
    std::fs::rename(tmp, prometheus_path(dir))
}

/// The Prometheus scrape configuration beside the state file.
pub(crate) fn prometheus_path(dir: &Path) -> PathBuf {
    dir.join("prometheus.yml")
}

/// A Prometheus configuration scraping every instance's admin endpoint, labelled with its
/// service and instance id (`prometheus --config.file STATE_DIR/prometheus.yml`).
pub(crate) fn prometheus_config(state: &StateFile) -> String {
    let mut out = String::from(
        "# Written by `svrkit up` whenever the cluster changes: every instance's admin\n\
         # endpoint (/metrics).\n\
         global:\n  scrape_interval: 5s\n\
         scrape_configs:\n  - job_name: svrkit\n    static_configs:\n",
    );
    let mut any = false;
    for v in &state.instances {
        let Some(admin) = &v.admin else { continue };
        any = true;
        out.push_str(&format!(
            "      - targets: [{admin:?}]\n        labels:\n          service: {:?}\n          instance_id: {:?}\n",
            v.service, v.id
        ));
    }
    if !any {
        out.push_str("      - targets: []\n");
    }
    out
}

/// Sends one request to the supervisor and waits for its reply.
pub(crate) async fn control(dir: &Path, request: &ControlRequest) -> anyhow::Result<ControlReply> {
    let path = socket_path(dir);
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .with_context(|| format!("no supervisor answers on {}", path.display()))?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut reply = String::new();
    BufReader::new(read).read_line(&mut reply).await?;
    if reply.is_empty() {
        anyhow::bail!("the supervisor hung up without answering");
    }
    Ok(serde_json::from_str(&reply)?)
}

/// True when a process with this id exists (and is not a zombie we could see).
pub(crate) fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    if rustix::process::test_kill_process(pid).is_err() {
        return false;
    }
    // A zombie still answers signal 0; its /proc status says Z.
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Sends SIGTERM (`kill = false`) or SIGKILL.
pub(crate) fn signal(pid: u32, kill: bool) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let sig = if kill {
            rustix::process::Signal::KILL
        } else {
            rustix::process::Signal::TERM
        };
        let _ = rustix::process::kill_process(pid, sig);
    }
}
