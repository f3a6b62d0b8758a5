//! Replicated shards as real processes: three accountstore instances, each a replica of
//! all three shards (a Raft group per shard). A leader killed with SIGKILL while writes
//! flow loses no acknowledged write and the writes move to a new leader; the killed
//! replica, restarted with its directory deleted, is rebuilt from the others.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use svrkit::balance::Balance;
use svrkit::discovery::{EmbeddedRegistry, Registry};
use svrkit::{CallOptions, Channel, Code};
use svrkit_testkit::linearizability::{self, Action, Operation};
use svrkit_testkit::{PATIENCE, http_get, tempdir};
use wx_api::storage::account_store_methods::SERVICE_NAME;
use wx_api::storage::{
    AccountRecord, AccountStoreClient, AddToTimelinesRequest, CreateAccountRequest,
    GetAccountRequest, GetSessionRequest, MomentsStoreClient, PutSessionRequest,
    ReadTimelineRequest, SessionRecord, TimelineEntry, TimelineItem,
};

const N: usize = 3;

fn name(i: usize) -> String {
    format!("accountstore-{i}")
}

/// A running replica process; SIGKILLed when dropped.
struct Replica {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(i: usize, registry: &Path, data: &Path) -> Replica {
    start_store(
        env!("CARGO_BIN_EXE_accountstore"),
        "accountstore",
        i,
        registry,
        data,
    )
}

/// Replica `i` of the store `binary`, instances named `store-i`.
fn start_store(binary: &str, store: &str, i: usize, registry: &Path, data: &Path) -> Replica {
    let name = |i: usize| format!("{store}-{i}");
    let shards: Vec<String> = (1..=N).map(name).collect();
    let mut child = Command::new(binary)
        .env("SVRKIT_REGISTRY", format!("dir:{}", registry.display()))
        .env("SVRKIT_INSTANCE_ID", name(i))
        .env("SVRKIT_SHARDS", shards.join(","))
        .env("SVRKIT_REPLICAS", "3")
        .env("SVRKIT_ADMIN", "127.0.0.1:0")
        .env("SVRKIT_DATA_DIR", data.join(name(i)))
        // Small, so the rebuilt replica is sent a snapshot rather than the whole log.
        .env("WX_RAFT_SNAPSHOT_LOGS", "60")
        // Where a test cuts this replica off from others (see `cut`).
        .env("WX_RAFT_FAULTS", data.join(format!("faults-{i}")))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a replica");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut addr, mut admin) = (None, None);
    for line in lines.by_ref().map_while(Result::ok) {
        match svrkit::launch::Announcement::parse(&line) {
            Some(svrkit::launch::Announcement::Listening(a)) => addr = Some(a),
            Some(announcement) => admin = announcement.socket_addr().or(admin),
            None => {}
        }
        if addr.is_some() && admin.is_some() {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Replica {
        child,
        addr: addr.expect("the replica says where it listens"),
        admin: admin.expect("the replica says where its admin endpoint is"),
    }
}

fn account(uid: u64) -> AccountRecord {
    AccountRecord {
        uid,
        name: format!("user{uid}"),
        ..AccountRecord::default()
    }
}

async fn client(registry: &Path) -> AccountStoreClient {
    let registry = Arc::new(EmbeddedRegistry::new(registry));
    let channel = svrkit::discovery::discover(
        &*registry as &dyn Registry,
        SERVICE_NAME,
        Channel::builder().balance(Balance::Sharded).max_attempts(4),
    )
    .await
    .expect("discovered");
    svrkit::discovery::shard_map::follow(registry, SERVICE_NAME, &channel)
        .await
        .expect("the shard map");
    AccountStoreClient::new(channel)
}

/// Creates `uid` until an answer is definite: acknowledged (or found already there
/// after an attempt whose outcome was unknown). Returns false when it kept failing.
async fn create(store: &AccountStoreClient, uid: u64) -> bool {
    for _ in 0..40 {
        let result = store
            .create_account_with(
                CreateAccountRequest {
                    account: Some(account(uid)),
                },
                CallOptions::new().routing_key(uid),
            )
            .await;
        match result {
            Ok(_) => return true,
            Err(e) if e.code() == Code::AlreadyExists => return true,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    false
}

/// Reads `uid`, waiting out a leader election (the shard answers `unavailable`, not
/// processed, while it has no leader); `None` when the account is not there.
async fn read(store: &AccountStoreClient, uid: u64) -> Option<AccountRecord> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match store
            .get_account_with(
                GetAccountRequest { uid },
                CallOptions::new().routing_key(uid),
            )
            .await
        {
            Ok(reply) => return reply.account,
            Err(e) if e.code() == Code::NotFound => return None,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "uid {uid}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Which replica leads the shard of `key`, asked of `replica` directly: it serves (the
/// leader) or names the leader.
async fn leader_of(key: u64, replicas: &[Option<Replica>]) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        for (i, replica) in replicas.iter().enumerate() {
            let Some(replica) = replica else { continue };
            let store = AccountStoreClient::new(Channel::lazy([replica.addr]));
            match store
                .get_account_with(
                    GetAccountRequest { uid: key },
                    CallOptions::new().routing_key(key),
                )
                .await
            {
                Ok(_) => return name(i + 1),
                Err(e) if e.code() == Code::NotFound => return name(i + 1),
                Err(e)
                    if e.reason() == Some(svrkit::client::NOT_LEADER)
                        && !e.details().is_empty() =>
                {
                    return String::from_utf8_lossy(e.details()).into_owned();
                }
                Err(_) => {}
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader for key {key}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `shards` section of a replica's `/status`.
async fn shards_status(replica: &Replica) -> Vec<serde_json::Value> {
    let (code, body) = http_get(replica.admin, "/status").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("json");
    status["shards"]
        .as_array()
        .cloned()
        .expect("a shards section")
}

/// Waits until every one of `replicas` answers `/readyz` with 200 (each shard it holds
/// has a leader).
async fn all_ready(replicas: impl IntoIterator<Item = &Replica>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for replica in replicas {
        while http_get(replica.admin, "/readyz").await.0 != 200 {
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A counter or gauge from a replica's `/metrics` (0 when absent).
async fn metric(replica: &Replica, name: &str) -> f64 {
    let (code, body) = http_get(replica.admin, "/metrics").await;
    assert_eq!(code, 200);
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn data_of(data: &Path, i: usize) -> PathBuf {
    data.join(name(i))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_loses_nothing_and_an_emptied_replica_is_rebuilt() {
    let registry_dir = tempdir("raft-registry");
    let data_dir = tempdir("raft-data");
    let (registry, data) = (registry_dir.path(), data_dir.path());
    let mut replicas: Vec<Option<Replica>> =
        (1..=N).map(|i| Some(start(i, registry, data))).collect();
    let store = client(registry).await;

    // Writes flowing: 8 writers over uids 1..=400.
    let acked = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (store, acked, next) = (store.clone(), Arc::clone(&acked), Arc::clone(&next));
        writers.spawn(async move {
            loop {
                let uid = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if uid > 400 {
                    return;
                }
                assert!(
                    create(&store, uid).await,
                    "uid {uid} never got a definite answer"
                );
                acked.lock().expect("lock").insert(uid);
            }
        });
    }
    // Once a quarter is in, kill -9 the leader of uid 1's shard.
    tokio::time::timeout(PATIENCE, async {
        while acked.lock().expect("lock").len() < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("writes flow");
    let leader = leader_of(1, &replicas).await;
    let killed = (1..=N).find(|&i| name(i) == leader).expect("a replica");
    replicas[killed - 1] = None;
    while let Some(done) = writers.join_next().await {
        done.expect("a writer");
    }
    assert_eq!(
        acked.lock().expect("lock").len(),
        400,
        "every write acknowledged"
    );
    let new_leader = leader_of(1, &replicas).await;
    assert_ne!(new_leader, leader, "another replica leads after the kill");
    // A survivor now leads two shards: its heartbeats to the other survivor go out
    // together, more heartbeats than batches.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut batched = false;
        for replica in replicas.iter().flatten() {
            let beats = metric(replica, "wx_storage_raft_heartbeats_total").await;
            let batches = metric(replica, "wx_storage_raft_heartbeat_batches_total").await;
            batched |= batches > 0.0 && beats > batches;
        }
        if batched {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeats were batched"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every acknowledged write is there, exactly once (version 1).
    for uid in 1..=400u64 {
        let got = read(&store, uid).await.expect("acknowledged, so there");
        assert_eq!((got.uid, got.version), (uid, 1));
    }

    // The killed replica comes back with its directory gone: it rejoins (no bootstrap of
    // a new group) and is given the data.
    std::fs::remove_dir_all(data_of(data, killed)).expect("delete its directory");
    replicas[killed - 1] = Some(start(killed, registry, data));
    let rebuilt = replicas[killed - 1].as_ref().expect("started");
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        let mine = shards_status(rebuilt).await;
        let caught_up = mine.iter().all(|s| {
            !s["rejoining"].as_bool().unwrap_or(true) && s["applied"].as_u64().unwrap_or(0) > 0
        });
        if caught_up {
            // Its applied index reaches the leader's last log of every shard.
            let mut behind = false;
            for other in replicas.iter().flatten().filter(|r| r.addr != rebuilt.addr) {
                for theirs in shards_status(other).await {
                    if theirs["role"] == "leader" {
                        let shard = theirs["shard"].as_u64();
                        let mine_applied = mine
                            .iter()
                            .find(|m| m["shard"].as_u64() == shard)
                            .and_then(|m| m["applied"].as_u64())
                            .unwrap_or(0);
                        behind |= mine_applied < theirs["last_log"].as_u64().unwrap_or(0);
                    }
                }
            }
            if !behind {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the emptied replica never caught up: {mine:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Now lose another original replica: the rebuilt one is half of what is left, and
    // every acknowledged account is still read back.
    let other = (1..=N).find(|&i| i != killed).expect("another");
    replicas[other - 1] = None;
    for uid in 1..=400u64 {
        assert_eq!(
            read(&store, uid).await.map(|a| a.uid),
            Some(uid),
            "uid {uid} after the rebuild"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_names_the_leader_and_a_call_without_a_key_is_refused() {
    let registry_dir = tempdir("raft-follower");
    let data_dir = tempdir("raft-follower-data");
    let (registry, data) = (registry_dir.path(), data_dir.path());
    let replicas: Vec<Option<Replica>> = (1..=N).map(|i| Some(start(i, registry, data))).collect();
    let leader = leader_of(7, &replicas).await;
    let follower = replicas
        .iter()
        .enumerate()
        .find(|(i, _)| name(i + 1) != leader)
        .and_then(|(_, r)| r.as_ref())
        .expect("a follower");
    let direct = AccountStoreClient::new(Channel::builder().max_attempts(1).lazy([follower.addr]));
    let refused = direct
        .create_account_with(
            CreateAccountRequest {
                account: Some(account(7)),
            },
            CallOptions::new().routing_key(7),
        )
        .await
        .expect_err("a follower does not write");
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(refused.is_not_processed(), "{refused:?}");
    assert_eq!(refused.reason(), Some(svrkit::client::NOT_LEADER));
    assert_eq!(refused.details().as_ref(), leader.as_bytes());
    let no_key = direct
        .get_account(GetAccountRequest { uid: 7 })
        .await
        .expect_err("no routing key");
    assert_eq!(no_key.code(), Code::InvalidArgument);
    // Through the shard map, the same write lands on the leader at once.
    let store = client(registry).await;
    assert!(create(&store, 7).await);
    // Ready while every shard has a leader; a replica left alone is not.
    all_ready(replicas.iter().flatten()).await;
    // And a ready replica's status names every shard's role and term.
    let status = shards_status(follower).await;
    assert_eq!(status.len(), N);
    assert!(
        status.iter().all(|s| s["term"].as_u64().unwrap_or(0) >= 1),
        "{status:?}"
    );
    // Nothing is applied before it is committed.
    assert!(
        status
            .iter()
            .all(|s| s["applied"].as_u64() <= s["committed"].as_u64()),
        "{status:?}"
    );
    assert!(status.iter().any(|s| s["committed"].is_u64()), "{status:?}");
    let mut replicas = replicas;
    let survivor = replicas.pop().flatten().expect("the last replica");
    drop(replicas);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while http_get(survivor.admin, "/readyz").await.0 != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a replica without a majority stays ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_fresh_cluster() {
    use wx_storage::replica::backup;
    let (registry_a, data_a) = (tempdir("backup-registry"), tempdir("backup-data"));
    let replicas: Vec<Option<Replica>> = (1..=N)
        .map(|i| Some(start(i, registry_a.path(), data_a.path())))
        .collect();
    let store = client(registry_a.path()).await;
    for uid in 1..=120u64 {
        assert!(create(&store, uid).await, "uid {uid}");
    }
    let registry = EmbeddedRegistry::new(registry_a.path());
    let map = svrkit::discovery::shard_map::load(&registry, SERVICE_NAME)
        .await
        .expect("read")
        .expect("a map");
    let addrs: Vec<(String, SocketAddr)> = replicas
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((name(i + 1), r.as_ref()?.addr)))
        .collect();
    let saved = tempdir("backup-saved");
    let manifest = backup::save(SERVICE_NAME, &map, &addrs, saved.path())
        .await
        .expect("a backup");
    assert_eq!(manifest.snapshots.len(), N);
    // Written after the backup: not in it.
    assert!(create(&store, 121).await);
    drop(replicas);

    // A fresh cluster, seeded from the backup before its first start.
    let (registry_b, data_b) = (tempdir("restore-registry"), tempdir("restore-data"));
    let seeded =
        backup::seed(saved.path(), "accountstore", |id| data_b.path().join(id)).expect("seeded");
    assert_eq!(seeded, N * N, "every replica of every shard");
    let _restored: Vec<Replica> = (1..=N)
        .map(|i| start(i, registry_b.path(), data_b.path()))
        .collect();
    let restored = client(registry_b.path()).await;
    for uid in 1..=120u64 {
        let got = read(&restored, uid)
            .await
            .unwrap_or_else(|| panic!("uid {uid} restored"));
        assert_eq!((got.uid, got.version), (uid, 1));
    }
    assert!(
        read(&restored, 121).await.is_none(),
        "written after the backup"
    );
    assert!(
        create(&restored, 500).await,
        "the restored cluster takes writes"
    );
    // A cluster holding data is never overwritten.
    let again = backup::seed(saved.path(), "accountstore", |id| data_b.path().join(id));
    assert!(
        matches!(again, Err(backup::BackupError::Mismatch(_))),
        "{again:?}"
    );
}

/// Cuts replica `i` off from `peers` (an empty list heals it): its Raft messages to them
/// are dropped (`WX_RAFT_FAULTS`).
fn cut(data: &Path, i: usize, peers: &[usize]) {
    let names: Vec<String> = peers.iter().map(|&p| name(p)).collect();
    std::fs::write(data.join(format!("faults-{i}")), names.join("\n")).expect("a fault file");
}

/// The status of shard `shard` on `replica`.
async fn shard_on(replica: &Replica, shard: u64) -> serde_json::Value {
    shards_status(replica)
        .await
        .into_iter()
        .find(|s| s["shard"].as_u64() == Some(shard))
        .expect("the replica holds the shard")
}

/// One worker's calls on the session registers of `UID`, recorded into `history`:
/// writes put a fresh value, reads get it; a failed write's outcome is unknown, a failed
/// read is left out.
struct Worker {
    store: AccountStoreClient,
    /// Which replica it calls alone (None: through the shard map).
    direct: Option<usize>,
    seed: u64,
}

const UID: u64 = 1;
const SESSIONS: [&str; 3] = ["a", "b", "c"];

#[derive(Default)]
struct Record {
    history: Vec<Operation<&'static str, u64>>,
    /// (worker's replica, called) of every acknowledged write.
    acked_writes: Vec<(Option<usize>, std::time::Instant)>,
    /// (worker's replica, called) of every read, answered or not.
    reads: Vec<(Option<usize>, std::time::Instant)>,
}

impl Worker {
    async fn run(
        mut self,
        values: Arc<std::sync::atomic::AtomicU64>,
        record: Arc<std::sync::Mutex<Record>>,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::sync::atomic::Ordering::SeqCst;
        let options = || {
            CallOptions::new()
                .routing_key(UID)
                .timeout(Duration::from_millis(800))
        };
        while !stop.load(SeqCst) {
            // xorshift: a fixed sequence per worker.
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            let key = SESSIONS[(self.seed % 3) as usize];
            // Workers pinned to one replica mostly read: a write to a replica cut off
            // from the others hangs until its deadline, a read is what could be stale.
            let write = match self.direct {
                None => self.seed & 8 == 0,
                Some(_) => self.seed & 24 == 0,
            };
            let called = std::time::Instant::now();
            let (action, ok) = if write {
                let value = values.fetch_add(1, SeqCst);
                let session = SessionRecord {
                    session_id: key.to_string(),
                    uid: UID,
                    created_ms: 1,
                    expires_ms: value,
                };
                let result = self
                    .store
                    .put_session_with(
                        PutSessionRequest {
                            session: Some(session),
                        },
                        options(),
                    )
                    .await;
                (Some(Action::Write(value)), result.is_ok())
            } else {
                let request = GetSessionRequest {
                    uid: UID,
                    session_id: key.to_string(),
                };
                match self.store.get_session_with(request, options()).await {
                    Ok(session) => (Some(Action::Read(Some(session.expires_ms))), true),
                    Err(e) if e.code() == Code::NotFound => (Some(Action::Read(None)), true),
                    Err(_) => (None, false),
                }
            };
            let returned = std::time::Instant::now();
            if !write {
                record
                    .lock()
                    .expect("lock")
                    .reads
                    .push((self.direct, called));
            }
            if let Some(action) = action {
                let mut record = record.lock().expect("lock");
                if write && ok {
                    record.acked_writes.push((self.direct, called));
                }
                record.history.push(Operation {
                    key,
                    action,
                    called,
                    returned: ok.then_some(returned),
                });
            }
            if !ok {
                // A refusal comes back at once (a follower names its leader): pace the
                // retries of a worker pinned to one replica.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_others_serves_nothing_stale_and_the_history_is_linearizable() {
    use std::sync::atomic::Ordering::SeqCst;
    let registry_dir = tempdir("raft-partition");
    let data_dir = tempdir("raft-partition-data");
    let (registry, data) = (registry_dir.path(), data_dir.path());
    let replicas: Vec<Option<Replica>> = (1..=N).map(|i| Some(start(i, registry, data))).collect();
    let map = svrkit::discovery::shard_map::load(&EmbeddedRegistry::new(registry), SERVICE_NAME)
        .await
        .expect("read")
        .expect("a map");
    let shard = svrkit::balance::Ring::new(&map.shards)
        .node(UID)
        .expect("a shard") as u64;
    let leader = leader_of(UID, &replicas).await;
    let isolated = (1..=N).find(|&i| name(i) == leader).expect("a replica");
    let others: Vec<usize> = (1..=N).filter(|&i| i != isolated).collect();
    let old_term = shard_on(replicas[isolated - 1].as_ref().expect("up"), shard).await["term"]
        .as_u64()
        .expect("a term");

    // Workers: three through the shard map, and one pinned to each replica.
    let routed = client(registry).await;
    let values = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let record = Arc::new(std::sync::Mutex::new(Record::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..6u64 {
        let direct = (w >= 3).then(|| (w - 2) as usize);
        let store = match direct {
            None => routed.clone(),
            Some(i) => {
                let addr = replicas[i - 1].as_ref().expect("up").addr;
                AccountStoreClient::new(Channel::builder().max_attempts(1).lazy([addr]))
            }
        };
        let worker = Worker {
            store,
            direct,
            seed: 0x9E37_79B9_7F4A_7C15 ^ (w + 1),
        };
        workers.spawn(worker.run(Arc::clone(&values), Arc::clone(&record), Arc::clone(&stop)));
    }
    let acked_since = |since: std::time::Instant, by: Option<usize>| {
        let record = record.lock().expect("lock");
        record
            .acked_writes
            .iter()
            .filter(|(who, called)| *called >= since && (by.is_none() || *who == by))
            .count()
    };
    let wait_for_writes = |since: std::time::Instant, what: &'static str| {
        let acked_since = &acked_since;
        async move {
            let deadline = tokio::time::Instant::now() + PATIENCE * 2;
            while acked_since(since, None) < 30 {
                assert!(tokio::time::Instant::now() < deadline, "no writes {what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for_writes(std::time::Instant::now(), "before the partition").await;

    // Cut the shard's leader off from the other two, both ways.
    cut(data, isolated, &others);
    for &o in &others {
        cut(data, o, &[isolated]);
    }
    // The other two elect a leader in a later term.
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    let (new_leader, new_term) = 'elected: loop {
        for &o in &others {
            let status = shard_on(replicas[o - 1].as_ref().expect("up"), shard).await;
            let term = status["term"].as_u64().unwrap_or(0);
            if status["role"] == "leader" && term > old_term {
                break 'elected (o, term);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the majority side never elected a leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elected = std::time::Instant::now();
    wait_for_writes(elected, "on the majority side").await;
    // The worker pinned to the isolated replica tried to read from it meanwhile.
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    loop {
        let tried = record
            .lock()
            .expect("lock")
            .reads
            .iter()
            .filter(|(who, called)| *who == Some(isolated) && *called >= elected)
            .count();
        if tried >= 10 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the isolated replica was read {tried} times"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The isolated replica may still think it leads (in its old term), but it
    // acknowledged no write from the moment another leader existed.
    let isolated_status = shard_on(replicas[isolated - 1].as_ref().expect("up"), shard).await;
    assert!(
        isolated_status["term"].as_u64().unwrap_or(0) < new_term,
        "the isolated replica cannot have joined the new term: {isolated_status}"
    );
    assert_eq!(
        acked_since(elected, Some(isolated)),
        0,
        "a replica cut off from the majority acknowledged a write"
    );

    // Heal: the isolated replica follows the new leader and catches up.
    for i in 1..=N {
        cut(data, i, &[]);
    }
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    loop {
        let status = shard_on(replicas[isolated - 1].as_ref().expect("up"), shard).await;
        if status["role"] == "follower" && status["leader"] == name(new_leader).as_str() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the isolated replica never followed the new leader: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_writes(std::time::Instant::now(), "after healing").await;
    stop.store(true, SeqCst);
    while let Some(done) = workers.join_next().await {
        done.expect("a worker");
    }

    let record = record.lock().expect("lock");
    let reads = record
        .history
        .iter()
        .filter(|op| matches!(op.action, Action::Read(_)) && op.returned.is_some())
        .count();
    assert!(reads >= 30, "only {reads} reads answered");
    linearizability::check(&record.history).expect("a linearizable history");
}

/// Runs `wx-replica ARGS` against the cluster in `registry`: its exit status and output.
fn wx_replica(registry: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wx-replica"))
        .args(args)
        .env("SVRKIT_REGISTRY", format!("dir:{}", registry.display()))
        .output()
        .expect("run wx-replica");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_replaced_online_and_the_new_one_catches_up() {
    let registry_dir = tempdir("raft-membership");
    let data_dir = tempdir("raft-membership-data");
    let (registry, data) = (registry_dir.path(), data_dir.path());
    let mut replicas: Vec<Option<Replica>> =
        (1..=N).map(|i| Some(start(i, registry, data))).collect();
    let store = client(registry).await;
    // Enough writes that the log was compacted: the new replica needs a snapshot.
    for uid in 1..=150u64 {
        assert!(create(&store, uid).await, "uid {uid}");
    }
    // A spare: running, registered, holding nothing.
    let spare = start(N + 1, registry, data);
    assert!(
        shards_status(&spare).await.is_empty(),
        "a spare holds nothing"
    );
    let (ok, out) = wx_replica(
        registry,
        &[
            "add",
            "accountstore",
            "--shard",
            "1",
            "--instance",
            "accountstore-9",
        ],
    );
    assert!(!ok && out.contains("not running"), "{out}");

    // Writes keep flowing while shard 1 moves from accountstore-1 to the spare.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for uid in 151..=300u64 {
                assert!(create(&store, uid).await, "uid {uid} during the change");
            }
        })
    };
    let (ok, out) = tokio::task::spawn_blocking({
        let registry = registry.to_path_buf();
        move || {
            wx_replica(
                &registry,
                &[
                    "replace",
                    "accountstore",
                    "--shard",
                    "1",
                    "--old",
                    "accountstore-1",
                    "--new",
                    "accountstore-4",
                ],
            )
        }
    })
    .await
    .expect("ran");
    assert!(ok, "{out}");
    assert!(out.contains("done: shard 1"), "{out}");
    writer
        .await
        .expect("every write acknowledged during the change");

    // The new replica is a voter of shard 1 and caught up; the old one let it go.
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    loop {
        let theirs = shards_status(&spare).await;
        let old = shards_status(replicas[0].as_ref().expect("up")).await;
        let new_shard = theirs.iter().find(|s| s["shard"] == 0);
        let voters = new_shard.map(|s| s["voters"].clone()).unwrap_or_default();
        let applied = new_shard.and_then(|s| s["applied"].as_u64()).unwrap_or(0);
        // It was sent a snapshot (the log before it was compacted away).
        let snapshot = new_shard.and_then(|s| s["snapshot"].as_u64()).unwrap_or(0);
        let done = voters
            == serde_json::json!(["accountstore-2", "accountstore-3", "accountstore-4"])
            && applied > 0
            && snapshot > 0
            && !old.iter().any(|s| s["shard"] == 0);
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change never settled: new {theirs:?} old {old:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Shard 1 now lives on 2, 3 and 4: without 1 and 2 it still has a majority (3 and
    // 4), and every account of shard 1 reads back.
    let map = svrkit::discovery::shard_map::load(&EmbeddedRegistry::new(registry), SERVICE_NAME)
        .await
        .expect("read")
        .expect("a map");
    assert_eq!(
        map.replicas_of(0),
        ["accountstore-4", "accountstore-2", "accountstore-3"],
        "the new replica takes the old one's place"
    );
    let ring = svrkit::balance::Ring::new(&map.shards);
    replicas[0] = None;
    replicas[1] = None;
    let mut checked = 0;
    for uid in (1..=300u64).filter(|uid| ring.node(*uid) == Some(0)) {
        let got = read(&store, uid).await.expect("acknowledged, so there");
        assert_eq!(got.uid, uid);
        checked += 1;
    }
    assert!(checked > 30, "only {checked} accounts on shard 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_read_is_answered_by_a_follower_and_a_strict_one_only_by_the_leader() {
    let registry_dir = tempdir("raft-stale-read");
    let data_dir = tempdir("raft-stale-read-data");
    let (registry, data) = (registry_dir.path(), data_dir.path());
    let replicas: Vec<Replica> = (1..=N)
        .map(|i| {
            start_store(
                env!("CARGO_BIN_EXE_momentsstore"),
                "momentsstore",
                i,
                registry,
                data,
            )
        })
        .collect();
    all_ready(&replicas).await;
    // A pointer on reader 5's timeline, written through the shard map (to the leader).
    let registry_handle = Arc::new(EmbeddedRegistry::new(registry));
    let channel = svrkit::discovery::discover(
        &*registry_handle as &dyn Registry,
        wx_api::storage::moments_store_methods::SERVICE_NAME,
        Channel::builder().balance(Balance::Sharded).max_attempts(4),
    )
    .await
    .expect("discovered");
    svrkit::discovery::shard_map::follow(
        registry_handle,
        wx_api::storage::moments_store_methods::SERVICE_NAME,
        &channel,
    )
    .await
    .expect("the shard map");
    let routed = MomentsStoreClient::new(channel);
    let entry = TimelineEntry {
        created_ms: 1_000,
        author: 9,
        seq: 1,
    };
    routed
        .add_to_timelines_with(
            AddToTimelinesRequest {
                items: vec![TimelineItem {
                    reader: 5,
                    entry: Some(entry),
                }],
            },
            CallOptions::new().routing_key(5),
        )
        .await
        .expect("written");
    let read = || ReadTimelineRequest {
        reader: 5,
        before: None,
        limit: 10,
        outbox: false,
    };
    // Each follower answers the stale read itself (soon holding the pointer) and
    // sends the strict one to the leader.
    let mut followers = 0;
    for replica in &replicas {
        let direct =
            MomentsStoreClient::new(Channel::builder().max_attempts(1).lazy([replica.addr]));
        let strict = direct
            .read_timeline_with(read(), CallOptions::new().routing_key(5))
            .await;
        let Err(refused) = strict else {
            continue; // the leader
        };
        assert_eq!(
            refused.reason(),
            Some(svrkit::client::NOT_LEADER),
            "{refused:?}"
        );
        followers += 1;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let stale = direct
                .read_timeline_nearby_with(read(), CallOptions::new().routing_key(5))
                .await
                .expect("a follower answers a stale read");
            if stale.entries == [entry] {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the follower never applied the pointer: {stale:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(metric(replica, "wx_storage_follower_reads_total").await >= 1.0);
    }
    assert_eq!(followers, N - 1, "two followers of the shard");
    // Through the shard map, both answer.
    let stale = routed
        .read_timeline_nearby_with(read(), CallOptions::new().routing_key(5))
        .await
        .expect("stale");
    assert_eq!(stale.entries, [entry]);
    let strict = routed
        .read_timeline_with(read(), CallOptions::new().routing_key(5))
        .await
        .expect("strict");
    assert_eq!(strict.entries, [entry]);
}
