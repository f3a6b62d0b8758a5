//! A storage shard as a real process: acknowledged writes survive `kill -9`, versions
//! stop racing writers, the friend ceiling holds, bad requests get precise statuses.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use svrkit::{Channel, Code};
use svrkit_testkit::tempdir;
use wx_api::storage::{
    AccountRecord, AccountStoreClient, ContactStoreClient, CountFriendsRequest,
    CreateAccountRequest, Edge, EdgeState, GetAccountRequest, GetEdgesRequest, ListEdgesRequest,
    PutEdgeRequest, UpdateAccountRequest,
};

/// Starts a shard binary on a free port with its data in `data`.
fn shard(bin: &str, data: &Path) -> (Shard, SocketAddr) {
    let mut child = Command::new(bin)
        .env("SVRKIT_REGISTRY", "none")
        .env("SVRKIT_ADMIN", "off")
        .env("SVRKIT_DATA_DIR", data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the shard");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| match svrkit::launch::Announcement::parse(&l) {
            Some(svrkit::launch::Announcement::Listening(addr)) => Some(addr),
            _ => None,
        })
        .expect("the shard says where it listens");
    std::thread::spawn(move || lines.for_each(drop));
    (Shard(child), addr)
}

/// A running shard process; killed (SIGKILL) when dropped, so a failing test leaves none.
struct Shard(Child);

impl Drop for Shard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill_9(shard: &mut Shard) {
    shard.0.kill().expect("SIGKILL");
    shard.0.wait().expect("reaped");
}

fn account(uid: u64) -> AccountRecord {
    AccountRecord {
        uid,
        name: format!("user{uid}"),
        nickname: format!("User {uid}"),
        ..AccountRecord::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let data_dir = tempdir("accountstore-kill");
    let data = data_dir.path();
    let (mut child, addr) = shard(env!("CARGO_BIN_EXE_accountstore"), data);
    let store = AccountStoreClient::new(Channel::connect(addr).await.expect("connect"));
    // Concurrent writers: each is acknowledged only once its batch is fsynced (they share
    // syncs through group commit).
    let mut writes = tokio::task::JoinSet::new();
    for uid in 1..=200u64 {
        let store = store.clone();
        writes.spawn(async move {
            store
                .create_account(CreateAccountRequest {
                    account: Some(account(uid)),
                })
                .await
        });
    }
    let mut acknowledged = 0;
    while let Some(result) = writes.join_next().await {
        result.expect("join").expect("acknowledged");
        acknowledged += 1;
    }
    assert_eq!(acknowledged, 200);
    // No graceful anything: SIGKILL right after the last acknowledgement.
    kill_9(&mut child);

    let (mut child, addr) = shard(env!("CARGO_BIN_EXE_accountstore"), data);
    let store = AccountStoreClient::new(Channel::connect(addr).await.expect("connect"));
    for uid in 1..=200u64 {
        let reply = store
            .get_account(GetAccountRequest { uid })
            .await
            .unwrap_or_else(|e| panic!("account {uid} lost after kill -9: {e}"));
        let got = reply.account.expect("account");
        assert_eq!(
            (got.uid, got.version, got.name),
            (uid, 1, format!("user{uid}"))
        );
    }
    kill_9(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_make_the_second_of_two_racing_writers_lose() {
    let data_dir = tempdir("accountstore-cas");
    let data = data_dir.path();
    let (mut child, addr) = shard(env!("CARGO_BIN_EXE_accountstore"), data);
    let store = AccountStoreClient::new(Channel::connect(addr).await.expect("connect"));
    store
        .create_account(CreateAccountRequest {
            account: Some(account(7)),
        })
        .await
        .expect("created");
    let dup = store
        .create_account(CreateAccountRequest {
            account: Some(account(7)),
        })
        .await
        .expect_err("a uid is created once");
    assert_eq!(dup.code(), Code::AlreadyExists);
    // Two writers both read version 1; the first wins, the second is told to re-read.
    let update = |nickname: &str| UpdateAccountRequest {
        account: Some(AccountRecord {
            nickname: nickname.into(),
            ..account(7)
        }),
        expected_version: 1,
    };
    let first = store
        .update_account(update("first"))
        .await
        .expect("first wins");
    assert_eq!(first.account.expect("account").version, 2);
    let second = store
        .update_account(update("second"))
        .await
        .expect_err("second loses");
    assert_eq!(second.code(), Code::Aborted);
    let now = store
        .get_account(GetAccountRequest { uid: 7 })
        .await
        .expect("read")
        .account
        .expect("account");
    assert_eq!((now.nickname.as_str(), now.version), ("first", 2));
    // Bad requests get precise statuses, and the shard keeps serving.
    let missing = store
        .get_account(GetAccountRequest { uid: 8 })
        .await
        .expect_err("no such account");
    assert_eq!(missing.code(), Code::NotFound);
    let empty = store
        .create_account(CreateAccountRequest { account: None })
        .await
        .expect_err("nothing to create");
    assert_eq!(empty.code(), Code::InvalidArgument);
    store
        .get_account(GetAccountRequest { uid: 7 })
        .await
        .expect("still serving");
    kill_9(&mut child);
}

fn edge(owner: u64, peer: u64, state: EdgeState) -> Edge {
    Edge {
        owner,
        peer,
        state: state as i32,
        ..Edge::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_friend_ceiling_holds_and_edges_survive_kill_9() {
    let data_dir = tempdir("contactstore");
    let data = data_dir.path();
    let (mut child, addr) = shard(env!("CARGO_BIN_EXE_contactstore"), data);
    let store = ContactStoreClient::new(Channel::connect(addr).await.expect("connect"));
    let put = |peer: u64, state: EdgeState, expected: u64| PutEdgeRequest {
        edge: Some(edge(1, peer, state)),
        expected_version: expected,
        max_friends: 3,
    };
    // Concurrent accepts past a ceiling of 3: exactly three succeed.
    let mut accepts = tokio::task::JoinSet::new();
    for peer in 2..=7u64 {
        let store = store.clone();
        let request = put(peer, EdgeState::Friend, 0);
        accepts.spawn(async move { store.put_edge(request).await });
    }
    let (mut ok, mut full) = (0, 0);
    while let Some(result) = accepts.join_next().await {
        match result.expect("join") {
            Ok(_) => ok += 1,
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(e.message().contains("3 friends"), "{}", e.message());
                full += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, full), (3, 3));
    let count = |store: ContactStoreClient| async move {
        store
            .count_friends(CountFriendsRequest { owner: 1 })
            .await
            .expect("count")
            .friends
    };
    assert_eq!(count(store.clone()).await, 3);
    // A stale version loses; removing a friend frees a place.
    let friends = store
        .list_edges(ListEdgesRequest {
            owner: 1,
            state: EdgeState::Friend as i32,
            after_peer: 0,
            limit: 0,
        })
        .await
        .expect("list")
        .edges;
    assert_eq!(friends.len(), 3);
    let stale = store
        .put_edge(put(friends[0].peer, EdgeState::None, 7))
        .await
        .expect_err("stale version");
    assert_eq!(stale.code(), Code::Aborted);
    store
        .put_edge(put(friends[0].peer, EdgeState::None, friends[0].version))
        .await
        .expect("removed");
    assert_eq!(count(store.clone()).await, 2);
    let selfish = store
        .put_edge(put(1, EdgeState::Friend, 0))
        .await
        .expect_err("no edge to oneself");
    assert_eq!(selfish.code(), Code::InvalidArgument);

    kill_9(&mut child);
    let (mut child, addr) = shard(env!("CARGO_BIN_EXE_contactstore"), data);
    let store = ContactStoreClient::new(Channel::connect(addr).await.expect("connect"));
    assert_eq!(count(store.clone()).await, 2, "the count survived kill -9");
    let edges = store
        .get_edges(GetEdgesRequest {
            owner: 1,
            peers: friends.iter().map(|e| e.peer).collect(),
        })
        .await
        .expect("edges")
        .edges;
    assert_eq!(edges.len(), 2, "the removal survived too");
    kill_9(&mut child);
}
