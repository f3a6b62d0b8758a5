//! `svrkit ps`: the deployment's instances.

use serde_json::{Value, json};

use super::manifest::Manifest;
use super::state::{InstanceView, StateFile, alive, read_state};
use super::{StateArgs, failed};
use crate::Failure;

/// Options of `svrkit ps`.
#[derive(Debug, clap::Args)]
pub(crate) struct PsArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Print JSON (one object per instance).
    #[arg(long)]
    json: bool,
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
            outln!("nothing is up in {}", dir.display());
        }
        return Ok(());
    };
    let supervised = alive(state.supervisor_pid);
    // A deployment over hosts: the other hosts' instances, from the shared registry.
    let elsewhere = other_hosts(&state).await;
    if args.json {
        for v in &state.instances {
            outln!("{}", instance_json(v));
        }
        for i in &elsewhere {
            outln!(
                "{}",
                json!({
                    "service": i.service,
                    "id": i.id,
                    "version": i.version,
                    "status": "elsewhere",
                    "rpc": i.addr.to_string(),
                    "admin": i.admin.map(|a| a.to_string()),
                    "zone": i.zone,
                })
            );
        }
        return Ok(());
    }
    outln!(
        "{:<20} {:<7} {:>7} {:<9} {:>8} {:<22} {:<29} ENDPOINTS",
        "INSTANCE",
        "VERSION",
        "PID",
        "STATUS",
        "RESTARTS",
        "RPC",
        "ADMIN"
    );
    for v in &state.instances {
        outln!(
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
    for i in &elsewhere {
        outln!(
            "{:<20} {:<7} {:>7} {:<9} {:>8} {:<22} {:<29} {}",
            i.id,
            i.version,
            "-",
            "elsewhere",
            "-",
            i.addr,
            i.admin.map_or("-".to_string(), |a| format!("http://{a}")),
            if i.zone.is_empty() {
                String::new()
            } else {
                format!("zone {}", i.zone)
            }
        );
    }
    if !supervised {
        outln!(
            "(the supervisor, pid {}, is not running: `svrkit down` cleans up)",
            state.supervisor_pid
        );
    }
    Ok(())
}

/// The etcd registry a deployment's instances use, with the TLS and user its manifest
/// gives them; `None` when the deployment's registry is not etcd.
pub(crate) fn etcd_of(
    state: &StateFile,
) -> Option<anyhow::Result<svrkit::discovery::EtcdRegistry>> {
    let (cluster, urls) = match svrkit::launch::RegistryKind::parse(&state.registry).ok()? {
        svrkit::launch::RegistryKind::EtcdIn { cluster, urls } => (Some(cluster), urls),
        svrkit::launch::RegistryKind::Etcd(urls) => (None, urls),
        _ => return None,
    };
    let access = Manifest::load(&state.manifest)
        .map(|m| {
            m.registry
                .etcd_env(state.manifest.parent().unwrap_or(std::path::Path::new(".")))
        })
        .unwrap_or_default();
    let registry = svrkit::discovery::EtcdRegistry::new(urls);
    let registry = match cluster {
        Some(cluster) => registry.cluster(&cluster).map_err(anyhow::Error::from),
        None => Ok(registry),
    };
    Some(registry.and_then(|r| Ok(svrkit::launch::etcd_from_vars(r, &access)?)))
}

/// The instances other hosts of an etcd deployment registered (not this supervisor's),
/// read with the manifest's etcd TLS and user; none when the registry is embedded or
/// cannot be read (`ps` then shows this host's share, with a warning).
async fn other_hosts(state: &StateFile) -> Vec<svrkit::discovery::Instance> {
    let Some(registry) = etcd_of(state) else {
        return Vec::new();
    };
    let all = match registry {
        Ok(registry) => tokio::time::timeout(std::time::Duration::from_secs(5), registry.all())
            .await
            .map_err(|_| anyhow::anyhow!("etcd did not answer within 5 s"))
            .and_then(|r| r.map_err(anyhow::Error::from)),
        Err(e) => Err(e),
    };
    match all {
        Ok(all) => all
            .into_iter()
            .filter(|i| !state.instances.iter().any(|v| v.id == i.id))
            .collect(),
        Err(e) => {
            eprintln!("warning: the other hosts' instances are not shown: {e:#}");
            Vec::new()
        }
    }
}
