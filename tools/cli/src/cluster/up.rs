//! `svrkit up`: build, start, wait until ready, supervise; `--detach` runs the supervisor
//! in the background.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use svrkit::selector::Track;

use anyhow::{Context as _, anyhow};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::cargo::build;
use super::certs::{ClusterCerts, OPERATOR};
use super::manifest::{Manifest, RegistryChoice, ServiceSpec};
use super::state::{self, ControlRequest, StateFile, alive, read_state, signal};
use super::supervisor::{READY_TIMEOUT, Supervisor, Unit};
use super::{StateArgs, failed, usage};
use crate::Failure;

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
    /// Run the share of this `[[host]]` of the manifest (one `svrkit up --host` per
    /// machine, all joined by the manifest's etcd cluster).
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
}

pub(crate) fn default_manifest() -> anyhow::Result<PathBuf> {
    ["svrkit.toml", "services/svrkit.toml"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            anyhow!("no manifest given and neither ./svrkit.toml nor ./services/svrkit.toml exists")
        })
}

/// Fails when a live supervisor already runs a deployment in `dir`.
fn ensure_not_running(dir: &Path) -> Result<(), Failure> {
    if let Some(state) = read_state(dir).map_err(failed)?
        && alive(state.supervisor_pid)
    {
        return Err(usage(anyhow!(
            "a deployment is already up in {} (supervisor pid {}); run `svrkit down` first",
            dir.display(),
            state.supervisor_pid
        )));
    }
    Ok(())
}

/// A service's environment from the manifest, with its call policy when TLS is on (a
/// policy needs verified callers).
fn policy_env(spec: &ServiceSpec, tls: bool) -> BTreeMap<String, String> {
    let mut env = spec.env.clone();
    if tls
        && let Some(policy) = spec.policy()
        && let Ok(json) = serde_json::to_string(&policy)
    {
        env.insert("SVRKIT_CALL_POLICY".to_string(), json);
    }
    env
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
    let host = match (&args.host, manifest.hosts.is_empty()) {
        (Some(name), _) => Some(manifest.host(name).map_err(usage)?.clone()),
        (None, true) => None,
        (None, false) => {
            let names: Vec<&str> = manifest.hosts.iter().map(|h| h.name.as_str()).collect();
            return Err(usage(anyhow!(
                "this manifest places services on hosts ({}): run `svrkit up --host NAME` on each",
                names.join(", ")
            )));
        }
    };
    // This host's instances: (service, index from 0).
    let placed: Vec<(&ServiceSpec, u16)> = manifest
        .services
        .iter()
        .flat_map(|s| (0..s.instances).map(move |i| (s, i)))
        .filter(|(s, i)| match &host {
            Some(host) => manifest.host_of(s, *i).is_some_and(|h| h.name == host.name),
            None => true,
        })
        .collect();
    if placed.is_empty() {
        return Err(usage(anyhow!(
            "the manifest places no instance on host {:?}",
            args.host.as_deref().unwrap_or_default()
        )));
    }
    let mut specs: Vec<&ServiceSpec> = placed.iter().map(|(s, _)| *s).collect();
    specs.dedup_by(|a, b| a.name == b.name);
    let binaries = build(&manifest, &profile, &specs).map_err(failed)?;
    if args.detach {
        return detach(&args, &manifest_path, &dir, &profile, placed.len()).await;
    }
    for sub in ["logs", "data", "bin"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))
            .map_err(failed)?;
    }
    let registry = match manifest.registry.kind {
        RegistryChoice::Embedded => format!("dir:{}", dir.join("registry").display()),
        // The cluster's keys under /svrkit/CLUSTER/: clusters sharing one etcd stay apart.
        RegistryChoice::Etcd => format!(
            "etcd@{}:{}",
            manifest.tls.cluster,
            local_first(
                &manifest.registry.endpoints,
                host.as_ref().map(|h| h.address.as_str())
            )
            .join(",")
        ),
    };
    // Mutual TLS: the cluster CA (made on the first start), the operator's certificate
    // for `svrkit call`; each instance gets its own when it starts.
    let certs = if manifest.tls.enabled {
        let tls_dir = manifest
            .tls
            .ca_dir
            .clone()
            .unwrap_or_else(|| dir.join("tls"));
        let certs = ClusterCerts::open(&tls_dir, &manifest.tls.cluster, manifest.tls.edge)
            .map_err(failed)?;
        certs.ensure(OPERATOR, OPERATOR).map_err(failed)?;
        Some(Arc::new(certs))
    } else {
        None
    };
    // The hosts of one cluster share its secret: beside the CA they share.
    let secret = cluster_secret(manifest.tls.ca_dir.as_deref().unwrap_or(&dir)).map_err(failed)?;
    let sup = Supervisor::new(
        dir.clone(),
        manifest_path.clone(),
        registry,
        profile,
        certs.clone(),
        secret,
    );
    if let Some(certs) = certs.clone() {
        // Short-lived certificates, renewed over their files; the processes reload them.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(super::certs::RENEW_CHECK);
            loop {
                tick.tick().await;
                match certs.renew_due() {
                    Ok(renewed) if !renewed.is_empty() => {
                        tracing::info!(?renewed, "certificates renewed");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "renewing certificates failed"),
                }
            }
        });
    }
    let listener = {
        let path = state::socket_path(&dir);
        let _ = std::fs::remove_file(&path);
        tokio::net::UnixListener::bind(&path)
            .with_context(|| format!("binding {}", path.display()))
            .map_err(failed)?
    };
    let started = Instant::now();
    let mut ids = Vec::new();
    // etcd's TLS and user, for every process (paths relative to the manifest).
    let etcd_env = manifest
        .registry
        .etcd_env(manifest_path.parent().unwrap_or(std::path::Path::new(".")));
    let mut kept: HashMap<&str, PathBuf> = HashMap::new();
    for &(spec, i) in &placed {
        let binary = match kept.get(spec.bin()) {
            Some(binary) => binary.clone(),
            None => {
                let binary = binaries
                    .get(spec.bin())
                    .ok_or_else(|| anyhow!("no binary for {}", spec.name))
                    .and_then(|b| sup.keep_binary(b, spec.bin()))
                    .map_err(failed)?;
                kept.insert(spec.bin(), binary.clone());
                binary
            }
        };
        // A sharded service (a store) is created with these shards (every host's) and
        // keeps them: its shard map (SVRKIT_SHARDS; other services ignore it).
        let shards: Vec<String> = (0..spec.instances)
            .map(|i| format!("{}-{}", spec.name, i + 1))
            .collect();
        let id = &shards[usize::from(i)];
        {
            let mut env = policy_env(spec, certs.is_some());
            env.entry("SVRKIT_SHARDS".to_string())
                .or_insert_with(|| shards.join(","));
            if spec.replicas > 1 {
                env.entry("SVRKIT_REPLICAS".to_string())
                    .or_insert_with(|| spec.replicas.to_string());
            }
            for (name, value) in &etcd_env {
                env.entry(name.clone()).or_insert_with(|| value.clone());
            }
            let ip = host.as_ref().map_or(LOOPBACK, |h| h.listen_ip());
            if let Some(host) = &host {
                // Bound on the host's address (or a wildcard), registered as its address.
                let defaults = [
                    ("SVRKIT_ADVERTISE", Some(host.address.clone())),
                    ("SVRKIT_ZONE", host.zone.clone()),
                    ("WX_HTTP", Some(SocketAddr::new(ip, 0).to_string())),
                    ("WX_WS", Some(SocketAddr::new(ip, 0).to_string())),
                ];
                // Public listeners on their port (the next one for a second instance of
                // the service on this host).
                let earlier = placed
                    .iter()
                    .take_while(|(s, j)| !(s.name == spec.name && *j == i))
                    .filter(|(s, _)| s.name == spec.name)
                    .count();
                for (var, port) in &spec.public {
                    let port = port.saturating_add(u16::try_from(earlier).unwrap_or(u16::MAX));
                    env.entry(var.clone())
                        .or_insert_with(|| SocketAddr::new(ip, port).to_string());
                }
                for (name, value) in defaults {
                    if let Some(value) = value {
                        env.entry(name.to_string()).or_insert(value);
                    }
                }
            }
            let unit = Unit {
                service: spec.name.clone(),
                id: id.clone(),
                version: Track::Stable,
                binary: binary.clone(),
                args: spec.args.clone(),
                env,
                listen: SocketAddr::new(ip, spec.port_of(i)),
                admin: SocketAddr::new(ip, spec.admin_port_of(i)),
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
    sup.stop(|u| u.version.is_gray()).await;
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
        outln!("{}", serde_json::to_string(state).unwrap_or_default());
        return;
    }
    outln!("{:<20} {:<7} {:<22} ADMIN", "INSTANCE", "VERSION", "RPC");
    for v in &state.instances {
        let extra: Vec<String> = v
            .endpoints
            .iter()
            .map(|(name, addr)| format!("{name} {addr}"))
            .collect();
        outln!(
            "{:<20} {:<7} {:<22} http://{:<22} {}",
            v.id,
            v.version,
            v.listen.as_deref().unwrap_or("-"),
            v.admin.as_deref().unwrap_or("-"),
            extra.join("  ")
        );
    }
    outln!(
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
        .args(args.host.iter().flat_map(|h| ["--host", h.as_str()]))
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
        if let Ok(Some(state)) = read_state(dir)
            && state.supervisor_pid == pid
        {
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

/// The cluster's secret (`svrkit::secret`), kept in `DIR/cluster.secret` (0600): made on
/// the first start, the same on every start after, so what instances signed stays valid
/// across restarts.
pub(crate) fn cluster_secret(dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Hosts sharing the directory make one secret between them.
    super::certs::locked(dir, || make_cluster_secret(dir))
}

fn make_cluster_secret(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("cluster.secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        svrkit::secret::ClusterSecret::from_hex(&existing)
            .with_context(|| format!("{}", path.display()))?;
        return Ok(existing);
    }
    let secret = svrkit::secret::ClusterSecret::generate_hex()?;
    let partial = dir.join(format!(".cluster.secret.partial-{}", std::process::id()));
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        writeln!(file, "{secret}")?;
        file.sync_all()?;
    }
    std::fs::rename(&partial, &path).with_context(|| format!("creating {}", path.display()))?;
    Ok(secret)
}

/// The etcd endpoints with this host's own member first (its instances talk to it while
/// it answers, and to the others in the manifest's order when it does not).
fn local_first(endpoints: &[String], address: Option<&str>) -> Vec<String> {
    let Some(address) = address else {
        return endpoints.to_vec();
    };
    let ip = address.parse::<IpAddr>().ok();
    let local = |e: &String| {
        let host = e
            .split_once("://")
            .map_or(e.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == address || (ip.is_some() && host.parse::<IpAddr>().ok() == ip)
    };
    let (mut mine, others): (Vec<String>, Vec<String>) = endpoints.iter().cloned().partition(local);
    mine.extend(others);
    mine
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hosts_own_etcd_member_comes_first() {
        let endpoints: Vec<String> = [
            "https://10.0.0.1:2379",
            "https://10.0.0.2:2379",
            "https://[fd00::3]:2379",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(super::local_first(&endpoints, None), endpoints);
        assert_eq!(
            super::local_first(&endpoints, Some("10.0.0.2"))[0],
            "https://10.0.0.2:2379"
        );
        assert_eq!(
            super::local_first(&endpoints, Some("fd00::3"))[0],
            "https://[fd00::3]:2379"
        );
        // A host with no member of its own keeps the manifest's order.
        assert_eq!(super::local_first(&endpoints, Some("10.0.0.9")), endpoints);
    }
}
