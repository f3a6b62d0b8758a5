//! `svrkit deploy --render kubernetes`: the backend's manifest as Kubernetes objects,
//! validated offline against the schemas of the Kubernetes version they are written for
//! (`kubernetes-validate` from PyPI, which `tools/test` installs) and read back as YAML
//! to check what they say.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

fn svrkit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_svrkit"))
        .args(args)
        .output()
        .expect("run svrkit")
}

/// The validator: `SVRKIT_KUBERNETES_VALIDATE` (tools/test sets it), else one on PATH.
/// Under CI it must be there.
fn validator() -> Option<PathBuf> {
    let path = std::env::var_os("SVRKIT_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubernetes-validate"));
    let runs = Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "kubernetes-validate is required under CI (tools/test installs it)"
    );
    eprintln!("skipped: kubernetes-validate is not installed (tools/test installs it)");
    None
}

/// Every rendered file read as YAML (with the validator's own Python, which has PyYAML),
/// by file name.
fn read_back(validator: &Path, files: &[PathBuf]) -> Vec<(String, Value)> {
    let python = validator.with_file_name("python3");
    let python = if python.exists() {
        python
    } else {
        PathBuf::from("python3")
    };
    files
        .iter()
        .map(|file| {
            let out = Command::new(&python)
                .args([
                    "-c",
                    "import sys, json, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
                ])
                .arg(file)
                .output()
                .expect("python3");
            assert!(out.status.success(), "{file:?}: {out:?}");
            let name = file
                .file_stem()
                .and_then(|n| n.to_str())
                .expect("a name")
                .to_string();
            (name, serde_json::from_slice(&out.stdout).expect("JSON"))
        })
        .collect()
}

#[test]
fn the_backend_renders_as_valid_kubernetes_objects() {
    let dir = svrkit_testkit::tempdir("render");
    let out_dir = dir.path().join("k8s");
    let state = dir.path().join("state");
    let manifest = repo().join("services/svrkit.toml");
    let (out_arg, state_arg, manifest_arg) = (
        out_dir.display().to_string(),
        state.display().to_string(),
        manifest.display().to_string(),
    );
    let base = [
        "deploy",
        "--render",
        "kubernetes",
        &out_arg,
        "--manifest",
        &manifest_arg,
        "--state-dir",
        &state_arg,
    ];
    // The backend's manifest uses the embedded registry: pods need etcd, named here.
    let refused = svrkit(&base);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("etcd"),
        "{refused:?}"
    );
    let extra = [
        "--etcd",
        "https://etcd-0.etcd.svrkit:2379",
        "--etcd",
        "https://etcd-1.etcd.svrkit:2379",
        "--image",
        "registry.example/svrkit:1",
    ];
    let rendered = svrkit(&[&base[..], &extra[..]].concat());
    assert!(rendered.status.success(), "{rendered:?}");
    let files: Vec<PathBuf> = String::from_utf8_lossy(&rendered.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(files.len(), 52, "{files:?}");
    // The CA's key is never in a rendered object.
    let ca_key = std::fs::read_to_string(state.join("tls/ca/ca.key")).expect("the CA key");
    for file in &files {
        let text = std::fs::read_to_string(file).expect("rendered");
        assert!(!text.contains(ca_key.trim()), "{file:?} holds the CA key");
    }
    let Some(validator) = validator() else { return };
    let mut args = vec![
        "-k".to_string(),
        "1.33.0".to_string(),
        "--strict".to_string(),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let validated = Command::new(&validator)
        .args(&args)
        .output()
        .expect("kubernetes-validate");
    assert!(
        validated.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
    let objects = read_back(&validator, &files);
    let get = |name: &str| -> &Value {
        &objects
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .1
    };
    for store in [
        "accountstore",
        "contactstore",
        "msgstore",
        "seqstore",
        "momentsstore",
        "walletstore",
    ] {
        let set = get(&format!("05-statefulset-{store}"));
        assert_eq!(set["kind"], "StatefulSet");
        assert_eq!(set["spec"]["replicas"], 3);
        assert_eq!(set["spec"]["podManagementPolicy"], "Parallel");
        assert_eq!(
            set["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            "10Gi"
        );
        let pod = &set["spec"]["template"]["spec"];
        assert_eq!(
            pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
                ["topologyKey"],
            "kubernetes.io/hostname",
            "a shard's replicas on distinct nodes"
        );
        let config = &get(&format!("03-configmap-{store}"))["data"];
        assert_eq!(
            config["SVRKIT_SHARDS"],
            format!("{store}-0,{store}-1,{store}-2"),
            "the shards are the pods' names"
        );
        assert_eq!(config["SVRKIT_REPLICAS"], "3");
        assert!(
            config["SVRKIT_REGISTRY"]
                .as_str()
                .is_some_and(|r| r.starts_with("etcd@wx:https://etcd-0")),
            "{config}"
        );
        assert_eq!(
            get(&format!("04-service-{store}-headless"))["spec"]["clusterIP"],
            "None"
        );
    }
    for service in [
        "account",
        "contact",
        "seq",
        "message",
        "moments",
        "access-short",
        "access-long",
    ] {
        let deployment = get(&format!("05-deployment-{service}"));
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(container["image"], "registry.example/svrkit:1");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        let pause: u64 = container["lifecycle"]["preStop"]["exec"]["command"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("a preStop pause");
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("a grace");
        assert!(
            grace >= pause + 10,
            "the grace covers the pause and the 10 s drain"
        );
        let env = container["env"].as_array().expect("env");
        assert!(
            env.iter().any(|e| e["name"] == "SVRKIT_ADVERTISE"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"),
            "each pod registers its own IP"
        );
        assert_eq!(
            get(&format!("02-secret-{service}-tls"))["type"],
            "kubernetes.io/tls"
        );
    }
    let gateway = get("06-service-access-short");
    assert_eq!(gateway["spec"]["ports"][0]["port"], 8080);
    assert_eq!(
        get("03-configmap-access-short")["data"]["WX_HTTP"],
        "0.0.0.0:8080"
    );
    assert_eq!(
        get("06-service-access-long")["spec"]["ports"][0]["port"],
        8081
    );
}
