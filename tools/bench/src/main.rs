//! `svrkit-bench`: measures svrkit side by side with its peers in one run.
//!
//! - `svrkit-bench rpc`: unary echo through four systems — svrkit, tonic (gRPC), tarpc
//!   and a raw multiplexed length-prefixed TCP echo (the floor) — each server in its own
//!   process ([`echo`]), interleaved, at several concurrencies. Prints a table, then one
//!   JSON line per concurrency.
//! - `svrkit-bench overload`: DAGOR's experiment, success rate against the optimum for
//!   none, random, tower and DAGOR shedding.
//! - `svrkit-bench failover`: three instances under load, one killed with SIGKILL.
//! - `svrkit-bench storage`: durable writes per second on a storage shard's engine, group
//!   commit against an fsync per write and against no fsync at all.
//! - `svrkit-bench message`: messaging through the whole backend (started by itself):
//!   acknowledged messages per second, send and end-to-end latency, lost, duplicated and
//!   out-of-order messages.
//! - `svrkit-bench moments`: Moments on a generated social graph (the backend started by
//!   itself): time until a post is visible to its friends, pushed and pulled, and
//!   timeline reads, at several push thresholds.
//! - `svrkit-bench seq`: sequence allocations per second and latency through the RPC, a
//!   `seqstore` shard and a `seq` allocator in processes of their own; `--kill`: two
//!   allocators under load, one killed, the time until its users are served again.
//! - `svrkit-bench connections`: idle signed-in WebSockets on a tier of access-long
//!   gateways (clients in processes of their own): memory and CPU per connection, the time
//!   for one push to reach them all, and for a tenth of them to reconnect.
//! - `svrkit-bench backend-overload`: the backend past its capacity (1x, 2x, 4x) with a
//!   mix of actions at their business priorities: success and goodput per priority.
//!
//! - `svrkit-bench login-flood`: real users signing in while sign-in is flooded with wrong
//!   passwords, with and without the sign-in puzzle, in one run.
//!
//! Figures are for comparison within one run on one machine; they are never asserted in
//! tests.

mod backend;
mod backend_overload;
mod connections;
mod cpus;
mod echo;
mod envelope;
mod failover;
mod login_flood;
mod message;
mod moments;
mod overload;
mod proto;
mod replicated;
mod rpc;
mod seq;
mod seq_failover;
mod stats;
mod stop;
mod storage;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    about = "Benchmarks svrkit against tonic, tarpc and a raw TCP floor",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Unary echo throughput, p99 latency and server CPU per request.
    Rpc(rpc::RpcArgs),
    /// Three instances under load, one killed: failed calls and the time to shift.
    Failover(failover::FailoverArgs),
    /// DAGOR's experiment: success rate under 0.5x..4x overload for k = 1..4 calls per task.
    Overload(overload::OverloadArgs),
    /// Acknowledged writes per second on a storage shard's engine: group commit vs an
    /// fsync per write vs no fsync.
    Storage(storage::StorageArgs),
    /// A replicated shard's leader killed with SIGKILL under writes: time without
    /// acknowledgements, and nothing lost or duplicated.
    StorageFailover(replicated::StorageFailoverArgs),
    /// Messaging through the whole backend: throughput, latency, lost/duplicated/reordered.
    Message(message::MessageArgs),
    /// Moments: time until a post is visible (push and pull) and timeline reads, at several push thresholds.
    Moments(moments::MomentsArgs),
    /// Idle signed-in WebSockets on one access-long: memory and CPU per connection, and
    /// the time for one push to reach them all.
    Connections(connections::ConnectionsArgs),
    /// The backend past its capacity (1x, 2x, 4x) with a mix of actions at their
    /// business priorities: success and goodput per priority and per user band.
    BackendOverload(backend_overload::BackendOverloadArgs),
    /// Red envelopes: crowds grab and open through the per-envelope queue and without it
    /// (pairs per second, open p99, oversold, the money invariant).
    Envelope(envelope::EnvelopeArgs),
    /// Real users signing in (from new and known devices) while sign-in is flooded with
    /// wrong passwords, with and without the sign-in puzzle.
    LoginFlood(login_flood::LoginFloodArgs),
    /// Sequence allocations per second and mean/p99/p99.9 latency through the RPC.
    Seq(seq::SeqArgs),
    /// Serve one half of the seq backend (started by `seq` itself).
    #[command(hide = true)]
    ConnectionsWorker(connections::worker::WorkerArgs),
    #[command(hide = true)]
    ServeSeq {
        /// Which half.
        #[command(subcommand)]
        role: seq::SeqRole,
    },
    /// Serve one system's echo server (started by the benchmarks themselves).
    #[command(hide = true)]
    Serve {
        /// Which server.
        system: echo::System,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: std::net::SocketAddr,
        /// Serve mutual TLS with the certificates in this directory (`rpc --tls`).
        #[arg(long)]
        tls_dir: Option<std::path::PathBuf>,
        /// Each echo handler lets the scheduler run others once before it answers.
        #[arg(long)]
        handler_waits: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Logs go to stderr, off unless RUST_LOG asks (for example RUST_LOG=svrkit=debug).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::BackendOverload(args) = &cli.command
        && args.pins()
    {
        // The generator gets one CPU of its own (see `cpus`): one worker thread.
        runtime.worker_threads(1);
    }
    let runtime = runtime.enable_all().build()?;
    // Every command stops cleanly on SIGINT or SIGTERM (see `stop`).
    runtime.block_on(stop::until_stopped(async move {
        match cli.command {
            Command::Rpc(args) => rpc::run(args).await,
            Command::Overload(args) => overload::run(args).await,
            Command::Failover(args) => failover::run(args).await,
            Command::Storage(args) => storage::run(args).await,
            Command::StorageFailover(args) => replicated::failover(args).await,
            Command::Seq(args) => seq::run(args).await,
            Command::BackendOverload(args) => backend_overload::run(args).await,
            Command::Connections(args) => connections::run(args).await,
            Command::Message(args) => message::run(args).await,
            Command::Moments(args) => moments::run(args).await,
            Command::Envelope(args) => envelope::run(args).await,
            Command::LoginFlood(args) => login_flood::run(args).await,
            Command::ConnectionsWorker(args) => connections::worker::run(args).await,
            Command::ServeSeq { role } => seq::serve(role).await,
            Command::Serve {
                system,
                addr,
                tls_dir,
                handler_waits,
            } => echo::serve(system, addr, tls_dir, handler_waits).await,
        }
    }))
}
