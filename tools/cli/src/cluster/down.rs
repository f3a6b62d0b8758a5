//! `svrkit down`: stop the deployment, whatever state its supervisor is in.

use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::state::{self, ControlRequest, alive, control, read_state, signal};
use super::{StateArgs, failed};
use crate::Failure;

/// Options of `svrkit down`.
#[derive(Debug, clap::Args)]
pub(crate) struct DownArgs {
    #[command(flatten)]
    state: StateArgs,
}

pub(crate) async fn down(args: DownArgs) -> Result<(), Failure> {
    let dir = args.state.dir().map_err(failed)?;
    let Some(state) = read_state(&dir).map_err(failed)? else {
        outln!("nothing is up in {}", dir.display());
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
    outln!(
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
