//! A sharded server refuses a key it does not own: a request routed by a key another
//! shard owns is answered not-mine (unavailable, not processed) before the handler runs,
//! and the owner serves it.

use std::time::Duration;

use echo::{EchoClient, EchoRequest, EchoServer, EchoService};
use svrkit::server::Ownership;
use svrkit::{CallOptions, Channel, Code, Server};
use tokio::net::TcpListener;

async fn shard(me: &str, names: &[String]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::builder()
        .ownership(Ownership::fixed(me, names.to_vec()))
        .add_service(EchoServer::new(EchoService::new(me)));
    tokio::spawn(server.serve(listener, std::future::pending()));
    addr
}

/// Echoes once, routed by `key`.
async fn echo_by_key(channel: Channel, key: u64) -> Result<echo::EchoReply, svrkit::Status> {
    EchoClient::new(channel)
        .echo_with(
            EchoRequest {
                payload: b"x".to_vec().into(),
                delay_ms: 0,
            },
            CallOptions::new()
                .routing_key(key)
                .timeout(Duration::from_secs(5)),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_serves_its_keys_and_refuses_the_others() {
    let names: Vec<String> = vec!["shard-a".into(), "shard-b".into()];
    let a = shard("shard-a", &names).await;
    let b = shard("shard-b", &names).await;
    let view_a = Ownership::fixed("shard-a", names.clone());
    let mine = (0..1000u64)
        .find(|k| view_a.owns(*k).is_ok())
        .expect("a key of a");
    let theirs = (0..1000u64)
        .find(|k| view_a.owns(*k).is_err())
        .expect("a key of b");
    let call = |addr, key| echo_by_key(Channel::builder().max_attempts(1).lazy([addr]), key);
    call(a, mine).await.expect("a serves its own key");
    let refused = call(a, theirs).await.expect_err("a refuses b's key");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    assert!(
        refused.message().contains("belongs to shard-b"),
        "{refused}"
    );
    assert!(refused.is_not_processed(), "safe to send to the owner");
    call(b, theirs).await.expect("b serves it");
    // Without a routing key there is nothing to check.
    let client = EchoClient::new(Channel::lazy([a]));
    client
        .echo(EchoRequest {
            payload: b"x".to_vec().into(),
            delay_ms: 0,
        })
        .await
        .expect("unkeyed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_shard_map_a_missing_shards_keys_go_nowhere() {
    use std::sync::Arc;
    use svrkit::balance::Balance;
    use svrkit::config::ConfigStore;
    use svrkit::discovery::{EmbeddedRegistry, Instance, Registry, discover, shard_map};
    let dir = svrkit_testkit::tempdir("shard-map");
    let registry = Arc::new(EmbeddedRegistry::new(dir.path()));
    let names: Vec<String> = vec!["shard-a".into(), "shard-b".into()];
    // Only shard-a is alive (shard-b paused, say, and gone from the registry).
    let a = shard("shard-a", &names).await;
    let _registered = registry
        .register(Instance::new("svc", a).id("shard-a"))
        .await
        .expect("registered");
    let view = Ownership::fixed("shard-a", names.clone());
    let theirs = (0..1000u64)
        .find(|k| view.owns(*k).is_err())
        .expect("a key of b");
    let mine = (0..1000u64)
        .find(|k| view.owns(*k).is_ok())
        .expect("a key of a");
    let call = echo_by_key;
    let sharded = || Channel::builder().balance(Balance::Sharded);

    // Routed by live instances, b's key lands on a (whose fixed view refuses it here; a
    // server following live instances would have taken it).
    let live = discover(&*registry, "svc", sharded())
        .await
        .expect("channel");
    let landed = call(live, theirs).await.expect_err("refused by a");
    assert!(landed.message().contains("belongs to shard-b"), "{landed}");

    // With the map, the channel does not send it at all.
    shard_map::ensure(&*registry as &dyn ConfigStore, "svc", names.clone())
        .await
        .expect("map");
    let mapped = discover(&*registry, "svc", sharded())
        .await
        .expect("channel");
    shard_map::follow(
        Arc::clone(&registry) as Arc<dyn ConfigStore>,
        "svc",
        &mapped,
    )
    .await
    .expect("follows");
    let refused = call(mapped.clone(), theirs).await.expect_err("no shard-b");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    assert!(refused.is_not_processed(), "{refused}");
    assert!(
        refused.message().contains("shard-b has no live instance"),
        "{refused}"
    );
    call(mapped, mine).await.expect("a's keys are served");
}
