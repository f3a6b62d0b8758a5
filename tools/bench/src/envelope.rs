//! `svrkit-bench envelope`: red envelopes grabbed and opened by crowds, through the real
//! wallet service (two instances, an envelope's requests routed to its owner) and a
//! sharded walletstore.
//!
//! Starts the release backend by itself, once per mode: `queue` (the default service:
//! each envelope's requests wait in its owner's queue, written in batches) and `direct`
//! (`WX_ENVELOPE_DIRECT=1`: every grab and open its own store write, contending on the
//! envelope's lock). The users and friendships are written straight into contactstore
//! and the calls go to the wallet service with the user stamped on the call, as the
//! gateway does, so the run measures envelopes, not password hashing. Two shapes:
//!
//! - **one big**: a group of `--members` (at most 500, a group's ceiling) and one
//!   envelope of `--big-shares` shares; every member grabs and opens at once;
//! - **many small**: `--envelopes` envelopes of `--shares` shares each, spread over
//!   groups of `--group-size`, every member of each envelope's group grabbing it, all
//!   envelopes at once (at most `--in-flight` pairs in flight).
//!
//! Each pair is a grab, then an open when the grab reserved a share. `grabs_per_s` is the
//! grab+open pairs that got money per second of the crowd; `open_p99_ms` the opens'
//! latency; `oversold` the shares opened beyond an envelope's count plus cents opened
//! beyond its total (0 always); `invariant_ok` the operator's audit after the run (every
//! cent minted is in a wallet, an envelope, or a credit in flight). A table, then one
//! JSON line per mode and shape.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use svrkit::balance::Balance;
use svrkit::discovery::{EmbeddedRegistry, discover};
use svrkit::{CallOptions, Channel, Context, Status};
use wx_api::message::{CreateGroupRequest, MessageClient, message_methods};
use wx_api::storage::{ContactStoreClient, contact_store_methods};
use wx_api::wallet::{
    AuditRequest, EnvelopeRef, SendRequest, TopUpRequest, WalletClient, wallet_methods,
};

use crate::backend::Backend;
use crate::stats::quantile;

/// Options of `svrkit-bench envelope`.
#[derive(Debug, clap::Args)]
pub(crate) struct EnvelopeArgs {
    /// Members of the one big envelope's group (at most 500).
    #[arg(long, default_value_t = 500)]
    members: u64,
    /// Shares of the one big envelope.
    #[arg(long, default_value_t = 100)]
    big_shares: u32,
    /// Envelopes of the many-small shape.
    #[arg(long, default_value_t = 1_000)]
    envelopes: u64,
    /// Shares of each small envelope.
    #[arg(long, default_value_t = 10)]
    shares: u32,
    /// Members of each small envelope's group (every one grabs).
    #[arg(long, default_value_t = 20)]
    group_size: u64,
    /// Grab+open pairs in flight at most in the many-small shape (at 2,000 the pairs per
    /// second barely rise and the opens wait in line: p99 139 ms against 30 ms).
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Modes to compare (comma-separated): queue, direct.
    #[arg(long, value_delimiter = ',', default_value = "queue,direct")]
    modes: Vec<String>,
}

/// What one shape of one mode measured.
struct Round {
    mode: String,
    shape: &'static str,
    envelopes: u64,
    grabbers: u64,
    pairs: u64,
    refused: u64,
    errors: u64,
    seconds: f64,
    open_us: Vec<u32>,
    oversold: u64,
    invariant_ok: bool,
}

fn as_user(uid: u64) -> Context {
    Context::new()
        .with_uid(uid)
        .with_timeout(Duration::from_secs(10))
}

/// The services a run calls.
#[derive(Clone)]
struct Clients {
    wallet: WalletClient,
    message: MessageClient,
    contacts: ContactStoreClient,
}

/// A group owned by `members[0]` with all of `members` (befriended with the owner).
async fn group(c: &Clients, members: &[u64]) -> anyhow::Result<u64> {
    let owner = members[0];
    let mut friending = tokio::task::JoinSet::new();
    for &m in &members[1..] {
        let contacts = c.contacts.clone();
        friending.spawn(async move { crate::backend::befriend(&contacts, owner, m).await });
    }
    while let Some(done) = friending.join_next().await {
        done??;
    }
    let info = as_user(owner)
        .scope(c.message.create_group(CreateGroupRequest {
            name: format!("bench {owner}"),
            members: members[1..].to_vec(),
        }))
        .await?;
    Ok(info.group_id)
}

/// Sends an envelope of `total` cents in `shares` to `group` from `sender`.
async fn send(
    c: &Clients,
    sender: u64,
    group_id: u64,
    total: u64,
    shares: u32,
    id: &str,
) -> anyhow::Result<EnvelopeRef> {
    let view = as_user(sender)
        .scope(c.wallet.send_with(
            SendRequest {
                group_id,
                total,
                shares,
                greeting: "恭喜发财".into(),
                transfer_id: id.into(),
                ..SendRequest::default()
            },
            CallOptions::new().routing_key(sender),
        ))
        .await?;
    view.envelope.context("no envelope in the answer")
}

/// Grabs then opens `e` as `uid`: `Ok(Some((cents, open µs)))`, `Ok(None)` when none was
/// left, `Err` on any other answer.
async fn grab_and_open(
    wallet: &WalletClient,
    e: EnvelopeRef,
    uid: u64,
) -> Result<Option<(u64, u32)>, Status> {
    let route = || CallOptions::new().routing_key(wx_api::envelope_key(e.sender, e.seq));
    match as_user(uid).scope(wallet.grab_with(e, route())).await {
        Ok(_) => {}
        Err(status) if status.reason() == Some("all_taken") => return Ok(None),
        Err(status) => return Err(status),
    }
    let start = Instant::now();
    let opened = as_user(uid).scope(wallet.open_with(e, route())).await?;
    let took = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
    Ok(Some((opened.amount, took)))
}

/// Runs `crowd` (envelope, grabber) pairs, at most `in_flight` at once, into `round`;
/// then checks every envelope against its shares and total.
async fn run_crowd(
    c: &Clients,
    crowd: Vec<(EnvelopeRef, u64)>,
    envelopes: &[(EnvelopeRef, u32, u64)],
    in_flight: usize,
    round: &mut Round,
) -> anyhow::Result<()> {
    let gate = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let start = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for (e, uid) in crowd {
        let (wallet, gate) = (c.wallet.clone(), Arc::clone(&gate));
        running.spawn(async move {
            let _turn = gate.acquire_owned().await;
            (e, grab_and_open(&wallet, e, uid).await)
        });
    }
    let mut got: std::collections::HashMap<(u64, u64), (u32, u64)> = Default::default();
    while let Some(done) = running.join_next().await {
        let (e, outcome) = done?;
        match outcome {
            Ok(Some((cents, took))) => {
                round.pairs += 1;
                round.open_us.push(took);
                let entry = got.entry((e.sender, e.seq)).or_default();
                entry.0 += 1;
                entry.1 += cents;
            }
            Ok(None) => round.refused += 1,
            Err(status) => {
                round.errors += 1;
                if round.errors <= 3 {
                    eprintln!("  {status}");
                }
            }
        }
    }
    round.seconds = start.elapsed().as_secs_f64();
    for (e, shares, total) in envelopes {
        let (opened, cents) = got.get(&(e.sender, e.seq)).copied().unwrap_or_default();
        round.oversold += u64::from(opened.saturating_sub(*shares)) + cents.saturating_sub(*total);
    }
    Ok(())
}

/// The operator's audit once it has settled (two rounds over the shards agree) and no
/// credit is in flight: true when every cent is accounted for.
async fn audit(c: &Clients) -> anyhow::Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = c.wallet.audit(AuditRequest {}).await?;
        if reply.settled && (reply.in_flight == 0 || Instant::now() > deadline) {
            if !reply.balanced {
                eprintln!("  audit does not balance: {reply:?}");
            }
            return Ok(reply.balanced);
        }
        if Instant::now() > deadline {
            bail!("the audit never settled: {reply:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_mode(args: &EnvelopeArgs, mode: &str) -> anyhow::Result<Vec<Round>> {
    let mut env = vec![("RUST_LOG", "warn"), ("WX_DEV_TOPUP", "1")];
    match mode {
        "queue" => {}
        "direct" => env.push(("WX_ENVELOPE_DIRECT", "1")),
        other => bail!("no mode {other:?} (queue, direct)"),
    }
    eprintln!("mode {mode}: starting the backend");
    let backend = Backend::start(1, &env)?;
    let registry = EmbeddedRegistry::new(backend.registry_dir());
    let wallets = discover(
        &registry,
        wallet_methods::SERVICE_NAME,
        Channel::builder()
            .balance(Balance::ConsistentHash)
            .caller("operator"),
    )
    .await?;
    let c = Clients {
        wallet: WalletClient::new(wallets.clone()),
        message: MessageClient::new(
            discover(&registry, message_methods::SERVICE_NAME, Channel::builder()).await?,
        ),
        contacts: ContactStoreClient::new(
            discover(
                &registry,
                contact_store_methods::SERVICE_NAME,
                wx_api::sharded(),
            )
            .await?,
        ),
    };
    // Wait for both wallet instances, so envelopes spread over two owners.
    let deadline = Instant::now() + Duration::from_secs(30);
    while wallets.addresses().len() < 2 {
        if Instant::now() > deadline {
            bail!("the two wallet instances never registered");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rounds = Vec::new();
    let new_round = |shape, envelopes, grabbers| Round {
        mode: mode.to_string(),
        shape,
        envelopes,
        grabbers,
        pairs: 0,
        refused: 0,
        errors: 0,
        seconds: 0.0,
        open_us: Vec::new(),
        oversold: 0,
        invariant_ok: false,
    };

    // One big envelope, its whole group grabbing.
    let members: Vec<u64> = (1..=args.members.clamp(2, 500)).collect();
    eprintln!("mode {mode}: a group of {}", members.len());
    let big_group = group(&c, &members).await?;
    let sender = members[0];
    let big_total = 100 * u64::from(args.big_shares);
    top_up(&c, sender, big_total, "big").await?;
    let big = send(&c, sender, big_group, big_total, args.big_shares, "big").await?;
    let mut round = new_round("one_big", 1, members.len() as u64);
    eprintln!(
        "mode {mode}: {} grab one envelope of {} shares",
        members.len(),
        args.big_shares
    );
    let crowd = members.iter().map(|&m| (big, m)).collect();
    run_crowd(
        &c,
        crowd,
        &[(big, args.big_shares, big_total)],
        members.len(),
        &mut round,
    )
    .await?;
    round.invariant_ok = audit(&c).await?;
    rounds.push(round);

    // Many small envelopes over groups of `group_size`, all at once.
    let size = args.group_size.clamp(2, 500);
    let groups = args.envelopes.clamp(1, 1_000);
    let first = 1_000_000u64;
    eprintln!("mode {mode}: {groups} groups of {size}");
    let mut made = Vec::new();
    for g in 0..groups {
        let members: Vec<u64> = (0..size).map(|i| first + g * size + i).collect();
        made.push(members);
    }
    let mut grouping = tokio::task::JoinSet::new();
    for members in made.clone() {
        let c = c.clone();
        grouping.spawn(async move { group(&c, &members).await.map(|id| (members, id)) });
    }
    let mut small_groups = Vec::new();
    while let Some(done) = grouping.join_next().await {
        small_groups.push(done??);
    }
    eprintln!("mode {mode}: sending {} envelopes", args.envelopes);
    let total = 100 * u64::from(args.shares);
    let mut sending = tokio::task::JoinSet::new();
    for i in 0..args.envelopes {
        let (c, (members, group_id)) = (c.clone(), small_groups[(i % groups) as usize].clone());
        let shares = args.shares;
        sending.spawn(async move {
            let sender = members[0];
            top_up(&c, sender, total, &format!("small-{i}")).await?;
            let e = send(&c, sender, group_id, total, shares, &format!("small-{i}")).await?;
            Ok::<_, anyhow::Error>((e, members))
        });
    }
    let mut envelopes = Vec::new();
    let mut crowd = Vec::new();
    while let Some(done) = sending.join_next().await {
        let (e, members) = done??;
        envelopes.push((e, args.shares, total));
        crowd.extend(members.into_iter().map(|m| (e, m)));
    }
    let mut round = new_round("many_small", args.envelopes, crowd.len() as u64);
    eprintln!(
        "mode {mode}: {} pairs over {} envelopes",
        crowd.len(),
        envelopes.len()
    );
    run_crowd(&c, crowd, &envelopes, args.in_flight, &mut round).await?;
    round.invariant_ok = audit(&c).await?;
    rounds.push(round);
    drop(backend);
    Ok(rounds)
}

/// Test money into `uid`'s wallet (the service runs with WX_DEV_TOPUP=1).
async fn top_up(c: &Clients, uid: u64, amount: u64, id: &str) -> anyhow::Result<()> {
    as_user(uid)
        .scope(c.wallet.top_up_with(
            TopUpRequest {
                amount,
                transfer_id: format!("bench-{id}"),
                uid: 0,
            },
            CallOptions::new().routing_key(uid),
        ))
        .await?;
    Ok(())
}

pub(crate) async fn run(args: EnvelopeArgs) -> anyhow::Result<()> {
    let mut rounds = Vec::new();
    for mode in &args.modes {
        rounds.extend(run_mode(&args, mode).await?);
    }
    let ms = |us: u32| f64::from(us) / 1000.0;
    println!(
        "{:>6} {:>10} {:>9} {:>8} {:>10} {:>9} {:>9} {:>9} {:>8} {:>6} {:>9}",
        "mode",
        "shape",
        "envelopes",
        "grabbers",
        "pairs/s",
        "open p50",
        "open p99",
        "all taken",
        "oversold",
        "errors",
        "invariant"
    );
    let mut lines = Vec::new();
    for r in &mut rounds {
        let rate = r.pairs as f64 / r.seconds.max(1e-9);
        let (p50, p99) = (
            quantile(&mut r.open_us, 0.5),
            quantile(&mut r.open_us, 0.99),
        );
        println!(
            "{:>6} {:>10} {:>9} {:>8} {:>10.0} {:>8.1}ms {:>8.1}ms {:>9} {:>8} {:>6} {:>9}",
            r.mode,
            r.shape,
            r.envelopes,
            r.grabbers,
            rate,
            ms(p50),
            ms(p99),
            r.refused,
            r.oversold,
            r.errors,
            r.invariant_ok
        );
        lines.push(json!({
            "bench": "envelope",
            "mode": r.mode,
            "shape": r.shape,
            "envelopes": r.envelopes,
            "grabbers": r.grabbers,
            "pairs": r.pairs,
            "grabs_per_s": rate.round(),
            "open_p50_ms": ms(p50),
            "open_p99_ms": ms(p99),
            "all_taken": r.refused,
            "errors": r.errors,
            "oversold": r.oversold,
            "invariant_ok": r.invariant_ok,
        }));
    }
    let rate_of = |mode: &str, shape: &str| {
        rounds
            .iter()
            .find(|r| r.mode == mode && r.shape == shape)
            .map(|r| r.pairs as f64 / r.seconds.max(1e-9))
    };
    for shape in ["one_big", "many_small"] {
        if let (Some(q), Some(d)) = (rate_of("queue", shape), rate_of("direct", shape)) {
            println!(
                "{shape}: the queue does {:.2}x the pairs per second of direct writes",
                q / d.max(1e-9)
            );
        }
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
