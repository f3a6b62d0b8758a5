//! `svrkit console` and the admin page in a real headless Chromium: the console lists
//! every registered instance (stable and gray) with its health, and shows DAGOR's level
//! rising on the one instance that is overloaded; the instance's own admin page shows
//! its methods. With etcd as the registry, the console lists etcd's instances.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use echo::{EchoClient, EchoRequest, EchoServer, EchoService};
use svrkit::admin::{AdminServer, InstanceInfo};
use svrkit::discovery::{EmbeddedRegistry, EtcdRegistry, Instance, Registry};
use svrkit::overload::DagorConfig;
use svrkit::{CallOptions, Channel, Server};
use svrkit_testkit::browser::{
    Browser, Client, Locator, click, screenshot, wait_for, wait_for_text,
};
use svrkit_testkit::{Etcd, PATIENCE, tempdir};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An echo instance with an admin endpoint, registered in `registry`.
struct Echo {
    addr: SocketAddr,
    admin: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn echo(registry: Arc<dyn Registry>, id: &str, version: &str, overloadable: bool) -> Echo {
    echo_relaying(registry, id, version, overloadable, None).await
}

/// [`echo`], whose `Relay` calls the echo at `next`.
async fn echo_relaying(
    registry: Arc<dyn Registry>,
    id: &str,
    version: &str,
    overloadable: bool,
    next: Option<SocketAddr>,
) -> Echo {
    let rpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = rpc.local_addr().expect("addr");
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = admin_listener.local_addr().expect("addr");
    let mut builder = Server::builder();
    if overloadable {
        // One handler at a time and short windows: a burst of slow calls queues, and
        // DAGOR sees the queuing within a window or two.
        builder = builder.max_concurrency(1).admission(DagorConfig {
            window: Duration::from_millis(200),
            window_requests: 20,
            ..DagorConfig::default()
        });
    }
    let server = builder
        .register(
            registry,
            Instance::new("svrkit.demo.Echo", addr)
                .id(id)
                .version(version.parse().expect("track"))
                .admin(admin),
        )
        .add_service(EchoServer::new(match next {
            Some(next) => {
                EchoService::new(id).with_next_hop(EchoClient::new(Channel::lazy([next])))
            }
            None => EchoService::new(id),
        }));
    let page = AdminServer::new(
        InstanceInfo::new("svrkit.demo.Echo")
            .instance_id(id)
            .version_label(version.parse().expect("track")),
    )
    .expect("admin")
    .attach(server.stats());
    let (stop, stopped) = oneshot::channel::<()>();
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    tokio::spawn(page.serve(admin_listener, async {
        let _ = admin_stopped.await;
    }));
    tokio::spawn(server.serve(rpc, async move {
        let _ = stopped.await;
        let _ = stop_admin.send(());
    }));
    Echo {
        addr,
        admin,
        _stop: stop,
    }
}

/// `svrkit console ARGS --listen 127.0.0.1:0`, and the address it says it serves on.
async fn console(args: &[&str]) -> (tokio::process::Child, SocketAddr) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_svrkit"))
        .arg("console")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("svrkit console starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("the console says where it listens")
        .expect("read");
    let addr = line
        .trim()
        .strip_prefix("console on http://")
        .and_then(|rest| rest.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, addr)
}

/// The console's `/api/cluster` document.
async fn cluster(addr: SocketAddr) -> serde_json::Value {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /api/cluster HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"))
}

/// Waits until the console row of `id` has a DAGOR level, and returns it.
async fn wait_for_level(page: &Client, id: &str) -> String {
    let css = format!("tr[data-instance=\"{id}\"]");
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        if let Ok(row) = page.find(Locator::Css(&css)).await
            && let Ok(Some(level)) = row.attr("data-level").await
            && level != "none"
        {
            return level;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never showed a DAGOR level"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lists_every_instance_and_shows_overload_in_a_real_browser() {
    let Some(mut browser) = Browser::start("console").await else {
        return;
    };
    let dir_dir = tempdir("console");
    let dir = dir_dir.path();
    let registry: Arc<dyn Registry> = Arc::new(EmbeddedRegistry::new(dir.join("registry")));
    let busy = echo(Arc::clone(&registry), "echo-busy", "stable", true).await;
    let calm = echo(Arc::clone(&registry), "echo-calm", "stable", false).await;
    let _gray = echo(Arc::clone(&registry), "echo-gray", "gray", false).await;
    // A front instance relaying to echo-calm: its traces cross two processes.
    let front = echo_relaying(
        Arc::clone(&registry),
        "echo-front",
        "stable",
        false,
        Some(calm.addr),
    )
    .await;
    let registry_dir = dir.join("registry").display().to_string();
    let (_console, addr) = console(&["--registry-dir", &registry_dir]).await;

    let page = browser.session(1280, 720).await;
    page.goto(&format!("http://{addr}/"))
        .await
        .expect("open the console");
    for id in ["echo-busy", "echo-calm", "echo-gray"] {
        wait_for_text(&page, &format!("tr[data-instance=\"{id}\"]"), "ready").await;
    }
    wait_for_text(&page, "tr[data-service=\"svrkit.demo.Echo\"]", "4/4 ready").await;
    wait_for_text(&page, "tr[data-instance=\"echo-gray\"]", "gray").await;
    wait_for_text(&page, "tr[data-instance=\"echo-busy\"]", "admits all").await;

    // Overload one instance: many callers of a slow method against one handler slot.
    let stop = Arc::new(AtomicBool::new(false));
    let client = EchoClient::new(Channel::lazy([busy.addr]));
    let mut load = Vec::new();
    for _ in 0..32 {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let call = client.echo_with(
                    EchoRequest {
                        payload: b"x".to_vec().into(),
                        delay_ms: 20,
                    },
                    CallOptions::new()
                        .priority(50)
                        .timeout(Duration::from_secs(5)),
                );
                if call.await.is_err() {
                    // Shed (here or by the client, which learned the level): try again
                    // a little later.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    let level = wait_for_level(&page, "echo-busy").await;
    assert!(level.contains(':'), "business:user level, got {level}");
    assert!(
        page.find(Locator::Css(
            "tr[data-instance=\"echo-calm\"][data-level=\"none\"]"
        ))
        .await
        .is_ok(),
        "only the overloaded instance sheds"
    );
    wait_for_text(
        &page,
        "tr[data-instance=\"echo-busy\"] td:nth-child(5)",
        "%",
    )
    .await;
    screenshot(&page, "console").await;

    // A relayed call in a sampled trace (one in 64 is; this one is chosen so), recorded by
    // both processes it passes: the console draws it from both.
    let trace_id: u64 = 64 * 0x0abc_def1;
    let relayed = EchoClient::new(Channel::lazy([front.addr]));
    svrkit::Context::new()
        .with_trace_id(trace_id)
        .scope(relayed.relay(EchoRequest {
            payload: b"traced".to_vec().into(),
            delay_ms: 2,
        }))
        .await
        .expect("relay");
    click(&page, "tr[data-instance=\"echo-front\"]").await;
    wait_for_text(&page, "#detail-title", "echo-front").await;
    let hex = format!("{trace_id:016x}");
    let link = format!("#detail-recent tr[data-trace=\"{hex}\"] a.trace");
    wait_for(&page, &link).await;
    click(&page, &link).await;
    let waterfall = wait_for_text(&page, "#trace", "@ echo-calm").await;
    assert!(
        waterfall.contains("svrkit.demo.Echo/Relay @ echo-front")
            && waterfall.contains("svrkit.demo.Echo/Echo @ echo-calm"),
        "both hops of the trace: {waterfall}"
    );
    // The charts: a point every 5 s, kept in the instance; hovering shows the values.
    // Three points make a line worth a screenshot.
    wait_for(
        &page,
        "#detail-charts figure[data-chart=\"svrkit.demo.Echo/Relay · calls/s\"]",
    )
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        let points = page
            .find(Locator::Css("#detail-charts"))
            .await
            .expect("charts")
            .attr("data-points")
            .await
            .ok()
            .flatten()
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(0);
        if points >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the charts never had three points"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tip = page
        .execute(
            "const svg = document.querySelector('#detail-charts figure svg');\
             const r = svg.getBoundingClientRect();\
             svg.dispatchEvent(new MouseEvent('mousemove', {clientX: r.right - 8, clientY: r.top + 20}));\
             return svg.parentElement.querySelector('.tip').textContent;",
            Vec::new(),
        )
        .await
        .expect("hover");
    assert!(
        tip.as_str().is_some_and(|t| t.contains("requests")),
        "hovering a chart shows its values: {tip}"
    );
    screenshot(&page, "console-charts").await;
    page.execute(
        "document.querySelector('#trace').scrollIntoView();",
        Vec::new(),
    )
    .await
    .expect("scroll");
    screenshot(&page, "console-trace").await;

    // The busy instance's own admin page shows its methods and DAGOR's state.
    page.goto(&format!("http://{}/", busy.admin))
        .await
        .expect("open the admin page");
    wait_for_text(&page, "#methods", "svrkit.demo.Echo/Echo").await;
    wait_for_text(&page, "#title", "echo-busy").await;
    // Rates need two polls.
    wait_for_text(&page, "#methods tbody td:nth-child(2)", ".").await;
    // Its charts and its slowest calls of the last minute.
    wait_for(
        &page,
        "#charts figure[data-chart=\"svrkit.demo.Echo/Echo · latency\"]",
    )
    .await;
    wait_for(&page, "#slowest tbody tr").await;
    screenshot(&page, "admin-page").await;

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    page.close().await.expect("the browser closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_the_console_lists_etcds_instances() {
    let etcd = Etcd::start().await;
    let registry: Arc<dyn Registry> = Arc::new(EtcdRegistry::new([etcd.endpoint()]));
    let echo = echo(Arc::clone(&registry), "echo-in-etcd", "stable", false).await;
    let (_console, addr) = console(&["--etcd", &etcd.endpoint()]).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let doc = cluster(addr).await;
        let rows = doc["instances"].as_array().cloned().unwrap_or_default();
        if let Some(row) = rows.iter().find(|r| r["id"] == "echo-in-etcd") {
            assert_eq!(row["address"], echo.addr.to_string());
            assert_eq!(row["health"], "ready", "{row}");
            assert_eq!(row["status"]["instance_id"], "echo-in-etcd", "{row}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "etcd's instance never appeared: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
