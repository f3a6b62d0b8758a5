//! `wx-replica`: a replicated store's replicas, changed online (see
//! `wx_storage::replica::membership`).
//!
//! ```text
//! wx-replica show STORE
//!     every shard's replicas in the shard map, and each live replica's role and progress
//! wx-replica add STORE --shard N --instance ID
//!     a new replica of shard N on instance ID (already running as a spare of STORE)
//! wx-replica remove STORE --shard N --instance ID
//! wx-replica replace STORE --shard N --old ID --new ID
//! ```
//!
//! The cluster is found through SVRKIT_REGISTRY; with mutual TLS this presents
//! SVRKIT_TLS_CERT / _KEY / _CA (the operator's certificate: `svrkit certs operator`).
//! Make one change at a time: each is three steps (map, group, map), and a step that
//! failed is safe to run again.

use anyhow::{Context as _, anyhow, bail};
use svrkit::discovery::shard_map;
use wx_storage::replica::leader::Cluster;
use wx_storage::replica::membership::{self, Change};

const USAGE: &str = "usage: wx-replica show STORE | add STORE --shard N --instance ID | remove STORE --shard N --instance ID | replace STORE --shard N --old ID --new ID";

fn flag<'a>(args: &'a [String], name: &str) -> anyhow::Result<&'a str> {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].as_str())
        .ok_or_else(|| anyhow!("{name} is required\n{USAGE}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(command), Some(store)) = (args.first(), args.get(1)) else {
        bail!("{USAGE}");
    };
    let service = wx_storage::store_service(store).ok_or_else(|| {
        anyhow!(
            "no store named {store:?} ({})",
            wx_storage::STORES.join(", ")
        )
    })?;
    let Cluster { config, addrs } = Cluster::from_env(service).await?;
    let change = match command.as_str() {
        "show" => {
            let map = shard_map::load(&*config, service)
                .await?
                .with_context(|| format!("{service} has no shard map"))?;
            println!("{service}: shard map v{}", map.version);
            for index in 0..map.shards.len() {
                let replicas: Vec<String> = map
                    .replicas_of(index)
                    .into_iter()
                    .map(|r| {
                        let up = addrs.iter().any(|(id, _)| *id == r);
                        if up { r } else { format!("{r} (down)") }
                    })
                    .collect();
                println!("  shard {}: {}", index + 1, replicas.join(", "));
            }
            return Ok(());
        }
        "add" => Change::Add(flag(&args, "--instance")?.to_string()),
        "remove" => Change::Remove(flag(&args, "--instance")?.to_string()),
        "replace" => Change::Replace {
            old: flag(&args, "--old")?.to_string(),
            new: flag(&args, "--new")?.to_string(),
        },
        other => bail!("unknown command {other:?}\n{USAGE}"),
    };
    let shard: usize = flag(&args, "--shard")?
        .parse()
        .context("--shard takes a shard number (from 1)")?;
    let done = membership::change(&*config, service, &addrs, shard, &change, |step| {
        println!("{step}")
    })
    .await?;
    println!(
        "done: shard {shard} of {service} is held by {} (map v{})",
        done.voters.join(", "),
        done.map_version
    );
    Ok(())
}
