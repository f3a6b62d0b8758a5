//! The clients of `svrkit-bench connections`, in a process of their own
//! (`svrkit-bench connections-worker`, started by the benchmark): one process here may
//! hold fewer than 20,000 sockets, so a hundred thousand clients take several.
//!
//! A worker holds the connections with global indexes `first..first + count`. Connection
//! `i` signs in as user `i / per_user` to gateway `i % gateways` from source address
//! `i / per_address`. It talks to the benchmark in lines:
//!
//! - standard output, every [`STATUS_EVERY`]: `status OPEN RETRIED FAILED RECEIVED1 RECEIVED2
//!   DROPPED RECONNECTED RECONNECT_FAILED LAST_RECONNECT_US` (counts — round 2 counts only
//!   connections that did not drop — and the wall-clock time in microseconds since the Unix
//!   epoch of the latest reconnection);
//!   (`RETRIED`: connections whose first sign-in was refused and that backed off as in
//!   [`reconnect`]);
//! - standard input `drop EVERY`: each connection whose index is a multiple of `EVERY`
//!   drops its socket (no close frame: a phone losing its network) and signs in again
//!   after a jittered pause ([`reconnect`]); the worker answers `dropping N`, how many of
//!   its open connections that is;
//! - standard input `report`: prints `received ROUND T,T,…` for rounds 1 and 2 — for
//!   each connection, when it read that round's push (microseconds since the epoch, 0:
//!   never); round 2 leaves out the connections that dropped — then `reported`;
//! - standard input `stop` (or its end): closes every connection, prints `stopped` and
//!   exits.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How often a worker reports its counts.
pub(crate) const STATUS_EVERY: Duration = Duration::from_millis(100);
/// The first reconnection waits a uniformly random pause below this; each failed attempt
/// doubles the bound, up to [`MAX_PAUSE`] ("full jitter").
pub(crate) const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The largest bound of a reconnection's pause.
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// Attempts to sign in again before a dropped connection counts as failed.
const ATTEMPTS: u32 = 10;
/// How long a handshake or a sign-in answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of the hidden `svrkit-bench connections-worker`.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// The gateways' WebSocket addresses, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    gateways: Vec<SocketAddr>,
    /// A file with every user's token, one per line (user `u` on line `u`).
    #[arg(long)]
    tokens: std::path::PathBuf,
    /// The global index of this worker's first connection.
    #[arg(long)]
    first: usize,
    /// Connections this worker holds.
    #[arg(long)]
    count: usize,
    /// Connections per user.
    #[arg(long)]
    per_user: usize,
    /// Connections from one source address.
    #[arg(long)]
    per_address: usize,
    /// Connections being opened at once.
    #[arg(long)]
    opening: usize,
}

/// The `i`-th source address: 127.1.0.1, 127.1.0.2, ... (the gateways limit connections
/// per address; loopback answers on all of 127.0.0.0/8).
pub(crate) fn source(i: usize) -> IpAddr {
    let n = i as u32 + 1;
    IpAddr::V4(Ipv4Addr::new(
        127,
        1 + (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ))
}

/// Microseconds since the Unix epoch: the clock every worker and the benchmark share.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What the benchmark tells every connection.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    Hold,
    /// Connections whose index is a multiple of this drop and reconnect.
    Drop(usize),
    Stop,
}

/// One connection's record.
#[derive(Default)]
struct Slot {
    /// When it read the push of round 1 and round 2 (µs since the epoch; 0: not yet).
    received: [AtomicU64; 2],
    dropped: AtomicBool,
    /// Signed in and held (until it drops, fails or stops).
    live: AtomicBool,
}

/// What every connection of this worker shares.
struct Shared {
    gateways: Vec<SocketAddr>,
    tokens: Vec<Arc<str>>,
    first: usize,
    per_user: usize,
    per_address: usize,
    opening: Semaphore,
    slots: Vec<Slot>,
    open: AtomicUsize,
    /// Connections whose first sign-in was refused and that backed off.
    open_retried: AtomicUsize,
    failed: AtomicUsize,
    received: [AtomicUsize; 2],
    dropped: AtomicUsize,
    reconnected: AtomicUsize,
    reconnect_failed: AtomicUsize,
    last_reconnect_us: AtomicU64,
}

type Socket = WebSocketStream<TcpStream>;

/// Runs a worker until `stop` or the end of its standard input.
pub(crate) async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.tokens)?;
    let tokens: Vec<Arc<str>> = text.lines().map(Arc::from).collect();
    let users_needed = (args.first + args.count).div_ceil(args.per_user.max(1));
    if args.per_user == 0 || args.per_address == 0 || tokens.len() < users_needed {
        bail!(
            "{} tokens for {users_needed} users, or a zero per-user or per-address count",
            tokens.len()
        );
    }
    let shared = Arc::new(Shared {
        gateways: args.gateways,
        tokens,
        first: args.first,
        per_user: args.per_user,
        per_address: args.per_address,
        opening: Semaphore::new(args.opening.max(1)),
        slots: (0..args.count).map(|_| Slot::default()).collect(),
        open: AtomicUsize::new(0),
        open_retried: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        received: Default::default(),
        dropped: AtomicUsize::new(0),
        reconnected: AtomicUsize::new(0),
        reconnect_failed: AtomicUsize::new(0),
        last_reconnect_us: AtomicU64::new(0),
    });
    let (order_tx, order_rx) = watch::channel(Order::Hold);
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..args.count {
        tasks.spawn(hold(k, Arc::clone(&shared), order_rx.clone()));
    }
    let reporter = tokio::spawn(report_status(Arc::clone(&shared)));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("drop"), Some(every)) => {
                let every = every.parse::<usize>()?.max(1);
                // The connections that are open now and will drop.
                let targets = (0..args.count)
                    .filter(|k| {
                        (args.first + k).is_multiple_of(every)
                            && shared.slots[*k].live.load(Ordering::Relaxed)
                    })
                    .count();
                order_tx.send_replace(Order::Drop(every));
                println!("dropping {targets}");
            }
            (Some("report"), _) => print_received(&shared)?,
            (Some("stop"), _) => break,
            _ => bail!("unknown command {line:?}"),
        }
    }
    order_tx.send_replace(Order::Stop);
    while tasks.join_next().await.is_some() {}
    reporter.abort();
    println!("stopped");
    Ok(())
}

/// Prints the counts every [`STATUS_EVERY`].
async fn report_status(shared: Arc<Shared>) {
    loop {
        let line = format!(
            "status {} {} {} {} {} {} {} {} {}\n",
            shared.open.load(Ordering::Relaxed),
            shared.open_retried.load(Ordering::Relaxed),
            shared.failed.load(Ordering::Relaxed),
            shared.received[0].load(Ordering::Relaxed),
            shared.received[1].load(Ordering::Relaxed),
            shared.dropped.load(Ordering::Relaxed),
            shared.reconnected.load(Ordering::Relaxed),
            shared.reconnect_failed.load(Ordering::Relaxed),
            shared.last_reconnect_us.load(Ordering::Relaxed),
        );
        let written = {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes()).and_then(|()| out.flush())
        };
        if written.is_err() {
            return;
        }
        tokio::time::sleep(STATUS_EVERY).await;
    }
}

/// Prints when each connection read each round's push.
fn print_received(shared: &Shared) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for round in 0..2 {
        let times: Vec<String> = shared
            .slots
            .iter()
            .filter(|slot| round == 0 || !slot.dropped.load(Ordering::Relaxed))
            .map(|slot| slot.received[round].load(Ordering::Relaxed).to_string())
            .collect();
        writeln!(out, "received {} {}", round + 1, times.join(","))?;
    }
    writeln!(out, "reported")?;
    out.flush()
}

/// Opens connection `k` of this worker, holds it, and drops and reopens it when told.
async fn hold(k: usize, shared: Arc<Shared>, mut orders: watch::Receiver<Order>) {
    let i = shared.first + k;
    let permit = shared.opening.acquire().await;
    let opened = open(&shared, i).await;
    drop(permit);
    let mut socket = match opened {
        Ok(socket) => socket,
        // Refused (a backend shedding the sign-in storm, say): back off and try again, as
        // a client does.
        Err(e) => {
            if shared.open_retried.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("connection {i}: {e:#}; backing off");
            }
            match reconnect(&shared, i, &mut orders).await {
                Some(socket) => socket,
                None => {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    };
    shared.open.fetch_add(1, Ordering::Relaxed);
    let slot = &shared.slots[k];
    slot.live.store(true, Ordering::Relaxed);
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) if text.as_str().contains("\"push\":\"bench\"") => {
                    let round = usize::from(text.as_str().contains("\"round\":2"));
                    if round == 1 && slot.dropped.load(Ordering::Relaxed) {
                        continue;
                    }
                    if slot.received[round].compare_exchange(0, now_us(), Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                        shared.received[round].fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    slot.live.store(false, Ordering::Relaxed);
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            changed = orders.changed() => {
                let order = *orders.borrow_and_update();
                match order {
                    _ if changed.is_err() => return,
                    Order::Stop => {
                        let _ = socket.close(None).await;
                        return;
                    }
                    Order::Drop(every) if i.is_multiple_of(every) && !slot.dropped.load(Ordering::Relaxed) => {
                        slot.dropped.store(true, Ordering::Relaxed);
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                        drop(socket);
                        match reconnect(&shared, i, &mut orders).await {
                            Some(again) => {
                                socket = again;
                                shared.reconnected.fetch_add(1, Ordering::Relaxed);
                                shared.last_reconnect_us.fetch_max(now_us(), Ordering::Relaxed);
                            }
                            None => {
                                shared.reconnect_failed.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                    Order::Drop(_) | Order::Hold => {}
                }
            }
        }
    }
}

/// Signs connection `i` in again after its socket dropped, as a client does: the first
/// attempt after a uniformly random pause below [`FIRST_PAUSE`], each later one after a
/// random pause below twice the previous bound (up to [`MAX_PAUSE`]), so a tier's
/// clients losing their connections together come back spread over a second instead of
/// all at once. `None` after [`ATTEMPTS`] failures, or when told to stop.
async fn reconnect(
    shared: &Shared,
    i: usize,
    orders: &mut watch::Receiver<Order>,
) -> Option<Socket> {
    let mut bound = FIRST_PAUSE;
    for _ in 0..ATTEMPTS {
        let pause = jitter(bound);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = orders.wait_for(|order| *order == Order::Stop) => return None,
        }
        match open(shared, i).await {
            Ok(socket) => return Some(socket),
            Err(e) => tracing::debug!(i, error = %e, "sign-in failed; backing off"),
        }
        bound = (bound * 2).min(MAX_PAUSE);
    }
    None
}

/// A uniformly random duration below `bound`.
pub(crate) fn jitter(bound: Duration) -> Duration {
    let micros = bound.as_micros().max(1) as u64;
    Duration::from_micros(svrkit::context::random_u64() % micros)
}

/// Connects connection `i` to its gateway from its source address and signs it in.
async fn open(shared: &Shared, i: usize) -> anyhow::Result<Socket> {
    let ws = shared.gateways[i % shared.gateways.len()];
    let from = source(i / shared.per_address);
    let token = &shared.tokens[i / shared.per_user];
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(ws).await?;
    stream.set_nodelay(true)?;
    // Small buffers: tens of thousands of clients share this process.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut socket, _) = tokio::time::timeout(
        ANSWER_TIMEOUT,
        tokio_tungstenite::client_async_with_config(
            format!("ws://{ws}/v1/ws"),
            stream,
            Some(config),
        ),
    )
    .await
    .map_err(|_| anyhow!("handshake timed out"))??;
    let auth = json!({ "op": "auth", "token": &**token }).to_string();
    socket.send(Message::Text(auth.into())).await?;
    let hello = tokio::time::timeout(ANSWER_TIMEOUT, socket.next())
        .await
        .map_err(|_| anyhow!("no answer to auth"))?;
    match hello {
        Some(Ok(Message::Text(text))) if text.as_str().contains("\"ok\":true") => Ok(socket),
        other => bail!("auth refused: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_distinct_loopback_addresses() {
        let a = source(0);
        let b = source(255);
        let c = source(70_000);
        assert_eq!(a, IpAddr::V4(Ipv4Addr::new(127, 1, 0, 1)));
        assert_eq!(b, IpAddr::V4(Ipv4Addr::new(127, 1, 1, 0)));
        assert!(c.is_loopback() && c != a && c != b);
    }

    #[test]
    fn jitter_stays_below_its_bound_and_spreads() {
        let pauses: Vec<Duration> = (0..1000).map(|_| jitter(FIRST_PAUSE)).collect();
        assert!(pauses.iter().all(|p| *p < FIRST_PAUSE));
        // Spread over the window, not bunched at one end.
        let early = pauses.iter().filter(|p| **p < FIRST_PAUSE / 2).count();
        assert!(
            (300..=700).contains(&early),
            "{early} of 1000 in the first half"
        );
    }
}
