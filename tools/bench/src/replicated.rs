//! Replicated storage through real processes: `svrkit-bench storage --replicas 1,3` and
//! `svrkit-bench storage-failover`.
//!
//! Each measurement starts three `accountstore` processes (release binaries) with three
//! shards, each shard on one of them (`--replicas 1`) or a Raft group on all three
//! (`--replicas 3`), and writes new accounts through a channel that routes by uid on the
//! shard map, as the logic tier does: the same processes and shards either way, so the
//! ratio is the price of keeping every write on a majority of three disks (all on this
//! machine's one disk and two cores, where a write costs three times the work).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use svrkit::balance::Balance;
use svrkit::discovery::{EmbeddedRegistry, Registry};
use svrkit::launch::Announcement;
use svrkit::{CallOptions, Channel, Code};
use wx_api::storage::account_store_methods::SERVICE_NAME;
use wx_api::storage::{AccountRecord, AccountStoreClient, CreateAccountRequest, GetAccountRequest};

/// Instances of the store in every measurement.
const INSTANCES: usize = 3;

/// Options of the replicated `svrkit-bench storage`.
#[derive(Debug, Clone)]
pub(crate) struct ReplicatedArgs {
    pub(crate) replicas: Vec<usize>,
    pub(crate) writers: Vec<usize>,
    pub(crate) seconds: f64,
}

/// Three store processes and their registry, removed when dropped.
struct Store {
    dir: PathBuf,
    procs: Vec<Option<(Child, SocketAddr)>>,
    binary: PathBuf,
    replicas: usize,
}

impl Store {
    fn start(replicas: usize) -> anyhow::Result<Store> {
        let bins = crate::backend::bin_dir()?;
        crate::backend::ensure_built(&bins)?;
        let dir = std::env::temp_dir().join(format!(
            "svrkit-bench-replicas-{}-{:x}",
            std::process::id(),
            svrkit::context::random_u64()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut store = Store {
            dir,
            procs: Vec::new(),
            binary: bins.join("accountstore"),
            replicas,
        };
        for i in 1..=INSTANCES {
            let proc = store.spawn(i)?;
            store.procs.push(Some(proc));
        }
        Ok(store)
    }

    fn spawn(&self, i: usize) -> anyhow::Result<(Child, SocketAddr)> {
        let shards: Vec<String> = (1..=INSTANCES)
            .map(|n| format!("accountstore-{n}"))
            .collect();
        let mut child = Command::new(&self.binary)
            .env("SVRKIT_LISTEN", "127.0.0.1:0")
            .env("SVRKIT_ADMIN", "127.0.0.1:0")
            .env(
                "SVRKIT_REGISTRY",
                format!("dir:{}", self.dir.join("registry").display()),
            )
            .env("SVRKIT_INSTANCE_ID", format!("accountstore-{i}"))
            .env("SVRKIT_SHARDS", shards.join(","))
            .env("SVRKIT_REPLICAS", self.replicas.to_string())
            .env("SVRKIT_DATA_DIR", self.dir.join(format!("data-{i}")))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut rpc, mut admin) = (None, None);
        for line in lines.by_ref().map_while(Result::ok) {
            match Announcement::parse(&line) {
                Some(Announcement::Listening(a)) => rpc = Some(a),
                Some(Announcement::Admin(a)) => admin = Some(a),
                _ => {}
            }
            if rpc.is_some() && admin.is_some() {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        match (rpc, admin) {
            (Some(rpc), Some(_)) => Ok((child, rpc)),
            _ => bail!("accountstore-{i} exited before listening"),
        }
    }

    async fn client(&self) -> anyhow::Result<AccountStoreClient> {
        let registry = Arc::new(EmbeddedRegistry::new(self.dir.join("registry")));
        let channel = svrkit::discovery::discover(
            &*registry as &dyn Registry,
            SERVICE_NAME,
            Channel::builder().balance(Balance::Sharded).max_attempts(4),
        )
        .await?;
        svrkit::discovery::shard_map::follow(registry, SERVICE_NAME, &channel).await?;
        Ok(AccountStoreClient::new(channel))
    }

    /// The instance (1-based) leading the shard of `key`: it serves, or names the leader.
    async fn leader_of(&self, key: u64) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            for (i, proc) in self.procs.iter().enumerate() {
                let Some((_, addr)) = proc else { continue };
                let direct =
                    AccountStoreClient::new(Channel::builder().max_attempts(1).lazy([*addr]));
                let answer = direct
                    .get_account_with(
                        GetAccountRequest { uid: key },
                        CallOptions::new().routing_key(key),
                    )
                    .await;
                match answer {
                    Ok(_) => return Ok(i + 1),
                    Err(e) if e.code() == Code::NotFound => return Ok(i + 1),
                    Err(e) if e.reason() == Some(svrkit::client::NOT_LEADER) => {
                        let name = String::from_utf8_lossy(e.details()).into_owned();
                        if let Some(n) = name
                            .strip_prefix("accountstore-")
                            .and_then(|n| n.parse().ok())
                        {
                            return Ok(n);
                        }
                    }
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("no leader for key {key}")
    }

    fn kill(&mut self, i: usize) {
        if let Some((mut child, _)) = self.procs[i - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        for i in 1..=self.procs.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn account(uid: u64) -> AccountRecord {
    AccountRecord {
        uid,
        name: format!("bench{uid}"),
        ..AccountRecord::default()
    }
}

async fn create(store: &AccountStoreClient, uid: u64) -> Result<(), svrkit::Status> {
    store
        .create_account_with(
            CreateAccountRequest {
                account: Some(account(uid)),
            },
            CallOptions::new().routing_key(uid),
        )
        .await
        .map(drop)
}

/// Waits until every shard takes writes.
async fn warm(store: &AccountStoreClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    for uid in u64::MAX - 64..u64::MAX {
        while let Err(e) = create(store, uid).await {
            if e.code() == Code::AlreadyExists {
                break;
            }
            if Instant::now() > deadline {
                bail!("the store never took writes: {e}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Durable writes per second and p99 (ms) with `writers` concurrent writers.
async fn measure(replicas: usize, writers: usize, seconds: f64) -> anyhow::Result<(f64, f64, u64)> {
    let store = Store::start(replicas)?;
    let client = store.client().await?;
    warm(&client).await?;
    let next = Arc::new(AtomicU64::new(1));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let (client, next, errors, stop) =
            (client.clone(), next.clone(), errors.clone(), stop.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let uid = next.fetch_add(1, Ordering::Relaxed);
                let began = Instant::now();
                match create(&client, uid).await {
                    Ok(()) => latencies.push(began.elapsed().as_micros() as u32),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        });
    }
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done?);
    }
    let elapsed = began.elapsed().as_secs_f64();
    let rate = latencies.len() as f64 / elapsed;
    let p99 = f64::from(crate::stats::quantile(&mut latencies, 0.99)) / 1000.0;
    Ok((rate, p99, errors.load(Ordering::Relaxed)))
}

/// `svrkit-bench storage --replicas …`: every replication at every writer count.
pub(crate) async fn run(args: ReplicatedArgs) -> anyhow::Result<()> {
    println!(
        "{:>8} {:>8} {:>14} {:>10} {:>8} {:>10}",
        "replicas", "writers", "writes/s", "p99 ms", "errors", "vs 1 copy"
    );
    let mut lines = Vec::new();
    for &writers in &args.writers {
        let mut single = None;
        for &replicas in &args.replicas {
            let (rate, p99, errors) = measure(replicas, writers, args.seconds).await?;
            if replicas == 1 {
                single = Some(rate);
            }
            let vs = single.map_or(f64::NAN, |s| rate / s);
            println!("{replicas:>8} {writers:>8} {rate:>14.0} {p99:>10.2} {errors:>8} {vs:>10.2}");
            lines.push(format!(
                "{{\"bench\":\"storage\",\"replicas\":{replicas},\"writers\":{writers},\"writes_per_s\":{rate:.0},\"p99_ms\":{p99:.2},\"errors\":{errors},\"vs_single\":{}}}",
                if vs.is_nan() { "null".to_string() } else { format!("{vs:.2}") }
            ));
        }
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// Options of `svrkit-bench storage-failover`.
#[derive(Debug, clap::Args)]
pub(crate) struct StorageFailoverArgs {
    /// Concurrent writers.
    #[arg(long, default_value_t = 32)]
    writers: usize,
    /// Seconds of load; the leader of uid 1's shard is killed after a third of them.
    #[arg(long, default_value_t = 6.0)]
    seconds: f64,
}

/// `svrkit-bench storage-failover`: a shard's leader killed with SIGKILL under load.
/// `unavailable_ms` is how long writes to that shard's keys got no acknowledgement
/// (from the kill to the first acknowledged write of that shard after it); every
/// acknowledged account is read back afterwards (`lost`: missing, `duplicated`: not at
/// version 1).
pub(crate) async fn failover(args: StorageFailoverArgs) -> anyhow::Result<()> {
    let mut store = Store::start(3)?;
    let client = store.client().await?;
    warm(&client).await?;
    let shard_of = {
        let ring = svrkit::balance::Ring::new(
            &(1..=INSTANCES)
                .map(|n| format!("accountstore-{n}"))
                .collect::<Vec<_>>(),
        );
        move |uid: u64| ring.node(uid)
    };
    let victim_shard = shard_of(1);
    let next = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.writers {
        let (client, next, stop) = (client.clone(), next.clone(), stop.clone());
        tasks.spawn(async move {
            // (uid, acknowledged at, since the start)
            let mut acked: Vec<(u64, Duration)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let uid = next.fetch_add(1, Ordering::Relaxed);
                // Retried until definite, as the logic tier's callers do.
                loop {
                    match create(&client, uid).await {
                        Ok(()) => {
                            acked.push((uid, began.elapsed()));
                            break;
                        }
                        Err(e) if e.code() == Code::AlreadyExists => {
                            acked.push((uid, began.elapsed()));
                            break;
                        }
                        Err(_) if stop.load(Ordering::Relaxed) => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
            acked
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(args.seconds / 3.0)).await;
    // Asked now, under load, so the kill takes the leader of that moment.
    let victim = store.leader_of(1).await?;
    let killed_at = began.elapsed();
    store.kill(victim);
    tokio::time::sleep(Duration::from_secs_f64(args.seconds * 2.0 / 3.0)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    while let Some(done) = tasks.join_next().await {
        acked.extend(done?);
    }
    let back = acked
        .iter()
        .filter(|(uid, at)| shard_of(*uid) == victim_shard && *at > killed_at)
        .map(|(_, at)| *at)
        .min();
    let unavailable_ms = back.map(|at| (at - killed_at).as_secs_f64() * 1000.0);
    let (mut lost, mut duplicated) = (0u64, 0u64);
    for (uid, _) in &acked {
        let mut tries = 0;
        loop {
            match client
                .get_account_with(
                    GetAccountRequest { uid: *uid },
                    CallOptions::new().routing_key(*uid),
                )
                .await
            {
                Ok(reply) => {
                    if reply.account.map(|a| a.version) != Some(1) {
                        duplicated += 1;
                    }
                    break;
                }
                Err(e) if e.code() == Code::NotFound => {
                    lost += 1;
                    break;
                }
                Err(e) => {
                    tries += 1;
                    if tries > 100 {
                        bail!("reading uid {uid} back: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    println!(
        "{:>10} {:>16} {:>8} {:>8} {:>12}",
        "writes", "unavailable ms", "lost", "dup", "writes/s"
    );
    let rate = acked.len() as f64 / args.seconds;
    let unavailable = unavailable_ms.map_or("never".to_string(), |ms| format!("{ms:.0}"));
    println!(
        "{:>10} {:>16} {lost:>8} {duplicated:>8} {rate:>12.0}",
        acked.len(),
        unavailable
    );
    println!(
        "{{\"bench\":\"storage-failover\",\"replicas\":3,\"writers\":{},\"acknowledged\":{},\"unavailable_ms\":{},\"lost\":{lost},\"duplicated\":{duplicated}}}",
        args.writers,
        acked.len(),
        unavailable_ms.map_or("null".to_string(), |ms| format!("{ms:.0}"))
    );
    Ok(())
}
