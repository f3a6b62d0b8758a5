//! `svrkit-bench connections`: many idle, signed-in WebSockets on one access-long process,
//! then one push to every one of them.
//!
//! Starts the release backend by itself with one access-long instance, registers
//! `connections / per-user` users through access-short, and opens the connections from
//! many loopback source addresses (`127.1.x.y`, at most `--per-address` from each, under
//! the gateway's per-address limit). Each connection authenticates with its user's token
//! and then idles. Measured:
//!
//! - `server_rss_bytes_per_conn`: access-long's resident memory with every connection
//!   open, less its memory before the first, per connection;
//! - `idle_cpu_pct`: access-long's CPU while they all idle for `--idle-secs`;
//! - `push_all_ms`, `push_p99_ms`: one event delivered to every user through the
//!   `wx.access.Push/Deliver` RPC the logic tier uses (all users at once, 64 RPCs in
//!   flight); the time from the first RPC until the last connection read its frame, and
//!   the 99th percentile over connections of that time;
//! - `server_rss_after_close_bytes`, `returned_pct`: access-long's resident memory
//!   [`SETTLE`] after every connection closed, and how much of what the connections had
//!   taken it gave back to the system (the gateway's allocator returns freed pages).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use svrkit::Channel;
use svrkit::discovery::{EmbeddedRegistry, discover};
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wx_api::access::{DeliverRequest, Event, PushClient, push_methods};
use wx_client::Http;

use crate::backend::{Backend, sign_up};
use crate::stats::{process_cpu, quantile};

/// How long after the last connection closed the gateway's memory is read again.
const SETTLE: Duration = Duration::from_secs(12);

/// Options of `svrkit-bench connections`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectionsArgs {
    /// WebSockets to open and hold.
    #[arg(long, default_value_t = 100_000)]
    connections: usize,
    /// Connections per user (the gateway's per-user limit is raised to this).
    #[arg(long, default_value_t = 100)]
    per_user: usize,
    /// Connections from one source address (the gateway allows 256).
    #[arg(long, default_value_t = 250)]
    per_address: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    opening: usize,
    /// Seconds every connection idles before the push, while CPU is measured.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
}

/// Open files this process and the gateway need: a descriptor per connection on each
/// side, and room for the rest.
fn raise_fd_limit(connections: usize) -> anyhow::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = connections as u64 + 4096;
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c >= want) {
        return Ok(want);
    }
    // Raising the hard limit needs privilege; without it, go as far as the hard limit.
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(want),
            maximum: Some(want.max(limit.maximum.unwrap_or(0))),
        },
    );
    if raised.is_ok() {
        return Ok(want);
    }
    let hard = limit.maximum.unwrap_or(want).min(want);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        },
    )?;
    Ok(hard)
}

/// The `i`-th source address: 127.1.0.1, 127.1.0.2, ...
fn source(i: usize) -> IpAddr {
    let n = i as u32 + 1;
    IpAddr::V4(Ipv4Addr::new(127, 1, (n >> 8) as u8, n as u8))
}

/// What the connections report.
struct Board {
    /// Connections signed in.
    open: AtomicUsize,
    /// Connections that failed to open or sign in.
    failed: AtomicUsize,
    /// Per connection: microseconds from the push's start until its frame arrived + 1
    /// (0: not yet).
    received_us: Vec<AtomicU64>,
    received: AtomicUsize,
}

/// Where every connection goes and what it reports to.
struct Target {
    ws: SocketAddr,
    board: Board,
    /// Connections being opened at once.
    opening: Semaphore,
}

/// Opens connection `i` from `from` as the user with `token` and holds it until `stop`.
async fn hold(
    i: usize,
    from: IpAddr,
    token: Arc<str>,
    target: Arc<Target>,
    mut push_start: watch::Receiver<Option<Instant>>,
    mut stop: watch::Receiver<bool>,
) {
    let (ws, board) = (target.ws, &target.board);
    let permit = target.opening.acquire().await;
    let opened = async {
        let socket = if from.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(from, 0))?;
        let stream = socket.connect(ws).await?;
        stream.set_nodelay(true)?;
        // Small buffers on this side too: a hundred thousand clients share this process.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (mut socket, _) = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::client_async_with_config(
                format!("ws://{ws}/v1/ws"),
                stream,
                Some(config),
            ),
        )
        .await
        .map_err(|_| anyhow!("handshake timed out"))??;
        let auth = json!({ "op": "auth", "token": &*token }).to_string();
        socket.send(Message::Text(auth.into())).await?;
        let hello = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .map_err(|_| anyhow!("no answer to auth"))?;
        match hello {
            Some(Ok(Message::Text(text))) if text.as_str().contains("\"ok\":true") => {
                anyhow::Ok(socket)
            }
            other => bail!("auth refused: {other:?}"),
        }
    }
    .await;
    drop(permit);
    let mut socket = match opened {
        Ok(socket) => socket,
        Err(e) => {
            if board.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("connection {i}: {e:#}");
            }
            return;
        }
    };
    board.open.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) if text.as_str().contains("\"push\":\"bench\"") => {
                    let start = *push_start.borrow_and_update();
                    if let Some(start) = start {
                        let us = start.elapsed().as_micros() as u64 + 1;
                        if board.received_us[i].swap(us, Ordering::Relaxed) == 0 {
                            board.received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    board.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            _ = stop.changed() => {
                let _ = socket.close(None).await;
                return;
            }
        }
    }
}

/// Waits until `done` reaches `total`, printing progress every 5 s.
async fn progress(what: &str, total: usize, done: impl Fn() -> usize) {
    let started = Instant::now();
    let mut shown = started;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = done();
        if n >= total || shown.elapsed() >= Duration::from_secs(5) {
            shown = Instant::now();
            eprintln!(
                "  {what}: {n}/{total} after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        if n >= total {
            return;
        }
    }
}

/// Runs the benchmark.
pub(crate) async fn run(args: ConnectionsArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.per_user == 0 || args.opening == 0 {
        bail!("--connections, --per-user and --opening must be positive");
    }
    if args.per_address == 0 || args.per_address > 256 {
        bail!("--per-address must be 1..=256 (the gateway's limit per address)");
    }
    let asked = args.connections;
    let fds = raise_fd_limit(asked)?;
    // Both this process and the gateway (which inherits the limit) need a descriptor per
    // connection, and some for everything else.
    let fits = (fds as usize).saturating_sub(1024);
    let connections = asked.min(fits);
    if connections < asked {
        eprintln!(
            "the open-file limit is {fds} per process and cannot be raised here (that needs \
             CAP_SYS_RESOURCE, or a higher `ulimit -Hn`): holding {connections} connections, \
             not {asked}"
        );
    }
    let args = ConnectionsArgs {
        connections,
        ..args
    };
    let users = args.connections.div_ceil(args.per_user);
    let max_connections = (args.connections + 1024).to_string();
    let per_user = args.per_user.to_string();
    let backend = Backend::start(
        1,
        &[
            ("RUST_LOG", "warn"),
            ("WX_MAX_CONNECTIONS", &max_connections),
            ("WX_MAX_CONNECTIONS_PER_USER", &per_user),
            // Every sign-up comes from this one address.
            ("WX_RATE_PER_SEC", "1000000"),
            ("WX_RATE_BURST", "1000000"),
            // Sessions idle past the default 10 s header timeout while the rest open.
            ("WX_HEADER_TIMEOUT_MS", "600000"),
        ],
    )?;
    let ws = *backend
        .ws
        .first()
        .ok_or_else(|| anyhow!("no access-long instance"))?;
    let registry = EmbeddedRegistry::new(backend.registry_dir());
    let push =
        PushClient::new(discover(&registry, push_methods::SERVICE_NAME, Channel::builder()).await?);

    eprintln!("registering {users} users");
    let api = Http::new(backend.http);
    let tokens = register(api, users).await?;
    let rss_before = long_rss(&backend);

    eprintln!(
        "opening {} WebSockets from {} source addresses",
        args.connections,
        args.connections.div_ceil(args.per_address)
    );
    let target = Arc::new(Target {
        ws,
        board: Board {
            open: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            received_us: (0..args.connections).map(|_| AtomicU64::new(0)).collect(),
            received: AtomicUsize::new(0),
        },
        opening: Semaphore::new(args.opening),
    });
    let board = &target.board;
    let (push_tx, push_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let open_started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.connections {
        tasks.spawn(hold(
            i,
            source(i / args.per_address),
            Arc::clone(&tokens[i / args.per_user].1),
            Arc::clone(&target),
            push_rx.clone(),
            stop_rx.clone(),
        ));
    }
    progress("open", args.connections, || {
        board.open.load(Ordering::Relaxed) + board.failed.load(Ordering::Relaxed)
    })
    .await;
    let open_secs = open_started.elapsed().as_secs_f64();
    let open = board.open.load(Ordering::Relaxed);
    let rss_open = long_rss(&backend);
    let pid = backend
        .pid("access-long-1")
        .ok_or_else(|| anyhow!("no access-long process"))?;
    let cpu_before = process_cpu(pid);
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle_cpu_pct =
        process_cpu(pid).saturating_sub(cpu_before).as_secs_f64() * 100.0 / args.idle_secs as f64;

    eprintln!("pushing one event to each of {users} users");
    let push_started = Instant::now();
    push_tx.send_replace(Some(push_started));
    let deliver_errors = deliver_all(&push, &tokens).await;
    let deadline = push_started + Duration::from_secs(60);
    while board.received.load(Ordering::Relaxed) < open && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut latencies: Vec<u32> = board
        .received_us
        .iter()
        .filter_map(|us| match us.load(Ordering::Relaxed) {
            0 => None,
            us => Some((us - 1).min(u64::from(u32::MAX)) as u32),
        })
        .collect();
    let received = latencies.len();
    let push_all_ms = latencies.iter().max().copied().unwrap_or(0) as f64 / 1e3;
    let push_p99_ms = quantile(&mut latencies, 0.99) as f64 / 1e3;
    stop_tx.send_replace(true);
    while tasks.join_next().await.is_some() {}
    eprintln!("all closed; reading the gateway's memory in {SETTLE:?}");
    tokio::time::sleep(SETTLE).await;
    let rss_closed = long_rss(&backend);
    let fds_left = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    eprintln!("the gateway holds {fds_left} descriptors after the close");
    let taken = rss_open.saturating_sub(rss_before);
    let returned_pct = if taken == 0 {
        0.0
    } else {
        rss_open.saturating_sub(rss_closed) as f64 * 100.0 / taken as f64
    };

    let per_conn = taken / open.max(1) as u64;
    let errors = (args.connections - open) + (open - received) + deliver_errors;
    println!(
        "{:>12} {:>10} {:>16} {:>17} {:>12} {:>13} {:>12} {:>7}",
        "connections",
        "open s",
        "rss/conn bytes",
        "returned on close",
        "idle cpu %",
        "push all ms",
        "push p99 ms",
        "errors"
    );
    println!(
        "{:>12} {:>10.1} {:>16} {:>16.0}% {:>12.1} {:>13.1} {:>12.1} {:>7}",
        open, open_secs, per_conn, returned_pct, idle_cpu_pct, push_all_ms, push_p99_ms, errors
    );
    println!(
        "{{\"bench\":\"connections\",\"asked\":{asked},\"connections\":{open},\"users\":{users},\"open_secs\":{open_secs:.1},\"server_rss_bytes\":{rss_open},\"server_rss_bytes_per_conn\":{per_conn},\"server_rss_after_close_bytes\":{rss_closed},\"returned_pct\":{returned_pct:.0},\"idle_cpu_pct\":{idle_cpu_pct:.1},\"push_all_ms\":{push_all_ms:.1},\"push_p99_ms\":{push_p99_ms:.1},\"errors\":{errors}}}"
    );
    Ok(())
}

/// Resident memory of the access-long process.
fn long_rss(backend: &Backend) -> u64 {
    backend
        .rss()
        .into_iter()
        .find(|(id, _)| id == "access-long-1")
        .map_or(0, |(_, rss)| rss)
}

/// Registers and signs in `users` users; returns each one's uid and token.
async fn register(api: Http, users: usize) -> anyhow::Result<Vec<(u64, Arc<str>)>> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..16 {
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
        progress("registered", users, move || shown.load(Ordering::Relaxed)).await;
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

/// One `bench` event to every user, 64 RPCs in flight; returns the failed deliveries.
async fn deliver_all(push: &PushClient, users: &[(u64, Arc<str>)]) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let uids: Arc<Vec<u64>> = Arc::new(users.iter().map(|(uid, _)| *uid).collect());
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (push, next, failed, uids) = (
            push.clone(),
            Arc::clone(&next),
            Arc::clone(&failed),
            Arc::clone(&uids),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&uid) = uids.get(i) else { return };
                let request = DeliverRequest {
                    uid,
                    event: Some(Event {
                        kind: "bench".into(),
                        json: "{}".into(),
                    }),
                    except_connection: 0,
                };
                if push.deliver(request).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    failed.load(Ordering::Relaxed)
}
