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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_sharing_one_etcd_never_see_each_other() {
    let etcd = Etcd::start().await;
    let wx = EtcdRegistry::new([etcd.endpoint()])
        .cluster("wx")
        .expect("a cluster name")
        .lease_ttl(2);
    let other = EtcdRegistry::new([etcd.endpoint()])
        .cluster("other")
        .expect("a cluster name")
        .lease_ttl(2);
    let plain = EtcdRegistry::new([etcd.endpoint()]).lease_ttl(2);
    let addr: std::net::SocketAddr = "127.0.0.1:7001".parse().expect("addr");
    let _a = wx
        .register(Instance::new("svc", addr).id("wx-1"))
        .await
        .expect("registered");
    let _b = other
        .register(Instance::new("svc", addr).id("other-1"))
        .await
        .expect("registered");
    let ids = |all: Vec<Instance>| all.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(ids(wx.all().await.expect("wx")), ["wx-1"]);
    assert_eq!(ids(other.all().await.expect("other")), ["other-1"]);
    assert!(ids(plain.all().await.expect("plain")).is_empty());
    let watched = wx.watch("svc").await.expect("watch");
    let seen: Vec<String> = watched.borrow().iter().map(|i| i.id.clone()).collect();
    assert_eq!(seen, ["wx-1"]);
    // Configuration documents too.
    svrkit::config::publish_stable(&wx, "svc", "for wx")
        .await
        .expect("published");
    let theirs = svrkit::config::ConfigStore::load(&other, "svc")
        .await
        .expect("loads");
    assert_eq!(theirs.stable_version, 0, "{theirs:?}");
    for bad in ["", "a/b", "services", &"x".repeat(65)] {
        assert!(
            EtcdRegistry::new([etcd.endpoint()]).cluster(bad).is_err(),
            "{bad:?}"
        );
    }
}

// Certificates are minted by the test (feature `mint`, on in the workspace build).
#[cfg(feature = "mint")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_mutual_tls_with_a_user_and_password() {
    use svrkit::discovery::EtcdTls;
    use svrkit::tls::mint::ClusterCa;
    let ca = ClusterCa::new("wx").expect("CA");
    let dir = svrkit_testkit::tempdir("etcd-tls");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let server = ca.issue("etcd").expect("server certificate");
    let (cert, key) = (
        write("etcd.crt", &server.cert_pem),
        write("etcd.key", &server.key_pem),
    );
    let ca_file = write("ca.crt", ca.cert_pem());
    let client = ca.issue("account").expect("client certificate");
    let tls = EtcdTls {
        ca_pem: ca.cert_pem().as_bytes().to_vec(),
        identity: Some((
            client.cert_pem.as_bytes().to_vec(),
            client.key_pem.as_bytes().to_vec(),
        )),
        // Cluster certificates name svrkit.cluster, not the address.
        server_name: Some(svrkit::tls::CLUSTER_SERVER_NAME.to_string()),
    };
    let etcd = Etcd::start_tls(cert, key, ca_file, tls.clone()).await;

    // Without TLS, or without a client certificate: nothing.
    let addr: std::net::SocketAddr = "127.0.0.1:7101".parse().expect("addr");
    let plain = EtcdRegistry::new([etcd.endpoint()]);
    assert!(plain.all().await.is_err(), "plain HTTP to a TLS etcd");
    let anonymous = EtcdRegistry::new([etcd.endpoint()]).tls(EtcdTls {
        identity: None,
        ..tls.clone()
    });
    assert!(anonymous.all().await.is_err(), "no client certificate");

    // With both: a registry like any other.
    let registry = EtcdRegistry::new([etcd.endpoint()])
        .tls(tls.clone())
        .lease_ttl(2);
    let _a = registry
        .register(Instance::new("svc", addr).id("tls-1"))
        .await
        .expect("registered over TLS");
    assert_eq!(registry.all().await.expect("read").len(), 1);

    // etcd authentication on: the right user gets in, a wrong password does not.
    let options = etcd_client::ConnectOptions::new().with_tls(
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(ca.cert_pem()))
            .identity(etcd_client::Identity::from_pem(
                &client.cert_pem,
                &client.key_pem,
            ))
            .domain_name(svrkit::tls::CLUSTER_SERVER_NAME),
    );
    let mut admin = etcd_client::Client::connect([etcd.endpoint()], Some(options))
        .await
        .expect("admin client");
    admin
        .user_add("root", "root password", None)
        .await
        .expect("user");
    admin.user_grant_role("root", "root").await.expect("role");
    admin.auth_enable().await.expect("auth on");
    let signed_in = EtcdRegistry::new([etcd.endpoint()])
        .tls(tls.clone())
        .user("root", "root password");
    assert_eq!(signed_in.all().await.expect("signed in").len(), 1);
    let wrong = EtcdRegistry::new([etcd.endpoint()])
        .tls(tls)
        .user("root", "a guess");
    assert!(wrong.all().await.is_err(), "a wrong password");
}

/// Of several endpoints, a registry uses one that answers: with the first member down
/// (its port refuses connections), registering, reading and watching go to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_does_not_answer_is_passed_over() {
    let etcd = Etcd::start().await;
    let (_held, dead) = svrkit_testkit::refusing_addr();
    let registry = EtcdRegistry::new([format!("http://{dead}"), etcd.endpoint()])
        .cluster("failover")
        .expect("a cluster name");
    let mut rx = registry.watch(SERVICE).await.expect("watch");
    let _kept = registry
        .register(instance("a", 1001))
        .await
        .expect("registered through the member that answers");
    until(&mut rx, |i| i.len() == 1).await;
    let all = registry.all().await.expect("read");
    assert_eq!(all.len(), 1, "{all:?}");
    // Every endpoint down: a clear error, not a hang.
    let (_held2, dead2) = svrkit_testkit::refusing_addr();
    let nowhere = EtcdRegistry::new([format!("http://{dead}"), format!("http://{dead2}")]);
    let refused = tokio::time::timeout(Duration::from_secs(10), nowhere.all())
        .await
        .expect("answers in time")
        .expect_err("no member answers");
    assert!(
        refused.to_string().contains("registry backend"),
        "{refused}"
    );
}
