//! The real `svrkit` binary against real servers and registries on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use echo::{EchoServer, EchoService};
use svrkit::Server;
use svrkit::discovery::{EmbeddedRegistry, Instance, Registry};
use tokio::net::TcpListener;

/// Runs `svrkit ARGS` to completion: exit code, stdout, stderr.
async fn svrkit(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_svrkit"))
            .args(&args)
            .output()
            .expect("run svrkit");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

fn idl() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../idl")
        .display()
        .to_string()
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "svrkit-cli-{name}-{}-{:x}",
        std::process::id(),
        svrkit::context::new_id()
    ));
    std::fs::create_dir_all(&dir).expect("tempdir");
    dir
}

async fn echo_server() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(EchoService::new("cli-test")))
            .serve(listener, async {
                let _ = rx.await;
            }),
    );
    (addr, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_any_method_with_json_and_get_json_back() {
    let (addr, _stop) = echo_server().await;
    let addr = addr.to_string();
    let (code, out, err) = svrkit(&[
        "call",
        "svrkit.demo.Echo/Echo",
        r#"{"payload":"aGk="}"#,
        "--addr",
        &addr,
        "--idl",
        &idl(),
        "--uid",
        "42",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let reply: serde_json::Value = serde_json::from_str(&out).expect("JSON out");
    assert_eq!(reply["payload"], "aGk=");
    assert_eq!(reply["seen"]["server"], "cli-test");
    assert_eq!(reply["seen"]["uid"], "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_get_one_line_errors_and_clear_exit_codes() {
    let (addr, _stop) = echo_server().await;
    let addr = addr.to_string();
    let idl = idl();
    let cases: [(&[&str], i32, &str); 5] = [
        (
            &["call", "no.Such/Echo", "{}", "--addr", &addr, "--idl", &idl],
            2,
            "unknown service \"no.Such\"",
        ),
        (
            &["call", "Echo/Nope", "{}", "--addr", &addr, "--idl", &idl],
            2,
            "unknown method \"Nope\" of svrkit.demo.Echo",
        ),
        (
            &[
                "call",
                "Echo/Echo",
                r#"{"payload":5}"#,
                "--addr",
                &addr,
                "--idl",
                &idl,
            ],
            2,
            "does not fit svrkit.demo.EchoRequest",
        ),
        (
            &[
                "call",
                "Echo/Echo",
                r#"{"nope":1}"#,
                "--addr",
                &addr,
                "--idl",
                &idl,
            ],
            2,
            "nope",
        ),
        (
            &[
                "call",
                "Echo/Echo",
                "{}",
                "--addr",
                "127.0.0.1:1",
                "--idl",
                &idl,
            ],
            1,
            "unavailable",
        ),
    ];
    for (args, want_code, want_text) in cases {
        let (code, _, err) = svrkit(args).await;
        assert_eq!(code, want_code, "{args:?}: {err}");
        assert!(err.contains(want_text), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // A status from the server is exit 1 with the status.
    let (code, _, err) =
        svrkit(&["call", "Echo/Relay", "{}", "--addr", &addr, "--idl", &idl]).await;
    assert_eq!(code, 1);
    assert!(err.contains("failed_precondition"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_lists_instances_and_call_finds_them_through_the_registry() {
    let dir = tempdir("ls");
    let registry: Arc<dyn Registry> = Arc::new(EmbeddedRegistry::new(&dir));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .register(
            Arc::clone(&registry),
            Instance::new("svrkit.demo.Echo", "127.0.0.1:0".parse().expect("addr"))
                .id("echo-a")
                .version("gray"),
        )
        .add_service(EchoServer::new(EchoService::new("registered")));
    let task = tokio::spawn(server.serve(listener, async {
        let _ = rx.await;
    }));
    let mut watch = registry.watch("svrkit.demo.Echo").await.expect("watch");
    while watch.borrow_and_update().is_empty() {
        watch.changed().await.expect("watch");
    }
    let dir_arg = dir.display().to_string();
    let (code, out, err) = svrkit(&["ls", "--registry-dir", &dir_arg, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let row: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("a row")).expect("JSON row");
    assert_eq!(
        (
            row["service"].as_str(),
            row["id"].as_str(),
            row["version"].as_str()
        ),
        (Some("svrkit.demo.Echo"), Some("echo-a"), Some("gray"))
    );
    let (code, out, _) = svrkit(&["ls", "--registry-dir", &dir_arg]).await;
    assert_eq!(code, 0);
    assert!(out.contains("echo-a") && out.contains("SERVICE"), "{out}");

    let (code, out, err) = svrkit(&[
        "call",
        "Echo/Echo",
        "{}",
        "--registry-dir",
        &dir_arg,
        "--idl",
        &idl(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("registered"), "{out}");
    let _ = tx.send(());
    task.await.expect("join").expect("serve");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_publish_show_promote_and_rollback() {
    let dir = tempdir("config");
    let d = dir.display().to_string();
    let svc = "svrkit.demo.Echo";
    let run = |args: Vec<&'static str>| {
        let d = d.clone();
        async move {
            let mut all: Vec<&str> = vec!["config"];
            all.extend(args);
            all.extend(["--registry-dir", d.as_str()]);
            svrkit(&all).await
        }
    };
    assert_eq!(
        run(vec!["publish", svc, "v1", "--stable"]).await.1.trim(),
        "svrkit.demo.Echo: published version 1"
    );
    assert_eq!(
        run(vec!["publish", svc, "v2", "--percent", "10"])
            .await
            .1
            .trim(),
        "svrkit.demo.Echo: published version 2"
    );
    let (_, out, _) = run(vec!["show", svc]).await;
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(doc["gray"]["selector"], serde_json::json!({"percent": 10}));
    assert_eq!(
        run(vec!["promote", svc]).await.1.trim(),
        "svrkit.demo.Echo: version 2 is now stable"
    );
    assert_eq!(run(vec!["publish", svc, "v3", "--uids", "7,8"]).await.0, 0);
    assert_eq!(
        run(vec!["rollback", svc]).await.1.trim(),
        "svrkit.demo.Echo: rolled back to version 2"
    );
    let (_, out, _) = run(vec!["show", svc]).await;
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (
            doc["stable_version"].as_u64(),
            doc["stable"].as_str(),
            doc["gray"].is_null()
        ),
        (Some(2), Some("v2"), true)
    );
    // Mistakes: no selection, nothing to promote.
    let (code, _, err) = run(vec!["publish", svc, "v4"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(vec!["promote", svc]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no release to promote"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_scaffolds_a_crate_that_builds_and_passes_its_test_and_never_overwrites() {
    let dir = tempdir("new");
    let d = dir.display().to_string();
    let (code, out, err) = svrkit(&["new", "greeter", "--dir", &d]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("created") && out.contains("tests/smoke.rs"),
        "{out}"
    );
    let crate_dir = dir.join("greeter");

    // Its own test passes straight away (built in a target dir kept between runs).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("scaffold-test");
    let manifest = crate_dir.join("Cargo.toml");
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO"))
            .args(["test", "-q", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run cargo")
    })
    .await
    .expect("join");
    assert!(
        status.success(),
        "the scaffolded crate builds and its test passes"
    );

    // A second run keeps every file, including one the author changed.
    let lib = crate_dir.join("src/lib.rs");
    std::fs::write(&lib, "// mine\n").expect("edit");
    let (code, out, _) = svrkit(&["new", "greeter", "--dir", &d]).await;
    assert_eq!(code, 0);
    assert!(out.contains("kept") && !out.contains("created"), "{out}");
    assert_eq!(std::fs::read_to_string(&lib).expect("read"), "// mine\n");

    let (code, _, err) = svrkit(&["new", "Bad-Name", "--dir", &d]).await;
    assert_eq!(code, 2, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn completions_and_help_with_examples() {
    let (code, out, _) = svrkit(&["completions", "bash"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("svrkit") && out.contains("complete"),
        "a bash completion script"
    );
    for command in [
        "new",
        "call",
        "ls",
        "config",
        "completions",
        "up",
        "down",
        "ps",
        "logs",
        "deploy",
    ] {
        let (code, out, _) = svrkit(&[command, "--help"]).await;
        assert_eq!(code, 0);
        assert!(
            out.contains("Example: svrkit"),
            "{command} --help shows an example: {out}"
        );
    }
}
