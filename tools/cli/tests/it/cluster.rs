//! `svrkit up`, `ps`, `call`, `ls`, `deploy`, `logs` and `down` against a real local
//! deployment: every instance its own process, supervised by the real binary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use svrkit_testkit::tempdir;

use serde_json::Value;

/// Runs `svrkit ARGS` to completion: exit code, stdout, stderr.
fn svrkit(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_svrkit"))
        .args(args)
        .output()
        .expect("run svrkit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = svrkit(args);
    assert_eq!(code, 0, "svrkit {args:?} failed:\n{out}\n{err}");
    out
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// Runs `svrkit down` on its state dir when dropped: a failing test leaves no deployment.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_svrkit"))
            .args(["down", "--state-dir", &self.0])
            .output();
    }
}

/// `svrkit ps --json`: one object per instance.
fn ps(state: &str) -> Vec<Value> {
    ok(&["ps", "--state-dir", state, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Polls `ps` until `done` holds (bounded: fails after 30 s).
fn until_ps(state: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let instances = ps(state);
        if done(&instances) {
            return instances;
        }
        assert!(Instant::now() < deadline, "{what}: still {instances:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Which instance served a call for `uid`.
fn served_by(registry: &str, uid: &str) -> String {
    let idl = repo().join("idl").display().to_string();
    // The registry as services are told it (`--registry dir:PATH`, like SVRKIT_REGISTRY).
    let spec = format!("dir:{registry}");
    let out = ok(&[
        "call",
        "svrkit.demo.Echo/Echo",
        "{}",
        "--registry",
        &spec,
        "--idl",
        &idl,
        "--uid",
        uid,
        "--timeout",
        "5000",
    ]);
    let reply: Value = serde_json::from_str(&out).expect("JSON reply");
    reply["seen"]["server"]
        .as_str()
        .expect("server")
        .to_string()
}

fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, s)| s.trim_start().starts_with('Z'))
    })
}

/// A manifest that builds the dependency-free `tests/fixtures/tiny` service with cargo.
fn write_build_manifest(dir: &Path) -> PathBuf {
    let manifest = dir.join("svrkit.toml");
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny");
    std::fs::write(
        &manifest,
        format!(
            "workspace = {:?}\n[build]\nprofile = \"dev\"\n\n[[service]]\nname = \"tiny\"\ninstances = 1\n",
            tiny.display().to_string()
        ),
    )
    .expect("manifest");
    manifest
}

/// The echo binary the workspace build left next to this test, for manifests that name
/// a prebuilt binary instead of building.
fn echo_binary() -> PathBuf {
    svrkit_testkit::workspace_binary("echo")
}

/// A manifest running two instances of the prebuilt echo binary.
fn write_prebuilt_manifest(dir: &Path, registry: &str) -> PathBuf {
    let manifest = dir.join("svrkit.toml");
    let text = format!(
        "{registry}\n[[service]]\nname = \"echo\"\ninstances = 2\nbinary = {:?}\nenv = {{ RUST_LOG = \"info\" }}\n",
        echo_binary().display().to_string()
    );
    std::fs::write(&manifest, text).expect("manifest");
    manifest
}

#[test]
fn up_builds_with_cargo_and_deploy_builds_again() {
    let dir_dir = tempdir("build");
    let dir = dir_dir.path();
    let manifest = write_build_manifest(dir);
    let state = dir.join("state").display().to_string();
    let _down = Down(state.clone());
    let target = dir.join("target");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_svrkit"))
            .args(args)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .expect("run svrkit");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "svrkit {args:?}:\n{text}\n{err}");
        (text, err)
    };
    let (out, err) = run(&[
        "up",
        manifest.to_str().expect("utf-8"),
        "--state-dir",
        &state,
        "--detach",
    ]);
    assert!(out.contains("1 instance(s) ready"), "{out}");
    assert!(err.contains("building tiny (dev)"), "{err}");
    let instances = ps(&state);
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0]["status"], "ready");
    // The binary was built into the target dir and copied into the state dir.
    assert!(target.join("debug/tiny").is_file());

    let (out, err) = run(&["deploy", "tiny", "--gray", "uids:7", "--state-dir", &state]);
    assert!(out.contains("1 gray instance(s) ready"), "{out}");
    assert!(err.contains("building tiny"), "{err}");
    ok(&["down", "--state-dir", &state]);
}

#[test]
fn up_call_ls_restart_gray_deploy_and_down() {
    let dir_dir = tempdir("up");
    let dir = dir_dir.path();
    let manifest = write_prebuilt_manifest(dir, "");
    let state = dir.join("state").display().to_string();
    let _down = Down(state.clone());
    let registry = dir.join("state/registry").display().to_string();

    let out = ok(&[
        "up",
        manifest.to_str().expect("utf-8"),
        "--state-dir",
        &state,
        "--detach",
    ]);
    assert!(out.contains("2 instance(s) ready"), "{out}");
    let instances = ps(&state);
    assert_eq!(instances.len(), 2);
    assert!(
        instances
            .iter()
            .all(|i| i["status"] == "ready" && i["pid"].is_u64())
    );
    let supervisor: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/state.json")).expect("state"))
            .expect("state JSON");
    let supervisor_pid = supervisor["supervisor_pid"].as_u64().expect("pid");
    // Prometheus scrapes every instance's admin endpoint from the written configuration.
    let scrape = std::fs::read_to_string(dir.join("state/prometheus.yml")).expect("prometheus.yml");
    for instance in &instances {
        let admin = instance["admin"].as_str().expect("an admin address");
        assert!(
            scrape.contains(&format!("[\"{admin}\"]")),
            "{admin} in {scrape}"
        );
    }
    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(dir.join("state/prometheus.yml"))
        .output()
    {
        assert!(
            out.status.success(),
            "promtool check config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The deployment serves, and the registry lists both instances as ready.
    assert!(served_by(&registry, "1").starts_with("echo-"));
    let listed: Vec<Value> = ok(&["ls", "--registry-dir", &registry, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let mut ids: Vec<&str> = listed.iter().filter_map(|i| i["id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["echo-1", "echo-2"]);
    assert!(listed.iter().all(|i| i["health"] == "ready"), "{listed:?}");

    // kill -9 one instance: the supervisor restarts it.
    let victim = instances[0]["pid"].as_u64().expect("pid");
    let victim_id = instances[0]["id"].as_str().expect("id").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let after = until_ps(&state, "restart after kill -9", |all| {
        all.iter().any(|i| {
            i["id"] == victim_id.as_str()
                && i["restarts"] == 1
                && i["status"] == "ready"
                && i["pid"].as_u64() != Some(victim)
        })
    });
    let restarted = after
        .iter()
        .find(|i| i["id"] == victim_id.as_str())
        .expect("victim");
    assert!(
        restarted["last_exit"]
            .as_str()
            .expect("exit")
            .contains("signal 9")
    );
    let log = ok(&["logs", &victim_id, "--state-dir", &state]);
    assert_eq!(
        log.matches("listening on").count(),
        2,
        "two runs logged:\n{log}"
    );

    // A gray release for user 7, compared, then rolled back.
    let out = ok(&["deploy", "echo", "--gray", "uids:7", "--state-dir", &state]);
    assert!(
        out.contains("1 gray instance(s) ready for users 7"),
        "{out}"
    );
    let listed: Vec<Value> = ok(&["ls", "--registry-dir", &registry, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let gray = listed
        .iter()
        .find(|i| i["id"] == "echo-gray-1")
        .expect("listed");
    assert_eq!(
        (gray["version"].as_str(), gray["gray_users"].as_str()),
        (Some("gray"), Some("users 7"))
    );
    for _ in 0..3 {
        assert_eq!(served_by(&registry, "7"), "echo-gray-1");
        assert_ne!(served_by(&registry, "8"), "echo-gray-1");
    }
    let figures: Vec<Value> = ok(&["deploy", "echo", "status", "--state-dir", &state, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let gray = figures
        .iter()
        .find(|f| f["version"] == "gray")
        .expect("gray row");
    assert_eq!(gray["requests"], 3);
    assert_eq!(gray["error_rate"], 0.0);
    assert_eq!(gray["fault_rate"], 0.0);
    let p99 = gray["worst_p99_latency_ms"].as_f64().expect("p99");
    assert!(p99 > 0.0 && p99 >= gray["mean_latency_ms"].as_f64().expect("mean") * 0.8);
    let (code, _, err) = svrkit(&["deploy", "echo", "--gray", "uids:9", "--state-dir", &state]);
    assert_eq!(code, 1, "a second release while one runs is refused");
    assert!(err.contains("already has a gray release"), "{err}");
    ok(&["deploy", "echo", "rollback", "--state-dir", &state]);
    let all = ps(&state);
    assert!(all.iter().all(|i| i["version"] == "stable"), "{all:?}");
    assert_ne!(served_by(&registry, "7"), "echo-gray-1");

    // Another release, promoted: stable instances move to the new binary one by one.
    ok(&[
        "deploy",
        "echo",
        "--gray",
        "percent:100",
        "--state-dir",
        &state,
    ]);
    let before: Vec<u64> = ps(&state)
        .iter()
        .filter_map(|i| i["pid"].as_u64())
        .collect();
    let out = ok(&["deploy", "echo", "promote", "--state-dir", &state]);
    assert!(out.contains("promoted"), "{out}");
    let all = ps(&state);
    assert_eq!(all.len(), 2);
    assert!(
        all.iter()
            .all(|i| i["version"] == "stable" && i["status"] == "ready")
    );
    assert!(
        all.iter()
            .all(|i| !before.contains(&i["pid"].as_u64().unwrap_or(0)))
    );
    let served = served_by(&registry, "7");
    assert!(served == "echo-1" || served == "echo-2", "{served}");

    // down: every process is gone, supervisor included.
    let pids: Vec<u64> = all.iter().filter_map(|i| i["pid"].as_u64()).collect();
    ok(&["down", "--state-dir", &state]);
    for pid in pids.iter().chain([&supervisor_pid]) {
        assert!(!pid_alive(*pid), "process {pid} survived svrkit down");
    }
    assert!(ok(&["ps", "--state-dir", &state]).contains("nothing is up"));
}

#[test]
fn up_refuses_a_bad_manifest_and_down_with_nothing_up_is_fine() {
    let dir_dir = tempdir("bad");
    let dir = dir_dir.path();
    let manifest = dir.join("bad.toml");
    std::fs::write(&manifest, "[[service]]\nname = \"a b\"\n").expect("write");
    let state = dir.join("state").display().to_string();
    let (code, _, err) = svrkit(&[
        "up",
        manifest.to_str().expect("utf-8"),
        "--state-dir",
        &state,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("service name \"a b\""), "{err}");
    let (code, out, _) = svrkit(&["down", "--state-dir", &state]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing is up"));
    let (code, _, err) = svrkit(&["deploy", "echo", "promote", "--state-dir", &state]);
    assert_eq!(code, 2);
    assert!(err.contains("nothing is up"), "{err}");
}

#[test]
fn a_foreground_up_stops_everything_on_ctrl_c() {
    use std::io::BufRead as _;
    let dir_dir = tempdir("fg");
    let dir = dir_dir.path();
    let manifest = write_prebuilt_manifest(dir, "");
    let state = dir.join("state").display().to_string();
    let _down = Down(state.clone());
    let mut up = std::process::Command::new(env!("CARGO_BIN_EXE_svrkit"))
        .args([
            "up",
            manifest.to_str().expect("utf-8"),
            "--state-dir",
            &state,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("svrkit up");
    let stdout = up.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    // The summary's last line says the deployment is ready (or the output ends).
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("instance(s) ready"));
    assert!(ready, "svrkit up never reported ready");
    let pids: Vec<u64> = ps(&state)
        .iter()
        .filter_map(|i| i["pid"].as_u64())
        .collect();
    assert_eq!(pids.len(), 2);
    let sent = std::process::Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let status = up.wait().expect("wait");
    assert!(status.success(), "{status}");
    for pid in pids {
        assert!(!pid_alive(pid), "instance {pid} survived Ctrl-C");
    }
    assert!(ok(&["ps", "--state-dir", &state]).contains("nothing is up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_etcd_and_down_after_the_supervisor_died() {
    let etcd = svrkit_testkit::Etcd::start().await;
    let dir_dir = tempdir("etcd");
    let dir = dir_dir.path();
    let registry = format!(
        "[registry]\nkind = \"etcd\"\nendpoints = [{:?}]\n",
        etcd.endpoint()
    );
    let manifest = write_prebuilt_manifest(dir, &registry);
    let state = dir.join("state").display().to_string();
    let _down = Down(state.clone());
    ok(&[
        "up",
        manifest.to_str().expect("utf-8"),
        "--state-dir",
        &state,
        "--detach",
    ]);
    // The cluster's keys are under /svrkit/CLUSTER/ (the manifest's [tls] cluster).
    let listed: Vec<Value> = ok(&[
        "ls",
        "--etcd",
        &etcd.endpoint(),
        "--cluster",
        "svrkit",
        "--json",
    ])
    .lines()
    .map(|l| serde_json::from_str(l).expect("JSON"))
    .collect();
    let mut ids: Vec<&str> = listed.iter().filter_map(|i| i["id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["echo-1", "echo-2"]);
    assert!(listed.iter().all(|i| i["health"] == "ready"), "{listed:?}");

    // The supervisor dies without a word; `down` still stops what it left running.
    let state_file: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/state.json")).expect("state"))
            .expect("JSON");
    let supervisor = state_file["supervisor_pid"].as_u64().expect("pid");
    let instances: Vec<u64> = ps(&state)
        .iter()
        .filter_map(|i| i["pid"].as_u64())
        .collect();
    let killed = std::process::Command::new("kill")
        .args(["-9", &supervisor.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(supervisor) {
        assert!(Instant::now() < deadline, "the supervisor survived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok(&["ps", "--state-dir", &state]).contains("is not running"));
    let out = ok(&["down", "--state-dir", &state]);
    assert!(out.contains("2 left by a dead supervisor"), "{out}");
    for pid in instances {
        assert!(!pid_alive(pid), "an orphaned instance survived svrkit down");
    }
}

#[test]
fn an_instance_that_cannot_start_fails_up_quickly_and_leaves_nothing() {
    let dir_dir = tempdir("crash");
    let dir = dir_dir.path();
    let manifest = dir.join("svrkit.toml");
    // `false` exits at once with status 1, every time.
    std::fs::write(
        &manifest,
        "[[service]]\nname = \"doomed\"\nbinary = \"/bin/false\"\nargs = []\n",
    )
    .expect("manifest");
    let state = dir.join("state").display().to_string();
    let (code, _, err) = svrkit(&[
        "up",
        manifest.to_str().expect("utf-8"),
        "--state-dir",
        &state,
    ]);
    assert_eq!(code, 1, "{err}");
    // Given up after a few crashes, not at the ready timeout (which would say "not ready").
    assert!(
        err.contains("doomed-1 failed to start (exit code 1)"),
        "{err}"
    );
    assert!(ok(&["ps", "--state-dir", &state]).contains("nothing is up"));
}

/// `svrkit deploy --gray … --auto-rollback`, run while user 7 calls `method` over and over
/// (each call its own `svrkit call`): the deploy's exit code, stdout and stderr.
fn gray_with_traffic(
    state: &str,
    registry: &str,
    extra: &[&str],
    method: &str,
) -> (i32, String, String) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let traffic = {
        let (done, spec, method) = (
            std::sync::Arc::clone(&done),
            format!("dir:{registry}"),
            format!("svrkit.demo.Echo/{method}"),
        );
        std::thread::spawn(move || {
            let idl = repo().join("idl").display().to_string();
            // Bounded: the deploy's own watch ends it within its 30 s.
            let mut calls = 0;
            while !done.load(Ordering::SeqCst) && calls < 1_000 {
                let _ = svrkit(&[
                    "call",
                    &method,
                    "{}",
                    "--registry",
                    &spec,
                    "--idl",
                    &idl,
                    "--uid",
                    "7",
                    "--timeout",
                    "5000",
                ]);
                calls += 1;
            }
            calls
        })
    };
    let mut args = vec!["deploy", "echo", "--gray", "uids:7", "--state-dir", state];
    args.extend_from_slice(extra);
    let outcome = svrkit(&args);
    done.store(true, Ordering::SeqCst);
    let calls = traffic.join().expect("traffic");
    assert!(calls > 0, "user 7 called");
    outcome
}

#[test]
fn a_gray_build_that_faults_is_rolled_back_and_one_answering_caller_errors_is_not() {
    let dir_dir = tempdir("rollback");
    let dir = dir_dir.path();
    let manifest = write_prebuilt_manifest(dir, "");
    let state = dir.join("state").display().to_string();
    let _down = Down(state.clone());
    let registry = dir.join("state/registry").display().to_string();
    ok(&[
        "up",
        manifest.to_str().expect("utf-8"),
        "--state-dir",
        &state,
        "--detach",
    ]);

    // A build whose every Echo fails with INTERNAL: rolled back as soon as it has served
    // enough to judge, and the command fails saying so.
    let (code, out, err) = gray_with_traffic(
        &state,
        &registry,
        &[
            "--gray-env",
            "ECHO_FAULT=internal",
            "--auto-rollback",
            "0.2",
            "--min-requests",
            "5",
            "--watch",
            "30",
        ],
        "Echo",
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("rolled back automatically"), "{out}\n{err}");
    let all = ps(&state);
    assert!(all.iter().all(|i| i["version"] == "stable"), "{all:?}");
    assert_ne!(served_by(&registry, "7"), "echo-gray-1");

    // A healthy build whose users send requests it refuses (Relay with no next hop:
    // FAILED_PRECONDITION, the caller's error): it holds.
    let (code, out, err) = gray_with_traffic(
        &state,
        &registry,
        &[
            "--auto-rollback",
            "0.2",
            "--min-requests",
            "5",
            "--watch",
            "8",
        ],
        "Relay",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("the gray release held"), "{out}\n{err}");
    assert!(
        ps(&state).iter().any(|i| i["version"] == "gray"),
        "still serving"
    );
    ok(&["deploy", "echo", "rollback", "--state-dir", &state]);
}
