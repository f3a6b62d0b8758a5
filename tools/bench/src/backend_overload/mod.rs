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
//! The mix (`--mix`, see [`DEFAULT_MIX`](mix::DEFAULT_MIX)) is of `login` (business priority 10),
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

mod args;
mod client;
mod mix;
mod phases;
mod report;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail};
use wx_client::Http;

use crate::backend::Backend;

pub(crate) use args::BackendOverloadArgs;
use client::{Collector, connect, register};
use mix::MIX;
use phases::Load;
use report::{KindCapacity, Weighing, report, weighed_json, weighed_share};

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
