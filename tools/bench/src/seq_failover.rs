//! `svrkit-bench seq --kill`: how long users go without sequence numbers when an
//! allocator dies, and that no number is ever handed out twice.
//!
//! Each run starts one `seqstore` shard and two allocators (child processes), routes
//! every user to its section's allocator on a consistent-hash ring as the backend does
//! (`wx_api::by_section`), takes every section's lease, and puts the allocators under
//! load: `concurrency` callers, each with its own users, each user's numbers checked to
//! go up. A second into the load the second allocator is killed with SIGKILL. Measured:
//!
//! - `failover_ms`: from the kill until a user of a section the dead allocator held gets
//!   a number again (the survivor takes such a section once its lease has lapsed);
//! - `recovered_ms`: from the kill until the last request that failed or took longer
//!   than 100 ms ended (every section served again, promptly);
//! - `reused`: numbers not above the user's previous one (must be 0);
//! - `errors_after_failover`: failed requests that started after `failover_ms`;
//! - `idle_cpu_pct`: what keeping every lease costs once the load stops — the CPU of the
//!   survivor (now holding all sections) and the store over [`IDLE_WINDOW`], in percent
//!   of one core.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use svrkit::Channel;
use svrkit::balance::Balance;
use wx_api::seq::{NextRequest, SeqClient};

use crate::rpc::ServerProcess;

/// What a failover run is given.
#[derive(Debug, Clone)]
pub(crate) struct FailoverArgs {
    pub(crate) runs: usize,
    pub(crate) seconds: f64,
    pub(crate) concurrency: usize,
    pub(crate) users: u64,
    pub(crate) lease_ms: Option<u64>,
}

/// A request slower than this counts as not served promptly.
const PROMPT: Duration = Duration::from_millis(100);
/// When the allocator is killed, after the load starts.
const KILL_AFTER: Duration = Duration::from_secs(1);
/// How long the idle cost of lease renewals is measured for.
const IDLE_WINDOW: Duration = Duration::from_secs(3);

/// One request: when it started and ended (since the load began), for which section,
/// and whether it got a number.
struct Sample {
    start: Duration,
    end: Duration,
    section: u32,
    ok: bool,
}

/// One run's figures.
struct Figures {
    failover_ms: Option<f64>,
    recovered_ms: f64,
    reused: u64,
    errors: u64,
    errors_after_failover: u64,
    requests: usize,
    idle_cpu_pct: f64,
}

async fn one_run(args: &FailoverArgs) -> anyhow::Result<Figures> {
    let dir = std::env::temp_dir().join(format!(
        "svrkit-bench-seq-kill-{}-{:x}",
        std::process::id(),
        svrkit::context::random_u64()
    ));
    let dir_arg = dir.display().to_string();
    let store = ServerProcess::spawn(&["serve-seq", "store", "--dir", &dir_arg])?;
    let store_addr = store.addr.to_string();
    let lease = args.lease_ms.map(|ms| ms.to_string());
    let allocator = |id: &str| {
        let mut argv = vec!["serve-seq", "alloc", "--store", &store_addr, "--id", id];
        if let Some(ms) = &lease {
            argv.extend(["--lease-ms", ms]);
        }
        ServerProcess::spawn(&argv)
    };
    let survivor = allocator("bench-seq-1")?;
    let mut victim = allocator("bench-seq-2")?;
    let channel = Channel::builder()
        .balance(Balance::ConsistentHash)
        .lazy([survivor.addr, victim.addr]);
    let victim_name = victim.addr.to_string();
    let client = SeqClient::new(channel.clone());
    // Every section's lease taken by its owner on the ring.
    let mut taken = std::collections::HashSet::new();
    let mut uid = 1u64;
    while taken.len() < wx_api::SEQ_SECTIONS as usize && uid < 1_000_000 {
        let section = wx_api::seq_section(uid);
        if taken.insert(section) {
            client
                .next_with(NextRequest { uid }, wx_api::by_section(section))
                .await?;
        }
        uid += 1;
    }
    let victims: std::collections::HashSet<u32> = (0..wx_api::SEQ_SECTIONS)
        .filter(|s| channel.owner_of(u64::from(*s)).as_deref() == Some(victim_name.as_str()))
        .collect();

    let began = Instant::now();
    let until = began + Duration::from_secs_f64(args.seconds);
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..args.concurrency as u64 {
        let client = client.clone();
        let (users, callers_n) = (
            args.users.max(args.concurrency as u64),
            args.concurrency as u64,
        );
        callers.spawn(async move {
            let mut samples = Vec::new();
            let mut last: HashMap<u64, u64> = HashMap::new();
            let mut reused = 0u64;
            let mut walk = caller.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            while Instant::now() < until {
                walk = walk
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                // This caller's users only: uid ≡ caller (mod callers).
                let uid = 1 + ((walk >> 11) % (users / callers_n)) * callers_n + caller;
                let section = wx_api::seq_section(uid);
                let start = began.elapsed();
                let answer = client
                    .next_with(NextRequest { uid }, wx_api::by_section(section))
                    .await;
                let end = began.elapsed();
                if let Ok(reply) = &answer {
                    let previous = last.insert(uid, reply.seq);
                    if previous.is_some_and(|p| reply.seq <= p) {
                        reused += 1;
                    }
                }
                samples.push(Sample {
                    start,
                    end,
                    section,
                    ok: answer.is_ok(),
                });
            }
            (samples, reused)
        });
    }
    tokio::time::sleep_until((began + KILL_AFTER).into()).await;
    let killed = began.elapsed();
    victim.kill();
    let mut samples = Vec::new();
    let mut reused = 0;
    while let Some(joined) = callers.join_next().await {
        let (s, r) = joined?;
        samples.extend(s);
        reused += r;
    }
    let idle_from = survivor.cpu() + store.cpu();
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = (survivor.cpu() + store.cpu()).saturating_sub(idle_from);
    drop((survivor, victim, store));
    let _ = std::fs::remove_dir_all(&dir);

    let failover = samples
        .iter()
        .filter(|s| s.ok && s.start >= killed && victims.contains(&s.section))
        .map(|s| s.end)
        .min()
        .map(|end| end.saturating_sub(killed));
    let recovered = samples
        .iter()
        .filter(|s| s.end >= killed && (!s.ok || s.end - s.start > PROMPT))
        .map(|s| s.end.saturating_sub(killed))
        .max()
        .unwrap_or_default();
    let errors = samples.iter().filter(|s| !s.ok).count() as u64;
    let errors_after_failover = failover.map_or(0, |f| {
        samples
            .iter()
            .filter(|s| !s.ok && s.start > killed + f)
            .count() as u64
    });
    Ok(Figures {
        failover_ms: failover.map(|d| d.as_secs_f64() * 1e3),
        recovered_ms: recovered.as_secs_f64() * 1e3,
        reused,
        errors,
        errors_after_failover,
        requests: samples.len(),
        idle_cpu_pct: idle.as_secs_f64() / IDLE_WINDOW.as_secs_f64() * 100.0,
    })
}

/// Runs `args.runs` failover measurements: a table, then one JSON line per run.
pub(crate) async fn run(args: &FailoverArgs) -> anyhow::Result<()> {
    let mut lines = Vec::new();
    println!(
        "{:>4} {:>12} {:>13} {:>7} {:>7} {:>22} {:>9} {:>13}",
        "run",
        "failover ms",
        "recovered ms",
        "reused",
        "errors",
        "errors after failover",
        "requests",
        "idle CPU %"
    );
    for run in 1..=args.runs {
        eprintln!(
            "run {run} of {}: two allocators, {} callers, one killed after {} s",
            args.runs,
            args.concurrency,
            KILL_AFTER.as_secs()
        );
        let f = one_run(args).await?;
        let failover = f
            .failover_ms
            .map_or("never".to_string(), |ms| format!("{ms:.0}"));
        println!(
            "{run:>4} {failover:>12} {:>13.0} {:>7} {:>7} {:>22} {:>9} {:>13.1}",
            f.recovered_ms, f.reused, f.errors, f.errors_after_failover, f.requests, f.idle_cpu_pct
        );
        lines.push(serde_json::json!({
            "bench": "seq",
            "run": run,
            "failover_ms": f.failover_ms.map(f64::round),
            "recovered_ms": f.recovered_ms.round(),
            "reused": f.reused,
            "errors": f.errors,
            "errors_after_failover": f.errors_after_failover,
            "requests": f.requests,
            "idle_cpu_pct": (f.idle_cpu_pct * 10.0).round() / 10.0,
            "lease_ms": args.lease_ms.unwrap_or(seq::DEFAULT_LEASE.as_millis() as u64),
        }));
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
