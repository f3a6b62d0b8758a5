//! `svrkit deploy`: gray binary releases — start, compare, promote, roll back.

use anyhow::{Context as _, anyhow, bail};
use serde_json::json;
use svrkit::config::Selector;
use svrkit::selector::Track;

use super::cargo::build;
use super::manifest::Manifest;
use super::state::{ControlRequest, StateFile, alive, control, read_state};
use super::{StateArgs, failed, usage};
use crate::Failure;

/// Options of `svrkit deploy`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeployArgs {
    /// The service (its manifest name).
    #[arg(required_unless_present = "render")]
    name: Option<String>,
    /// Render the manifest as objects of another platform instead, into a directory:
    /// `--render kubernetes DIR` (see docs/deploy-kubernetes.md).
    #[arg(long, num_args = 2, value_names = ["PLATFORM", "DIR"], conflicts_with_all = ["gray", "action"])]
    render: Option<Vec<String>>,
    /// With --render: the manifest (default: ./svrkit.toml, else ./services/svrkit.toml).
    #[arg(long, requires = "render")]
    manifest: Option<std::path::PathBuf>,
    /// With --render: the container image holding the binaries (see the Dockerfile).
    #[arg(long, requires = "render", default_value = "svrkit-backend:latest")]
    image: String,
    /// With --render: the namespace.
    #[arg(long, requires = "render", default_value = "svrkit")]
    namespace: String,
    /// With --render: the etcd endpoints, when not the manifest's (repeatable).
    #[arg(long = "etcd", requires = "render")]
    etcd: Vec<String>,
    /// With --render: the volume of each stateful pod.
    #[arg(long, requires = "render", default_value = "10Gi")]
    volume: String,
    /// `promote` or `rollback` a gray release; without one (and without --gray) shows
    /// gray beside stable.
    action: Option<DeployAction>,
    /// Start a gray release of a new build for these users: `percent:N` or `uids:A,B,…`.
    #[arg(long, conflicts_with = "action")]
    gray: Option<String>,
    /// How many gray instances to start.
    #[arg(long, default_value_t = 1)]
    instances: u16,
    /// With --gray: environment of the gray instances only (`KEY=VALUE`, repeatable), to
    /// gray-release a setting as well as a build.
    #[arg(long = "gray-env", requires = "gray", value_name = "KEY=VALUE")]
    gray_env: Vec<String>,
    /// With --gray: watch the gray instances and roll them back at once if their server
    /// faults (internal, unavailable, deadline exceeded, overloaded — not a caller's
    /// error such as a wrong password) pass this fraction of their requests.
    #[arg(long, requires = "gray", value_name = "FAULT_RATIO")]
    auto_rollback: Option<f64>,
    /// With --auto-rollback: how long to watch, in seconds.
    #[arg(long, requires = "auto_rollback", default_value_t = 60)]
    watch: u64,
    /// With --auto-rollback: the requests the gray instances must have served before
    /// their fault rate decides anything.
    #[arg(long, requires = "auto_rollback", default_value_t = 20)]
    min_requests: u64,
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

/// Requests, errors and mean latency of one version label, summed over its instances.
#[derive(Debug, Default)]
struct VersionFigures {
    instances: usize,
    answering: usize,
    requests: u64,
    errors: u64,
    /// The errors that were the server's fault (internal, unavailable, deadline,
    /// overloaded): what tells a broken build; a wrong password is not one.
    faults: u64,
    latency_weighted: f64,
    /// The worst instance's worst method p99 (percentiles do not add up across instances).
    worst_p99_ms: f64,
}

async fn figures(state: &StateFile, service: &str) -> Vec<(Track, VersionFigures)> {
    let mut by_version: Vec<(Track, VersionFigures)> = Vec::new();
    for v in state.instances.iter().filter(|v| v.service == service) {
        let index = match by_version.iter().position(|(label, _)| *label == v.version) {
            Some(i) => i,
            None => {
                by_version.push((v.version, VersionFigures::default()));
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
                f.faults += m["faults"].as_u64().unwrap_or(0);
                f.latency_weighted +=
                    m["mean_latency_ms"].as_f64().unwrap_or(0.0) * requests as f64;
                f.worst_p99_ms = f
                    .worst_p99_ms
                    .max(m["p99_latency_ms"].as_f64().unwrap_or(0.0));
            }
        }
    }
    by_version.sort_by_key(|(track, _)| *track); // stable before gray
    by_version
}

async fn show_release(state: &StateFile, service: &str, json_out: bool) {
    let rows = figures(state, service).await;
    if json_out {
        for (version, f) in &rows {
            outln!(
                "{}",
                json!({
                    "service": service,
                    "version": version,
                    "instances": f.instances,
                    "answering": f.answering,
                    "requests": f.requests,
                    "errors": f.errors,
                    "error_rate": if f.requests == 0 { 0.0 } else { f.errors as f64 / f.requests as f64 },
                    "faults": f.faults,
                    "fault_rate": if f.requests == 0 { 0.0 } else { f.faults as f64 / f.requests as f64 },
                    "caller_errors": f.errors.saturating_sub(f.faults),
                    "mean_latency_ms": if f.requests == 0 { 0.0 } else { f.latency_weighted / f.requests as f64 },
                    "worst_p99_latency_ms": f.worst_p99_ms,
                })
            );
        }
        return;
    }
    // Faults (the server's) decide a release; caller errors (a wrong password, a bad
    // argument) are shown apart: a healthy build answers them too.
    outln!(
        "{:<8} {:>9} {:>10} {:>8} {:>10} {:>13} {:>13} {:>12}",
        "VERSION",
        "INSTANCES",
        "REQUESTS",
        "FAULTS",
        "FAULT RATE",
        "CALLER ERRORS",
        "MEAN LATENCY",
        "WORST P99"
    );
    for (version, f) in &rows {
        let (rate, latency, p99) = if f.requests == 0 {
            ("-".to_string(), "-".to_string(), "-".to_string())
        } else {
            (
                format!("{:.2}%", 100.0 * f.faults as f64 / f.requests as f64),
                format!("{:.3} ms", f.latency_weighted / f.requests as f64),
                format!("{:.3} ms", f.worst_p99_ms),
            )
        };
        outln!(
            "{version:<8} {:>9} {:>10} {:>8} {rate:>10} {:>13} {latency:>13} {p99:>12}",
            format!("{}/{}", f.answering, f.instances),
            f.requests,
            f.faults,
            f.errors.saturating_sub(f.faults)
        );
    }
}

/// Why `service` cannot be released by gray instances, if it cannot: a gray instance of a
/// replicated store would hold no replica and answer its users' keys `not_mine`, so
/// replicas are upgraded one at a time instead.
fn gray_refusal(service: &super::manifest::ServiceSpec) -> Option<String> {
    (service.replicas > 1).then(|| {
        format!(
            "{} is replicated ({} replicas per shard): it is not released by gray instances; \
             upgrade it one replica at a time (build, then restart each instance in turn and \
             wait for its /readyz), the Raft groups keep serving",
            service.name, service.replicas
        )
    })
}

pub(crate) async fn deploy(args: DeployArgs) -> Result<(), Failure> {
    if let Some(render) = &args.render {
        return render_to(&args, render);
    }
    let Some(name) = args.name.clone() else {
        return Err(usage(anyhow!("name the service to deploy")));
    };
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
    if !state.instances.iter().any(|v| v.service == name) {
        return Err(usage(anyhow!("no service {:?} is up", name)));
    }
    let request = match (&args.gray, args.action) {
        (Some(selector), _) => {
            let selector = parse_selector(selector).map_err(usage)?;
            let manifest = Manifest::load(&state.manifest).map_err(failed)?;
            let spec = manifest.service(&name).map_err(usage)?;
            if let Some(refused) = gray_refusal(spec) {
                return Err(usage(anyhow!(refused)));
            }
            let built = build(&manifest, &state.profile, &[spec]).map_err(failed)?;
            let binary = built
                .get(spec.bin())
                .cloned()
                .ok_or_else(|| failed(anyhow!("no binary built for {}", name)))?;
            Some(ControlRequest::Deploy {
                service: name.clone(),
                binary,
                selector,
                instances: args.instances,
                env: parse_env(&args.gray_env).map_err(usage)?,
            })
        }
        (None, Some(DeployAction::Promote)) => Some(ControlRequest::Promote {
            service: name.clone(),
        }),
        (None, Some(DeployAction::Rollback)) => Some(ControlRequest::Rollback {
            service: name.clone(),
        }),
        (None, Some(DeployAction::Status) | None) => None,
    };
    if let Some(request) = request {
        let reply = control(&dir, &request).await.map_err(failed)?;
        if let Some(e) = reply.error {
            return Err(failed(anyhow!(e)));
        }
        if !args.json {
            outln!("{}", reply.message);
        }
    }
    let state = read_state(&dir).map_err(failed)?.unwrap_or(state);
    if let (Some(_), Some(ratio)) = (&args.gray, args.auto_rollback) {
        return watch_gray(&dir, &name, ratio, &args).await;
    }
    show_release(&state, &name, args.json).await;
    Ok(())
}

/// Parses `KEY=VALUE` settings.
fn parse_env(pairs: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() && !key.contains(char::is_whitespace) => {
                Ok((key.to_string(), value.to_string()))
            }
            _ => bail!("--gray-env takes KEY=VALUE, not {pair:?}"),
        })
        .collect()
}

/// What a watch of the gray instances concluded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    /// Not enough requests yet.
    Undecided,
    /// Faults under the ratio.
    Healthy { requests: u64, fault_rate: f64 },
    /// Faults over the ratio: roll back.
    Faulty { requests: u64, fault_rate: f64 },
}

/// Judges gray figures against `ratio` once they hold `min_requests`.
fn verdict(f: &VersionFigures, ratio: f64, min_requests: u64) -> Verdict {
    if f.requests < min_requests.max(1) {
        return Verdict::Undecided;
    }
    let fault_rate = f.faults as f64 / f.requests as f64;
    if fault_rate > ratio {
        Verdict::Faulty {
            requests: f.requests,
            fault_rate,
        }
    } else {
        Verdict::Healthy {
            requests: f.requests,
            fault_rate,
        }
    }
}

/// Watches the gray instances of `service` for `args.watch` seconds: rolls them back
/// (and fails) as soon as their server faults pass `ratio`; otherwise leaves them
/// serving and says what it saw.
async fn watch_gray(
    dir: &std::path::Path,
    service: &str,
    ratio: f64,
    args: &DeployArgs,
) -> Result<(), Failure> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(usage(anyhow!(
            "--auto-rollback is a fraction of requests, 0 to 1, not {ratio}"
        )));
    }
    outln!(
        "watching {service}'s gray instances for {} s: rolled back when server faults pass {:.1}% of at least {} requests",
        args.watch,
        ratio * 100.0,
        args.min_requests
    );
    let until = std::time::Instant::now() + std::time::Duration::from_secs(args.watch);
    let last = loop {
        let state = read_state(dir)
            .map_err(failed)?
            .ok_or_else(|| failed(anyhow!("the deployment stopped")))?;
        let gray = figures(&state, service)
            .await
            .into_iter()
            .find(|(track, _)| track.is_gray())
            .map(|(_, f)| f)
            .ok_or_else(|| failed(anyhow!("{service} has no gray instances any more")))?;
        let now = verdict(&gray, ratio, args.min_requests);
        if let Verdict::Faulty {
            requests,
            fault_rate,
        } = now
        {
            let request = ControlRequest::Rollback {
                service: service.to_string(),
            };
            let reply = control(dir, &request).await.map_err(failed)?;
            if let Some(e) = reply.error {
                return Err(failed(anyhow!("rolling back: {e}")));
            }
            return Err(failed(anyhow!(
                "{service}: rolled back automatically: server faults were {:.1}% of {requests} gray requests (over {:.1}%)",
                fault_rate * 100.0,
                ratio * 100.0
            )));
        }
        if std::time::Instant::now() >= until {
            break now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    match last {
        Verdict::Healthy {
            requests,
            fault_rate,
        } => outln!(
            "{service}: the gray release held: server faults {:.1}% of {requests} requests; promote it with `svrkit deploy {service} promote`",
            fault_rate * 100.0
        ),
        _ => outln!(
            "{service}: the gray instances served fewer than {} requests in {} s; still serving, not judged",
            args.min_requests,
            args.watch
        ),
    }
    Ok(())
}

/// `--render PLATFORM DIR`.
fn render_to(args: &DeployArgs, render: &[String]) -> Result<(), Failure> {
    let [platform, dir] = render else {
        return Err(usage(anyhow!("--render takes PLATFORM and DIR")));
    };
    if platform != "kubernetes" {
        return Err(usage(anyhow!(
            "--render {platform}: the platform svrkit renders for is `kubernetes`"
        )));
    }
    let path = match &args.manifest {
        Some(path) => path.clone(),
        None => super::up::default_manifest().map_err(usage)?,
    };
    let path = std::path::absolute(&path).map_err(failed)?;
    let manifest = Manifest::load(&path).map_err(usage)?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    let options = super::kubernetes::RenderOptions {
        image: args.image.clone(),
        namespace: args.namespace.clone(),
        etcd: args.etcd.clone(),
        volume: args.volume.clone(),
        state: args.state.dir().map_err(failed)?,
    };
    let files = super::kubernetes::render(&manifest, base, &options, std::path::Path::new(dir))
        .map_err(usage)?;
    for file in &files {
        outln!("{}", file.display());
    }
    eprintln!(
        "svrkit deploy: {} objects for Kubernetes {} in {dir}; `kubectl apply -f {dir}` (docs/deploy-kubernetes.md)",
        files.len(),
        super::kubernetes::KUBERNETES_VERSION
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicated_store_is_not_released_by_gray_instances() {
        let manifest: super::super::manifest::Manifest = toml::from_str(
            "[[service]]\nname = \"echo\"\n[[service]]\nname = \"store\"\ninstances = 3\nreplicas = 3\n",
        )
        .expect("parses");
        assert!(gray_refusal(manifest.service("echo").expect("echo")).is_none());
        let refused = gray_refusal(manifest.service("store").expect("store")).expect("refused");
        assert!(refused.contains("one replica at a time"), "{refused}");
    }

    #[test]
    fn a_gray_release_is_judged_by_server_faults_once_it_has_served_enough() {
        let figures = |requests, errors, faults| VersionFigures {
            requests,
            errors,
            faults,
            ..VersionFigures::default()
        };
        assert_eq!(verdict(&figures(5, 5, 5), 0.1, 20), Verdict::Undecided);
        // Caller errors (wrong passwords, bad arguments) are not faults.
        assert!(matches!(
            verdict(&figures(100, 90, 5), 0.1, 20),
            Verdict::Healthy { requests: 100, .. }
        ));
        assert!(matches!(
            verdict(&figures(100, 20, 20), 0.1, 20),
            Verdict::Faulty { requests: 100, .. }
        ));
        assert!(parse_env(&["A=1".into(), "B=x=y".into()]).is_ok_and(|e| e["B"] == "x=y"));
        assert!(parse_env(&["=1".into()]).is_err());
        assert!(parse_env(&["NOVALUE".into()]).is_err());
    }

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
