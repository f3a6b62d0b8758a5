//! Helpers shared by the framework's integration tests: echo servers on port 0 and a raw
//! client (the general ones, PATIENCE and http_get, come from svrkit-testkit).
#![allow(dead_code, unreachable_pub, unused_imports)] // each test uses part of it

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use echo::{Echo, EchoReply, EchoRequest, EchoService, RelayReply};
use svrkit::Status;
use svrkit::protocol::{self, Frame, FrameKind, PREFACE, RequestHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// Upper bound for any single wait in these tests; reaching it is a failure.
pub use svrkit_testkit::PATIENCE;

/// A server running on a loopback port until stopped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl TestServer {
    /// Starts graceful shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("serve");
    }

    /// Starts graceful shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for `serve` to return.
    pub async fn join(self) {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("serve");
    }
}

/// Serves `server` on a fresh loopback port.
pub async fn start<L, S>(server: svrkit::Server<L>) -> TestServer
where
    L: tower::Layer<svrkit::server::Routed, Service = S> + Send + 'static,
    S: tower::Service<svrkit::server::ServerRequest, Response = Bytes> + Clone + Send + 'static,
    S::Error: Into<svrkit::BoxError>,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        stop: Some(tx),
        task,
    }
}

/// An Echo implementation that counts handler runs and reports starts and drops.
#[derive(Clone)]
pub struct Probe {
    pub inner: EchoService,
    pub calls: Arc<AtomicUsize>,
    pub started: Arc<Notify>,
    pub dropped: Arc<Notify>,
}

impl Probe {
    pub fn new(name: &str) -> Probe {
        Probe {
            inner: EchoService::new(name),
            calls: Arc::default(),
            started: Arc::default(),
            dropped: Arc::default(),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

struct NotifyOnDrop(Arc<Notify>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

impl Echo for Probe {
    async fn echo(&self, request: EchoRequest) -> Result<EchoReply, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _guard = NotifyOnDrop(Arc::clone(&self.dropped));
        self.started.notify_one();
        self.inner.echo(request).await
    }

    async fn relay(&self, request: EchoRequest) -> Result<RelayReply, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.relay(request).await
    }
}

/// A client that writes raw bytes and reads raw frames.
pub struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Connects without sending anything.
    pub async fn connect_bare(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connects and sends the preface.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect_bare(addr).await;
        raw.send(&PREFACE).await;
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends a request frame.
    pub async fn request(&mut self, id: u64, header: &RequestHeader<'_>, body: &[u8]) {
        let mut buf = BytesMut::new();
        protocol::encode_frame_head(
            &mut buf,
            FrameKind::Request,
            id,
            header.encoded_len(),
            body.len(),
        );
        header.encode(&mut buf);
        buf.put_slice(body);
        self.send(&buf).await;
    }

    /// The next frame, or `None` once the server closed the connection.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) =
                protocol::decode_frame(&mut self.buf, 1 << 24).expect("server frames are valid")
            {
                return Some(frame);
            }
            let n = tokio::time::timeout(PATIENCE, self.stream.read_buf(&mut self.buf))
                .await
                .expect("server answers in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }
}

/// An Echo request body.
pub fn echo_body(payload: &[u8]) -> Vec<u8> {
    use prost::Message;
    EchoRequest {
        payload: payload.to_vec().into(),
        delay_ms: 0,
    }
    .encode_to_vec()
}

pub use svrkit_testkit::http_get;

/// Serves `admin` on a fresh loopback port until the returned sender is dropped.
pub async fn start_admin(admin: svrkit::admin::AdminServer) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let addr = listener.local_addr().expect("admin addr");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(admin.serve(listener, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// An Echo whose reply payload is `VERSION:VALUE` of the configuration that applies to
/// the request.
#[derive(Clone)]
pub struct ConfigEcho {
    pub live: svrkit::config::LiveConfig,
}

impl Echo for ConfigEcho {
    async fn echo(&self, _request: EchoRequest) -> Result<EchoReply, Status> {
        let (version, value) = self.live.for_request();
        Ok(EchoReply {
            payload: format!("{version}:{value}").into_bytes().into(),
            seen: None,
        })
    }

    async fn relay(&self, _request: EchoRequest) -> Result<RelayReply, Status> {
        Err(Status::unimplemented("relay"))
    }
}

/// Waits (bounded) until the live document satisfies `done`.
pub async fn config_until(
    live: &mut svrkit::config::LiveConfig,
    done: impl Fn(&svrkit::config::ConfigDoc) -> bool,
) {
    tokio::time::timeout(PATIENCE, async {
        while !done(&live.document()) {
            assert!(live.changed().await, "config watch open");
        }
    })
    .await
    .expect("the configuration reached the expected state in time");
}

/// The gray-release scenario, against any store: 10 % of users, promote, roll back.
pub async fn gray_release_scenario(store: std::sync::Arc<dyn svrkit::config::ConfigStore>) {
    use svrkit::config::{LiveConfig, Selector, promote, publish_gray, publish_stable, rollback};
    use svrkit::{CallOptions, Channel, Server};
    let service = format!("gray.test.{:x}", svrkit::context::random_u64());
    assert_eq!(
        publish_stable(&*store, &service, "v1")
            .await
            .expect("stable"),
        1
    );
    let live = LiveConfig::follow(&*store, &service, "instance-1")
        .await
        .expect("follow");
    let mut watching = live.clone();
    let server =
        start(Server::builder().add_service(echo::EchoServer::new(ConfigEcho { live }))).await;
    let client = echo::EchoClient::new(Channel::lazy([server.addr]));
    let seen_by = |uid: u64| {
        let client = client.clone();
        async move {
            let reply = client
                .echo_with(EchoRequest::default(), CallOptions::new().uid(uid))
                .await
                .expect("echo");
            String::from_utf8(reply.payload.to_vec()).expect("utf-8")
        }
    };

    // Release v2 to 10 % of users.
    let selector = Selector::Percent(10);
    assert_eq!(
        publish_gray(&*store, &service, "v2", selector.clone())
            .await
            .expect("publish"),
        2
    );
    config_until(&mut watching, |d| d.gray.is_some()).await;
    let mut gray_users = Vec::new();
    for uid in 1..=1_000u64 {
        match seen_by(uid).await.as_str() {
            "2:v2" => gray_users.push(uid),
            "1:v1" => {}
            other => panic!("uid {uid} saw {other}"),
        }
    }
    let expected: Vec<u64> = (1..=1_000u64)
        .filter(|u| selector.selects(*u, "any"))
        .collect();
    assert_eq!(
        gray_users, expected,
        "exactly the selected users see the new value"
    );
    assert!(
        (60..=140).contains(&gray_users.len()),
        "about 10 %: {}",
        gray_users.len()
    );
    assert_eq!(
        watching.applied_version(),
        1,
        "the instance itself still applies stable"
    );

    // Promote: everyone sees v2.
    assert_eq!(promote(&*store, &service).await.expect("promote"), 2);
    config_until(&mut watching, |d| d.gray.is_none() && d.stable_version == 2).await;
    for uid in [1, 2, 3, expected[0], 999] {
        assert_eq!(seen_by(uid).await, "2:v2");
    }
    assert_eq!(watching.applied_version(), 2);

    // Release v3 to user 7, then roll it back.
    publish_gray(&*store, &service, "v3", Selector::Uids(vec![7]))
        .await
        .expect("publish");
    config_until(&mut watching, |d| d.gray.is_some()).await;
    assert_eq!(seen_by(7).await, "3:v3");
    assert_eq!(seen_by(8).await, "2:v2");
    rollback(&*store, &service).await.expect("rollback");
    config_until(&mut watching, |d| d.gray.is_none()).await;
    assert_eq!(seen_by(7).await, "2:v2");
    server.shutdown().await;
}

/// An `echo serve` process (the real binary); SIGKILLed when dropped.
pub struct EchoProcess {
    child: std::process::Child,
    pub addr: SocketAddr,
    /// Kept open: a closed pipe would make the child's next print fail.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl EchoProcess {
    /// Starts `echo serve ARGS…` and waits for its `listening on` line.
    pub fn spawn(args: &[&std::ffi::OsStr]) -> EchoProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(svrkit_testkit::workspace_binary("echo"))
            .arg("serve")
            .args(args)
            // No registry unless the arguments name one (not the default `.svrkit/`).
            .env("SVRKIT_REGISTRY", "none")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start echo");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        let addr = match svrkit::launch::Announcement::parse(&line) {
            Some(svrkit::launch::Announcement::Listening(addr)) => addr,
            other => panic!("expected the listening line, got {line:?} ({other:?})"),
        };
        EchoProcess {
            child,
            addr,
            _stdout: stdout,
        }
    }

    /// kill -9, then reap.
    pub fn kill_9(&mut self) {
        // std's kill sends SIGKILL on Unix.
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until a watched instance set satisfies `done`.
pub async fn until(
    rx: &mut tokio::sync::watch::Receiver<svrkit::discovery::Instances>,
    done: impl Fn(&[svrkit::discovery::Instance]) -> bool,
) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if done(&rx.borrow_and_update()) {
                return;
            }
            rx.changed().await.expect("watch open");
        }
    })
    .await
    .expect("the registry reached the expected state in time");
}

/// Credentials of `service`, issued by `ca` (mutual TLS tests).
#[cfg(feature = "mint")]
pub fn credentials(ca: &svrkit::tls::mint::ClusterCa, service: &str) -> svrkit::tls::Credentials {
    let issued = ca.issue(service).expect("issued");
    svrkit::tls::Credentials::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
    )
    .expect("credentials")
}
