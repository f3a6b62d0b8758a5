//! `svrkit-bench seq`: sequence allocations per second and their latency through the RPC,
//! against seqsvr's published figures (mean 1 ms, p99.9 under 3 ms).
//!
//! The backend it needs — one `seqstore` shard on a temporary directory and one `seq`
//! allocator — runs as two child processes of this binary (hidden `serve-seq`
//! subcommands) on free loopback ports, and stops with it. Clients ask for the next
//! number of users drawn from a large population, so every section is in use and the
//! persisted step is crossed regularly.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use svrkit::{Channel, Server};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use wx_api::seq::seq_server::SeqServer;
use wx_api::seq::{NextRequest, SeqClient};
use wx_api::storage::seq_store_server::SeqStoreServer;

use crate::rpc::ServerProcess;
use crate::stats::quantile;

/// Options of `svrkit-bench seq`.
#[derive(Debug, clap::Args)]
pub(crate) struct SeqArgs {
    /// Concurrent callers (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    concurrency: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// How many distinct users the callers draw from.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Failover instead: two allocators under load, one killed with SIGKILL; measures the
    /// time until its users are served again and checks that no number is reused.
    #[arg(long)]
    kill: bool,
    /// Runs of the failover measurement.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The allocators' lease, in ms (default: the service's own).
    #[arg(long)]
    lease_ms: Option<u64>,
}

impl SeqArgs {
    fn failover(&self) -> crate::seq_failover::FailoverArgs {
        crate::seq_failover::FailoverArgs {
            runs: self.runs.max(1),
            seconds: self.seconds.max(3.0),
            concurrency: self.concurrency.iter().copied().max().unwrap_or(32),
            users: self.users,
            lease_ms: self.lease_ms,
        }
    }
}

/// Which half of the seq backend `svrkit-bench serve-seq` runs.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum SeqRole {
    /// A seqstore shard on `dir`.
    Store {
        /// Where the shard keeps its data.
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// An allocator persisting to the seqstore at `store`.
    Alloc {
        /// The seqstore shard's address.
        #[arg(long)]
        store: SocketAddr,
        /// Its instance id (the owner recorded on the sections it holds).
        #[arg(long, default_value = "bench-seq-1")]
        id: String,
        /// Its lease, in ms (default: the service's own).
        #[arg(long)]
        lease_ms: Option<u64>,
    },
}

/// Serves one half of the backend on a free port until stdin closes.
pub(crate) async fn serve(role: SeqRole) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let stop = async {
        let mut sink = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let server = match role {
        SeqRole::Store { dir } => {
            let engine = wx_storage::Engine::open(&dir)?;
            Server::builder().add_service(SeqStoreServer::new(wx_storage::SeqStoreService::new(
                engine,
            )?))
        }
        SeqRole::Alloc {
            store,
            id,
            lease_ms,
        } => {
            let store = Channel::lazy([store]);
            let mut settings = seq::Settings::new(id);
            if let Some(ms) = lease_ms {
                settings.lease = Duration::from_millis(ms);
            }
            let service = seq::SeqService::new(store, settings);
            Server::builder().add_service(SeqServer::new(service))
        }
    };
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    server.serve(listener, stop).await?;
    Ok(())
}

/// One measurement's figures.
struct Figures {
    allocs_per_s: f64,
    mean_us: f64,
    p99_us: u32,
    p999_us: u32,
    errors: u64,
    server_cpu_us: f64,
}

async fn measure(
    client: &SeqClient,
    allocator: &ServerProcess,
    concurrency: usize,
    seconds: f64,
    users: u64,
) -> Figures {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let cpu_before = allocator.cpu();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency as u64 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            // A cheap, deterministic walk over the user population per worker.
            let mut user = worker.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            while Instant::now() < until {
                user = user
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let uid = 1 + (user >> 11) % users;
                let options = wx_api::by_section(wx_api::seq_section(uid));
                let t = Instant::now();
                match client.next_with(NextRequest { uid }, options).await {
                    Ok(_) => samples.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32),
                    Err(_) => errors += 1,
                }
            }
            (samples, errors)
        });
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    while let Some(Ok((s, e))) = tasks.join_next().await {
        samples.extend(s);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = allocator.cpu().saturating_sub(cpu_before);
    let n = samples.len().max(1) as f64;
    let mean_us = samples.iter().map(|s| f64::from(*s)).sum::<f64>() / n;
    Figures {
        allocs_per_s: samples.len() as f64 / elapsed,
        mean_us,
        p99_us: quantile(&mut samples, 0.99),
        p999_us: quantile(&mut samples, 0.999),
        errors,
        server_cpu_us: cpu.as_secs_f64() * 1e6 / n,
    }
}

/// Runs the benchmark: a table, then one JSON line per concurrency (or per failover run
/// with `--kill`).
pub(crate) async fn run(args: SeqArgs) -> anyhow::Result<()> {
    if args.kill {
        return crate::seq_failover::run(&args.failover()).await;
    }
    let dir = std::env::temp_dir().join(format!(
        "svrkit-bench-seq-{}-{:x}",
        std::process::id(),
        svrkit::context::random_u64()
    ));
    let dir_arg = dir.display().to_string();
    let store = ServerProcess::spawn(&["serve-seq", "store", "--dir", &dir_arg])?;
    let store_addr = store.addr.to_string();
    let allocator = ServerProcess::spawn(&["serve-seq", "alloc", "--store", &store_addr])?;
    let client = SeqClient::new(Channel::lazy([allocator.addr]));
    // Take every section's lease once, outside the measurement.
    eprintln!(
        "warming up: taking the leases of {} sections",
        wx_api::SEQ_SECTIONS
    );
    let warm = Arc::new(client.clone());
    let mut seen = std::collections::HashSet::new();
    let mut uid = 1u64;
    while seen.len() < wx_api::SEQ_SECTIONS as usize && uid < 1_000_000 {
        if seen.insert(wx_api::seq_section(uid)) {
            warm.next(NextRequest { uid }).await?;
        }
        uid += 1;
    }
    let mut lines = Vec::new();
    println!(
        "{:>11} {:>12} {:>9} {:>9} {:>10} {:>7} {:>14}",
        "concurrency", "allocs/s", "mean µs", "p99 µs", "p99.9 µs", "errors", "server cpu µs"
    );
    for &c in &args.concurrency {
        eprintln!("measuring c = {c} for {} s", args.seconds);
        let f = measure(&client, &allocator, c, args.seconds, args.users).await;
        println!(
            "{c:>11} {:>12.0} {:>9.0} {:>9} {:>10} {:>7} {:>14.1}",
            f.allocs_per_s, f.mean_us, f.p99_us, f.p999_us, f.errors, f.server_cpu_us
        );
        lines.push(serde_json::json!({
            "bench": "seq",
            "concurrency": c,
            "allocs_per_s": f.allocs_per_s.round(),
            "mean_us": f.mean_us.round(),
            "p99_us": f.p99_us,
            "p999_us": f.p999_us,
            "errors": f.errors,
            "server_cpu_us_per_alloc": (f.server_cpu_us * 10.0).round() / 10.0,
        }));
    }
    for line in lines {
        println!("{line}");
    }
    drop((allocator, store));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
