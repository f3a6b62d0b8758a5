//! `svrkit-bench overload`: DAGOR's evaluation (SoCC 2018, workloads M1..M4) on one machine.
//!
//! Service A receives tasks; each task calls the basic service M `k` times in a row. M has
//! a fixed capacity: `workers` slots, each busy for `service_ms` per call, so its
//! saturation rate f_sat is well defined; it is measured first. An open-loop generator
//! then offers tasks at `load x f_sat / k` per second, so M is offered `load x f_sat`
//! calls per second, and a task succeeds only if all k calls do within its deadline. The
//! best any shedding can do is a success rate of `min(1, f_sat / f) = min(1, 1 / load)`.
//!
//! Strategies at M:
//! - `none`: no shedding; calls wait for a slot until their deadline.
//! - `random`: naive queue-length shedding: the longer the queue, the likelier a call is
//!   refused, independently at every call.
//! - `tower`: tower's `load_shed` over `concurrency_limit(workers)`: refuse whatever does
//!   not find a free slot.
//! - `dagor`: svrkit's admission control with its published settings, the worker pool as
//!   its queue, and collaborative shedding at A's client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use svrkit::overload::DagorConfig;
use svrkit::server::ServerRequest;
use svrkit::{BoxError, CallOptions, Channel, Context, Server, Status};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};

use crate::proto::svrkit_gen::{self, Payload, TaskReply, TaskRequest};
use crate::stats::quantile;

/// Options of `svrkit-bench overload`.
#[derive(Debug, clap::Args)]
pub(crate) struct OverloadArgs {
    /// Strategies to compare (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [Strategy::None, Strategy::Random, Strategy::Tower, Strategy::Dagor])]
    strategies: Vec<Strategy>,
    /// Calls to M per task (the paper's M1..M4).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3, 4])]
    k: Vec<u32>,
    /// Offered load as multiples of f_sat.
    #[arg(long, value_delimiter = ',', default_values_t = [0.5, 1.0, 2.0, 4.0])]
    loads: Vec<f64>,
    /// M's concurrent slots.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Time one call holds a slot at M, in milliseconds.
    #[arg(long, default_value_t = 2)]
    service_ms: u64,
    /// Deadline of a task, in milliseconds (WeChat's default RPC timeout).
    #[arg(long, default_value_t = 500)]
    deadline_ms: u64,
    /// Unmeasured time at the start of each point, in milliseconds (DAGOR moves 5 % per
    /// window, so it needs a few seconds to find the level after a step in load).
    #[arg(long, default_value_t = 3000)]
    warmup_ms: u64,
    /// Measured time of each point, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    duration_ms: u64,
    /// DAGOR's window length in requests. The published 2,000 is sized for WeChat's
    /// per-service rates, where it spans a fraction of a second; this M is ~100x smaller,
    /// so by default the window is scaled to the same span: 0.1 s of M's capacity.
    #[arg(long)]
    window_requests: Option<u32>,
}

/// A shedding strategy at M.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Strategy {
    None,
    Random,
    Tower,
    Dagor,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::None => "none",
            Strategy::Random => "random",
            Strategy::Tower => "tower",
            Strategy::Dagor => "dagor",
        })
    }
}

/// M: each call holds one of `workers` slots for `service`.
struct Basic {
    slots: Arc<Semaphore>,
    service: Duration,
}

impl svrkit_gen::bench_server::Bench for Basic {
    async fn echo(&self, request: Payload) -> Result<Payload, Status> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Status::internal("slots closed"))?;
        tokio::time::sleep(self.service).await;
        Ok(request)
    }
}

/// A: one task is `calls` calls to M in a row.
struct Front {
    m: svrkit_gen::bench_client::BenchClient,
}

impl svrkit_gen::front_server::Front for Front {
    async fn task(&self, request: TaskRequest) -> Result<TaskReply, Status> {
        for _ in 0..request.calls {
            self.m.echo(Payload { data: Bytes::new() }).await?;
        }
        Ok(TaskReply {})
    }
}

/// Naive shedding: refuse with a probability that grows with the queue behind the slots.
#[derive(Clone)]
struct RandomShed<S> {
    inner: S,
    inside: Arc<AtomicUsize>,
    workers: usize,
}

impl<S> tower::Service<ServerRequest> for RandomShed<S>
where
    S: tower::Service<ServerRequest, Response = Bytes, Error = Status>,
    S::Future: Send + 'static,
{
    type Response = Bytes;
    type Error = Status;
    type Future = svrkit::BoxFuture<'static, Result<Bytes, Status>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: ServerRequest) -> Self::Future {
        let queue = self
            .inside
            .load(Ordering::Relaxed)
            .saturating_sub(self.workers);
        // Nothing refused below one slot-set of queue; everything at four.
        let p = (queue as f64 / self.workers as f64 - 1.0) / 3.0;
        let random = (svrkit::context::random_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if random < p {
            return Box::pin(std::future::ready(Err(Status::overloaded(
                "queue too long",
            ))));
        }
        self.inside.fetch_add(1, Ordering::Relaxed);
        let inside = Arc::clone(&self.inside);
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            inside.fetch_sub(1, Ordering::Relaxed);
            result
        })
    }
}

#[derive(Clone)]
struct RandomShedLayer {
    workers: usize,
}

impl<S> tower::Layer<S> for RandomShedLayer {
    type Service = RandomShed<S>;
    fn layer(&self, inner: S) -> RandomShed<S> {
        RandomShed {
            inner,
            inside: Arc::default(),
            workers: self.workers,
        }
    }
}

/// A running server and its stop switch.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn spawn<L, S>(server: Server<L>) -> anyhow::Result<Running>
where
    L: tower::Layer<svrkit::server::Routed, Service = S> + Send + 'static,
    S: tower::Service<ServerRequest, Response = Bytes> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(
        server
            .drain_timeout(Duration::from_millis(100))
            .serve(listener, async {
                let _ = rx.await;
            }),
    );
    Ok(Running {
        addr,
        stop: Some(tx),
    })
}

/// Starts M with `strategy`; `window_requests` sizes DAGOR's window.
async fn start_m(
    strategy: Strategy,
    args: &OverloadArgs,
    window_requests: u32,
) -> anyhow::Result<Running> {
    let basic = svrkit_gen::bench_server::BenchServer::new(Basic {
        slots: Arc::new(Semaphore::new(args.workers)),
        service: Duration::from_millis(args.service_ms),
    });
    match strategy {
        Strategy::None => spawn(Server::builder().without_admission().add_service(basic)).await,
        Strategy::Random => {
            spawn(
                Server::builder()
                    .without_admission()
                    .layer(RandomShedLayer {
                        workers: args.workers,
                    })
                    .add_service(basic),
            )
            .await
        }
        Strategy::Tower => {
            spawn(
                Server::builder()
                    .without_admission()
                    .layer(tower::load_shed::LoadShedLayer::new())
                    .layer(tower::limit::ConcurrencyLimitLayer::new(args.workers))
                    .add_service(basic),
            )
            .await
        }
        Strategy::Dagor => {
            let config = DagorConfig {
                window_requests,
                ..DagorConfig::default()
            };
            spawn(
                Server::builder()
                    .max_concurrency(args.workers)
                    .admission(config)
                    .add_service(basic),
            )
            .await
        }
    }
}

/// Measures M's saturation rate: as many calls as it completes per second with every
/// slot always busy and no shedding.
async fn measure_f_sat(args: &OverloadArgs) -> anyhow::Result<f64> {
    let m = start_m(Strategy::None, args, 0).await?;
    let client = svrkit_gen::bench_client::BenchClient::new(Channel::lazy([m.addr]));
    let done = Arc::new(AtomicU64::new(0));
    let run = |until: Instant, count: bool| {
        let tasks: Vec<_> = (0..args.workers * 4)
            .map(|_| {
                let client = client.clone();
                let done = Arc::clone(&done);
                tokio::spawn(async move {
                    while Instant::now() < until {
                        let call = client.echo_with(
                            Payload { data: Bytes::new() },
                            CallOptions::new().timeout(Duration::from_secs(10)),
                        );
                        if call.await.is_ok() && count {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect::<Vec<_>>();
        async move {
            for t in tasks {
                let _ = t.await;
            }
        }
    };
    run(Instant::now() + Duration::from_millis(300), false).await;
    let start = Instant::now();
    run(start + Duration::from_millis(2000), true).await;
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// What one (strategy, k, load) point produced.
struct Point {
    sent: u64,
    ok: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

async fn run_point(
    strategy: Strategy,
    k: u32,
    load: f64,
    f_sat: f64,
    window_requests: u32,
    args: &OverloadArgs,
) -> anyhow::Result<Point> {
    let m = start_m(strategy, args, window_requests).await?;
    let m_client = svrkit_gen::bench_client::BenchClient::new(Channel::lazy([m.addr]));
    let front = svrkit_gen::front_server::FrontServer::new(Front { m: m_client });
    let a = if strategy == Strategy::Dagor {
        spawn(Server::builder().add_service(front)).await?
    } else {
        spawn(Server::builder().without_admission().add_service(front)).await?
    };
    let client = svrkit_gen::front_client::FrontClient::new(Channel::lazy([a.addr]));

    let rate = load * f_sat / f64::from(k);
    let deadline = Duration::from_millis(args.deadline_ms);
    let begin = Instant::now();
    let measure_from = begin + Duration::from_millis(args.warmup_ms);
    let end = measure_from + Duration::from_millis(args.duration_ms);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, u32)>();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    let mut owed = 0.0f64;
    let mut last = Instant::now();
    loop {
        ticker.tick().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        owed += rate * now.duration_since(last).as_secs_f64();
        last = now;
        while owed >= 1.0 {
            owed -= 1.0;
            let measured = now >= measure_from;
            sent += u64::from(measured);
            let client = client.clone();
            let tx = tx.clone();
            // Every task is one user; all share one business priority.
            let uid = 1 + svrkit::context::random_u64() % 1_000_000;
            tokio::spawn(async move {
                let started = Instant::now();
                let ok = Context::new()
                    .with_uid(uid)
                    .with_business_priority(10)
                    .with_timeout(deadline)
                    .scope(client.task(TaskRequest { calls: k }))
                    .await
                    .is_ok();
                if measured {
                    let _ = tx.send((
                        ok,
                        started.elapsed().as_micros().min(u32::MAX as u128) as u32,
                    ));
                }
            });
        }
    }
    drop(tx);
    let mut ok = 0;
    let mut latencies_us = Vec::new();
    while let Some((success, us)) = rx.recv().await {
        if success {
            ok += 1;
            latencies_us.push(us);
        }
    }
    drop(a);
    drop(m);
    Ok(Point {
        sent,
        ok,
        elapsed: end.saturating_duration_since(measure_from),
        latencies_us,
    })
}

pub(crate) async fn run(args: OverloadArgs) -> anyhow::Result<()> {
    if args.k.contains(&0) || args.loads.iter().any(|l| *l <= 0.0) || args.workers == 0 {
        bail!("k, loads and workers must be positive");
    }
    let f_sat = measure_f_sat(&args).await?;
    let window_requests = args
        .window_requests
        .unwrap_or(((f_sat / 10.0) as u32).max(50));
    println!(
        "svrkit-bench overload: M = {} slots x {} ms, measured f_sat = {f_sat:.0} calls/s; task deadline {} ms; {} ms per point after {} ms warm-up; DAGOR window 1 s or {window_requests} requests",
        args.workers, args.service_ms, args.deadline_ms, args.duration_ms, args.warmup_ms
    );
    println!(
        "{:>8} {:>2} {:>5} {:>8} {:>8} {:>9} {:>10} {:>8}",
        "strategy", "k", "load", "success", "optimal", "vs opt", "goodput/s", "p99 ms"
    );
    let mut json = Vec::new();
    for &strategy in &args.strategies {
        for &k in &args.k {
            for &load in &args.loads {
                let mut p = run_point(strategy, k, load, f_sat, window_requests, &args).await?;
                let success = p.ok as f64 / p.sent.max(1) as f64;
                let optimal = (1.0 / load).min(1.0);
                let goodput = p.ok as f64 / p.elapsed.as_secs_f64().max(1e-9);
                let p99_ms = f64::from(quantile(&mut p.latencies_us, 0.99)) / 1000.0;
                println!(
                    "{:>8} {:>2} {:>5.1} {:>8.3} {:>8.3} {:>9.2} {:>10.0} {:>8.1}",
                    strategy,
                    k,
                    load,
                    success,
                    optimal,
                    success / optimal,
                    goodput,
                    p99_ms
                );
                json.push(format!(
                    "{{\"bench\":\"overload\",\"strategy\":\"{strategy}\",\"k\":{k},\"load\":{load},\"success\":{success:.4},\"optimal\":{optimal:.4},\"goodput\":{goodput:.1},\"p99_ms\":{p99_ms:.2}}}"
                ));
            }
        }
    }
    for line in json {
        println!("{line}");
    }
    Ok(())
}
