//! `svrkit up`, `down`, `ps`, `logs` and `deploy`: a local deployment from a manifest,
//! each instance its own supervised process.

mod manifest;
mod state;
mod supervisor;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use svrkit::config::Selector;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::Failure;
use manifest::{Manifest, RegistryChoice};
use state::{ControlRequest, InstanceView, StateFile, alive, control, read_state, signal};
use supervisor::{READY_TIMEOUT, Supervisor, Unit};

/// Where the deployment's state lives.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StateArgs {
    /// The state directory (default: $SVRKIT_HOME, else .svrkit).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
}

impl StateArgs {
    fn dir(&self) -> anyhow::Result<PathBuf> {
        let dir = self.state_dir.clone().unwrap_or_else(|| {
            std::env::var_os("SVRKIT_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".svrkit"))
        });
        Ok(std::path::absolute(dir)?)
    }
}

/// Options of `svrkit up`.
#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// The manifest (default: ./svrkit.toml, else ./services/svrkit.toml).
    manifest: Option<PathBuf>,
    #[command(flatten)]
    state: StateArgs,
    /// Build with this cargo profile instead of the manifest's (`dev`, `release`, ...).
    #[arg(long)]
    profile: Option<String>,
    /// Return once every instance is ready, leaving the supervisor in the background.
    #[arg(long)]
    detach: bool,
    /// Print the deployment as JSON once it is ready.
    #[arg(long)]
    json: bool,
}

/// Options of `svrkit down`.
#[derive(Debug, clap::Args)]
pub(crate) struct DownArgs {
    #[command(flatten)]
    state: StateArgs,
}

/// Options of `svrkit ps`.
#[derive(Debug, clap::Args)]
pub(crate) struct PsArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Print JSON (one object per instance).
    #[arg(long)]
    json: bool,
}

/// Options of `svrkit logs`.
#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    /// A service (all its instances) or one instance id.
    name: String,
    #[command(flatten)]
    state: StateArgs,
    /// Lines to show from the end of each log.
    #[arg(short = 'n', long, default_value_t = 50)]
    lines: usize,
    /// Keep printing what is appended, until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
}

/// Options of `svrkit deploy`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeployArgs {
    /// The service (its manifest name).
    name: String,
    /// `promote` or `rollback` a gray release; without one (and without --gray) shows
    /// gray beside stable.
    action: Option<DeployAction>,
    /// Start a gray release of a new build for these users: `percent:N` or `uids:A,B,…`.
    #[arg(long, conflicts_with = "action")]
    gray: Option<String>,
    /// How many gray instances to start.
    #[arg(long, default_value_t = 1)]
    instances: u16,
    #[command(flatten)]
    state: StateArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DeployAction {
    /// The gray build replaces stable, one instance at a time.
    Promote,
    /// The gray instances stop; stable serves everyone again.
    Rollback,
    /// Gray beside stable: instances, requests, error rate, latency.
    Status,
}

fn usage(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Usage(e.into())
}

fn failed(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Failed(e.into())
}

fn default_manifest() -> anyhow::Result<PathBuf> {
    ["svrkit.toml", "services/svrkit.toml"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            anyhow!("no manifest given and neither ./svrkit.toml nor ./services/svrkit.toml exists")
        })
}

/// Parses `percent:N` (or `N%`) and `uids:A,B`.
pub(crate) fn parse_selector(text: &str) -> anyhow::Result<Selector> {
    let percent = |p: &str| -> anyhow::Result<Selector> {
        let p: u32 = p
            .trim()
            .parse()
            .with_context(|| format!("{p:?} is not a percentage"))?;
        if p > 100 {
            bail!("{p}% is over 100");
        }
        Ok(Selector::Percent(p))
    };
    match text.split_once(':') {
        Some(("percent", p)) => percent(p),
        Some(("uids", list)) => list
            .split(',')
            .map(|u| {
                u.trim()
                    .parse::<u64>()
                    .with_context(|| format!("{u:?} is not a uid"))
            })
            .collect::<anyhow::Result<Vec<u64>>>()
            .map(Selector::Uids),
        _ => match text.strip_suffix('%') {
            Some(p) => percent(p),
            None => bail!("gray selector {text:?}: use percent:N, N% or uids:A,B,..."),
        },
    }
}

/// How a selector reads in a sentence.
pub(crate) fn describe_selector(selector: &Selector) -> String {
    let join = |items: Vec<String>| items.join(", ");
    match selector {
        Selector::Percent(p) => format!("{p}% of users"),
        Selector::Uids(uids) => {
            format!("users {}", join(uids.iter().map(u64::to_string).collect()))
        }
        Selector::Instances(ids) => format!("instances {}", join(ids.clone())),
    }
}

/// Builds the packages of `services` with cargo and returns each binary's path by name.
fn build(
    manifest: &Manifest,
    profile: &str,
    services: &[&manifest::ServiceSpec],
) -> anyhow::Result<HashMap<String, PathBuf>> {
    let mut found = HashMap::new();
    let to_build: Vec<_> = services.iter().filter(|s| s.binary.is_none()).collect();
    for s in services {
        if let Some(binary) = &s.binary {
            found.insert(s.bin().to_string(), binary.clone());
        }
    }
    if to_build.is_empty() {
        return Ok(found);
    }
    let workspace = manifest
        .workspace
        .clone()
        .unwrap_or_else(|| PathBuf::from("."));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(&workspace)
        .args([
            "build",
            "--message-format=json-render-diagnostics",
            "--profile",
        ])
        .arg(if profile == "debug" { "dev" } else { profile });
    for s in &to_build {
        command.args(["-p", s.package(), "--bin", s.bin()]);
    }
    eprintln!(
        "building {} ({profile}) in {}",
        to_build
            .iter()
            .map(|s| s.bin())
            .collect::<Vec<_>>()
            .join(", "),
        workspace.display()
    );
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !output.status.success() {
        bail!("cargo build failed ({})", output.status);
    }
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(message) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            found.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    for s in &to_build {
        if !found.contains_key(s.bin()) {
            bail!(
                "cargo built no binary {:?} in package {:?}",
                s.bin(),
                s.package()
            );
        }
    }
    Ok(found)
}

/// Fails when a live supervisor already runs a deployment in `dir`.
fn ensure_not_running(dir: &Path) -> Result<(), Failure> {
    if let Some(state) = read_state(dir).map_err(failed)? {
        if alive(state.supervisor_pid) {
            return Err(usage(anyhow!(
                "a deployment is already up in {} (supervisor pid {}); run `svrkit down` first",
                dir.display(),
                state.supervisor_pid
            )));
        }
    }
    Ok(())
}

pub(crate) async fn up(args: UpArgs) -> Result<(), Failure> {
    let manifest_path = match args.manifest.clone() {
        Some(path) => path,
        None => default_manifest().map_err(usage)?,
    };
    let manifest_path = std::path::absolute(&manifest_path).map_err(failed)?;
    let manifest = Manifest::load(&manifest_path).map_err(usage)?;
    let dir = args.state.dir().map_err(failed)?;
    ensure_not_running(&dir)?;
    let profile = args
        .profile
        .clone()
        .unwrap_or_else(|| manifest.build.profile.clone());
    let specs: Vec<_> = manifest.services.iter().collect();
    let binaries = build(&manifest, &profile, &specs).map_err(failed)?;
    if args.detach {
        let total: usize = manifest
            .services
            .iter()
            .map(|s| usize::from(s.instances))
            .sum();
        return detach(&args, &manifest_path, &dir, &profile, total).await;
    }
    for sub in ["logs", "data", "bin"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))
            .map_err(failed)?;
    }
    let registry = match manifest.registry.kind {
        RegistryChoice::Embedded => format!("dir:{}", dir.join("registry").display()),
        RegistryChoice::Etcd => format!("etcd:{}", manifest.registry.endpoints.join(",")),
    };
    let sup = Supervisor::new(dir.clone(), manifest_path.clone(), registry, profile);
    let listener = {
        let path = state::socket_path(&dir);
        let _ = std::fs::remove_file(&path);
        tokio::net::UnixListener::bind(&path)
            .with_context(|| format!("binding {}", path.display()))
            .map_err(failed)?
    };
    let started = Instant::now();
    let mut ids = Vec::new();
    for spec in &manifest.services {
        let binary = binaries
            .get(spec.bin())
            .ok_or_else(|| anyhow!("no binary for {}", spec.name))
            .and_then(|b| sup.keep_binary(b, spec.bin()))
            .map_err(failed)?;
        for i in 0..spec.instances {
            let unit = Unit {
                service: spec.name.clone(),
                id: format!("{}-{}", spec.name, i + 1),
                version: "stable".to_string(),
                binary: binary.clone(),
                args: spec.args.clone(),
                env: spec.env.clone(),
                listen: SocketAddr::new(LOOPBACK, spec.port_of(i)),
                admin: SocketAddr::new(LOOPBACK, spec.admin_port_of(i)),
                gray_users: None,
            };
            ids.push(unit.id.clone());
            sup.start(unit);
        }
    }
    let printer = tokio::spawn(print_progress(Arc::clone(&sup), ids.len()));
    let ready = tokio::select! {
        ready = sup.wait_ready(&ids, READY_TIMEOUT) => ready,
        _ = svrkit::launch::shutdown_signal() => Err(anyhow!("interrupted")),
    };
    if let Err(e) = ready {
        eprintln!("svrkit up: {e:#}; stopping");
        shut_down(&sup, &dir).await;
        printer.abort();
        return Err(failed(e));
    }
    sup.mark_ready();
    let state = sup.snapshot();
    print_summary(&state, args.json, started.elapsed());
    eprintln!("svrkit up: supervising; Ctrl-C or `svrkit down` stops everything");
    let (down_tx, mut down_rx) = tokio::sync::mpsc::channel::<tokio::net::UnixStream>(1);
    loop {
        tokio::select! {
            _ = svrkit::launch::shutdown_signal() => break,
            Some(stream) = down_rx.recv() => {
                shut_down(&sup, &dir).await;
                printer.abort();
                reply(stream, &state::ControlReply { error: None, message: "stopped".into() }).await;
                return Ok(());
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(serve_control(Arc::clone(&sup), stream, down_tx.clone()));
            }
        }
    }
    shut_down(&sup, &dir).await;
    printer.abort();
    Ok(())
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn shut_down(sup: &Arc<Supervisor>, dir: &Path) {
    eprintln!("svrkit up: stopping every instance");
    // Gray instances first, then the rest.
    sup.stop(|u| u.version == "gray").await;
    let n = sup.stop(|_| true).await;
    let _ = std::fs::remove_file(state::socket_path(dir));
    let _ = std::fs::remove_file(state::state_path(dir));
    eprintln!("svrkit up: {n} instance(s) stopped");
}

async fn reply(mut stream: tokio::net::UnixStream, reply: &state::ControlReply) {
    if let Ok(mut line) = serde_json::to_vec(reply) {
        line.push(b'\n');
        let _ = stream.write_all(&line).await;
    }
}

/// One control connection: one request, one reply. `down` is answered by the main loop
/// once everything stopped.
async fn serve_control(
    sup: Arc<Supervisor>,
    stream: tokio::net::UnixStream,
    down: tokio::sync::mpsc::Sender<tokio::net::UnixStream>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let stream = reader.into_inner();
    let request: ControlRequest = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let error = Some(format!("bad control request: {e}"));
            reply(
                stream,
                &state::ControlReply {
                    error,
                    message: String::new(),
                },
            )
            .await;
            return;
        }
    };
    if let ControlRequest::Down = request {
        let _ = down.send(stream).await;
        return;
    }
    let answer = sup.handle(request).await;
    reply(stream, &answer).await;
}

/// Prints each instance's status changes on stderr for as long as the deployment runs.
async fn print_progress(sup: Arc<Supervisor>, total: usize) {
    let mut seen: HashMap<String, (String, u32)> = HashMap::new();
    let mut changes = sup.subscribe();
    loop {
        let state = sup.snapshot();
        let ready = state
            .instances
            .iter()
            .filter(|v| v.status == "ready")
            .count();
        for v in &state.instances {
            let now = (v.status.clone(), v.restarts);
            if seen.get(&v.id) == Some(&now) {
                continue;
            }
            let line = match v.status.as_str() {
                "ready" => format!(
                    "ready     {:<20} rpc {}  admin http://{}",
                    v.id,
                    v.listen.as_deref().unwrap_or("-"),
                    v.admin.as_deref().unwrap_or("-")
                ),
                "crashed" => format!(
                    "crashed   {:<20} {} (restart {} follows)",
                    v.id,
                    v.last_exit.as_deref().unwrap_or("?"),
                    v.restarts
                ),
                other => format!("{other:<9} {}", v.id),
            };
            if state.ready {
                eprintln!("  {line}");
            } else {
                eprintln!("  [{ready}/{total}] {line}");
            }
            seen.insert(v.id.clone(), now);
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

fn print_summary(state: &StateFile, json: bool, took: Duration) {
    if json {
        println!("{}", serde_json::to_string(state).unwrap_or_default());
        return;
    }
    println!("{:<20} {:<7} {:<22} ADMIN", "INSTANCE", "VERSION", "RPC");
    for v in &state.instances {
        let extra: Vec<String> = v
            .endpoints
            .iter()
            .map(|(name, addr)| format!("{name} {addr}"))
            .collect();
        println!(
            "{:<20} {:<7} {:<22} http://{:<22} {}",
            v.id,
            v.version,
            v.listen.as_deref().unwrap_or("-"),
            v.admin.as_deref().unwrap_or("-"),
            extra.join("  ")
        );
    }
    println!(
        "svrkit up: {} instance(s) ready in {:.1}s; registry {}",
        state.instances.len(),
        took.as_secs_f64(),
        state.registry
    );
}

/// `up --detach`: runs the supervisor as a background process (its output in
/// STATE/supervisor.log) and returns once every instance is ready.
async fn detach(
    args: &UpArgs,
    manifest: &Path,
    dir: &Path,
    profile: &str,
    total: usize,
) -> Result<(), Failure> {
    std::fs::create_dir_all(dir).map_err(failed)?;
    let log_path = dir.join("supervisor.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))
        .map_err(failed)?;
    let exe = std::env::current_exe().map_err(failed)?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("up")
        .arg(manifest)
        .arg("--state-dir")
        .arg(dir)
        .arg("--profile")
        .arg(profile)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(failed)?)
        .stderr(log)
        .process_group(0);
    let mut child = command
        .spawn()
        .context("starting the supervisor")
        .map_err(failed)?;
    let pid = child.id().unwrap_or_default();
    let started = Instant::now();
    let deadline = started + READY_TIMEOUT * 2;
    let mut shown = 0;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(failed(anyhow!(
                "the supervisor exited ({status}) before the deployment was ready:\n{log}"
            )));
        }
        if let Ok(Some(state)) = read_state(dir) {
            if state.supervisor_pid == pid {
                let ready = state
                    .instances
                    .iter()
                    .filter(|v| v.status == "ready")
                    .count();
                if ready != shown && !args.json {
                    eprintln!("  [{ready}/{total}] ready");
                    shown = ready;
                }
                if state.ready {
                    print_summary(&state, args.json, started.elapsed());
                    eprintln!(
                        "svrkit up: supervisor pid {pid} runs in the background (log {}); `svrkit down` stops it",
                        log_path.display()
                    );
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            signal(pid, false);
            return Err(failed(anyhow!(
                "the deployment was not ready after {:?}; see {}",
                deadline - started,
                log_path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn down(args: DownArgs) -> Result<(), Failure> {
    let dir = args.state.dir().map_err(failed)?;
    let Some(state) = read_state(&dir).map_err(failed)? else {
        println!("nothing is up in {}", dir.display());
        return Ok(());
    };
    if alive(state.supervisor_pid) {
        match control(&dir, &ControlRequest::Down).await {
            Ok(reply) => {
                if let Some(e) = reply.error {
                    return Err(failed(anyhow!(e)));
                }
            }
            Err(_) => signal(state.supervisor_pid, false),
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while alive(state.supervisor_pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Whatever the supervisor left (it was killed, say) is stopped here.
    let mut leftovers = 0;
    for v in &state.instances {
        if let Some(pid) = v.pid.filter(|p| alive(*p)) {
            leftovers += 1;
            signal(pid, false);
            let deadline = Instant::now() + Duration::from_secs(15);
            while alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if alive(pid) {
                signal(pid, true);
            }
        }
    }
    let _ = std::fs::remove_file(state::state_path(&dir));
    let _ = std::fs::remove_file(state::socket_path(&dir));
    println!(
        "down: {} instance(s) stopped{}",
        state.instances.len(),
        if leftovers > 0 {
            format!(" ({leftovers} left by a dead supervisor)")
        } else {
            String::new()
        }
    );
    Ok(())
}

fn instance_json(v: &InstanceView) -> Value {
    json!({
        "service": v.service,
        "id": v.id,
        "version": v.version,
        "pid": v.pid,
        "status": v.status,
        "restarts": v.restarts,
        "rpc": v.listen,
        "admin": v.admin,
        "endpoints": v.endpoints,
        "log": v.log,
        "last_exit": v.last_exit,
    })
}

pub(crate) async fn ps(args: PsArgs) -> Result<(), Failure> {
    let dir = args.state.dir().map_err(failed)?;
    let Some(state) = read_state(&dir).map_err(failed)? else {
        if !args.json {
            println!("nothing is up in {}", dir.display());
        }
        return Ok(());
    };
    let supervised = alive(state.supervisor_pid);
    if args.json {
        for v in &state.instances {
            println!("{}", instance_json(v));
        }
        return Ok(());
    }
    println!(
        "{:<20} {:<7} {:>7} {:<9} {:>8} {:<22} {:<29} ENDPOINTS",
        "INSTANCE", "VERSION", "PID", "STATUS", "RESTARTS", "RPC", "ADMIN"
    );
    for v in &state.instances {
        println!(
            "{:<20} {:<7} {:>7} {:<9} {:>8} {:<22} {:<29} {}",
            v.id,
            v.version,
            v.pid.map_or("-".to_string(), |p| p.to_string()),
            v.status,
            v.restarts,
            v.listen.as_deref().unwrap_or("-"),
            v.admin
                .as_deref()
                .map_or("-".to_string(), |a| format!("http://{a}")),
            v.endpoints
                .iter()
                .map(|(name, addr)| format!("{name} {addr}"))
                .collect::<Vec<_>>()
                .join("  ")
        );
    }
    if !supervised {
        println!(
            "(the supervisor, pid {}, is not running: `svrkit down` cleans up)",
            state.supervisor_pid
        );
    }
    Ok(())
}

pub(crate) async fn logs(args: LogsArgs) -> Result<(), Failure> {
    let dir = args.state.dir().map_err(failed)?;
    let logs_dir = dir.join("logs");
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&logs_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e
                        .file_name()
                        .to_string_lossy()
                        .strip_suffix(".log")?
                        .to_string();
                    let matches = name == args.name
                        || name
                            .strip_prefix(&args.name)
                            .and_then(|rest| rest.strip_prefix('-'))
                            .is_some_and(|rest| {
                                rest.chars().all(|c| c.is_ascii_digit())
                                    || rest
                                        .strip_prefix("gray-")
                                        .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
                            });
                    matches.then(|| (name, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        return Err(usage(anyhow!(
            "no logs for {:?} in {}",
            args.name,
            logs_dir.display()
        )));
    }
    let prefix = files.len() > 1;
    let mut offsets = Vec::new();
    for (name, path) in &files {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[lines.len().saturating_sub(args.lines)..] {
            print_log_line(prefix, name, line);
        }
        offsets.push(text.len());
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for ((name, path), offset) in files.iter().zip(offsets.iter_mut()) {
            let bytes = std::fs::read(path).unwrap_or_default();
            if bytes.len() < *offset {
                *offset = 0; // truncated or replaced
            }
            let fresh = String::from_utf8_lossy(&bytes[*offset..]).into_owned();
            if let Some(end) = fresh.rfind('\n') {
                for line in fresh[..end].lines() {
                    print_log_line(prefix, name, line);
                }
                *offset += end + 1;
            }
        }
    }
    Ok(())
}

fn print_log_line(prefix: bool, name: &str, line: &str) {
    if prefix {
        println!("{name:<16} | {line}");
    } else {
        println!("{line}");
    }
}

/// Requests, errors and mean latency of one version label, summed over its instances.
#[derive(Debug, Default)]
struct VersionFigures {
    instances: usize,
    answering: usize,
    requests: u64,
    errors: u64,
    latency_weighted: f64,
    /// The worst instance's worst method p99 (percentiles do not add up across instances).
    worst_p99_ms: f64,
}

async fn figures(state: &StateFile, service: &str) -> Vec<(String, VersionFigures)> {
    let mut by_version: Vec<(String, VersionFigures)> = Vec::new();
    for v in state.instances.iter().filter(|v| v.service == service) {
        let index = match by_version.iter().position(|(label, _)| *label == v.version) {
            Some(i) => i,
            None => {
                by_version.push((v.version.clone(), VersionFigures::default()));
                by_version.len() - 1
            }
        };
        let f = &mut by_version[index].1;
        f.instances += 1;
        let Some(admin) = v.admin.as_deref().and_then(|a| a.parse().ok()) else {
            continue;
        };
        let Some(status) = crate::http::get_json(admin, "/status").await else {
            continue;
        };
        f.answering += 1;
        for server in status["servers"].as_array().into_iter().flatten() {
            for m in server["methods"].as_array().into_iter().flatten() {
                let requests = m["requests"].as_u64().unwrap_or(0);
                f.requests += requests;
                f.errors += m["errors"].as_u64().unwrap_or(0);
                f.latency_weighted +=
                    m["mean_latency_ms"].as_f64().unwrap_or(0.0) * requests as f64;
                f.worst_p99_ms = f
                    .worst_p99_ms
                    .max(m["p99_latency_ms"].as_f64().unwrap_or(0.0));
            }
        }
    }
    by_version.sort_by(|a, b| a.0.cmp(&b.0).reverse()); // stable before gray
    by_version
}

async fn show_release(state: &StateFile, service: &str, json_out: bool) {
    let rows = figures(state, service).await;
    if json_out {
        for (version, f) in &rows {
            println!(
                "{}",
                json!({
                    "service": service,
                    "version": version,
                    "instances": f.instances,
                    "answering": f.answering,
                    "requests": f.requests,
                    "errors": f.errors,
                    "error_rate": if f.requests == 0 { 0.0 } else { f.errors as f64 / f.requests as f64 },
                    "mean_latency_ms": if f.requests == 0 { 0.0 } else { f.latency_weighted / f.requests as f64 },
                    "worst_p99_latency_ms": f.worst_p99_ms,
                })
            );
        }
        return;
    }
    println!(
        "{:<8} {:>9} {:>10} {:>8} {:>10} {:>13} {:>12}",
        "VERSION", "INSTANCES", "REQUESTS", "ERRORS", "ERROR RATE", "MEAN LATENCY", "WORST P99"
    );
    for (version, f) in &rows {
        let (rate, latency, p99) = if f.requests == 0 {
            ("-".to_string(), "-".to_string(), "-".to_string())
        } else {
            (
                format!("{:.2}%", 100.0 * f.errors as f64 / f.requests as f64),
                format!("{:.3} ms", f.latency_weighted / f.requests as f64),
                format!("{:.3} ms", f.worst_p99_ms),
            )
        };
        println!(
            "{version:<8} {:>9} {:>10} {:>8} {rate:>10} {latency:>13} {p99:>12}",
            format!("{}/{}", f.answering, f.instances),
            f.requests,
            f.errors
        );
    }
}

pub(crate) async fn deploy(args: DeployArgs) -> Result<(), Failure> {
    let dir = args.state.dir().map_err(failed)?;
    let state = read_state(&dir)
        .map_err(failed)?
        .filter(|s| alive(s.supervisor_pid))
        .ok_or_else(|| {
            usage(anyhow!(
                "nothing is up in {}; run `svrkit up` first",
                dir.display()
            ))
        })?;
    if !state.instances.iter().any(|v| v.service == args.name) {
        return Err(usage(anyhow!("no service {:?} is up", args.name)));
    }
    let request = match (&args.gray, args.action) {
        (Some(selector), _) => {
            let selector = parse_selector(selector).map_err(usage)?;
            let manifest = Manifest::load(&state.manifest).map_err(failed)?;
            let spec = manifest.service(&args.name).map_err(usage)?;
            let built = build(&manifest, &state.profile, &[spec]).map_err(failed)?;
            let binary = built
                .get(spec.bin())
                .cloned()
                .ok_or_else(|| failed(anyhow!("no binary built for {}", args.name)))?;
            Some(ControlRequest::Deploy {
                service: args.name.clone(),
                binary,
                selector,
                instances: args.instances,
            })
        }
        (None, Some(DeployAction::Promote)) => Some(ControlRequest::Promote {
            service: args.name.clone(),
        }),
        (None, Some(DeployAction::Rollback)) => Some(ControlRequest::Rollback {
            service: args.name.clone(),
        }),
        (None, Some(DeployAction::Status) | None) => None,
    };
    if let Some(request) = request {
        let reply = control(&dir, &request).await.map_err(failed)?;
        if let Some(e) = reply.error {
            return Err(failed(anyhow!(e)));
        }
        if !args.json {
            println!("{}", reply.message);
        }
    }
    let state = read_state(&dir).map_err(failed)?.unwrap_or(state);
    show_release(&state, &args.name, args.json).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_or_say_why_not() {
        assert_eq!(
            parse_selector("percent:10").ok(),
            Some(Selector::Percent(10))
        );
        assert_eq!(parse_selector("25%").ok(), Some(Selector::Percent(25)));
        assert_eq!(
            parse_selector("uids:7, 9").ok(),
            Some(Selector::Uids(vec![7, 9]))
        );
        for bad in [
            "percent:101",
            "percent:x",
            "uids:7,x",
            "everyone",
            "instances:a",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
        assert_eq!(describe_selector(&Selector::Uids(vec![7, 9])), "users 7, 9");
    }
}
