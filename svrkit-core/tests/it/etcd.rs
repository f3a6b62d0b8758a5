//! Discovery against a real etcd server (Debian `etcd-server`), started on free loopback
//! ports with a temporary data directory and stopped afterwards.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{EchoProcess, start, until};
use echo::{EchoClient, EchoRequest, EchoServer, EchoService};
use svrkit::discovery::{EtcdRegistry, Instance, Registry, discover};
use svrkit::{Channel, Server};
use svrkit_testkit::Etcd;

const SERVICE: &str = "svrkit.demo.Echo";

fn instance(id: &str, port: u16) -> Instance {
    Instance::new(SERVICE, ([127, 0, 0, 1], port).into()).id(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_watch_deregister_and_lease_expiry() {
    let etcd = Etcd::start().await;
    let registry = EtcdRegistry::new([etcd.endpoint()]).lease_ttl(1);
    let mut rx = registry.watch(SERVICE).await.expect("watch");
    assert!(rx.borrow().is_empty());
    let a = registry
        .register(instance("a", 1001))
        .await
        .expect("register a");
    let b = registry
        .register(instance("b", 1002).version(svrkit::selector::Track::Gray))
        .await
        .expect("register b");
    until(&mut rx, |i| i.len() == 2).await;
    assert!(
        rx.borrow()
            .iter()
            .any(|i| i.id == "b" && i.version.is_gray())
    );

    a.deregister().await.expect("deregister");
    until(&mut rx, |i| i.len() == 1 && i[0].id == "b").await;

    // The keep-alive holds b past several lease lifetimes...
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(rx.borrow().len(), 1, "keep-alive holds the lease");
    // ...until b "crashes": no deregistration, no keep-alive, the lease expires.
    drop(b);
    until(&mut rx, <[Instance]>::is_empty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_registers_again_after_etcd_loses_everything() {
    let mut etcd = Etcd::start().await;
    let registry = EtcdRegistry::new([etcd.endpoint()]).lease_ttl(1);
    let _a = registry
        .register(instance("a", 1001))
        .await
        .expect("register");
    let mut rx = registry.watch(SERVICE).await.expect("watch");
    until(&mut rx, |i| i.len() == 1).await;

    etcd.restart_empty().await;
    // A fresh watcher on the empty etcd sees the record come back.
    let mut fresh = registry.watch(SERVICE).await.expect("watch after restart");
    until(&mut fresh, |i| i.len() == 1 && i[0].id == "a").await;
    // The old watcher resynchronised too.
    until(&mut rx, |i| i.len() == 1 && i[0].id == "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_keep_serving_from_the_last_known_instances_while_etcd_is_down() {
    let mut etcd = Etcd::start().await;
    let registry: Arc<dyn Registry> = Arc::new(EtcdRegistry::new([etcd.endpoint()]).lease_ttl(2));
    let server = start(
        Server::builder()
            .register(
                Arc::clone(&registry),
                Instance::new(SERVICE, "127.0.0.1:0".parse().expect("addr")).id("s"),
            )
            .add_service(EchoServer::new(EchoService::new("s"))),
    )
    .await;
    let mut rx = registry.watch(SERVICE).await.expect("watch");
    until(&mut rx, |i| i.len() == 1).await;
    let client = EchoClient::new(
        discover(&*registry, SERVICE, Channel::builder())
            .await
            .expect("discover"),
    );
    let call = || {
        client.echo(EchoRequest {
            payload: b"x".to_vec().into(),
            delay_ms: 0,
        })
    };
    call().await.expect("with etcd up");

    etcd.stop();
    for _ in 0..20 {
        call()
            .await
            .expect("etcd down: the last known instances still serve");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gray_release_config_through_etcd() {
    let etcd = Etcd::start().await;
    common::gray_release_scenario(Arc::new(EtcdRegistry::new([etcd.endpoint()]))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_of_a_killed_instance_expires() {
    let etcd = Etcd::start().await;
    let registry = EtcdRegistry::new([etcd.endpoint()]);
    let mut rx = registry.watch(SERVICE).await.expect("watch");
    let endpoint = etcd.endpoint();
    let mut process = EchoProcess::spawn(&[
        "--etcd".as_ref(),
        endpoint.as_ref(),
        "--instance-id".as_ref(),
        "doomed".as_ref(),
    ]);
    until(&mut rx, |i| i.iter().any(|i| i.id == "doomed")).await;
    process.kill_9();
    // No deregistration happened: the record goes when its lease (3 s) expires.
    until(&mut rx, |i| !i.iter().any(|i| i.id == "doomed")).await;
}
