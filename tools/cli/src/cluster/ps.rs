//! `svrkit ps`: the deployment's instances.

use serde_json::{Value, json};

use super::state::{InstanceView, alive, read_state};
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
    if args.json {
        for v in &state.instances {
            outln!("{}", instance_json(v));
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
    if !supervised {
        outln!(
            "(the supervisor, pid {}, is not running: `svrkit down` cleans up)",
            state.supervisor_pid
        );
    }
    Ok(())
}
