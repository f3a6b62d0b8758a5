//! `svrkit-bench storage`: acknowledged writes per second on one storage shard's engine
//! (fjall) under three durability policies, at several writer counts:
//!
//! - `group`: the shard's [`wx_storage::Engine`] — each write waits for an fsync, writers
//!   share fsyncs (group commit). What the storage services do.
//! - `sync_each`: each write fsyncs its own batch (`PersistMode::SyncAll`).
//! - `buffered`: writes reach the OS but nobody waits for the disk: survives kill -9, not
//!   power loss. The ceiling.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fjall::{Database, KeyspaceCreateOptions, PersistMode};

/// Options of `svrkit-bench storage`.
#[derive(Debug, clap::Args)]
pub(crate) struct StorageArgs {
    /// Concurrent writers (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,128")]
    writers: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 128)]
    value: usize,
    /// Measure replicated shards instead, through three accountstore processes with this
    /// many copies of each shard (comma separated, e.g. `1,3`; 1 first for `vs_single`).
    #[arg(long, value_delimiter = ',')]
    replicas: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Group,
    SyncEach,
    Buffered,
}

fn tempdir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "svrkit-bench-{name}-{}-{:x}",
        std::process::id(),
        svrkit::context::random_u64()
    ))
}

async fn measure(
    policy: Policy,
    writers: usize,
    seconds: f64,
    value: usize,
) -> anyhow::Result<f64> {
    let dir = tempdir("storage");
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let payload = vec![7u8; value];
    match policy {
        Policy::Group => {
            let engine = wx_storage::Engine::open(&dir)?;
            let ks = engine.keyspace("bench")?;
            for w in 0..writers {
                let (engine, ks, done, stop, payload) = (
                    engine.clone(),
                    ks.clone(),
                    done.clone(),
                    stop.clone(),
                    payload.clone(),
                );
                tasks.spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let mut batch = engine.batch();
                        batch.insert(&ks, key(w, i), payload.clone());
                        engine.commit(batch).await?;
                        done.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    Ok::<(), anyhow::Error>(())
                });
            }
        }
        Policy::SyncEach | Policy::Buffered => {
            let db = Database::builder(&dir).open()?;
            let ks = db.keyspace("bench", KeyspaceCreateOptions::default)?;
            let mode = if policy == Policy::SyncEach {
                PersistMode::SyncAll
            } else {
                PersistMode::Buffer
            };
            for w in 0..writers {
                let (db, ks, done, stop, payload) = (
                    db.clone(),
                    ks.clone(),
                    done.clone(),
                    stop.clone(),
                    payload.clone(),
                );
                tasks.spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let (db, ks, payload) = (db.clone(), ks.clone(), payload.clone());
                        let k = key(w, i);
                        tokio::task::spawn_blocking(move || {
                            let mut batch = db.batch().durability(Some(mode));
                            batch.insert(&ks, k, payload);
                            batch.commit()
                        })
                        .await??;
                        done.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    Ok::<(), anyhow::Error>(())
                });
            }
        }
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(n as f64 / elapsed)
}

fn key(writer: usize, i: u64) -> Vec<u8> {
    let mut k = (writer as u64).to_be_bytes().to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

pub(crate) async fn run(args: StorageArgs) -> anyhow::Result<()> {
    if !args.replicas.is_empty() {
        return crate::replicated::run(crate::replicated::ReplicatedArgs {
            replicas: args.replicas,
            writers: args.writers,
            seconds: args.seconds,
        })
        .await;
    }
    println!(
        "{:>8} {:>14} {:>14} {:>14} {:>12}",
        "writers", "group/s", "sync_each/s", "buffered/s", "group÷sync"
    );
    let mut lines = Vec::new();
    for &writers in &args.writers {
        let group = measure(Policy::Group, writers, args.seconds, args.value).await?;
        let sync_each = measure(Policy::SyncEach, writers, args.seconds, args.value).await?;
        let buffered = measure(Policy::Buffered, writers, args.seconds, args.value).await?;
        println!(
            "{writers:>8} {group:>14.0} {sync_each:>14.0} {buffered:>14.0} {:>12.2}",
            group / sync_each
        );
        lines.push(format!(
            "{{\"bench\":\"storage\",\"writers\":{writers},\"value\":{},\"group_per_s\":{group:.0},\"sync_each_per_s\":{sync_each:.0},\"buffered_per_s\":{buffered:.0},\"group_vs_sync_each\":{:.2},\"group_vs_buffered\":{:.2}}}",
            args.value,
            group / sync_each,
            group / buffered
        ));
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
