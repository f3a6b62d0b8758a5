//! `svrkit-bench login-flood`: can real users sign in while someone floods sign-in with
//! wrong passwords for their names?
//!
//! Starts the release backend by itself (once per `--pow` mode, so the modes compare in
//! one run), registers `--users` users, then runs `--flooders` tasks that sign in with
//! wrong passwords for those names as fast as answers come, without ever solving a
//! puzzle (a per-address limit would not stop a real flood from rotating addresses, so
//! the gateway's is lifted). Two seconds in, each real user signs in twice, spread over
//! the flood: from a new device (no credential: it solves a puzzle when asked, as the
//! clients do) and from the device it signed up on (its credential). Measured per mode:
//! the flood's rate and how it was answered, and the share of real users' sign-ins that
//! succeeded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use wx_client::Http;

use crate::backend::{Backend, PASSWORD, call};

/// Options of `svrkit-bench login-flood`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoginFloodArgs {
    /// Real users, each signing in from a new device and from a known one.
    #[arg(long, default_value_t = 126)]
    users: usize,
    /// Tasks flooding sign-in with wrong passwords.
    #[arg(long, default_value_t = 24)]
    flooders: usize,
    /// How long the flood lasts.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// The proof-of-work modes to compare (`WX_LOGIN_POW`), comma-separated.
    #[arg(long, default_value = "never,auto")]
    pow: String,
}

/// One mode's figures.
struct Figures {
    flood: BTreeMap<String, u64>,
    flood_per_sec: f64,
    new_ok: usize,
    known_ok: usize,
    refused: BTreeMap<String, u64>,
}

/// What an answer was, for counting: `ok`, or its reason (or code).
fn kind(answer: &wx_client::Answer) -> String {
    if answer.ok() {
        return "ok".into();
    }
    match answer.reason() {
        "" => answer.code().to_string(),
        reason => reason.to_string(),
    }
}

async fn one_mode(args: &LoginFloodArgs, mode: &str) -> anyhow::Result<Figures> {
    let backend = Backend::start(
        1,
        &[
            ("RUST_LOG", "warn"),
            ("WX_RATE_PER_SEC", "1000000"),
            ("WX_RATE_BURST", "1000000"),
            ("WX_LOGIN_POW", mode),
        ],
    )?;
    let api = Http::new(backend.http);
    eprintln!("[{mode}] registering {} users", args.users);
    let run = svrkit::context::random_u64() & 0xffff_ffff;
    let mut users = Vec::with_capacity(args.users);
    for i in 0..args.users {
        let name = format!("flood{run:08x}u{i}");
        let body = json!({ "name": name, "password": PASSWORD });
        call(&api, "register", body.clone(), None).await?;
        let session = call(&api, "login", body, None).await?;
        let device = session["device"].as_str().unwrap_or_default().to_string();
        users.push((name, device));
    }
    let names: Arc<Vec<String>> = Arc::new(users.iter().map(|(n, _)| n.clone()).collect());

    eprintln!(
        "[{mode}] {} flooders for {} s; real users sign in from 2 s",
        args.flooders, args.seconds
    );
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    for flooder in 0..args.flooders {
        let (names, stop) = (Arc::clone(&names), Arc::clone(&stop));
        flood.spawn(async move {
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            let mut i = flooder;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({ "name": names[i % names.len()], "password": "not it" });
                i += 7;
                let answer = api.call("login", &body, None).await;
                let k = answer.map_or_else(|_| "no_answer".to_string(), |a| kind(&a));
                *seen.entry(k).or_default() += 1;
            }
            seen
        });
    }
    // The real users, spread evenly from 2 s to 2 s before the end.
    let window = Duration::from_secs(args.seconds.saturating_sub(4).max(1));
    let mut real = tokio::task::JoinSet::new();
    for (i, (name, device)) in users.into_iter().enumerate() {
        let at = began + Duration::from_secs(2) + window.mul_f64(i as f64 / args.users as f64);
        real.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let new = api.login(&name, PASSWORD, None).await;
            let known = api.login(&name, PASSWORD, Some(&device)).await;
            let k = |a: Result<wx_client::Answer, _>| {
                a.map_or_else(|_| "no_answer".into(), |a| kind(&a))
            };
            (k(new), k(known))
        });
    }
    tokio::time::sleep_until((began + Duration::from_secs(args.seconds)).into()).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = began.elapsed().as_secs_f64();
    let mut figures = Figures {
        flood: BTreeMap::new(),
        flood_per_sec: 0.0,
        new_ok: 0,
        known_ok: 0,
        refused: BTreeMap::new(),
    };
    while let Some(seen) = flood.join_next().await {
        for (k, n) in seen? {
            *figures.flood.entry(k).or_default() += n;
        }
    }
    figures.flood_per_sec = figures.flood.values().sum::<u64>() as f64 / elapsed;
    while let Some(answers) = real.join_next().await {
        let (new, known) = answers?;
        for (answer, ok) in [(new, &mut figures.new_ok), (known, &mut figures.known_ok)] {
            if answer == "ok" {
                *ok += 1;
            } else {
                *figures.refused.entry(answer).or_default() += 1;
            }
        }
    }
    drop(backend);
    Ok(figures)
}

/// Runs each mode in turn: a table, then a JSON line per mode.
pub(crate) async fn run(args: LoginFloodArgs) -> anyhow::Result<()> {
    if args.users == 0 || args.flooders == 0 || args.seconds < 5 {
        bail!("--users and --flooders must be positive and --seconds at least 5");
    }
    let modes: Vec<&str> = args.pow.split(',').map(str::trim).collect();
    let mut results = Vec::new();
    for mode in &modes {
        results.push((mode.to_string(), one_mode(&args, mode).await?));
    }
    println!(
        "{:>6} {:>12} {:>16} {:>16} {:>16}  flood answers",
        "pow", "flood/s", "proof_required", "new device ok", "known device ok"
    );
    for (mode, f) in &results {
        println!(
            "{:>6} {:>12.0} {:>16} {:>12}/{:<3} {:>12}/{:<3}  {:?}",
            mode,
            f.flood_per_sec,
            f.flood.get("proof_required").copied().unwrap_or(0),
            f.new_ok,
            args.users,
            f.known_ok,
            args.users,
            f.flood
        );
    }
    for (mode, f) in &results {
        println!(
            "{}",
            json!({
                "bench": "login_flood",
                "pow": mode,
                "users": args.users,
                "flooders": args.flooders,
                "seconds": args.seconds,
                "flood_per_sec": f.flood_per_sec.round(),
                "flood_answers": f.flood,
                "new_device_ok": f.new_ok,
                "known_device_ok": f.known_ok,
                "real_refused": f.refused,
            })
        );
    }
    Ok(())
}
