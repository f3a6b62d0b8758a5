//! Other languages call svrkit over gRPC: `tools/grpc-python/interop.py` (grpcio, stubs
//! made by grpcio-tools from the services' IDL, the health and reflection clients of
//! grpcio-health-checking and grpcio-reflection) against a real server here — every scalar
//! and well-known type, metadata, a deadline, an error with reason and details, a DAGOR
//! refusal, reflection, and health turning NOT_SERVING when the server drains.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use echo::{Echo, EchoClient, EchoReply, EchoRequest, EchoServer, EchoService, RelayReply};
use svrkit::overload::DagorConfig;
use svrkit::{Channel, Context, Server, Status};
use svrkit_codegen_corpus::corpus::{types, wkt};
use svrkit_codegen_corpus::serve::Corpus;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

/// The echo service, refusing a payload of `refuse` with a reason and details.
#[derive(Clone)]
struct Interop(Arc<EchoService>);

impl Echo for Interop {
    async fn echo(&self, request: EchoRequest) -> Result<EchoReply, Status> {
        if &request.payload[..] == b"refuse" {
            return Err(Status::failed_precondition("refused: not for you")
                .with_reason("not_allowed")
                .with_details(&b"\x08\x2a"[..]));
        }
        self.0.echo(request).await
    }

    async fn relay(&self, request: EchoRequest) -> Result<RelayReply, Status> {
        self.0.relay(request).await
    }
}

fn interop() -> Interop {
    Interop(Arc::new(EchoService::new("interop")))
}

/// The Python with grpcio: `SVRKIT_GRPC_PYTHON` (tools/test makes it), else the cache's.
fn python() -> Option<PathBuf> {
    let path = std::env::var_os("SVRKIT_GRPC_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/svrkit/venv-grpc/bin/python"))
        })?;
    let works = std::process::Command::new(&path)
        .args([
            "-c",
            "import grpc, grpc_tools, grpc_health, grpc_reflection, grpc_status",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "grpcio is required under CI (tools/test installs it)"
    );
    eprintln!("skipped: grpcio is not installed (tools/test installs it)");
    None
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A server DAGOR has found overloaded: one worker, ten requests of 20 ms each at once
/// (queued 0 to 180 ms), then ten one at a time to end the window of twenty (45 ms queued
/// on average, over the 20 ms threshold), so it keeps only the more important half of
/// what it admitted.
async fn overloaded_server() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let server = Server::builder()
        .max_concurrency(1)
        .admission(DagorConfig {
            window: Duration::from_secs(3600),
            window_requests: 20,
            alpha: 0.5,
            ..DagorConfig::default()
        })
        .add_service(EchoServer::new(interop()));
    let admission = server.admission_controller().expect("admission");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let client = EchoClient::new(Channel::builder().plaintext().max_attempts(1).lazy([addr]));
    let calls: Vec<_> = (1..=10)
        .map(|user| {
            let client = client.clone();
            tokio::spawn(Context::new().with_user_priority(user).scope(async move {
                client
                    .echo(EchoRequest {
                        payload: b"load".to_vec().into(),
                        delay_ms: 20,
                    })
                    .await
            }))
        })
        .collect();
    for call in calls {
        call.await
            .expect("task")
            .expect("admitted while the level was open");
    }
    for user in 11..=20 {
        Context::new()
            .with_user_priority(user)
            .scope(client.echo(EchoRequest {
                payload: b"load".to_vec().into(),
                delay_ms: 0,
            }))
            .await
            .expect("admitted before the window ended");
    }
    let snapshot = admission.snapshot();
    assert!(
        snapshot.last_window_overloaded && snapshot.level.is_some(),
        "{snapshot:?}"
    );
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpc_client_calls_svrkit_describes_it_and_watches_it_drain() {
    let Some(python) = python() else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (drain, drained) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(interop()))
            .add_service(wkt::known_server::KnownServer::new(Corpus))
            .add_service(types::types_server::TypesServer::new(Corpus))
            .serve(listener, async {
                let _ = drained.await;
            }),
    );
    let (overloaded, _stop_overloaded) = overloaded_server().await;

    let repo = repo();
    let mut child = tokio::process::Command::new(&python)
        .arg(repo.join("tools/grpc-python/interop.py"))
        .arg("--idl")
        .arg(repo.join("idl"))
        .arg("--corpus-idl")
        .arg(repo.join("svrkit-codegen/tests/corpus/idl"))
        .args(["--addr", &addr.to_string()])
        .args(["--overloaded", &overloaded.to_string()])
        .arg("--watch-drain")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start python");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let mut drain = Some(drain);
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line == "WATCHING"
                && let Some(drain) = drain.take()
            {
                // The Python client watches health: drain the server now.
                let _ = drain.send(());
            }
            seen.push(line);
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the Python client finishes in time");
    let status = child.wait().await.expect("python exits");
    let output = seen.join("\n");
    assert!(status.success(), "the Python client failed:\n{output}");
    assert_eq!(seen.last().map(String::as_str), Some("PASSED"), "{output}");
    for promise in [
        "every scalar type comes back as sent",
        "every well-known type comes back as sent",
        "metadata arrives in the handler",
        "its reason in google.rpc.ErrorInfo",
        "a deadline expires",
        "DAGOR sheds a low priority",
        "reflection describes a method's request",
        "and turns NOT_SERVING when the server drains",
    ] {
        assert!(output.contains(promise), "{promise} in\n{output}");
    }
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server drains in time")
        .expect("task")
        .expect("serve");
}

/// Runs the `svrkit` binary; exit code, standard output and standard error.
async fn svrkit(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_svrkit"))
        .args(args)
        .env_remove("SVRKIT_REGISTRY")
        .output()
        .await
        .expect("run svrkit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_reflect_needs_no_local_idl() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(interop()))
            .add_service(wkt::known_server::KnownServer::new(Corpus))
            .serve(listener, async {
                let _ = stopped.await;
            }),
    );
    let nowhere = std::env::temp_dir().join("svrkit-no-idl-here");
    let nowhere = nowhere.display().to_string();
    let (code, out, err) = svrkit(&[
        "call",
        "--reflect",
        &addr,
        "svrkit.demo.Echo/Echo",
        r#"{"payload":"aGk="}"#,
        "--idl",
        &nowhere,
        "--plaintext",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let reply: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(reply["payload"], "aGk=", "{reply}");
    assert_eq!(reply["seen"]["server"], "interop");

    let (code, out, err) = svrkit(&[
        "call",
        "--reflect",
        &addr,
        "corpus.wkt.Known/EchoTimestamp",
        r#""2024-01-02T03:04:05Z""#,
        "--plaintext",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), r#""2024-01-02T03:04:05Z""#);

    let (code, _, err) = svrkit(&[
        "call",
        "--reflect",
        &addr,
        "no.Such/Method",
        "{}",
        "--plaintext",
    ])
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not known to this server"), "{err}");
    let (code, _, err) = svrkit(&[
        "call",
        "--reflect",
        &addr,
        "svrkit.demo.Echo/Echo",
        "{not json",
        "--plaintext",
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    let _ = stop.send(());
    server.await.expect("task").expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_with_the_clusters_certificate_gets_in_over_mutual_tls() {
    let Some(python) = python() else {
        return;
    };
    let dir = svrkit_testkit::tempdir("grpc-tls");
    let ca = svrkit::tls::mint::ClusterCa::new("test").expect("CA");
    let server_cert = ca.issue("back").expect("server certificate");
    let client_cert = ca.issue("python").expect("client certificate");
    std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).expect("write");
    std::fs::write(dir.path().join("python.crt"), &client_cert.cert_pem).expect("write");
    std::fs::write(dir.path().join("python.key"), &client_cert.key_pem).expect("write");
    let credentials = svrkit::tls::Credentials::from_pem(
        server_cert.cert_pem.as_bytes(),
        server_cert.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
    )
    .expect("credentials");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .tls(credentials.server().expect("server TLS"))
            .add_service(EchoServer::new(interop()))
            .serve(listener, async {
                let _ = stopped.await;
            }),
    );
    let repo = repo();
    let out = tokio::process::Command::new(&python)
        .arg(repo.join("tools/grpc-python/interop.py"))
        .arg("--idl")
        .arg(repo.join("idl"))
        .arg("--corpus-idl")
        .arg(repo.join("svrkit-codegen/tests/corpus/idl"))
        .args(["--tls-addr", &addr.to_string()])
        .arg("--tls-dir")
        .arg(dir.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("the Python client finishes in time")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("over mutual TLS the caller is the certificate's")
            && stdout.contains("a client without a certificate is refused"),
        "{stdout}"
    );
    let _ = stop.send(());
    server.await.expect("task").expect("serve");
}
