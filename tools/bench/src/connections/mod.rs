//! `svrkit-bench connections`: many idle, signed-in WebSockets on a tier of access-long
//! gateways, one push to every user, then a second push while a tenth of the connections
//! drop and sign in again.
//!
//! Starts the release backend by itself with `--gateways` access-long instances (each the
//! presence owner of its share of uids, as in production), registers
//! `connections / per-user` users through access-short, and opens the connections from
//! client processes of its own ([`worker`]; one process here may hold fewer than 20,000
//! sockets), from many loopback source addresses (at most `--per-address` from each,
//! under the gateways' per-address limit), connection `i` to gateway `i % gateways`. Each
//! connection authenticates with its user's token and then idles. Measured:
//!
//! - `server_rss_bytes_per_conn`: the gateways' resident memory with every connection
//!   open, less their memory before the first, per connection;
//! - `idle_cpu_pct`: the gateways' CPU, summed, while everything idles for `--idle-secs`
//!   (percent of one core);
//! - `push_all_ms`, `push_p99_ms`: one event delivered to every user through the
//!   `wx.access.Push/Deliver` RPC the logic tier uses (to the uid's presence owner, which
//!   forwards it to every gateway holding a connection of the uid; 64 RPCs in flight);
//!   the time from the first RPC until the last connection read its frame, and the 99th
//!   percentile over connections;
//! - `push2_all_ms`, `push2_p99_ms`, `reconnect_all_ms`: a second event to every user
//!   while every connection with an index divisible by `100 / --drop-pct` drops its socket
//!   and signs in again with a jittered backoff ([`worker::FIRST_PAUSE`]): the push's
//!   times over the connections that stayed (it starts once the dropped sockets are
//!   closed), and the time from the drop until the last dropped connection was signed in
//!   again;
//! - `server_rss_after_close_bytes`, `returned_pct`: the gateways' resident memory
//!   [`SETTLE`] after every connection closed, and how much of what the connections had
//!   taken they gave back to the system.

mod fleet;
pub(crate) mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use svrkit::discovery::{EmbeddedRegistry, discover};
use wx_api::access::{DeliverRequest, Event, PushClient, push_methods};
use wx_client::Http;

use crate::backend::{Backend, sign_up};
use crate::stats::{process_cpu, quantile};
use fleet::{Fleet, Plan, Status};
use worker::now_us;

/// How long after the last connection closed the gateways' memory is read again.
const SETTLE: Duration = Duration::from_secs(12);
/// How long a push may take to reach everyone before the missing count as errors.
const PUSH_DEADLINE: Duration = Duration::from_secs(60);

/// Options of `svrkit-bench connections`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectionsArgs {
    /// WebSockets to open and hold.
    #[arg(long, default_value_t = 100_000)]
    connections: usize,
    /// access-long processes sharing them.
    #[arg(long, default_value_t = 8)]
    gateways: usize,
    /// Connections per user (the gateways' per-user limit is raised to this).
    #[arg(long, default_value_t = 50)]
    per_user: usize,
    /// Connections from one source address (the gateway allows 256).
    #[arg(long, default_value_t = 250)]
    per_address: usize,
    /// Connections held by one client process (each under the open-file limit).
    #[arg(long, default_value_t = 15_000)]
    per_worker: usize,
    /// Connections being opened at once, per client process.
    #[arg(long, default_value_t = 256)]
    opening: usize,
    /// Seconds every connection idles before the first push, while CPU is measured.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// Percent of the connections that drop and reconnect during the second push (0: none).
    #[arg(long, default_value_t = 10)]
    drop_pct: usize,
}

/// Raises this process's open-file limit as far as it goes (the gateways it starts
/// inherit it); returns the limit.
fn raise_fd_limit() -> anyhow::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(1 << 20);
    if limit.current.is_some_and(|c| c >= hard) {
        return Ok(hard);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        },
    )?;
    Ok(hard)
}

/// Waits until `done` reaches `total` or `deadline` passes, printing progress every 5 s.
async fn progress(what: &str, total: usize, deadline: Duration, done: impl Fn() -> usize) {
    let started = Instant::now();
    let mut shown = started;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let n = done();
        let late = started.elapsed() >= deadline;
        if n >= total || late || shown.elapsed() >= Duration::from_secs(5) {
            shown = Instant::now();
            eprintln!(
                "  {what}: {n}/{total} after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        if n >= total || late {
            return;
        }
    }
}

/// The largest and the 99th-percentile delay, in ms, from `start_us` to each receipt
/// (0: none), and how many arrived.
fn delays(received: &[u64], start_us: u64) -> (f64, f64, usize) {
    let mut us: Vec<u32> = received
        .iter()
        .filter(|t| **t != 0)
        .map(|t| t.saturating_sub(start_us).min(u64::from(u32::MAX)) as u32)
        .collect();
    let all = us.iter().max().copied().unwrap_or(0) as f64 / 1e3;
    let p99 = quantile(&mut us, 0.99) as f64 / 1e3;
    (all, p99, us.len())
}

/// Runs the benchmark.
pub(crate) async fn run(args: ConnectionsArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.per_user == 0 || args.opening == 0 || args.gateways == 0 {
        bail!("--connections, --gateways, --per-user and --opening must be positive");
    }
    if args.per_address == 0 || args.per_address > 256 {
        bail!("--per-address must be 1..=256 (the gateway's limit per address)");
    }
    if args.drop_pct > 100 {
        bail!("--drop-pct must be 0..=100");
    }
    if args.idle_secs == 0 {
        bail!("--idle-secs must be positive (the idle CPU is measured over it)");
    }
    let fds = raise_fd_limit()? as usize;
    // A gateway needs a descriptor per connection and some for everything else; so does a
    // client process.
    let room = fds.saturating_sub(1024);
    let per_gateway = args.connections.div_ceil(args.gateways);
    if per_gateway > room || args.per_worker > room || args.per_worker == 0 {
        bail!(
            "the open-file limit is {fds} per process: {per_gateway} connections per gateway \
             and {} per client process must each stay under {room}; use more --gateways or \
             a smaller --per-worker",
            args.per_worker
        );
    }
    let users = args.connections.div_ceil(args.per_user);
    let max_connections = (per_gateway + 1024).to_string();
    let per_user = args.per_user.to_string();
    let backend = Backend::start(
        args.gateways,
        &[
            ("RUST_LOG", "warn"),
            ("WX_MAX_CONNECTIONS", &max_connections),
            ("WX_MAX_CONNECTIONS_PER_USER", &per_user),
            // Every sign-up comes from this one address.
            ("WX_RATE_PER_SEC", "1000000"),
            ("WX_RATE_BURST", "1000000"),
            // Thousands of first sign-ins from one machine are what the sign-in puzzle is
            // for; this benchmark measures the gateways, not the puzzle.
            ("WX_LOGIN_POW", "never"),
            // Sessions idle past the default 10 s header timeout while the rest open.
            ("WX_HEADER_TIMEOUT_MS", "600000"),
        ],
    )?;
    if backend.ws.len() != args.gateways {
        bail!(
            "{} of {} gateways announced a WebSocket address",
            backend.ws.len(),
            args.gateways
        );
    }
    let gateway_pids: Vec<u32> = (1..=args.gateways)
        .map(|i| backend.pid(&format!("access-long-{i}")))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow!("an access-long process is missing"))?;
    let registry = EmbeddedRegistry::new(backend.registry_dir());
    // As the logic tier does: by uid to its presence owner, on the gateways' ring.
    let push =
        PushClient::new(discover(&registry, push_methods::SERVICE_NAME, wx_api::presence()).await?);

    eprintln!("registering {users} users");
    let api = Http::new(backend.http);
    let tokens = register(api, users).await?;
    let tokens_file = backend.registry_dir().with_file_name("tokens");
    let lines: Vec<&str> = tokens.iter().map(|(_, token)| &**token).collect();
    std::fs::write(&tokens_file, lines.join("\n")).context("writing the tokens")?;
    let uids: Arc<Vec<u64>> = Arc::new(tokens.iter().map(|(uid, _)| *uid).collect());
    let rss_before = gateways_rss(&backend);

    let plan = Plan {
        gateways: backend.ws.clone(),
        tokens: tokens_file,
        connections: args.connections,
        per_worker: args.per_worker,
        per_user: args.per_user,
        per_address: args.per_address,
        opening: args.opening,
    };
    let open_started = Instant::now();
    let mut fleet = Fleet::start(&plan)?;
    eprintln!(
        "opening {} WebSockets to {} gateways from {} client processes and {} source addresses",
        args.connections,
        args.gateways,
        fleet.len(),
        args.connections.div_ceil(args.per_address)
    );
    progress("open", args.connections, Duration::from_secs(600), || {
        let s = fleet.status();
        s.open + s.failed
    })
    .await;
    let open_secs = open_started.elapsed().as_secs_f64();
    let open = fleet.status().open;
    let rss_open = gateways_rss(&backend);
    let tier_cpu = || -> Duration { gateway_pids.iter().map(|pid| process_cpu(*pid)).sum() };
    let cpu_before = tier_cpu();
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle_cpu_pct =
        tier_cpu().saturating_sub(cpu_before).as_secs_f64() * 100.0 / args.idle_secs as f64;

    eprintln!("push 1: one event to each of {users} users");
    let push1_us = now_us();
    let mut deliver_errors = deliver_all(&push, &uids, 1).await;
    progress("push 1 read", open, PUSH_DEADLINE, || {
        fleet.status().received[0]
    })
    .await;

    let every = 100usize
        .checked_div(args.drop_pct)
        .map_or(usize::MAX, |n| n.max(1));
    eprintln!(
        "push 2 while {}% of the connections drop and reconnect",
        args.drop_pct
    );
    let drop_us = now_us();
    let mut expected_drops = 0;
    if args.drop_pct > 0 {
        expected_drops = fleet.drop_every(every).await?;
        // The push starts once the sockets are gone, while they sign in again.
        progress("dropped", expected_drops, Duration::from_secs(10), || {
            fleet.status().dropped
        })
        .await;
    }
    let push2_us = now_us();
    deliver_errors += deliver_all(&push, &uids, 2).await;
    progress(
        "push 2 read, reconnected",
        open + expected_drops,
        PUSH_DEADLINE,
        || {
            let s = fleet.status();
            s.received[1] + s.dropped + s.reconnected + s.reconnect_failed
        },
    )
    .await;
    let after: Status = fleet.status();
    let [first, second] = fleet.received().await?;
    let (push_all_ms, push_p99_ms, received1) = delays(&first, push1_us);
    let (push2_all_ms, push2_p99_ms, received2) = delays(&second, push2_us);
    let reconnect_all_ms = if after.reconnected == 0 {
        0.0
    } else {
        after.last_reconnect_us.saturating_sub(drop_us) as f64 / 1e3
    };
    let workers = fleet.len();
    fleet.stop().await?;
    eprintln!("all closed; reading the gateways' memory in {SETTLE:?}");
    tokio::time::sleep(SETTLE).await;
    let rss_closed = gateways_rss(&backend);
    let taken = rss_open.saturating_sub(rss_before);
    let returned_pct = if taken == 0 {
        0.0
    } else {
        rss_open.saturating_sub(rss_closed) as f64 * 100.0 / taken as f64
    };

    let per_conn = taken / open.max(1) as u64;
    let stayed = open.saturating_sub(after.dropped);
    let errors = (args.connections - open)
        + (open - received1)
        + stayed.saturating_sub(received2)
        + (after.dropped - after.reconnected.min(after.dropped))
        + deliver_errors;
    println!(
        "{:>11} {:>8} {:>7} {:>14} {:>9} {:>10} {:>11} {:>11} {:>11} {:>11} {:>13} {:>6}",
        "connections",
        "gateways",
        "open s",
        "rss/conn bytes",
        "returned",
        "idle cpu %",
        "push all ms",
        "push p99 ms",
        "push2 all",
        "push2 p99",
        "reconnect ms",
        "errors"
    );
    println!(
        "{:>11} {:>8} {:>7.1} {:>14} {:>8.0}% {:>10.1} {:>11.1} {:>11.1} {:>11.1} {:>11.1} {:>13.1} {:>6}",
        open,
        args.gateways,
        open_secs,
        per_conn,
        returned_pct,
        idle_cpu_pct,
        push_all_ms,
        push_p99_ms,
        push2_all_ms,
        push2_p99_ms,
        reconnect_all_ms,
        errors
    );
    println!(
        "{{\"bench\":\"connections\",\"gateways\":{},\"client_processes\":{},\"asked\":{},\"connections\":{open},\"users\":{users},\"open_secs\":{open_secs:.1},\"open_retried\":{},\"server_rss_bytes\":{rss_open},\"server_rss_bytes_per_conn\":{per_conn},\"server_rss_after_close_bytes\":{rss_closed},\"returned_pct\":{returned_pct:.0},\"idle_cpu_pct\":{idle_cpu_pct:.1},\"push_all_ms\":{push_all_ms:.1},\"push_p99_ms\":{push_p99_ms:.1},\"dropped\":{},\"push2_all_ms\":{push2_all_ms:.1},\"push2_p99_ms\":{push2_p99_ms:.1},\"reconnect_all_ms\":{reconnect_all_ms:.1},\"reconnect_failed\":{},\"errors\":{errors}}}",
        args.gateways,
        workers,
        args.connections,
        after.open_retried,
        after.dropped,
        after.reconnect_failed,
    );
    Ok(())
}

/// Resident memory of the access-long processes, summed.
fn gateways_rss(backend: &Backend) -> u64 {
    backend
        .rss()
        .into_iter()
        .filter(|(id, _)| id.starts_with("access-long-"))
        .map(|(_, rss)| rss)
        .sum()
}

/// Registers and signs in `users` users; returns each one's uid and token.
async fn register(api: Http, users: usize) -> anyhow::Result<Vec<(u64, Arc<str>)>> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    // Password hashing bounds sign-ups, not concurrency: a few in flight keep the account
    // service busy without driving it into overload.
    for _ in 0..4 {
        let (next, done) = (Arc::clone(&next), Arc::clone(&done));
        workers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    return anyhow::Ok(mine);
                }
                let (uid, token) = sign_up(&api, &format!("conn{i}")).await?;
                mine.push((i, uid, Arc::<str>::from(token.as_str())));
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let shown = Arc::clone(&done);
    let report = tokio::spawn(async move {
        progress("registered", users, Duration::from_secs(3600), move || {
            shown.load(Ordering::Relaxed)
        })
        .await;
    });
    let mut all = Vec::with_capacity(users);
    while let Some(joined) = workers.join_next().await {
        all.extend(joined.context("a registering task failed")??);
    }
    report.abort();
    all.sort_by_key(|(i, _, _)| *i);
    Ok(all
        .into_iter()
        .map(|(_, uid, token)| (uid, token))
        .collect())
}

/// The `bench` event of `round` to every user, 64 RPCs in flight; returns the failed
/// deliveries.
async fn deliver_all(push: &PushClient, uids: &Arc<Vec<u64>>, round: u32) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (push, next, failed, uids) = (
            push.clone(),
            Arc::clone(&next),
            Arc::clone(&failed),
            Arc::clone(uids),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&uid) = uids.get(i) else { return };
                let request = DeliverRequest {
                    uid,
                    event: Some(Event {
                        kind: "bench".into(),
                        json: format!("{{\"round\":{round}}}"),
                    }),
                    except_connection: 0,
                };
                if let Err(e) = push.deliver_with(request, wx_api::by_uid(uid)).await
                    && failed.fetch_add(1, Ordering::Relaxed) < 3
                {
                    eprintln!("deliver to {uid}: {e}");
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    failed.load(Ordering::Relaxed)
}
