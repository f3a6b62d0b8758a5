//! The real `svrkit` binary against real servers and registries on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use svrkit_testkit::tempdir;

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

fn corpus_idl() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../svrkit-codegen/tests/corpus/idl")
        .display()
        .to_string()
}

/// `svrkit call METHOD JSON` against the codegen corpus's server: exit code, parsed reply
/// (Null when the call failed) and standard error.
async fn call_corpus(addr: &str, method: &str, json: &str) -> (i32, serde_json::Value, String) {
    let idl = corpus_idl();
    let (code, out, err) = svrkit(&["call", method, json, "--addr", addr, "--idl", &idl]).await;
    let reply = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    (code, reply, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_maps_every_field_kind_and_well_known_type_to_json() {
    let (addr, _stop) = svrkit_codegen_corpus::serve::serve().await;
    let addr = addr.to_string();
    let request = r#"{
        "timestamp": "2024-01-02T03:04:05.500Z",
        "durationList": ["1.5s", "-0.000000001s"],
        "emptyMap": {"e": {}},
        "any": {"@type": "type.googleapis.com/corpus.types.Scalars", "fInt64": "-9"},
        "struct": {"k": [1, "two", null, {"n": true}]},
        "valueMap": {"v": 2.5},
        "listValue": ["x", 1],
        "fieldMask": "a.b,cD",
        "boolValue": false,
        "bytesValueList": ["AAH/"],
        "doubleValue": 0.25,
        "int64ValueMap": {"i": "-9223372036854775808"},
        "stringValue": "✓",
        "uInt64Value": "18446744073709551615",
        "null": null
    }"#;
    let (code, reply, err) = call_corpus(&addr, "corpus.wkt.Known/EchoAll", request).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(reply["timestamp"], "2024-01-02T03:04:05.500Z", "{reply}");
    assert_eq!(
        reply["durationList"],
        serde_json::json!(["1.500s", "-0.000000001s"])
    );
    assert_eq!(reply["emptyMap"]["e"], serde_json::json!({}));
    assert_eq!(
        reply["any"]["@type"],
        "type.googleapis.com/corpus.types.Scalars"
    );
    assert_eq!(reply["any"]["fInt64"], "-9");
    assert_eq!(
        reply["struct"]["k"],
        serde_json::json!([1.0, "two", null, {"n": true}])
    );
    assert_eq!(reply["valueMap"]["v"], 2.5);
    assert_eq!(reply["fieldMask"], "a.b,cD");
    assert_eq!(reply["boolValue"], false, "a wrapper keeps its presence");
    assert_eq!(reply["bytesValueList"], serde_json::json!(["AAH/"]));
    assert_eq!(reply["doubleValue"], 0.25);
    assert_eq!(reply["int64ValueMap"]["i"], "-9223372036854775808");
    assert_eq!(reply["uInt64Value"], "18446744073709551615");

    // Well-known types as the whole argument and result.
    for (method, json) in [
        ("EchoTimestamp", r#""1970-01-01T00:00:01Z""#),
        ("EchoDuration", r#""3s""#),
        ("EchoEmpty", "{}"),
        ("EchoInt64Value", r#""42""#),
        ("EchoStringValue", r#""hi""#),
        ("EchoValue", r#"{"a":[true]}"#),
        ("EchoFieldMask", r#""x.y""#),
    ] {
        let (code, reply, err) =
            call_corpus(&addr, &format!("corpus.wkt.Known/{method}"), json).await;
        assert_eq!(code, 0, "{method}: {err}");
        let sent: serde_json::Value = serde_json::from_str(json).expect("JSON");
        assert_eq!(reply, sent, "{method}");
    }

    // Scalars, enums by name, maps, oneofs, nested and recursive messages, optionals.
    let everything = r#"{
        "scalars": {"fDouble": 1.5, "fInt64": "-5", "fUint64": "7", "fBool": true,
                    "fBytes": "AQI=", "fEnum": "COLOR_GREEN", "fSfixed64": "-1"},
        "repeated": {"colors": ["COLOR_RED", "COLOR_GREEN"], "unpacked": [1, 2]},
        "maps": {"byId": {"-3": "x"}, "flags": {"true": "AA=="}, "colors": {"1": "COLOR_RED"},
                 "nested": {"4": {"kind": "KIND_DEEP"}}},
        "nested": {"inner": {"deeper": {"leaf": "l"}}},
        "oneofs": {"at": "2000-01-01T00:00:00Z", "flag": true},
        "tree": {"name": "r", "children": [{"name": "c"}], "forest": {"trees": [{"name": "f"}]}},
        "optionals": {"count": 0, "label": ""}
    }"#;
    let (code, reply, err) = call_corpus(&addr, "corpus.types.Types/Everything", everything).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(reply["scalars"]["fEnum"], "COLOR_GREEN");
    assert_eq!(reply["scalars"]["fInt64"], "-5");
    assert_eq!(reply["maps"]["byId"]["-3"], "x");
    assert_eq!(reply["maps"]["nested"]["4"]["kind"], "KIND_DEEP");
    assert_eq!(reply["oneofs"]["at"], "2000-01-01T00:00:00Z");
    assert_eq!(reply["tree"]["forest"]["trees"][0]["name"], "f");
    assert_eq!(
        reply["optionals"]["count"], 0,
        "proto3 optional keeps a zero"
    );
    assert_eq!(reply["optionals"]["label"], "");

    // RPCs named after keywords and helpers are called by their IDL names.
    let (code, reply, err) = call_corpus(&addr, "corpus.match.type.Match/GETUser", "{}").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(reply["match"], "GETUser");

    // JSON that does not fit: exit 2, naming the message and what is wrong.
    for (method, json, needle) in [
        (
            "corpus.wkt.Known/EchoTimestamp",
            r#""yesterday""#,
            "Timestamp",
        ),
        (
            "corpus.wkt.Known/EchoDuration",
            r#""5 minutes""#,
            "Duration",
        ),
        (
            "corpus.wkt.Known/EchoAll",
            r#"{"timestamp": 5}"#,
            "corpus.wkt.AllKnown",
        ),
        (
            "corpus.types.Types/Scalars",
            r#"{"fEnum": "COLOR_PURPLE"}"#,
            "corpus.types.Scalars",
        ),
        (
            "corpus.types.Types/Scalars",
            r#"{"fInt32": 1e20}"#,
            "corpus.types.Scalars",
        ),
        ("corpus.types.Types/Scalars", r#"{"nope": 1}"#, "nope"),
        (
            "corpus.types.Types/Everything",
            r#"{"oneofs": {"text": "a", "number": "1"}}"#,
            "corpus.types.Everything",
        ),
        (
            "corpus.wkt.Known/EchoAny",
            r#"{"@type": "type.googleapis.com/no.Such"}"#,
            "no.Such",
        ),
    ] {
        let (code, _, err) = call_corpus(&addr, method, json).await;
        assert_eq!(code, 2, "{method} {json}: {err}");
        assert!(err.contains(needle), "{method} {json}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
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
    let dir_dir = tempdir("ls");
    let dir = dir_dir.path();
    let registry: Arc<dyn Registry> = Arc::new(EmbeddedRegistry::new(dir));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .register(
            Arc::clone(&registry),
            Instance::new("svrkit.demo.Echo", "127.0.0.1:0".parse().expect("addr"))
                .id("echo-a")
                .version(svrkit::selector::Track::Gray),
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
    assert_eq!(
        row["protocols"], "svrkit+grpc",
        "a svrkit server answers both on its port"
    );
    let (code, out, _) = svrkit(&["ls", "--registry-dir", &dir_arg]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("echo-a") && out.contains("SERVICE") && out.contains("svrkit+grpc"),
        "{out}"
    );

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_publish_show_promote_and_rollback() {
    let dir_dir = tempdir("config");
    let dir = dir_dir.path();
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
}

fn ledger_idl() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ledger.proto")
        .display()
        .to_string()
}

/// Whether rustfmt finds nothing to change in `files` (true when rustfmt is missing).
fn rustfmt_clean(files: &[PathBuf]) -> bool {
    match std::process::Command::new("rustfmt")
        .args(["--edition", "2024", "--check"])
        .args(files)
        .output()
    {
        Ok(out) => out.status.success(),
        Err(_) => true,
    }
}

/// svrkit and svrkit-codegen as `cargo package` makes them for crates.io (the CLI is
/// packaged beside them), unpacked under `dir`: their directories.
fn packaged(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = dir.join("package-target");
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "package",
            "--no-verify",
            "--allow-dirty",
            "-q",
            "-p",
            "svrkit",
            "-p",
            "svrkit-codegen",
            // The CLI packages too (it is not built from its package here).
            "-p",
            "svrkit-cli",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo package");
    assert!(status.success(), "cargo package");
    let version = env!("CARGO_PKG_VERSION");
    let unpacked = dir.join("registry");
    std::fs::create_dir_all(&unpacked).expect("mkdir");
    for name in ["svrkit", "svrkit-codegen"] {
        let file = target
            .join("package")
            .join(format!("{name}-{version}.crate"));
        let status = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(&file)
            .arg("-C")
            .arg(&unpacked)
            .status()
            .expect("run tar");
        assert!(status.success(), "unpacking {}", file.display());
    }
    (
        unpacked.join(format!("svrkit-{version}")),
        unpacked.join(format!("svrkit-codegen-{version}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_scaffolds_every_service_of_real_idl_into_a_crate_that_builds_and_passes_its_test() {
    let dir_dir = tempdir("new");
    let dir = dir_dir.path();
    let d = dir.display().to_string();
    let ledger = ledger_idl();
    let (code, out, err) = svrkit(&["new", "ledger", "--idl", &ledger, "--dir", &d]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("created") && out.contains("tests/smoke.rs"),
        "{out}"
    );
    let crate_dir = dir.join("ledger");
    let read = |p: &str| std::fs::read_to_string(crate_dir.join(p)).expect("scaffolded file");
    let (lib, main, smoke, manifest) = (
        read("src/lib.rs"),
        read("src/main.rs"),
        read("tests/smoke.rs"),
        read("Cargo.toml"),
    );
    // Both services: a handler each, both served, every method called by the smoke test
    // under the names codegen gives them (`New` -> `new_`).
    for needle in [
        "impl Ledger for LedgerService",
        "impl Reports for ReportsService",
    ] {
        assert!(lib.contains(needle), "{needle} in\n{lib}");
    }
    for needle in ["LedgerServer::new", "ReportsServer::new"] {
        assert!(main.contains(needle) && smoke.contains(needle), "{needle}");
    }
    for call in [
        ".new_(",
        ".book(",
        ".balance_at(",
        ".new_with(",
        ".with_service_(",
    ] {
        assert!(smoke.contains(call), "{call} in\n{smoke}");
    }
    assert!(
        manifest.contains("default-features = false") && !manifest.contains("prost"),
        "no etcd (protoc) and no prost of its own unless asked:\n{manifest}"
    );
    assert!(
        manifest.contains("version = \"0.1\"") && !manifest.contains("path ="),
        "svrkit by version, as from crates.io:\n{manifest}"
    );
    assert!(rustfmt_clean(&[
        crate_dir.join("src/lib.rs"),
        crate_dir.join("src/main.rs"),
        crate_dir.join("tests/smoke.rs"),
        crate_dir.join("build.rs"),
    ]));

    // Its own test passes straight away, outside this workspace (built in a target dir
    // kept between runs).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("scaffold-test");
    // crates.io is played by `cargo package`'s output: the crates as they would be
    // published, unpacked, patched in for the registry's.
    let (packaged_svrkit, packaged_codegen) = packaged(dir);
    std::fs::create_dir_all(crate_dir.join(".cargo")).expect("mkdir");
    std::fs::write(
        crate_dir.join(".cargo/config.toml"),
        format!(
            "[patch.crates-io]\nsvrkit = {{ path = {:?} }}\nsvrkit-codegen = {{ path = {:?} }}\n",
            packaged_svrkit.display().to_string(),
            packaged_codegen.display().to_string()
        ),
    )
    .expect("write the patch");
    let cargo_manifest = crate_dir.join("Cargo.toml");
    let run_in = crate_dir.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO"))
            .args(["test", "-q", "--manifest-path"])
            .arg(&cargo_manifest)
            .current_dir(&run_in)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run cargo")
    })
    .await
    .expect("join");
    assert!(
        status.success(),
        "the scaffolded crate builds from the packaged crates and its test passes"
    );

    // A second run keeps every file, including one the author changed.
    let lib_path = crate_dir.join("src/lib.rs");
    std::fs::write(&lib_path, "// mine\n").expect("edit");
    let (code, out, _) = svrkit(&["new", "ledger", "--idl", &ledger, "--dir", &d]).await;
    assert_eq!(code, 0);
    assert!(out.contains("kept") && !out.contains("created"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&lib_path).expect("read"),
        "// mine\n"
    );

    for bad in ["Bad-Name", "type", "self"] {
        let (code, _, err) = svrkit(&["new", bad, "--dir", &d]).await;
        assert_eq!(code, 2, "{bad}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_inside_a_workspace_joins_it_builds_and_the_starter_is_formatted() {
    // A workspace shaped like this one (`svrkit-core/`, `idl/svrkit/`, a `[workspace]`
    // Cargo.toml whose dependencies point at this checkout), so the scaffold joins it.
    let dir_dir = tempdir("new-ws");
    let dir = dir_dir.path();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repo = repo.canonicalize().expect("repo");
    std::fs::create_dir_all(dir.join("svrkit-core")).expect("mkdir");
    std::fs::create_dir_all(dir.join("idl/svrkit")).expect("mkdir");
    std::fs::copy(
        repo.join("idl/svrkit/options.proto"),
        dir.join("idl/svrkit/options.proto"),
    )
    .expect("options.proto");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[workspace]\nresolver = \"3\"\nmembers = []\n\n\
             [workspace.package]\nversion = \"0.1.0\"\nedition = \"2024\"\nrust-version = \"1.85\"\nlicense = \"MIT\"\n\n\
             [workspace.dependencies]\nsvrkit = {{ path = {:?}, default-features = false }}\n\
             svrkit-codegen = {{ path = {:?} }}\nanyhow = \"1\"\n\
             tokio = {{ version = \"1\", features = [\"rt-multi-thread\", \"net\", \"time\", \"sync\", \"macros\", \"signal\"] }}\n\n\
             [workspace.lints.rust]\nunsafe_code = \"forbid\"\n",
            repo.join("svrkit-core").display().to_string(),
            repo.join("svrkit-codegen").display().to_string(),
        ),
    )
    .expect("write");
    // The workspace's cluster manifest, which the new service joins.
    std::fs::create_dir_all(dir.join("services")).expect("mkdir");
    std::fs::write(
        dir.join("services/svrkit.toml"),
        "workspace = \"..\"\n\n[registry]\nkind = \"embedded\"\n",
    )
    .expect("svrkit.toml");
    let d = dir.display().to_string();
    let ledger = ledger_idl();
    let (code, out, err) = svrkit(&["new", "ledger", "--idl", &ledger, "--dir", &d]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("to the workspace"), "{out}");
    let cluster = std::fs::read_to_string(dir.join("services/svrkit.toml")).expect("manifest");
    let cluster: toml::Table = toml::from_str(&cluster).expect("TOML");
    assert_eq!(
        cluster["service"][0]["name"].as_str(),
        Some("ledger"),
        "{cluster:?}"
    );
    let root = std::fs::read_to_string(dir.join("Cargo.toml")).expect("root");
    assert!(root.contains("\"services/ledger\""), "{root}");
    let manifest =
        std::fs::read_to_string(dir.join("services/ledger/Cargo.toml")).expect("manifest");
    assert!(manifest.contains("svrkit.workspace = true"), "{manifest}");
    let build = std::fs::read_to_string(dir.join("services/ledger/build.rs")).expect("build");
    assert!(build.contains("../../idl/ledger/ledger.proto"), "{build}");
    assert!(dir.join("idl/ledger/ledger.proto").is_file());
    // It builds as a member of that workspace and its smoke test passes (sharing the
    // compiled dependencies of the scaffold test's target dir).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"))
        .join("scaffold-test");
    let member = dir.join("services/ledger/Cargo.toml");
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO"))
            .args(["test", "-q", "--manifest-path"])
            .arg(&member)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run cargo")
    })
    .await
    .expect("join");
    assert!(status.success(), "the workspace member builds and passes");

    // The starter, with and without etcd.
    let (code, _, err) = svrkit(&["new", "greeter", "--dir", &d, "--etcd"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = svrkit(&["new", "plain", "--dir", &format!("{d}/services")]).await;
    assert_eq!(code, 0, "{err}");
    // A folder that does not exist yet is made.
    let fresh = format!("{d}/not/there/yet");
    let (code, _, err) = svrkit(&["new", "fresh", "--dir", &fresh]).await;
    assert_eq!(code, 0, "{err}");
    assert!(dir.join("not/there/yet/fresh/Cargo.toml").is_file());
    let plain = std::fs::read_to_string(dir.join("services/plain/Cargo.toml")).expect("plain");
    assert!(plain.contains("default-features = false"), "{plain}");
    let starter = dir.join("services/greeter/src/lib.rs");
    assert!(
        std::fs::read_to_string(&starter)
            .expect("lib")
            .contains("async fn hello(")
    );
    assert!(rustfmt_clean(&[
        starter,
        dir.join("services/greeter/tests/smoke.rs")
    ]));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_makes_a_ca_and_certificates_that_talk_mutual_tls() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempdir("certs");
    let d = dir.path().display().to_string();
    let (code, out, err) = svrkit(&[
        "certs",
        "echo-1",
        "--service",
        "svrkit.demo.Echo",
        "--dir",
        &d,
        "--cluster",
        "wx",
        "--days",
        "30",
        "--host",
        "echo.example.com",
        "--host",
        "127.0.0.1",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let printed: Vec<&str> = out.lines().collect();
    assert_eq!(printed.len(), 3, "{out}");
    let (code, _, err) = svrkit(&["certs", "operator", "--dir", &d, "--cluster", "wx"]).await;
    assert_eq!(code, 0, "{err}");
    let mode = |p: PathBuf| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(dir.path().join("echo-1.key")), 0o600);
    assert_eq!(mode(dir.path().join("ca").join("ca.key")), 0o600);
    let load = |name: &str| {
        svrkit::tls::Credentials::from_pem_files(
            &dir.path().join(format!("{name}.crt")),
            &dir.path().join(format!("{name}.key")),
            &dir.path().join("ca.crt"),
        )
        .expect("credentials")
    };
    let (server, operator) = (load("echo-1"), load("operator"));
    assert_eq!(server.identity().as_deref(), Some("svrkit.demo.Echo"));
    // The two talk mutual TLS, the server seeing the operator's verified name.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        Server::builder()
            .tls(server.server().expect("server TLS"))
            .add_service(EchoServer::new(EchoService::new("tls")))
            .serve(listener, std::future::pending()),
    );
    let client = echo::EchoClient::new(
        svrkit::Channel::builder()
            .tls(operator.client().expect("client TLS"))
            .lazy([addr]),
    );
    let reply = client
        .echo(echo::EchoRequest {
            payload: b"x".to_vec().into(),
            delay_ms: 0,
        })
        .await
        .expect("mutual TLS");
    assert_eq!(reply.seen.expect("seen").caller, "operator");
    // Bad input: a clear usage error (exit 2), nothing written.
    let (code, _, err) = svrkit(&["certs", "x", "--dir", &d, "--days", "0"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = svrkit(&["certs", "../escape", "--dir", &d]).await;
    assert_eq!(code, 2, "{err}");
    assert!(!dir.path().join("x.crt").exists());
}
