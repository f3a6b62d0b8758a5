//! Helpers for integration tests: a real etcd server (Debian `etcd-server`) on free
//! loopback ports with a temporary data directory, stopped when dropped; temporary
//! directories; free ports; an in-memory service registry written outside svrkit.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use svrkit::discovery::{EtcdRegistry, Registry};

pub mod browser;
pub mod linearizability;
pub mod netns;
mod static_registry;
pub mod webdriver;

pub use static_registry::StaticRegistry;
pub use tempfile::TempDir;

/// How long a test waits for something that should take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// `GET path` at `addr` over HTTP/1.1 (hyper's client): the status code and body. Panics
/// when nothing answers within [`PATIENCE`] — the test's admin endpoint or gateway must.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http_get_as(addr, path, &addr.to_string()).await
}

/// [`http_get`] with the `Host` header `host`, as a browser sends the name it was given
/// (a test of what a page answers to).
pub async fn http_get_as(addr: std::net::SocketAddr, path: &str, host: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let request = http::Request::get(format!("http://{addr}{path}"))
        .header(http::header::HOST, host)
        .body(http_body_util::Empty::new())
        .expect("a request");
    let fetch = async {
        let response = client.request(request).await.expect("an HTTP answer");
        let code = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the whole body")
            .to_bytes();
        (
            code,
            String::from_utf8(body.to_vec()).expect("a UTF-8 body"),
        )
    };
    tokio::time::timeout(PATIENCE, fetch)
        .await
        .expect("answered in time")
}

/// A fresh directory under the system's temporary directory, named after the test
/// (`svrkit-NAME-…`), removed with everything in it when the returned guard is dropped —
/// also when the test fails and unwinds.
pub fn tempdir(name: &str) -> tempfile::TempDir {
    match tempfile::Builder::new()
        .prefix(&format!("svrkit-{name}-"))
        .tempdir()
    {
        Ok(dir) => dir,
        Err(e) => panic!("creating a temporary directory for {name}: {e}"),
    }
}

/// The command that builds every binary the tests start, with the one feature set of the
/// test build: `tools/test` runs exactly this before the tests, so they find every binary
/// built and nothing is compiled twice.
pub const BUILD_ALL: &[&str] = &["build", "--workspace", "--all-targets"];

/// The path of the workspace binary `name`, built by [`BUILD_ALL`] next to the running
/// test's executable. When it is missing (only some tests were built, e.g. by
/// `cargo test -p wx-client`), runs [`BUILD_ALL`] once, which resolves the same features as
/// the test build and so recompiles nothing that was built.
pub fn workspace_binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .expect("the test's target directory");
    let path = dir.join(name);
    if !path.exists() {
        BUILT.call_once(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(BUILD_ALL)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "cargo {} failed",
                BUILD_ALL.join(" ")
            );
        });
    }
    assert!(path.exists(), "no binary {} after building", path.display());
    path
}

/// A loopback port nobody listens on right now, taken from below the kernel's ephemeral
/// range.
///
/// A process that is stopped and started again on the same port (a restarted service, a
/// restarted etcd) needs a port the kernel never hands out by itself: a port from the
/// ephemeral range may become the local end of some unrelated outgoing connection while
/// its owner is down, and the restart then fails with "address in use". Ports below the
/// range are only ever taken by an explicit bind. The search starts at a random place, so
/// tests running in parallel rarely probe the same port.
pub fn free_port() -> u16 {
    let (low, high) = unassigned_range();
    let span = u64::from(high - low);
    let start = {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::process::id()) % span
    };
    for step in 0..span {
        let port = low + u16::try_from((start + step) % span).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// A loopback address that refuses connections for as long as the returned socket
/// lives: the socket holds the port (bound, never listening), so the kernel answers
/// every connect with a reset, and no test running beside this one can be given it.
/// Binding a listener and dropping it is not enough: the port goes back to the pool,
/// and another test's server on port 0 may take it.
pub fn refusing_addr() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a loopback port");
    let addr = socket.local_addr().expect("the bound address");
    (socket, addr)
}

/// The ports [`free_port`] picks from: from 20000 up to the start of the kernel's
/// ephemeral range (read from `/proc/sys/net/ipv4/ip_local_port_range`, 32768 when
/// unreadable or when that range starts too low to leave room).
fn unassigned_range() -> (u16, u16) {
    const LOW: u16 = 20_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&start| start >= LOW + 1_000)
        .unwrap_or(32_768);
    (LOW, ephemeral_start)
}

/// A throwaway single-member etcd on loopback.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Serving TLS: etcd's certificate, key and the CA clients must present a
    /// certificate of, and how the readiness probe talks to it.
    tls: Option<(PathBuf, PathBuf, PathBuf, svrkit::discovery::EtcdTls)>,
}

impl Etcd {
    /// Starts etcd and waits until a client can read through it.
    pub async fn start() -> Etcd {
        let mut etcd = Etcd {
            child: None,
            dir: tempdir("etcd"),
            client_port: free_port(),
            peer_port: free_port(),
            tls: None,
        };
        etcd.run().await;
        etcd
    }

    /// Starts etcd serving TLS with `cert` and `key` (PEM files), requiring clients to
    /// present a certificate from the CA in `ca`; `probe` is how the readiness probe
    /// connects.
    pub async fn start_tls(
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
        probe: svrkit::discovery::EtcdTls,
    ) -> Etcd {
        let mut etcd = Etcd {
            child: None,
            dir: tempdir("etcd"),
            client_port: free_port(),
            peer_port: free_port(),
            tls: Some((cert, key, ca, probe)),
        };
        etcd.run().await;
        etcd
    }

    /// Its client URL.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    async fn run(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new("etcd");
        if let Some((cert, key, ca, _)) = &self.tls {
            command
                .arg(format!("--cert-file={}", cert.display()))
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--trusted-ca-file={}", ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(child) => self.child = Some(child),
            Err(e) => panic!("etcd is not installed (tools/test installs etcd-server): {e}"),
        }
        let mut registry = EtcdRegistry::new([self.endpoint()]);
        if let Some((_, _, _, probe)) = &self.tls {
            registry = registry.tls(probe.clone());
        }
        let ready = tokio::time::timeout(PATIENCE, async {
            loop {
                if registry.watch("ready-probe").await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(ready.is_ok(), "etcd did not come up within {PATIENCE:?}");
    }

    /// Stops etcd (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Where etcd keeps its data, inside the test's temporary directory.
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }

    /// Stops etcd and throws its data away: every lease and record is lost.
    pub async fn restart_empty(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(self.data_dir());
        self.run().await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // The temporary directory goes with the struct, after the server.
        self.stop();
    }
}
