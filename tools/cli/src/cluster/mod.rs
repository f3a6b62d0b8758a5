//! `svrkit up`, `down`, `ps`, `logs` and `deploy`: a local deployment from a manifest,
//! each instance its own supervised process.
//!
//! - [`manifest`]: the TOML manifest.
//! - `cargo`: building the manifest's binaries.
//! - `up`: starting, supervising (with [`supervisor`]) and the detached mode.
//! - `down`, `ps`, `logs`: stopping and looking at a deployment through its state dir.
//! - `deploy`: gray binary releases.
//! - [`state`]: what a deployment leaves in its state dir and the control socket.

mod cargo;
pub(crate) mod certs;
mod deploy;
mod down;
mod kubernetes;
mod logs;
mod manifest;
mod ps;
mod state;
mod supervisor;
pub(crate) mod up;

use std::path::PathBuf;

use crate::Failure;

pub(crate) use certs::{CertsArgs, certs};
pub(crate) use deploy::{DeployArgs, deploy, describe_selector};
pub(crate) use down::{DownArgs, down};
pub(crate) use logs::{LogsArgs, logs};
pub(crate) use ps::{PsArgs, etcd_of, ps};
pub(crate) use state::read_state;
pub(crate) use up::{UpArgs, up};

/// Where the deployment's state lives.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StateArgs {
    /// The state directory (default: $SVRKIT_HOME, else .svrkit).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
}

impl StateArgs {
    pub(crate) fn dir(&self) -> anyhow::Result<PathBuf> {
        let dir = self.state_dir.clone().unwrap_or_else(|| {
            std::env::var_os("SVRKIT_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".svrkit"))
        });
        Ok(std::path::absolute(dir)?)
    }
}

pub(crate) fn usage(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Usage(e.into())
}

pub(crate) fn failed(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Failed(e.into())
}
