//! `svrkit-bench failover`: idempotent calls through three instances under steady load;
//! one instance is killed with SIGKILL a third of the way through.
//!
//! Reports the calls made, the calls that failed (the goal is none: retries move them to
//! the live instances), and `shift_ms`, the time from the kill until the dead instance
//! stopped costing anything: the last retry its failures caused before a 100 ms quiet
//! spell (later ejection probes are separate, rare events).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

use crate::echo::System;
use crate::proto::svrkit_gen;
use crate::rpc::ServerProcess;

/// Options of `svrkit-bench failover`.
#[derive(Debug, clap::Args)]
pub(crate) struct FailoverArgs {
    /// Concurrent callers.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Length of the run, in milliseconds; the kill happens at a third.
    #[arg(long, default_value_t = 3000)]
    duration_ms: u64,
}

fn retries(snapshotter: &Snapshotter) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| key.key().name() == "svrkit_client_retries_total")
        .map(|(_, _, _, value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

pub(crate) async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.duration_ms < 300 {
        bail!("concurrency must be positive and the run at least 300 ms");
    }
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).map_err(|e| anyhow::anyhow!("metrics recorder: {e}"))?;

    let mut servers: Vec<ServerProcess> = (0..3)
        .map(|_| ServerProcess::start(System::Svrkit))
        .collect::<Result<_, _>>()?;
    let channel = svrkit::Channel::lazy(servers.iter().map(|s| s.addr));
    let client = svrkit_gen::bench_client::BenchClient::new(channel);
    let payload = Bytes::from(vec![0x5a; 64]);
    let start = Instant::now();
    let end = start + Duration::from_millis(args.duration_ms);
    let (requests, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (client, payload, requests, failed) = (
                client.clone(),
                payload.clone(),
                requests.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < end {
                    let ok = client
                        .echo(svrkit_gen::Payload {
                            data: payload.clone(),
                        })
                        .await
                        .is_ok();
                    requests.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(args.duration_ms / 3)).await;
    let before = retries(&snapshotter);
    let killed_at = Instant::now();
    servers[0].kill();
    // Watch the retry counter: the shift is over at the last increase before 100 ms of quiet.
    let mut last = before;
    let mut last_change = killed_at;
    while Instant::now() < end && last_change.elapsed() < Duration::from_millis(100) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = retries(&snapshotter);
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
    let shift_ms = last_change.duration_since(killed_at).as_secs_f64() * 1e3;
    for w in workers {
        w.await?;
    }
    let (requests, failed) = (
        requests.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!(
        "svrkit-bench failover: 3 instances, {} callers, {} ms, one killed (SIGKILL) at {} ms",
        args.concurrency,
        args.duration_ms,
        args.duration_ms / 3
    );
    println!(
        "requests {requests}, failed {failed}, retries caused by the kill {}, shift {shift_ms:.1} ms",
        retries(&snapshotter) - before
    );
    println!(
        "{{\"bench\":\"failover\",\"requests\":{requests},\"failed\":{failed},\"shift_ms\":{shift_ms:.1}}}"
    );
    Ok(())
}
