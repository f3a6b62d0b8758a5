//! `svrkit config`: a service's gray-release configuration.

use anyhow::anyhow;
use svrkit::config::{Selector, promote, publish_gray, publish_stable, rollback};

use crate::Failure;
use crate::target::RegistryArgs;

/// Options of `svrkit config`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Print the service's configuration document as JSON.
    Show {
        /// The service.
        service: String,
    },
    /// Publish a new value: to a gray selection (one of --percent, --uids, --instances) or,
    /// with --stable, to everyone at once.
    Publish {
        /// The service.
        service: String,
        /// The new value (opaque to svrkit).
        value: String,
        /// This percentage of users.
        #[arg(long, group = "who")]
        percent: Option<u32>,
        /// These users (comma separated).
        #[arg(long, group = "who", value_delimiter = ',')]
        uids: Option<Vec<u64>>,
        /// These instances (comma separated ids).
        #[arg(long, group = "who", value_delimiter = ',')]
        instances: Option<Vec<String>>,
        /// Everyone, now.
        #[arg(long, group = "who")]
        stable: bool,
    },
    /// Give the gray value to everyone.
    Promote {
        /// The service.
        service: String,
    },
    /// Drop the gray value.
    Rollback {
        /// The service.
        service: String,
    },
}

pub(crate) async fn run(args: ConfigArgs) -> Result<(), Failure> {
    let store = args.registry.store().config();
    let store = &*store;
    match args.action {
        Action::Show { service } => {
            let doc = store
                .load(&service)
                .await
                .map_err(|e| Failure::Failed(e.into()))?;
            let text = serde_json::to_string_pretty(&doc).map_err(|e| Failure::Failed(e.into()))?;
            outln!("{text}");
        }
        Action::Publish {
            service,
            value,
            percent,
            uids,
            instances,
            stable,
        } => {
            let selector = match (percent, uids, instances, stable) {
                (_, _, _, true) => None,
                (Some(p), _, _, _) if p <= 100 => Some(Selector::Percent(p)),
                (Some(p), _, _, _) => {
                    return Err(Failure::Usage(anyhow!("--percent {p} is over 100")));
                }
                (_, Some(uids), _, _) => Some(Selector::Uids(uids)),
                (_, _, Some(ids), _) => Some(Selector::Instances(ids)),
                _ => {
                    return Err(Failure::Usage(anyhow!(
                        "say who gets it: --percent, --uids, --instances or --stable"
                    )));
                }
            };
            let version = match selector {
                Some(selector) => publish_gray(store, &service, value, selector).await,
                None => publish_stable(store, &service, value).await,
            }
            .map_err(|e| Failure::Failed(e.into()))?;
            outln!("{service}: published version {version}");
        }
        Action::Promote { service } => {
            let version = promote(store, &service)
                .await
                .map_err(|e| Failure::Failed(e.into()))?;
            outln!("{service}: version {version} is now stable");
        }
        Action::Rollback { service } => {
            let version = rollback(store, &service)
                .await
                .map_err(|e| Failure::Failed(e.into()))?;
            outln!("{service}: rolled back to version {version}");
        }
    }
    Ok(())
}
