//! `svrkit-bench message`: messaging through the whole stack.
//!
//! Starts the release backend by itself, registers N users in pairs (sender, receiver),
//! befriends each pair, and gives every user a long connection. For T seconds each sender
//! sends over its WebSocket, one message at a time, numbering them; each receiver syncs
//! over its own WebSocket whenever it is pushed `sync` (and once a second regardless), and
//! checks what arrives: every number once, in order. Afterwards every receiver syncs one
//! last time and the figures are counted:
//!
//! - `acked_per_s`: messages acknowledged to their senders per second;
//! - `send_*`: from sending until the sender's acknowledgement;
//! - `e2e_*`: from sending until the recipient's sync returned it;
//! - `lost` (acknowledged, never received), `duplicated`, `out_of_order`, `errors`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;
use wx_client::{Http, Ws};

use crate::backend::{Backend, call, sign_up};
use crate::stats::quantile;

/// Options of `svrkit-bench message`.
#[derive(Debug, clap::Args)]
pub(crate) struct MessageArgs {
    /// Users (half send, half receive).
    #[arg(long, default_value_t = 64)]
    users: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Copies of every storage shard (3: three instances per store, a Raft group per
    /// shard).
    #[arg(long, default_value_t = 1)]
    replicas: u32,
}

/// What one receiver saw.
#[derive(Debug, Default)]
struct Seen {
    /// The last number received from the sender.
    last: u64,
    duplicated: u64,
    out_of_order: u64,
    /// Numbers received, for counting what was lost.
    numbers: std::collections::HashSet<u64>,
    e2e_us: Vec<u32>,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// Syncs `ws` from `key` until nothing more waits, recording what arrived.
async fn drain(
    ws: &mut Ws,
    key: &mut String,
    seen: &Mutex<Seen>,
    epoch: Instant,
) -> anyhow::Result<()> {
    loop {
        let answer = ws
            .call(
                "sync",
                json!({ "sync_key": key.as_str(), "device": "bench" }),
            )
            .await?;
        if answer["ok"] != true {
            anyhow::bail!("sync: {answer}");
        }
        let result = &answer["result"];
        let now = epoch.elapsed();
        let mut seen = seen.lock().await;
        for m in result["messages"].as_array().into_iter().flatten() {
            let text = m["text"].as_str().unwrap_or_default();
            let Some((number, sent_us)) = text.split_once('@') else {
                continue;
            };
            let (Ok(number), Ok(sent_us)) = (number.parse::<u64>(), sent_us.parse::<u64>()) else {
                continue;
            };
            if !seen.numbers.insert(number) {
                seen.duplicated += 1;
                continue;
            }
            if number < seen.last {
                seen.out_of_order += 1;
            }
            seen.last = seen.last.max(number);
            let e2e = now.saturating_sub(Duration::from_micros(sent_us));
            seen.e2e_us.push(micros(e2e));
        }
        *key = result["sync_key"].as_str().unwrap_or_default().to_string();
        if result["has_more"] != true {
            return Ok(());
        }
    }
}

/// Runs the benchmark: a table of figures, then the JSON line.
pub(crate) async fn run(args: MessageArgs) -> anyhow::Result<()> {
    let pairs = (args.users / 2).max(1);
    let replicas = args.replicas.to_string();
    let backend = Backend::start(
        2,
        &[
            ("WX_RATE_PER_SEC", "100000"),
            ("WX_RATE_BURST", "100000"),
            ("WX_MAX_FRIENDS", "5000"),
            ("SVRKIT_REPLICAS", &replicas),
        ],
    )?;
    let api = Http::new(backend.http);
    // Wait until a request crosses every tier.
    let ready_by = Instant::now() + Duration::from_secs(60);
    while call(
        &api,
        "login",
        json!({ "name": "nobody", "password": "x" }),
        None,
    )
    .await
    .is_err_and(|e| !e.to_string().contains("not_found"))
    {
        anyhow::ensure!(
            Instant::now() < ready_by,
            "the backend did not start serving"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("registering {} users in {pairs} pairs", pairs * 2);
    let run = svrkit::context::random_u64() & 0xff_ffff;
    let mut users = Vec::new();
    for p in 0..pairs {
        let sender = sign_up(&api, &format!("s{p}_{run:x}")).await?;
        let receiver = sign_up(&api, &format!("r{p}_{run:x}")).await?;
        call(
            &api,
            "friends.request",
            json!({ "peer": receiver.0 }),
            Some(&sender.1),
        )
        .await?;
        call(
            &api,
            "friends.accept",
            json!({ "peer": sender.0 }),
            Some(&receiver.1),
        )
        .await?;
        users.push((sender, receiver));
    }
    let epoch = Instant::now();
    let until = epoch + Duration::from_secs_f64(args.seconds);
    let mut senders = tokio::task::JoinSet::new();
    let mut receivers = tokio::task::JoinSet::new();
    let mut seens = Vec::new();
    eprintln!("sending for {} s", args.seconds);
    for (i, ((_, sender_token), (receiver_uid, receiver_token))) in users.into_iter().enumerate() {
        let ws_addr = backend.ws[i % backend.ws.len()];
        let receiver_addr = backend.ws[(i + 1) % backend.ws.len()];
        let seen = Arc::new(Mutex::new(Seen::default()));
        seens.push(Arc::clone(&seen));
        let mut receiver = Ws::connect(receiver_addr, &receiver_token)
            .await?
            .map_err(|e| anyhow::anyhow!("auth: {e}"))?;
        let mut sender = Ws::connect(ws_addr, &sender_token)
            .await?
            .map_err(|e| anyhow::anyhow!("auth: {e}"))?;
        receivers.spawn(async move {
            let mut key = String::new();
            let mut errors = 0u64;
            let stop = until + Duration::from_secs(2);
            while Instant::now() < stop {
                // A push says there is something; sync at least once a second anyway.
                let _ = receiver.push(Duration::from_secs(1)).await;
                if drain(&mut receiver, &mut key, &seen, epoch).await.is_err() {
                    errors += 1;
                }
            }
            // The final catch-up.
            if drain(&mut receiver, &mut key, &seen, epoch).await.is_err() {
                errors += 1;
            }
            errors
        });
        senders.spawn(async move {
            let mut send_us = Vec::new();
            let mut acked = Vec::new();
            let mut errors = 0u64;
            let mut number = 0u64;
            while Instant::now() < until {
                number += 1;
                let sent = epoch.elapsed();
                let text = format!("{number}@{}", sent.as_micros());
                let started = Instant::now();
                let answer = sender
                    .call(
                        "message.send",
                        json!({ "to": receiver_uid, "text": text, "client_msg_id": format!("b{number}") }),
                    )
                    .await;
                match answer {
                    Ok(a) if a["ok"] == true => {
                        send_us.push(micros(started.elapsed()));
                        acked.push(number);
                    }
                    _ => errors += 1,
                }
            }
            (i, send_us, acked, errors)
        });
    }
    let mut send_us = Vec::new();
    let mut acked_by_pair = vec![Vec::new(); seens.len()];
    let mut errors = 0;
    while let Some(done) = senders.join_next().await {
        let (i, s, a, e) = done?;
        send_us.extend(s);
        acked_by_pair[i] = a;
        errors += e;
    }
    let sending = args.seconds;
    while let Some(done) = receivers.join_next().await {
        errors += done?;
    }
    let mut lost = 0u64;
    let mut duplicated = 0;
    let mut out_of_order = 0;
    let mut e2e_us = Vec::new();
    for (seen, acked) in seens.iter().zip(&acked_by_pair) {
        let mut seen = seen.lock().await;
        duplicated += seen.duplicated;
        out_of_order += seen.out_of_order;
        e2e_us.append(&mut seen.e2e_us);
        lost += acked.iter().filter(|n| !seen.numbers.contains(n)).count() as u64;
    }
    let messages: usize = acked_by_pair.iter().map(Vec::len).sum();
    let acked_per_s = messages as f64 / sending;
    let ms = |us: u32| f64::from(us) / 1000.0;
    let figures = json!({
        "bench": "message",
        "replicas": args.replicas,
        "users": pairs * 2,
        "messages": messages,
        "acked_per_s": acked_per_s.round(),
        "send_p50_ms": ms(quantile(&mut send_us, 0.5)),
        "send_p99_ms": ms(quantile(&mut send_us, 0.99)),
        "e2e_p50_ms": ms(quantile(&mut e2e_us, 0.5)),
        "e2e_p99_ms": ms(quantile(&mut e2e_us, 0.99)),
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "errors": errors,
    });
    println!(
        "{:>6} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>5} {:>5} {:>5} {:>6}",
        "users",
        "messages",
        "acked/s",
        "send p50",
        "send p99",
        "e2e p50",
        "e2e p99",
        "lost",
        "dup",
        "ooo",
        "errors"
    );
    println!(
        "{:>6} {:>9} {:>10.0} {:>9.1}ms {:>9.1}ms {:>9.1}ms {:>9.1}ms {:>5} {:>5} {:>5} {:>6}",
        pairs * 2,
        messages,
        acked_per_s,
        figures["send_p50_ms"].as_f64().unwrap_or_default(),
        figures["send_p99_ms"].as_f64().unwrap_or_default(),
        figures["e2e_p50_ms"].as_f64().unwrap_or_default(),
        figures["e2e_p99_ms"].as_f64().unwrap_or_default(),
        lost,
        duplicated,
        out_of_order,
        errors
    );
    eprintln!("resident memory after the run:");
    for (id, rss) in backend.rss() {
        eprintln!("  {id:<16} {:>6.1} MB", rss as f64 / 1e6);
    }
    println!("{figures}");
    Ok(())
}
