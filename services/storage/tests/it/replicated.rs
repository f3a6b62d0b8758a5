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
use svrkit_testkit::{PATIENCE, http_get, tempdir};
use wx_api::storage::account_store_methods::SERVICE_NAME;
use wx_api::storage::{AccountRecord, AccountStoreClient, CreateAccountRequest, GetAccountRequest};

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
    let shards: Vec<String> = (1..=N).map(name).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_accountstore"))
        .env("SVRKIT_REGISTRY", format!("dir:{}", registry.display()))
        .env("SVRKIT_INSTANCE_ID", name(i))
        .env("SVRKIT_SHARDS", shards.join(","))
        .env("SVRKIT_REPLICAS", "3")
        .env("SVRKIT_ADMIN", "127.0.0.1:0")
        .env("SVRKIT_DATA_DIR", data.join(name(i)))
        // Small, so the rebuilt replica is sent a snapshot rather than the whole log.
        .env("WX_RAFT_SNAPSHOT_LOGS", "60")
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
    // And a replica's status names every shard's role.
    let status = shards_status(follower).await;
    assert_eq!(status.len(), N);
    assert!(status.iter().all(|s| s["term"].as_u64().unwrap_or(0) >= 1));
    // Ready while every shard has a leader; a replica left alone is not.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for replica in replicas.iter().flatten() {
        while http_get(replica.admin, "/readyz").await.0 != 200 {
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
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
