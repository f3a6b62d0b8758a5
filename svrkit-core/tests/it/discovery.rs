//! Discovery against the embedded registry: registration, watch, expiry after a crash,
//! sharing between processes, and channels that follow the registry.

use crate::common;

use std::sync::Arc;
use std::time::Duration;
use svrkit_testkit::tempdir;

use common::{EchoProcess, PATIENCE, start, until};
use echo::{EchoClient, EchoRequest, EchoServer, EchoService};
use svrkit::discovery::{EmbeddedRegistry, Instance, Registry, discover};
use svrkit::{Channel, Server};

const SERVICE: &str = "svrkit.demo.Echo";

fn registry(dir: &std::path::Path) -> EmbeddedRegistry {
    EmbeddedRegistry::new(dir)
        .ttl(Duration::from_millis(600))
        .poll(Duration::from_millis(20))
}

#[tokio::test]
async fn register_watch_deregister_and_expire_after_a_crash() {
    let dir_dir = tempdir("reg");
    let dir = dir_dir.path();
    let reg = registry(dir);
    // A second registry object on the same directory stands for another process.
    let other_process = registry(dir);
    let mut rx = other_process.watch(SERVICE).await.expect("watch");
    assert!(rx.borrow().is_empty());

    let a = reg
        .register(Instance::new(SERVICE, "127.0.0.1:1001".parse().expect("addr")).id("a"))
        .await
        .expect("register a");
    let b = reg
        .register(
            Instance::new(SERVICE, "127.0.0.1:1002".parse().expect("addr"))
                .id("b")
                .version(svrkit::selector::Track::Gray),
        )
        .await
        .expect("register b");
    until(&mut rx, |i| i.len() == 2).await;
    let seen = rx.borrow().clone();
    assert_eq!(seen[1].version, svrkit::selector::Track::Gray);
    assert_eq!(seen[0].addr.port(), 1001);

    // Graceful: gone at once.
    a.deregister().await.expect("deregister");
    until(&mut rx, |i| i.len() == 1 && i[0].id == "b").await;

    // b keeps beating past several TTLs...
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(rx.borrow().len(), 1, "heartbeats keep b alive");
    // ...until it "crashes": no deregistration, the keep-alive stops, the record expires.
    drop(b);
    until(&mut rx, <[Instance]>::is_empty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_channel_follows_servers_that_come_and_go() {
    let dir_dir = tempdir("follow");
    let dir = dir_dir.path();
    follows_servers(Arc::new(registry(dir))).await;
}

/// The same through a registry written outside svrkit, against its public API only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_registry_serves_registration_and_discovery() {
    follows_servers(Arc::new(svrkit_testkit::StaticRegistry::default())).await;
}

/// Servers register in `reg` as they start and leave it as they stop; a discovered
/// channel follows, and no call fails.
async fn follows_servers(reg: Arc<dyn Registry>) {
    let serve = |name: &'static str| {
        Server::builder()
            .register(
                Arc::clone(&reg),
                Instance::new(SERVICE, "127.0.0.1:0".parse().expect("addr")).id(name),
            )
            .add_service(EchoServer::new(EchoService::new(name)))
    };
    let one = start(serve("one")).await;
    let mut rx = reg.watch(SERVICE).await.expect("watch");
    until(&mut rx, |i| i.len() == 1).await;
    let channel = discover(
        &*reg,
        SERVICE,
        Channel::builder().balance(svrkit::balance::Balance::RoundRobin),
    )
    .await
    .expect("discover");
    let client = EchoClient::new(channel.clone());
    let call = || {
        let client = client.clone();
        async move {
            client
                .echo(EchoRequest {
                    payload: b"x".to_vec().into(),
                    delay_ms: 0,
                })
                .await
                .expect("echo")
                .seen
                .expect("seen")
                .server
        }
    };
    assert_eq!(call().await, "one");

    let mut changes = channel.subscribe_targets();
    let two = start(serve("two")).await;
    tokio::time::timeout(PATIENCE, async {
        while channel.addresses().len() < 2 {
            changes.changed().await.expect("channel alive");
        }
    })
    .await
    .expect("the channel saw the second server");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        seen.insert(call().await);
    }
    assert_eq!(seen.len(), 2, "both serve: {seen:?}");

    // Graceful shutdown deregisters first: the channel drops it, and no call fails.
    one.shutdown().await;
    tokio::time::timeout(PATIENCE, async {
        while channel.addresses().len() > 1 {
            changes.changed().await.expect("channel alive");
        }
    })
    .await
    .expect("the channel dropped the stopped server");
    for _ in 0..10 {
        assert_eq!(call().await, "two");
    }
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_of_a_killed_process_expires() {
    let dir_dir = tempdir("kill");
    let dir = dir_dir.path();
    let mut rx = registry(dir).watch(SERVICE).await.expect("watch");
    let mut process = EchoProcess::spawn(&[
        "--registry-dir".as_ref(),
        dir.as_os_str(),
        "--instance-id".as_ref(),
        "doomed".as_ref(),
    ]);
    until(&mut rx, |i| i.iter().any(|i| i.id == "doomed")).await;
    process.kill_9();
    // No deregistration happened: the record goes once its heartbeat is older than the TTL.
    until(&mut rx, |i| !i.iter().any(|i| i.id == "doomed")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gray_users_reach_gray_instances_and_fall_back_to_stable() {
    use svrkit::Context;
    let dir_dir = tempdir("grayroute");
    let dir = dir_dir.path();
    let reg: Arc<dyn Registry> = Arc::new(registry(dir));
    let serve = |name: &'static str, version: &'static str| {
        let mut instance = Instance::new(SERVICE, "127.0.0.1:0".parse().expect("addr")).id(name);
        if version == "gray" {
            // A binary gray release: users 7 and 9 go to the gray build.
            instance = instance.gray(svrkit::config::Selector::Uids(vec![7, 9]));
        }
        Server::builder()
            .register(Arc::clone(&reg), instance)
            .add_service(EchoServer::new(EchoService::new(name)))
    };
    let stable = start(serve("stable-1", "stable")).await;
    let gray = start(serve("gray-1", "gray")).await;
    let mut rx = reg.watch(SERVICE).await.expect("watch");
    until(&mut rx, |i| i.len() == 2).await;
    let channel = discover(&*reg, SERVICE, Channel::builder())
        .await
        .expect("discover");
    let client = EchoClient::new(channel.clone());
    let served_by = |ctx: Context| {
        let client = client.clone();
        async move {
            ctx.scope(client.echo(EchoRequest::default()))
                .await
                .expect("echo")
                .seen
                .expect("seen")
                .server
        }
    };
    for _ in 0..10 {
        assert_eq!(
            served_by(Context::new().with_gray_tag("gray")).await,
            "gray-1"
        );
        assert_eq!(served_by(Context::new()).await, "stable-1");
        assert_eq!(served_by(Context::new().with_uid(7)).await, "gray-1");
        assert_eq!(served_by(Context::new().with_uid(9)).await, "gray-1");
        assert_eq!(served_by(Context::new().with_uid(8)).await, "stable-1");
    }
    // The gray instance goes away: gray users fall back to stable.
    let mut changes = channel.subscribe_targets();
    gray.shutdown().await;
    tokio::time::timeout(PATIENCE, async {
        while channel.addresses().len() > 1 {
            changes.changed().await.expect("channel alive");
        }
    })
    .await
    .expect("the channel dropped the gray instance");
    assert_eq!(
        served_by(Context::new().with_gray_tag("gray")).await,
        "stable-1"
    );
    assert_eq!(served_by(Context::new().with_uid(7)).await, "stable-1");
    stable.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_channel_never_hands_a_departed_shards_keys_to_a_neighbour() {
    use svrkit::balance::Balance;
    use svrkit::{CallOptions, Code};
    let dir_dir = tempdir("sharded");
    let dir = dir_dir.path();
    let reg: Arc<dyn Registry> = Arc::new(registry(dir));
    let shard = |id: &'static str| {
        Server::builder()
            .register(
                Arc::clone(&reg),
                Instance::new(SERVICE, "127.0.0.1:0".parse().expect("addr")).id(id),
            )
            .add_service(EchoServer::new(EchoService::new(id)))
    };
    let one = start(shard("shard-1")).await;
    let two = start(shard("shard-2")).await;
    let mut rx = reg.watch(SERVICE).await.expect("watch");
    until(&mut rx, |i| i.len() == 2).await;
    let channel = discover(&*reg, SERVICE, Channel::builder().balance(Balance::Sharded))
        .await
        .expect("discover");
    let client = EchoClient::new(channel.clone());
    let served = |key: u64| {
        let client = client.clone();
        async move {
            client
                .echo_with(EchoRequest::default(), CallOptions::new().routing_key(key))
                .await
                .map(|r| r.seen.expect("seen").server)
        }
    };
    // Find a key shard-1 owns; it always goes there.
    let mut key = 0;
    while served(key).await.expect("served") != "shard-1" {
        key += 1;
        assert!(key < 1000, "shard-1 owns some key");
    }
    for _ in 0..5 {
        assert_eq!(served(key).await.expect("served"), "shard-1");
    }
    // A gray instance owns no data: it never joins the ring, whatever its selector.
    let mut changes = channel.subscribe_targets();
    let gray = start(
        Server::builder()
            .register(
                Arc::clone(&reg),
                Instance::new(SERVICE, "127.0.0.1:0".parse().expect("addr"))
                    .id("shard-gray")
                    .gray(svrkit::config::Selector::Percent(100)),
            )
            .add_service(EchoServer::new(EchoService::new("shard-gray"))),
    )
    .await;
    until(&mut rx, |i| i.len() == 3).await;
    tokio::time::timeout(PATIENCE, changes.changed())
        .await
        .expect("the channel saw the gray instance")
        .expect("alive");
    for k in 0..64u64 {
        let ctx = svrkit::Context::new().with_uid(k + 1);
        let server = ctx.scope(served(k)).await.expect("served");
        assert_ne!(server, "shard-gray", "key {k}");
    }
    gray.shutdown().await;
    until(&mut rx, |i| i.len() == 2).await;
    // shard-1 leaves (deregistering): its keys fail rather than reach shard-2.
    let mut changes = channel.subscribe_targets();
    one.shutdown().await;
    until(&mut rx, |i| i.len() == 1).await;
    tokio::time::timeout(PATIENCE, changes.changed())
        .await
        .expect("the channel saw the departure")
        .expect("alive");
    assert_eq!(
        channel.addresses().len(),
        2,
        "the departed shard stays on the ring"
    );
    let refused = served(key)
        .await
        .expect_err("no shard-2 answer for shard-1's key");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    // shard-1 returns (another address, same id): its keys go to it again.
    let back = start(shard("shard-1")).await;
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(server) = served(key).await {
                assert_eq!(server, "shard-1");
                return;
            }
            changes.changed().await.expect("alive");
        }
    })
    .await
    .expect("shard-1's keys reach it again");
    back.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_on_a_wildcard_registers_its_advertised_address() {
    use svrkit::launch::{Launch, RegistryKind};
    let dir = svrkit_testkit::tempdir("advertise");
    let launch = Launch::from_env("svrkit.demo.Echo")
        .expect("defaults")
        .with_listen("0.0.0.0:0".parse().expect("addr"))
        .with_admin(None)
        .with_instance_id("echo-wild")
        .with_advertise(Some("127.0.0.1".parse().expect("ip")))
        .with_registry(RegistryKind::Dir(dir.path().to_path_buf()))
        .expect("registry");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(launch.serve_until(
        svrkit::Server::builder().add_service(echo::EchoServer::new(echo::EchoService::new("w"))),
        async {
            let _ = stopped.await;
        },
    ));
    let registry = svrkit::discovery::EmbeddedRegistry::new(dir.path());
    let deadline = std::time::Instant::now() + svrkit_testkit::PATIENCE;
    let instance = loop {
        if let Some(i) = registry
            .live("svrkit.demo.Echo")
            .expect("reads")
            .into_iter()
            .find(|i| i.id == "echo-wild")
        {
            break i;
        }
        assert!(std::time::Instant::now() < deadline, "never registered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(instance.addr.ip().to_string(), "127.0.0.1", "{instance:?}");
    assert_ne!(instance.addr.port(), 0);
    // Callers reach it at what was registered.
    let reply = echo::EchoClient::new(svrkit::Channel::lazy([instance.addr]))
        .echo(echo::EchoRequest {
            payload: b"here".to_vec().into(),
            delay_ms: 0,
        })
        .await
        .expect("reached at the advertised address");
    assert_eq!(&reply.payload[..], b"here");
    let _ = stop.send(());
    let _ = serving.await;
}
