//! The backend over three hosts: three network namespaces joined by a bridge
//! ([`svrkit_testkit::netns`]), a three-member etcd cluster over TLS (one member per
//! host), every service placed on all three by the manifest's `[[host]]`s and started by
//! `svrkit up --host NAME` on each host, each store shard's three replicas on three hosts.
//! The test's client is a fourth host. A scripted session crosses hosts; then, under a
//! message and Moments write load, one host is cut off (its link down) and brought back,
//! and an etcd member is killed: nothing acknowledged is lost, and the time until every
//! writer is answered again is printed.
//!
//! Needs root for `ip netns`: skipped with a message without it, failed under CI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use svrkit_testkit::netns::Hosts;
use wx_client::Http;

/// The hosts that run the backend; `client` runs the test's requests.
const HOSTS: [&str; 3] = ["a", "b", "c"];
/// How long one request may take before the client tries another gateway.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The bound on waiting for the cluster to answer again (what is measured is printed).
const RECOVERY_BOUND: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery";

/// The three hosts, their etcd members and their `svrkit up` supervisors; all stopped
/// and removed when dropped (logs kept when the test fails).
struct Cluster {
    dir: tempfile::TempDir,
    svrkit: PathBuf,
    manifest: PathBuf,
    etcd: std::sync::Mutex<Vec<Option<Child>>>,
    /// access-short of each host.
    gateways: Vec<SocketAddr>,
    /// Declared last: the namespaces go after everything in them stopped.
    hosts: Hosts,
}

impl Cluster {
    fn tls(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    fn state(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("state-{host}"))
    }

    /// Runs `svrkit ARGS` on `host`; its stdout.
    fn svrkit_on(&self, host: &str, args: &[&str]) -> String {
        let out = self
            .hosts
            .command(host, &self.svrkit)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("svrkit runs");
        assert!(
            out.status.success(),
            "svrkit {args:?} on {host}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts (or restarts) host `i`'s etcd member.
    fn start_etcd(&self, i: usize, state: &str) {
        let name = HOSTS[i];
        let ip = self.hosts.address(i);
        let peers: Vec<String> = (0..HOSTS.len())
            .map(|k| format!("e-{}=https://{}:2380", HOSTS[k], self.hosts.address(k)))
            .collect();
        let tls = self.tls();
        let file = |f: &str| tls.join(f).display().to_string();
        let log = std::fs::File::create(self.dir.path().join(format!("etcd-{name}.log")))
            .expect("etcd log");
        let child = self
            .hosts
            .command(name, "etcd")
            .args(["--name", &format!("e-{name}")])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("etcd-{name}")))
            .args(["--listen-client-urls", &format!("https://{ip}:2379")])
            .args(["--advertise-client-urls", &format!("https://{ip}:2379")])
            .args(["--listen-peer-urls", &format!("https://{ip}:2380")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("https://{ip}:2380"),
            ])
            .args(["--initial-cluster", &peers.join(",")])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "svrkit-hosts"])
            .args(["--cert-file", &file(&format!("etcd-{name}.crt"))])
            .args(["--key-file", &file(&format!("etcd-{name}.key"))])
            .args(["--trusted-ca-file", &file("ca.crt"), "--client-cert-auth"])
            .args(["--peer-cert-file", &file(&format!("etcd-{name}.crt"))])
            .args(["--peer-key-file", &file(&format!("etcd-{name}.key"))])
            .args(["--peer-trusted-ca-file", &file("ca.crt")])
            .arg("--peer-client-cert-auth")
            // A member cut off and back does not depose the leader with the terms it
            // counted up alone (etcd 3.4 leaves pre-vote off; 3.5 turns it on).
            .arg("--pre-vote")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts (tools/test installs etcd-server)");
        self.etcd.lock().expect("etcd children")[i] = Some(child);
    }

    fn kill_etcd(&self, i: usize) {
        let child = self.etcd.lock().expect("etcd children")[i].take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The instances `svrkit ps --json` shows on `host` (its own and, from etcd, the
    /// other hosts').
    fn ps(&self, host: &str) -> Vec<Value> {
        let state = self.state(host).display().to_string();
        self.svrkit_on(host, &["ps", "--state-dir", &state, "--json"])
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for host in HOSTS {
            let state = self.state(host).display().to_string();
            let _ = self
                .hosts
                .command(host, &self.svrkit)
                .args(["down", "--state-dir", &state])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for i in 0..HOSTS.len() {
            self.kill_etcd(i);
        }
        if std::thread::panicking() || std::env::var_os("SVRKIT_KEEP_HOSTS").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "the hosts' states and logs are kept in {}",
                self.dir.path().display()
            );
        }
    }
}

/// The backend's manifest (`services/svrkit.toml`) over hosts a, b and c: every service
/// with an instance on each, prebuilt binaries, etcd over TLS.
fn manifest(dir: &Path, hosts: &Hosts, tls: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../svrkit.toml");
    let text = std::fs::read_to_string(&path).expect("services/svrkit.toml");
    let mut manifest: toml::Table = toml::from_str(&text).expect("the manifest parses");
    let endpoints: Vec<String> = (0..HOSTS.len())
        .map(|i| format!("https://{}:2379", hosts.address(i)))
        .collect();
    let file = |f: &str| tls.join(f).display().to_string();
    manifest.insert(
        "registry".into(),
        toml::Value::try_from(json!({
            "kind": "etcd",
            "endpoints": endpoints,
            "ca": file("ca.crt"),
            "cert": file("etcd-client.crt"),
            "key": file("etcd-client.key"),
        }))
        .expect("TOML"),
    );
    manifest.insert(
        "tls".into(),
        toml::Value::try_from(json!({ "cluster": "wx", "ca_dir": tls.display().to_string() }))
            .expect("TOML"),
    );
    let host_table: Vec<Value> = HOSTS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({ "name": name, "address": hosts.address(i).to_string(), "zone": format!("zone-{name}") })
        })
        .collect();
    manifest.insert(
        "host".into(),
        toml::Value::try_from(host_table).expect("TOML"),
    );
    let services = manifest
        .get_mut("service")
        .and_then(toml::Value::as_array_mut)
        .expect("services");
    for service in services.iter_mut() {
        let table = service.as_table_mut().expect("a service table");
        let name = table["name"].as_str().expect("name").to_string();
        let bin = table
            .get("bin")
            .or_else(|| table.get("package"))
            .and_then(toml::Value::as_str)
            .unwrap_or(&name)
            .to_string();
        let binary = svrkit_testkit::workspace_binary(&bin);
        table.insert("binary".into(), binary.display().to_string().into());
        table.insert("instances".into(), 3.into());
        let mut env = toml::Table::new();
        env.insert("WX_RATE_PER_SEC".into(), "500".into());
        env.insert("WX_RATE_BURST".into(), "1000".into());
        env.insert("RUST_LOG".into(), "info,openraft=warn".into());
        table.insert("env".into(), env.into());
    }
    let out = dir.join("svrkit.toml");
    let text = toml::to_string(&manifest).expect("TOML");
    std::fs::write(&out, &text).expect("manifest written");
    out.display().to_string()
}

/// Makes the hosts, the etcd cluster and the backend, ready to serve.
fn start() -> Option<Cluster> {
    if let Some(why) = Hosts::unavailable() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the three-host test must run under CI: {why}"
        );
        eprintln!("skipped: {why}");
        return None;
    }
    let hosts = Hosts::create(&["a", "b", "c", "client"]);
    let dir = svrkit_testkit::tempdir("hosts");
    let svrkit = svrkit_testkit::workspace_binary("svrkit");
    let tls = dir.path().join("tls");
    let mut cluster = Cluster {
        svrkit: svrkit.clone(),
        manifest: PathBuf::new(),
        etcd: std::sync::Mutex::new((0..HOSTS.len()).map(|_| None).collect()),
        gateways: Vec::new(),
        hosts,
        dir,
    };
    // `svrkit certs`: the cluster CA, each etcd member's certificate (its address as a
    // name) and the services' etcd client certificate.
    let tls_arg = tls.display().to_string();
    for (i, host) in HOSTS.iter().enumerate() {
        let ip = cluster.hosts.address(i).to_string();
        let name = format!("etcd-{host}");
        let args = [
            "certs",
            &name,
            "--service",
            "etcd",
            "--host",
            &ip,
            "--dir",
            &tls_arg,
            "--cluster",
            "wx",
        ];
        let out = Command::new(&svrkit)
            .args(args)
            .output()
            .expect("svrkit certs");
        assert!(out.status.success(), "{out:?}");
    }
    let out = Command::new(&svrkit)
        .args(["certs", "etcd-client", "--dir", &tls_arg, "--cluster", "wx"])
        .output()
        .expect("svrkit certs");
    assert!(out.status.success(), "{out:?}");
    for i in 0..HOSTS.len() {
        cluster.start_etcd(i, "new");
    }
    cluster.manifest = PathBuf::from(manifest(cluster.dir.path(), &cluster.hosts, &tls));
    // `svrkit up --host` on the three hosts at once, as three operators would.
    std::thread::scope(|s| {
        for host in HOSTS {
            let cluster = &cluster;
            s.spawn(move || {
                let manifest = cluster.manifest.display().to_string();
                let state = cluster.state(host).display().to_string();
                cluster.svrkit_on(
                    host,
                    &[
                        "up",
                        &manifest,
                        "--host",
                        host,
                        "--state-dir",
                        &state,
                        "--detach",
                    ],
                );
            });
        }
    });
    // Each host's access-short, from `svrkit ps` on host a (which shows all three).
    let instances = cluster.ps("a");
    assert_eq!(
        instances.len(),
        42,
        "host a's ps shows the whole cluster: {instances:#?}"
    );
    let elsewhere = instances
        .iter()
        .filter(|v| v["status"] == "elsewhere")
        .count();
    assert_eq!(elsewhere, 28, "two thirds run on the other hosts");
    for (i, host) in HOSTS.iter().enumerate() {
        let local = cluster.ps(host);
        let gateway = local
            .iter()
            .find(|v| v["service"] == "access-short" && v["status"] != "elsewhere")
            .and_then(|v| v["endpoints"]["http"].as_str())
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("host {host} runs access-short: {local:#?}"));
        assert_eq!(gateway.ip(), cluster.hosts.address(i), "bound on its host");
        cluster.gateways.push(gateway);
    }
    Some(cluster)
}

/// Calls `action` through `gateway`, bounded by [`CALL_TIMEOUT`]: the answer, or `None`
/// when nothing answered.
async fn try_call(
    gateway: SocketAddr,
    action: &str,
    body: &Value,
    token: Option<&str>,
) -> Option<wx_client::Answer> {
    tokio::time::timeout(CALL_TIMEOUT, Http::new(gateway).call(action, body, token))
        .await
        .ok()
        .and_then(Result::ok)
}

/// Calls `action` until it succeeds, through each gateway in turn (bounded by
/// [`RECOVERY_BOUND`]).
async fn call(gateways: &[SocketAddr], action: &str, body: Value, token: Option<&str>) -> Value {
    let deadline = Instant::now() + RECOVERY_BOUND;
    let mut k = 0;
    loop {
        let gateway = gateways[k % gateways.len()];
        k += 1;
        let last = match try_call(gateway, action, &body, token).await {
            Some(answer) if answer.ok() => return answer.body,
            Some(answer) => format!("{} {}", answer.status, answer.body),
            None => format!("{gateway}: no answer"),
        };
        assert!(Instant::now() < deadline, "{action} {body}: {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A signed-in user.
struct User {
    uid: u64,
    token: String,
}

async fn user(gateways: &[SocketAddr], name: &str) -> User {
    let reply = call(
        gateways,
        "register",
        json!({ "name": name, "password": PASSWORD, "nickname": name }),
        None,
    )
    .await;
    let uid = reply["uid"].as_u64().expect("uid");
    let session = call(
        gateways,
        "login",
        json!({ "name": name, "password": PASSWORD }),
        None,
    )
    .await;
    let token = session["token"].as_str().expect("token").to_string();
    User { uid, token }
}

/// `one` asks `other` to be friends through `ask`, and `other` accepts through `accept`.
async fn befriend(ask: &[SocketAddr], accept: &[SocketAddr], one: &User, other: &User) {
    call(
        ask,
        "friends.request",
        json!({ "peer": other.uid, "greeting": "hi" }),
        Some(&one.token),
    )
    .await;
    call(
        accept,
        "friends.accept",
        json!({ "peer": one.uid }),
        Some(&other.token),
    )
    .await;
}

/// Every message in `user`'s mailbox, synced from scratch on a new device.
async fn mailbox(gateways: &[SocketAddr], user: &User) -> Vec<Value> {
    let device = format!("check-{:x}", svrkit::context::random_u64());
    let mut key = String::new();
    let mut messages = Vec::new();
    for _ in 0..1000 {
        let reply = call(
            gateways,
            "sync",
            json!({ "sync_key": key, "device": device }),
            Some(&user.token),
        )
        .await;
        messages.extend(reply["messages"].as_array().cloned().unwrap_or_default());
        key = reply["sync_key"].as_str().expect("a key").to_string();
        if reply["has_more"] != true {
            return messages;
        }
    }
    panic!("sync never finished");
}

/// Every post seq in `author`'s album as `viewer` sees it.
async fn album(gateways: &[SocketAddr], author: &User, viewer: &User) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut body = json!({ "author": author.uid, "limit": 50 });
    for _ in 0..100 {
        let page = call(gateways, "moments.album", body.clone(), Some(&viewer.token)).await;
        seqs.extend(
            page["posts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["seq"].as_u64()),
        );
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => body["cursor"] = json!(c),
            _ => return seqs,
        }
    }
    seqs
}

/// Waits until `check` holds (bounded by [`RECOVERY_BOUND`]).
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + RECOVERY_BOUND;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Register, befriend, message, group and Moments, each step through another host's
/// gateway than the one before.
async fn scripted_session(gw: &[SocketAddr]) {
    let on = |i: usize| &gw[i % gw.len()..=i % gw.len()];
    let tag = format!("{:x}", svrkit::context::random_u64() & 0xffffff);
    let alice = user(on(0), &format!("alice_{tag}")).await;
    let bob = user(on(1), &format!("bob_{tag}")).await;
    let carol = user(on(2), &format!("carol_{tag}")).await;
    befriend(on(0), on(1), &alice, &bob).await;
    befriend(on(2), on(0), &alice, &carol).await;
    call(
        on(0),
        "message.send",
        json!({ "to": bob.uid, "text": "across hosts" }),
        Some(&alice.token),
    )
    .await;
    until("bob reads alice's message on host c", || async {
        mailbox(on(2), &bob)
            .await
            .iter()
            .any(|m| m["text"] == "across hosts")
    })
    .await;
    let group = call(
        on(1),
        "group.create",
        json!({ "name": "hosts", "members": [bob.uid, carol.uid] }),
        Some(&alice.token),
    )
    .await;
    let group_id = group["group"]["group_id"].as_u64().expect("a group id");
    call(
        on(2),
        "group.send",
        json!({ "group_id": group_id, "text": "to all hosts" }),
        Some(&alice.token),
    )
    .await;
    for (i, member) in [&alice, &bob, &carol].into_iter().enumerate() {
        until("every member gets the group message once", || async {
            let got = mailbox(on(i), member).await;
            got.iter()
                .filter(|m| m["group_id"] == group_id && m["text"] == "to all hosts")
                .count()
                == 1
        })
        .await;
    }
    let post = call(
        on(0),
        "moments.post",
        json!({ "text": "from host a" }),
        Some(&alice.token),
    )
    .await;
    let seq = post["seq"].as_u64().expect("a post seq");
    until(
        "bob sees alice's post on his timeline on host b",
        || async {
            let page = call(
                on(1),
                "moments.timeline",
                json!({ "limit": 20 }),
                Some(&bob.token),
            )
            .await;
            page["posts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["seq"] == seq && p["author"] == alice.uid)
        },
    )
    .await;
    assert!(
        album(on(2), &alice, &carol).await.contains(&seq),
        "carol sees it in alice's album on host c"
    );
}

/// What one writer had acknowledged.
#[derive(Default)]
struct Acked {
    messages: Vec<String>,
    posts: Vec<u64>,
}

/// When each writer's acknowledgements came (from the start of the load).
type Times = std::sync::Arc<std::sync::Mutex<Vec<Duration>>>;

/// One writer: a message to its reader and a Moments post per round, each through the
/// next gateway that answers, until `stop`.
async fn writer(
    gw: Vec<SocketAddr>,
    me: User,
    reader_uid: u64,
    index: usize,
    started: Instant,
    times: Times,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Acked {
    let mut acked = Acked::default();
    let mut k = index;
    for round in 0.. {
        if *stop.borrow() {
            break;
        }
        let id = format!("w{index}-{round}");
        let send = json!({ "to": reader_uid, "text": id, "client_msg_id": id });
        let post = json!({ "text": format!("{id} post") });
        for (action, body) in [("message.send", &send), ("moments.post", &post)] {
            // Until this write is definite (acknowledged) or the load stops; an answer
            // that is no acknowledgement is retried with the same ids.
            loop {
                // A client stays with its gateway until it stops answering.
                let answer = try_call(gw[k % gw.len()], action, body, Some(&me.token)).await;
                match &answer {
                    None => {
                        eprintln!(
                            "{:?} w{index} {action}: gateway {} silent",
                            started.elapsed(),
                            k % gw.len()
                        );
                        k += 1
                    }
                    Some(a) if !a.ok() => eprintln!(
                        "{:?} w{index} {action}: {} {}",
                        started.elapsed(),
                        a.status,
                        a.body
                    ),
                    Some(_) => {}
                }
                if let Some(answer) = answer.filter(wx_client::Answer::ok) {
                    times.lock().expect("times").push(started.elapsed());
                    if action == "message.send" {
                        acked.messages.push(id.clone());
                    } else {
                        acked
                            .posts
                            .push(answer.body["seq"].as_u64().expect("a post seq"));
                    }
                    break;
                }
                if *stop.borrow() {
                    return acked;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    acked
}

/// The time from `since` until every writer had an acknowledgement again, once all had.
fn answered_again(times: &[Times], since: Duration) -> Option<Duration> {
    let mut gap = Duration::ZERO;
    for t in times {
        let first = t
            .lock()
            .expect("times")
            .iter()
            .find(|t| **t >= since)
            .copied()?;
        gap = gap.max(first - since);
    }
    Some(gap)
}

/// Waits until every writer had an acknowledgement after `since`; how long after it.
async fn until_answered(times: &[Times], since: Duration, what: &str) -> Duration {
    let deadline = Instant::now() + RECOVERY_BOUND;
    loop {
        if let Some(gap) = answered_again(times, since) {
            return gap;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not every writer answered again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each shard's replicas' `/status` rows, per store service: `(host, row)`.
async fn replica_rows(stores: &[(String, String, SocketAddr)]) -> Vec<(String, String, Value)> {
    let mut rows = Vec::new();
    for (host, service, admin) in stores {
        let get = svrkit_testkit::http_get(*admin, "/status");
        if let Ok((200, body)) = tokio::time::timeout(CALL_TIMEOUT, get).await
            && let Ok(status) = serde_json::from_str::<Value>(&body)
        {
            for shard in status["shards"].as_array().into_iter().flatten() {
                rows.push((host.clone(), service.clone(), shard.clone()));
            }
        }
    }
    rows
}

/// Whether host `host`'s replica of every shard has applied what the most advanced
/// replica of that shard has.
async fn caught_up(stores: &[(String, String, SocketAddr)], host: &str) -> bool {
    let rows = replica_rows(stores).await;
    let mine: Vec<_> = rows.iter().filter(|(h, _, _)| h == host).collect();
    !mine.is_empty()
        && mine.iter().all(|(_, service, row)| {
            let best = rows
                .iter()
                .filter(|(_, s, r)| s == service && r["shard"] == row["shard"])
                .filter_map(|(_, _, r)| r["applied"].as_u64())
                .max();
            row["applied"].as_u64().is_some() && row["applied"].as_u64() == best
        })
}

/// Write load with two faults: host c cut off then brought back, then host a's etcd
/// member killed and restarted. Returns how long after each every writer was answered
/// again.
async fn load_with_faults(
    cluster: &Cluster,
    stores: &[(String, String, SocketAddr)],
) -> (Duration, Duration) {
    let gw = cluster.gateways.clone();
    let tag = format!("{:x}", svrkit::context::random_u64() & 0xffffff);
    let mut pairs = Vec::new();
    for i in 0..6 {
        let w = user(&gw, &format!("w{i}_{tag}")).await;
        let r = user(&gw, &format!("r{i}_{tag}")).await;
        befriend(&gw, &gw, &w, &r).await;
        pairs.push((w, r));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let times: Vec<Times> = pairs.iter().map(|_| Times::default()).collect();
    let tasks: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(i, (w, r))| {
            let me = User {
                uid: w.uid,
                token: w.token.clone(),
            };
            tokio::spawn(writer(
                gw.clone(),
                me,
                r.uid,
                i,
                started,
                times[i].clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    // The load runs a while, then host c is cut off.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cut = started.elapsed();
    cluster.hosts.cut("c");
    eprintln!(
        "{cut:?} host c cut off at {:?}",
        std::time::SystemTime::now()
    );
    let cut_after = until_answered(&times, cut, "after host c was cut off").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.hosts.heal("c");
    let healed = started.elapsed();
    until_answered(&times, healed, "after host c came back").await;
    // Host c's gateway serves again, and its replicas catch up once the load stops.
    let back = [gw[2]];
    let newcomer = user(&back, &format!("back_{tag}")).await;
    assert!(newcomer.uid > 0);
    // An etcd member killed under load: the others keep the registry (and every lease).
    let killed = started.elapsed();
    cluster.kill_etcd(0);
    let etcd_after = until_answered(&times, killed, "after an etcd member was killed").await;
    // Well past the registry's lease (3 s): registrations were kept alive through the
    // other members.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let still = started.elapsed();
    until_answered(&times, still, "long after the etcd member was killed").await;
    let registered = cluster.ps("b").len();
    assert_eq!(
        registered, 42,
        "every instance stays registered without etcd member a"
    );
    cluster.start_etcd(0, "existing");
    stop_tx.send(true).expect("writers listen");
    let mut acked = Vec::new();
    for task in tasks {
        acked.push(task.await.expect("a writer"));
    }
    until("host c's replicas catch up", || caught_up(stores, "c")).await;
    // Nothing acknowledged was lost: every message once, in order; every post in its
    // author's album.
    for (i, ((w, r), a)) in pairs.iter().zip(&acked).enumerate() {
        assert!(
            a.messages.len() >= 5 && a.posts.len() >= 5,
            "writer {i} wrote: {} messages, {} posts",
            a.messages.len(),
            a.posts.len()
        );
        let got = mailbox(&gw, r).await;
        let texts: Vec<&str> = got
            .iter()
            .filter_map(|m| m["text"].as_str())
            .filter(|t| t.starts_with(&format!("w{i}-")))
            .collect();
        for id in &a.messages {
            assert_eq!(
                texts.iter().filter(|t| **t == id.as_str()).count(),
                1,
                "acknowledged message {id} is in the mailbox once ({} messages)",
                texts.len()
            );
        }
        let seqs = album(&gw, w, r).await;
        for seq in &a.posts {
            assert!(
                seqs.contains(seq),
                "acknowledged post {seq} of writer {i} is in the album"
            );
        }
    }
    (cut_after, etcd_after)
}

#[test]
fn the_backend_spread_over_three_hosts_survives_losing_one_and_an_etcd_member() {
    let Some(cluster) = start() else { return };
    // Every store's admin endpoint, by host (from `svrkit ps` on each host).
    let mut stores = Vec::new();
    for host in HOSTS {
        for v in cluster.ps(host) {
            let service = v["service"].as_str().unwrap_or_default().to_string();
            if v["status"] != "elsewhere"
                && service.ends_with("store")
                && let Some(admin) = v["admin"].as_str().and_then(|a| a.parse().ok())
            {
                stores.push((host.to_string(), service, admin));
            }
        }
    }
    assert_eq!(stores.len(), 18, "a replica of every store on every host");
    // The client is a host of its own: every request crosses the bridge.
    let (cut_after, etcd_after) = std::thread::scope(|s| {
        s.spawn(|| {
            cluster.hosts.enter("client");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                scripted_session(&cluster.gateways).await;
                load_with_faults(&cluster, &stores).await
            })
        })
        .join()
        .expect("the client thread")
    });
    eprintln!(
        "answered again {:.2} s after host c was cut off, {:.2} s after an etcd member was killed",
        cut_after.as_secs_f64(),
        etcd_after.as_secs_f64()
    );
}
