//! `wx-backup`: backup and restore of a replicated store (see `wx_storage::replica::backup`).
//!
//! ```text
//! wx-backup save STORE --to DIR
//!     a consistent snapshot of every shard of STORE, from each shard's leader; the
//!     cluster is found through SVRKIT_REGISTRY, and with mutual TLS this presents
//!     SVRKIT_TLS_CERT / _KEY / _CA (the operator's certificate: svrkit certs operator)
//! wx-backup restore STORE --from DIR --data-root ROOT
//!     seeds the backup into a fresh cluster whose instance ID keeps its data in
//!     ROOT/ID (svrkit up: .svrkit/data); start the cluster afterwards
//! ```
//!
//! STORE is one of accountstore, contactstore, msgstore, seqstore, momentsstore,
//! walletstore.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use svrkit::discovery::shard_map;
use wx_storage::replica::leader::Cluster;

fn service_of(store: &str) -> anyhow::Result<&'static str> {
    wx_storage::store_service(store).ok_or_else(|| {
        anyhow!(
            "no store named {store:?} ({})",
            wx_storage::STORES.join(", ")
        )
    })
}

fn flag(args: &[String], name: &str) -> anyhow::Result<PathBuf> {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| PathBuf::from(&w[1]))
        .ok_or_else(|| anyhow!("{name} DIR is required"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(command), Some(store)) = (args.first(), args.get(1)) else {
        bail!(
            "usage: wx-backup save STORE --to DIR | wx-backup restore STORE --from DIR --data-root ROOT"
        );
    };
    let service = service_of(store)?;
    match command.as_str() {
        "save" => {
            let to = flag(&args, "--to")?;
            let Cluster { config, addrs } = Cluster::from_env(service).await?;
            let map = shard_map::load(&*config, service)
                .await?
                .with_context(|| format!("{service} has no shard map"))?;
            let manifest = wx_storage::replica::backup::save(service, &map, &addrs, &to).await?;
            for shard in &manifest.snapshots {
                println!(
                    "shard {}: {} bytes, up to log index {}",
                    shard.shard, shard.bytes, shard.last_index
                );
            }
            println!("backup of {service} in {}", to.display());
        }
        "restore" => {
            let from = flag(&args, "--from")?;
            let root = flag(&args, "--data-root")?;
            let manifest = wx_storage::replica::backup::read_manifest(&from)?;
            if manifest.service != service {
                bail!(
                    "{} is a backup of {}, not {service}",
                    from.display(),
                    manifest.service
                );
            }
            let written = wx_storage::replica::backup::seed(&from, store, |id| root.join(id))?;
            println!("seeded {written} replica(s) of {service}; start the cluster now");
        }
        other => bail!("unknown command {other:?}: save or restore"),
    }
    Ok(())
}
