//! `svrkit-bench backend-overload`: the real backend driven past its capacity through
//! access-long, with a mix of actions at their business priorities.
//!
//! Starts the release backend by itself, registers `--users` users in befriended pairs,
//! and gives each a WebSocket. Then:
//!
//! Requests are sent on a fixed schedule (open loop: no waiting for answers), spread
//! evenly over the users; each phase has one unmeasured second, then the measured ones.
//!
//! 1. **Capacity.** The rate starts at 200 requests/s and grows by half while at least
//!    98 % of requests succeed (3 s phases; a step that fails is tried once more); the
//!    capacity is the highest goodput seen.
//! 2. **Load.** For each `--loads` factor, that factor times the capacity for `--seconds`.
//! 3. **Check.** The capacity offered again at 1x: the machine's speed moves within a run
//!    on a shared host, and this says whether the loads met the machine the capacity was
//!    found on (`"check":"capacity_after"`).
//!
//! With `--weigh`, each kind's capacity alone is found first (the same ramp, from
//! 400 requests/s, halving first while even that is too much), and every load also
//! reports `weighed_goodput_vs_capacity`: its successes, each counting 1 / its kind's
//! capacity alone, against the capacity's own successes counted the same way.
//!
//! The mix (`--mix`, see [`DEFAULT_MIX`]) is of `login` (business priority 10),
//! `message.send` (20), `profile.update` (30), `friends.list` (40) and
//! `moments.timeline` (80). Sign-in is rare, as in a real client: one costs as
//! much CPU as a few hundred other requests (argon2).
//!
//! The generator runs on a CPU of its own (`--no-pin` to share), and its clients behave
//! as the product's do: a request given up on is not sent any more, and while the
//! gateway's answers carry an `admit` hint they hold back requests it would refuse, by
//! the product client's own rules ([`wx_client::AdmitHint`]; counted as refused,
//! `held_back`; `--ignore-admit` sends them anyway). A request
//! counts when it was sent in the measured seconds; it
//! succeeds when answered ok within 3 s (a refusal such as `overloaded`, or silence,
//! is a failure). Reported per load and business priority, and per load and user-priority
//! band (DAGOR's user priority of each uid, in four bands): success ratio, goodput
//! (successes per second) and p99 latency of successes, one JSON line each (a priority's
//! line counts its failures by why: `code/reason`, `late`, `held_back`), and a summary
//! line per load with the goodput against the capacity and how busy the backend's
//! CPUs were (all of them, at every load past the capacity, means the edge sheds no more
//! than it must: what fewer successes remain is a dearer mix being served).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wx_client::{AdmitHint, Http};

use crate::backend::{Backend, PASSWORD, call, sign_up};
use crate::stats::quantile;

/// Options of `svrkit-bench backend-overload`.
#[derive(Debug, clap::Args)]
pub(crate) struct BackendOverloadArgs {
    /// Users (in befriended pairs), each with a WebSocket. Many: a connection may have
    /// 64 requests in flight, and each user's share of 4x the load must fit.
    #[arg(long, default_value_t = 2000)]
    users: usize,
    /// Measured seconds of the capacity run and of each load.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Load factors, times the measured capacity (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1.0, 2.0, 4.0])]
    loads: Vec<f64>,
    /// The capacity in successful requests/s, when known from an earlier run (skips
    /// finding it).
    #[arg(long)]
    capacity: Option<f64>,
    /// The mix: requests per 10,000 of `login`, `message.send`, `profile.update`,
    /// `friends.list` and `moments.timeline`, in that order.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_MIX)]
    mix: Vec<u32>,
    /// Run the load generator on the same CPUs as the backend (by default, with two CPUs
    /// or more, it has the last one to itself, as if on a machine of its own).
    #[arg(long)]
    no_pin: bool,
    /// Clients that ignore the gateway's `admit` hint and send everything (by default
    /// they hold back what it says it would shed, as the product's clients do).
    #[arg(long)]
    ignore_admit: bool,
    /// First find each kind's capacity alone (a ramp per kind of the mix), and report
    /// every load's goodput weighed by it as well: the share of the backend's capacity
    /// that successes used, whatever kinds they were (a load that sheds cheap reads to
    /// serve dear messages has fewer successes, not less useful work).
    #[arg(long)]
    weigh: bool,
}

impl BackendOverloadArgs {
    /// Whether the generator gets a CPU of its own (see [`crate::cpus`]).
    pub(crate) fn pins(&self) -> bool {
        !self.no_pin
    }
}

/// One kind of request in the mix.
struct Kind {
    action: &'static str,
    priority: u32,
}

const MIX: [Kind; 5] = [
    Kind {
        action: "login",
        priority: 10,
    },
    Kind {
        action: "message.send",
        priority: 20,
    },
    Kind {
        action: "profile.update",
        priority: 30,
    },
    Kind {
        action: "friends.list",
        priority: 40,
    },
    Kind {
        action: "moments.timeline",
        priority: 80,
    },
];

/// The default mix, per 10,000 requests: sign-in 1, messaging 1,000, contact writes
/// 1,000, contact reads 3,000, Moments browsing 4,999 (reads dominate, as in any social
/// app). The two most important classes are a tenth of the requests, but a message is
/// the dearest request in the mix: each kind's capacity alone (`--weigh`, 2026-12-03)
/// was 8,859/s for messages, 15,015 for contact writes, 15,376 for contact reads and
/// 34,599 for Moments reads, so a message costs about 4 Moments reads and 2.2 times the
/// mix's average. At 4x the load messaging alone asks about 0.85 of the capacity's
/// work, and keeping 95 % of it leaves little for the rest: the successes per second
/// fall (cheap reads shed) while the work done does not (`--weigh` shows it). With
/// messaging at 30 % (this benchmark's first mix, `--mix 1,3000,1500,2500,2999`) it
/// asks several times the capacity at 4x, and no admission policy can serve 95 % of it.
const DEFAULT_MIX: [u32; MIX.len()] = [1, 1_000, 1_000, 3_000, 4_999];

/// How long an answer may take before the request counts as failed.
const GIVE_UP: Duration = Duration::from_secs(3);
/// User-priority bands reported (DAGOR's 128 user priorities, in four).
const BANDS: usize = 4;

/// A signed-in user.
struct User {
    uid: u64,
    name: String,
    friend: u64,
    token: String,
    /// DAGOR's user priority of this uid (1 most important … 128).
    band: usize,
}

/// Outcomes of one phase, by mix kind and by user band.
#[derive(Default)]
struct Tally {
    sent: [u64; MIX.len()],
    ok: [u64; MIX.len()],
    latencies_us: [Vec<u32>; MIX.len()],
    band_sent: [u64; BANDS],
    band_ok: [u64; BANDS],
    /// Failures by the request's kind and why (`code/reason`, `late`, `held_back`).
    refusals: HashMap<(usize, String), u64>,
    /// CPU the backend's processes used in the measured seconds.
    backend_cpu: Duration,
}

impl Tally {
    /// Successes and requests sent, of every kind.
    fn totals(&self) -> (u64, u64) {
        (self.ok.iter().sum(), self.sent.iter().sum())
    }

    /// The work its successes did against the work of the capacity, each kind's
    /// success counting 1 / that kind's capacity alone (`None` without weights).
    fn weighed(&self, seconds: f64, weighing: Option<&Weighing>) -> Option<f64> {
        let weighing = weighing?;
        let share = weighed_share(
            self.ok.map(|ok| ok as f64 / seconds.max(1e-9)),
            &weighing.kinds,
        )?;
        Some(share / weighing.capacity_share.max(1e-9))
    }
}

/// Each kind's capacity when offered alone, in successful requests/s (`0` for a kind
/// not in the mix).
type KindCapacity = [f64; MIX.len()];

/// What a success of each kind weighs.
struct Weighing {
    kinds: KindCapacity,
    /// The share of the kinds' capacities that the mix's capacity adds up to. Below 1
    /// when the kinds cost more together than alone (each service sees fewer of each
    /// at a time); a load's weighed goodput is against it.
    capacity_share: f64,
}

/// The share of the capacity used by `rates` (requests/s of each kind): the sum of
/// each kind's rate over its capacity alone.
fn weighed_share(rates: [f64; MIX.len()], kinds: &KindCapacity) -> Option<f64> {
    let mut share = 0.0;
    for (rate, capacity) in rates.iter().zip(kinds) {
        if *rate > 0.0 {
            if *capacity <= 0.0 {
                return None;
            }
            share += rate / capacity;
        }
    }
    Some(share)
}

/// The mix kind of request number `n` (deterministic: `weights`, one per kind of
/// [`MIX`], in a repeating pattern).
fn kind_of(n: u64, weights: &[u32; MIX.len()]) -> usize {
    let total: u32 = weights.iter().sum::<u32>().max(1);
    // A multiplicative hash spreads kinds evenly without a random generator.
    let mut slot = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32 % total;
    for (i, &weight) in weights.iter().enumerate() {
        if slot < weight {
            return i;
        }
        slot -= weight;
    }
    MIX.len() - 1
}

/// The frame of request `id` of `kind` for `user`. Written by hand, not through a JSON
/// tree: at 4x the load the generator writes tens of thousands a second on one CPU, and
/// every value in it is plain ASCII (names and numbers) that needs no escaping.
fn frame_of(id: u64, kind: usize, user: &User) -> String {
    let action = MIX[kind].action;
    let body = match action {
        "login" => format!(r#"{{"name":"{}","password":"{PASSWORD}"}}"#, user.name),
        "message.send" => format!(r#"{{"to":{},"text":"load {id}"}}"#, user.friend),
        "profile.update" => format!(r#"{{"signature":"load {id}"}}"#),
        "friends.list" => "{}".to_string(),
        _ => r#"{"limit":20}"#.to_string(),
    };
    format!(r#"{{"id":{id},"action":"{action}","body":{body}}}"#)
}

/// The parts of an answer the generator reads (the result itself is skipped unparsed).
#[derive(serde::Deserialize)]
struct Answer {
    id: Option<u64>,
    #[serde(default)]
    ok: bool,
    error: Option<AnswerError>,
    /// The gateway's hint while it sheds: the least important business priority it
    /// admits from this user.
    admit: Option<u32>,
}

#[derive(serde::Deserialize)]
struct AnswerError {
    code: String,
    reason: Option<String>,
}

impl AnswerError {
    /// How a refusal is counted: its code, and its reason when it has one of its own.
    fn key(self) -> String {
        match self.reason {
            Some(reason) if reason != self.code => format!("{}/{reason}", self.code),
            _ => self.code,
        }
    }
}

/// A request waiting for its answer: its mix kind, when it was sent, and whether it was
/// sent while measuring.
type Waiting = (usize, Instant, bool);

/// A user's WebSocket, split: frames go out through `send`, answers are matched by id.
struct Conn {
    send: tokio::sync::mpsc::UnboundedSender<(String, Instant)>,
    waiting: Arc<Mutex<HashMap<u64, Waiting>>>,
    /// What the gateway's answers said about admission (the product client's logic).
    hint: Arc<Mutex<AdmitHint>>,
}

/// What every connection reports answers to.
struct Collector {
    tally: Mutex<Tally>,
    /// Whether requests sent now are measured.
    measuring: std::sync::atomic::AtomicBool,
    /// Whether clients hold back what the gateway says it would shed.
    honour_admit: bool,
}

/// Locks `m`, whatever a panicking holder left.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn connect(ws: SocketAddr, user: &User, collector: Arc<Collector>) -> anyhow::Result<Conn> {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{ws}/v1/ws")).await?;
    let auth = json!({ "op": "auth", "token": user.token }).to_string();
    socket.send(Message::Text(auth.into())).await?;
    let hello: Value = match socket.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str(text.as_str())?,
        other => bail!("auth refused: {other:?}"),
    };
    if hello["ok"] != true {
        bail!("auth refused: {hello}");
    }
    // The hint is in business priorities: the mix must use the gateway's.
    for kind in &MIX {
        if hello["priorities"][kind.action] != kind.priority {
            bail!(
                "the gateway gives {} priority {}, the mix {}",
                kind.action,
                hello["priorities"][kind.action],
                kind.priority
            );
        }
    }
    let (mut sink, mut stream) = socket.split();
    let (send, mut outgoing) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    tokio::spawn(async move {
        while let Some((frame, made)) = outgoing.recv().await {
            // As any client does, a request given up on is not sent any more.
            if made.elapsed() > GIVE_UP {
                continue;
            }
            if sink.send(Message::Text(frame.into())).await.is_err() {
                return;
            }
        }
    });
    let waiting: Arc<Mutex<HashMap<u64, Waiting>>> = Arc::default();
    let hint: Arc<Mutex<AdmitHint>> = Arc::default();
    let band = user.band;
    {
        let (waiting, hint) = (Arc::clone(&waiting), Arc::clone(&hint));
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(frame) = serde_json::from_str::<Answer>(text.as_str()) else {
                    continue;
                };
                let Some(id) = frame.id else {
                    continue; // a push
                };
                let Some((kind, sent, measured)) = lock(&waiting).remove(&id) else {
                    continue;
                };
                let refused = frame
                    .error
                    .as_ref()
                    .is_some_and(|e| e.reason.as_deref() == Some("edge_shed"));
                lock(&hint).observe(
                    u64::from(MIX[kind].priority),
                    frame.admit.map(u64::from),
                    refused,
                    Instant::now(),
                );
                let took = sent.elapsed();
                let ok = frame.ok && took <= GIVE_UP;
                if measured {
                    let mut t = lock(&collector.tally);
                    if ok {
                        t.ok[kind] += 1;
                        t.band_ok[band] += 1;
                        t.latencies_us[kind].push(took.as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        let code = frame
                            .error
                            .map_or_else(|| "late".to_string(), AnswerError::key);
                        *t.refusals.entry((kind, code)).or_default() += 1;
                    }
                }
            }
        });
    }
    Ok(Conn {
        send,
        waiting,
        hint,
    })
}

impl Conn {
    /// Sends request `n` of `kind` for `user`, unless the gateway's hint says it would be
    /// shed (then it counts as refused, `held_back`); counts it as sent when measuring.
    fn request(&self, id: u64, kind: usize, user: &User, collector: &Collector) {
        let measured = collector.measuring.load(Ordering::Relaxed);
        let held_back = collector.honour_admit
            && lock(&self.hint).holds_back(u64::from(MIX[kind].priority), Instant::now());
        if measured {
            let mut t = lock(&collector.tally);
            t.sent[kind] += 1;
            t.band_sent[user.band] += 1;
            if held_back {
                *t.refusals
                    .entry((kind, "held_back".to_string()))
                    .or_default() += 1;
            }
        }
        if held_back {
            return;
        }
        let frame = frame_of(id, kind, user);
        lock(&self.waiting).insert(id, (kind, Instant::now(), measured));
        let _ = self.send.send((frame, Instant::now()));
    }
}

/// Registers `count` users in befriended pairs; returns them signed in.
async fn register(api: Http, count: usize) -> anyhow::Result<Vec<User>> {
    let run = svrkit::context::random_u64() & 0xff_ffff;
    let next = Arc::new(AtomicUsize::new(0));
    let pairs = count / 2;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let p = next.fetch_add(1, Ordering::Relaxed);
                if p >= pairs {
                    return anyhow::Ok(mine);
                }
                let mut pair = Vec::new();
                for side in ["a", "b"] {
                    let name = format!("ov{side}{p}_{run:x}");
                    let (uid, token) = sign_up(&api, &name).await?;
                    pair.push((name, uid, token));
                }
                let (a, b) = (&pair[0], &pair[1]);
                call(&api, "friends.request", json!({ "peer": b.1 }), Some(&a.2)).await?;
                call(&api, "friends.accept", json!({ "peer": a.1 }), Some(&b.2)).await?;
                for (me, friend) in [(a, b.1), (b, a.1)] {
                    let band = (svrkit::overload::user_priority(me.1).clamp(1, 128) as usize - 1)
                        * BANDS
                        / 128;
                    mine.push(User {
                        uid: me.1,
                        name: me.0.clone(),
                        friend,
                        token: me.2.clone(),
                        band,
                    });
                }
            }
        });
    }
    let mut users = Vec::with_capacity(count);
    while let Some(joined) = workers.join_next().await {
        users.extend(joined.context("a registering task failed")??);
    }
    users.sort_by_key(|u| u.uid);
    Ok(users)
}

/// Runs the benchmark.
pub(crate) async fn run(args: BackendOverloadArgs) -> anyhow::Result<()> {
    if args.users < 2 || args.seconds <= 0.0 || args.loads.iter().any(|l| *l <= 0.0) {
        bail!("--users must be at least 2, --seconds and every load positive");
    }
    let weights: [u32; MIX.len()] = args
        .mix
        .as_slice()
        .try_into()
        .map_err(|_| anyhow!("--mix takes {} weights", MIX.len()))?;
    if weights.iter().map(|&w| u64::from(w)).sum::<u64>() == 0
        || weights.iter().any(|&w| w > 1_000_000)
    {
        bail!("--mix: the weights add up to more than zero, each at most 1,000,000");
    }
    let split = if args.pins() {
        crate::cpus::Split::of_this_process()?
    } else {
        None
    };
    match &split {
        Some(split) => eprintln!("{split:?}"),
        None => eprintln!("the generator shares the backend's CPUs"),
    }
    let backend = Backend::start_on(
        1,
        &[
            ("RUST_LOG", "error"),
            // The load is many requests per user; the per-user limit would answer them.
            ("WX_RATE_PER_SEC", "1000000"),
            ("WX_RATE_BURST", "1000000"),
        ],
        split.as_ref().map(|s| &s.system),
    )?;
    if let Some(split) = &split {
        crate::cpus::pin_process(&split.generator)?;
    }
    let ws = *backend
        .ws
        .first()
        .ok_or_else(|| anyhow!("no access-long instance"))?;
    eprintln!("registering {} users in befriended pairs", args.users);
    let users = Arc::new(register(Http::new(backend.http), args.users).await?);
    let collector = Arc::new(Collector {
        tally: Mutex::default(),
        measuring: false.into(),
        honour_admit: !args.ignore_admit,
    });
    let mut conns = Vec::with_capacity(users.len());
    for user in users.iter() {
        conns.push(Arc::new(connect(ws, user, Arc::clone(&collector)).await?));
    }
    let load = Load {
        users,
        conns,
        collector,
        next_id: Arc::new(AtomicU64::new(1)),
        weights,
        backend_pids: backend.pids(),
    };
    // The CPUs the backend may use: its own with the generator pinned apart, else all.
    let system_cpus = split.as_ref().map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        crate::cpus::Split::system_cpu_count,
    );

    let mut lines = Vec::new();
    let kinds = if args.weigh {
        let mut kinds: KindCapacity = [0.0; MIX.len()];
        for (k, kind) in MIX.iter().enumerate() {
            if weights[k] == 0 {
                continue;
            }
            let mut alone = [0; MIX.len()];
            alone[k] = 1;
            eprintln!("finding the capacity of {} alone", kind.action);
            kinds[k] = load.ramp(&alone, 400.0).await;
            eprintln!("  {}: {:.0} successful requests/s", kind.action, kinds[k]);
            lines.push(format!(
                "{{\"bench\":\"backend-overload\",\"kind_capacity\":\"{}\",\"capacity\":{:.0}}}",
                kind.action, kinds[k]
            ));
        }
        Some(kinds)
    } else {
        None
    };
    let capacity = match args.capacity {
        Some(capacity) => capacity,
        None => {
            eprintln!("finding the capacity: 200 requests/s and up by half while 98 % succeed");
            load.ramp(&weights, 200.0).await
        }
    };
    eprintln!("capacity: {capacity:.0} successful requests/s");
    let weighing = kinds.and_then(|kinds| {
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let share = weighed_share(weights.map(|w| capacity * f64::from(w) / total), &kinds)?;
        eprintln!("  the mix's capacity is {share:.2} of its kinds' capacities alone");
        lines.push(format!(
            "{{\"bench\":\"backend-overload\",\"check\":\"mix_capacity_weighed\",\"capacity\":{capacity:.0},\"share_of_kinds\":{share:.2}}}"
        ));
        Some(Weighing {
            kinds,
            capacity_share: share,
        })
    });

    println!(
        "{:>5} {:>24} {:>9} {:>9} {:>10} {:>8}",
        "load", "class", "sent", "success", "goodput/s", "p99 ms"
    );
    for &factor in &args.loads {
        let rate = capacity * factor;
        eprintln!(
            "load {factor}x: {rate:.0} requests/s for {} s",
            args.seconds
        );
        let tally = load
            .phase(rate, Duration::from_secs_f64(args.seconds))
            .await;
        lines.extend(report(
            factor,
            capacity,
            &tally,
            args.seconds,
            system_cpus,
            weighing.as_ref(),
        ));
    }
    // The capacity again, offered at 1x: on a shared machine it moves within a run, and
    // a drop here says the loads above met a slower machine than the capacity did.
    eprintln!(
        "capacity check: {capacity:.0} requests/s for {} s",
        args.seconds
    );
    // First long enough at 1x, unmeasured, for every client's backoff from the loads
    // above to run out (they would count as failures here).
    let _settle = load.phase(capacity, wx_client::HINT_TTL_MAX).await;
    let check = load
        .phase(capacity, Duration::from_secs_f64(args.seconds))
        .await;
    let (ok, sent) = check.totals();
    let goodput = ok as f64 / args.seconds;
    eprintln!(
        "  {goodput:.0}/s succeeded ({:.1} %), {:.2} of the capacity",
        ok as f64 * 100.0 / sent.max(1) as f64,
        goodput / capacity.max(1e-9)
    );
    lines.push(format!(
        "{{\"bench\":\"backend-overload\",\"check\":\"capacity_after\",\"capacity\":{capacity:.0},\"goodput\":{goodput:.0},\"goodput_vs_capacity\":{:.2}{}}}",
        goodput / capacity.max(1e-9),
        weighed_json(check.weighed(args.seconds, weighing.as_ref())),
    ));
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// The users, their connections and what they report to.
struct Load {
    users: Arc<Vec<User>>,
    conns: Vec<Arc<Conn>>,
    collector: Arc<Collector>,
    next_id: Arc<AtomicU64>,
    weights: [u32; MIX.len()],
    /// The backend's processes, whose CPU each phase measures.
    backend_pids: Vec<u32>,
}

impl Load {
    /// CPU time the backend's processes have used so far.
    fn backend_cpu(&self) -> Duration {
        self.backend_pids
            .iter()
            .map(|&pid| crate::stats::process_cpu(pid))
            .sum()
    }

    /// The highest goodput of `weights`' mix: the rate starts at `start` requests/s and
    /// grows by half while at least 98 % succeed (3 s phases; a step that fails is tried
    /// once more). If the start is too much already, it halves until a step passes.
    async fn ramp(&self, weights: &[u32; MIX.len()], start: f64) -> f64 {
        let mut capacity = 0.0f64;
        let mut rate = start;
        let mut retried = false;
        let mut passed = false;
        loop {
            let tally = self.phase_of(weights, rate, Duration::from_secs(3)).await;
            let (ok, sent) = tally.totals();
            let goodput = ok as f64 / 3.0;
            eprintln!(
                "  {rate:.0}/s offered: {goodput:.0}/s succeeded ({:.1} %)",
                ok as f64 * 100.0 / sent.max(1) as f64
            );
            capacity = capacity.max(goodput);
            if rate > 200_000.0 {
                return capacity;
            }
            if (ok as f64) < 0.98 * sent as f64 {
                // One step may fail by chance (a compaction, a neighbour): it is tried
                // once more before the ramp ends.
                if !retried {
                    retried = true;
                    continue;
                }
                if passed || rate < 2.0 {
                    return capacity;
                }
                (rate, retried) = (rate / 2.0, false);
                continue;
            }
            (passed, retried) = (true, false);
            rate *= 1.5;
        }
    }

    /// Offers `rate` requests/s of the benchmark's mix for one unmeasured second and
    /// then `measured`; returns the measured requests' outcomes once each is answered or
    /// given up on.
    async fn phase(&self, rate: f64, measured: Duration) -> Tally {
        self.phase_of(&self.weights, rate, measured).await
    }

    /// [`Load::phase`] with the mix `weights`.
    async fn phase_of(&self, weights: &[u32; MIX.len()], rate: f64, measured: Duration) -> Tally {
        let users = self.users.len();
        // Each user sends on its own fixed schedule, offset so sends spread evenly.
        let interval = Duration::from_secs_f64(users as f64 / rate.max(1.0));
        let begin = tokio::time::Instant::now();
        let stop_at = begin + Duration::from_secs(1) + measured;
        let mut senders = tokio::task::JoinSet::new();
        for (i, conn) in self.conns.iter().enumerate() {
            let (all, collector, next_id, conn) = (
                Arc::clone(&self.users),
                Arc::clone(&self.collector),
                Arc::clone(&self.next_id),
                Arc::clone(conn),
            );
            let offset = interval.mul_f64(i as f64 / users as f64);
            let weights = *weights;
            senders.spawn(async move {
                let user = &all[i];
                let mut tick = tokio::time::interval_at(begin + offset, interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                loop {
                    if tick.tick().await >= stop_at {
                        return;
                    }
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    conn.request(id, kind_of(id, &weights), user, &collector);
                }
            });
        }
        tokio::time::sleep_until(begin + Duration::from_secs(1)).await;
        *lock(&self.collector.tally) = Tally::default();
        self.collector.measuring.store(true, Ordering::Relaxed);
        let cpu_before = self.backend_cpu();
        tokio::time::sleep_until(stop_at).await;
        self.collector.measuring.store(false, Ordering::Relaxed);
        let backend_cpu = self.backend_cpu().saturating_sub(cpu_before);
        while senders.join_next().await.is_some() {}
        // What was sent in the window is answered, or given up on, by now.
        tokio::time::sleep(GIVE_UP).await;
        for conn in &self.conns {
            lock(&conn.waiting).clear();
        }
        let mut tally = std::mem::take(&mut *lock(&self.collector.tally));
        tally.backend_cpu = backend_cpu;
        tally
    }
}

/// `,"weighed_goodput_vs_capacity":…` when there is one.
fn weighed_json(weighed: Option<f64>) -> String {
    weighed.map_or_else(String::new, |w| {
        format!(",\"weighed_goodput_vs_capacity\":{w:.2}")
    })
}

/// The failures of kind `kind` (of every kind: `None`) as JSON members, `"why":count`,
/// sorted by why.
fn refusals_json(tally: &Tally, kind: Option<usize>) -> String {
    let mut by_why: std::collections::BTreeMap<&str, u64> = Default::default();
    for ((k, why), n) in &tally.refusals {
        if kind.is_none_or(|kind| kind == *k) {
            *by_why.entry(why.as_str()).or_default() += n;
        }
    }
    by_why
        .iter()
        .map(|(why, n)| format!("\"{why}\":{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The table rows and JSON lines of one load.
fn report(
    load: f64,
    capacity: f64,
    tally: &Tally,
    seconds: f64,
    system_cpus: usize,
    weighing: Option<&Weighing>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let ratio = |ok: u64, sent: u64| {
        if sent == 0 {
            0.0
        } else {
            ok as f64 / sent as f64
        }
    };
    let mut latencies = tally.latencies_us.clone();
    for (k, kind) in MIX.iter().enumerate() {
        let p99 = quantile(&mut latencies[k], 0.99) as f64 / 1e3;
        let success = ratio(tally.ok[k], tally.sent[k]);
        let goodput = tally.ok[k] as f64 / seconds;
        println!(
            "{:>5} {:>24} {:>9} {:>9.3} {:>10.0} {:>8.1}",
            format!("{load}x"),
            format!("{} ({})", kind.action, kind.priority),
            tally.sent[k],
            success,
            goodput,
            p99
        );
        lines.push(format!(
            "{{\"bench\":\"backend-overload\",\"load\":{load},\"business_priority\":{},\"action\":\"{}\",\"sent\":{},\"success\":{success:.3},\"goodput\":{goodput:.0},\"p99_ms\":{p99:.1},\"refused\":{{{}}}}}",
            kind.priority,
            kind.action,
            tally.sent[k],
            refusals_json(tally, Some(k))
        ));
    }
    for band in 0..BANDS {
        let (low, high) = (band * 128 / BANDS + 1, (band + 1) * 128 / BANDS);
        let success = ratio(tally.band_ok[band], tally.band_sent[band]);
        println!(
            "{:>5} {:>24} {:>9} {:>9.3} {:>10.0} {:>8}",
            format!("{load}x"),
            format!("users {low}-{high}"),
            tally.band_sent[band],
            success,
            tally.band_ok[band] as f64 / seconds,
            "",
        );
        lines.push(format!(
            "{{\"bench\":\"backend-overload\",\"load\":{load},\"user_priorities\":\"{low}-{high}\",\"sent\":{},\"success\":{success:.3},\"goodput\":{:.0}}}",
            tally.band_sent[band],
            tally.band_ok[band] as f64 / seconds
        ));
    }
    let (ok, sent) = tally.totals();
    let goodput = ok as f64 / seconds;
    let refusals = refusals_json(tally, None);
    // How busy the backend's CPUs were.
    let busy = tally.backend_cpu.as_secs_f64() / (seconds * system_cpus.max(1) as f64);
    let weighed = tally.weighed(seconds, weighing);
    println!(
        "{:>5} {:>24} {:>9} {:>9.3} {:>10.0} {:>8}   goodput/capacity {:.2}{}, backend CPU busy {busy:.2}",
        format!("{load}x"),
        "all",
        sent,
        ratio(ok, sent),
        goodput,
        "",
        goodput / capacity.max(1e-9),
        weighed.map_or_else(String::new, |w| format!(" (weighed by kind {w:.2})")),
    );
    lines.push(format!(
        "{{\"bench\":\"backend-overload\",\"load\":{load},\"capacity\":{capacity:.0},\"sent\":{sent},\"success\":{:.3},\"goodput\":{goodput:.0},\"goodput_vs_capacity\":{:.2}{},\"backend_cpu_busy\":{busy:.2},\"refused\":{{{refusals}}}}}",
        ratio(ok, sent),
        goodput / capacity.max(1e-9),
        weighed_json(weighed),
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_given_comma_separated() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BackendOverloadArgs,
        }
        let mix = |argv: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(argv)
                .map(|cli| cli.args.mix)
                .map_err(|e| e.to_string())
        };
        assert_eq!(mix(&["b", "--mix", "1,0,0,0,0"]), Ok(vec![1, 0, 0, 0, 0]));
        assert_eq!(mix(&["b"]), Ok(DEFAULT_MIX.to_vec()));
        // Any other count parses, and is refused by `run` with the count it takes.
        assert_eq!(mix(&["b", "--mix", "1,2"]), Ok(vec![1, 2]));
        assert!(mix(&["b", "--mix", "x"]).is_err());
    }

    #[test]
    fn weighing_counts_each_success_by_its_kind_capacity() {
        let kinds: KindCapacity = [50.0, 2_000.0, 0.0, 5_000.0, 10_000.0];
        // Half of the messages' capacity and a fifth of the reads': 0.7 of the backend.
        let share = weighed_share([0.0, 1_000.0, 0.0, 0.0, 2_000.0], &kinds).expect("weighed");
        assert!((share - 0.7).abs() < 1e-9, "{share}");
        // A kind that succeeded without a capacity of its own cannot be weighed.
        assert_eq!(weighed_share([0.0, 0.0, 10.0, 0.0, 0.0], &kinds), None);
        let mut tally = Tally::default();
        tally.ok[0] = 50;
        tally.ok[3] = 25_000;
        let weighing = Weighing {
            kinds,
            capacity_share: 0.5,
        };
        // 0.6 of the kinds' capacities, against a capacity that was worth 0.5 of them.
        let weighed = tally.weighed(10.0, Some(&weighing)).expect("weighed");
        assert!((weighed - (5.0 / 50.0 + 2_500.0 / 5_000.0) / 0.5).abs() < 1e-9);
        assert_eq!(tally.weighed(10.0, None), None);
    }
}
