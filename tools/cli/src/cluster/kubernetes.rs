//! `svrkit deploy --render kubernetes DIR`: the manifest as Kubernetes objects.
//!
//! One file per object kind and service in DIR (`NN-KIND-NAME.yaml`), for `kubectl apply
//! -f DIR`:
//! - a Namespace; a Secret with the cluster secret; per service a Secret with its
//!   certificate (naming the service, 90 days, issued by the manifest's cluster CA, whose
//!   key never leaves the CA directory) and the CA certificate; a Secret with etcd's
//!   client certificate when the manifest has one;
//! - per service a ConfigMap with its settings (the registry, call policy, shards, the
//!   manifest's `env`), read as environment;
//! - a StatefulSet for every replicated (or `stateful`) service: a volume claim per pod,
//!   pods on distinct nodes (required) and spread over zones (preferred), created all at
//!   once (their Raft groups need them together), each pod its own shard name
//!   (`NAME-0`, `NAME-1`, …) with a headless Service; a Deployment for the others;
//! - a Service for every `public` port (a gateway's HTTP or WebSocket listener).
//!
//! Every pod registers its own IP (`SVRKIT_ADVERTISE` from `status.podIP`) in etcd; the
//! svrkit traffic between pods goes by the registry, not by Kubernetes Services.
//! Readiness is `/readyz` and liveness `/healthz` on the admin port; on termination a
//! `preStop` pause lets load balancers stop sending before SIGTERM, upon which a process
//! deregisters and drains (10 s at most), all within the termination grace.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};

use super::certs::ClusterCerts;
use super::manifest::{Manifest, RegistryChoice, ServiceSpec};

/// The RPC port of every container.
pub(crate) const RPC_PORT: u16 = 7000;
/// The admin port of every container.
pub(crate) const ADMIN_PORT: u16 = 7001;
/// How long the `preStop` hook waits before the container gets SIGTERM.
const PRE_STOP_SECS: u64 = 5;
/// The termination grace: the pause, the drain (10 s at most) and a margin.
const GRACE_SECS: u64 = 30;
/// How long the certificates in the Secrets are valid (re-render and apply before).
const VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// The Kubernetes version the objects are written for (and validated against in CI).
pub(crate) const KUBERNETES_VERSION: &str = "1.33";

/// What to render with.
#[derive(Debug, Clone)]
pub(crate) struct RenderOptions {
    /// The container image holding every binary.
    pub(crate) image: String,
    /// The namespace everything goes in.
    pub(crate) namespace: String,
    /// etcd endpoints, when not the manifest's.
    pub(crate) etcd: Vec<String>,
    /// The size of each replica's volume claim.
    pub(crate) volume: String,
    /// The state directory, whose `tls/` holds the cluster CA unless the manifest names
    /// another.
    pub(crate) state: std::path::PathBuf,
}

/// Renders `manifest` into `dir`; returns the files written.
pub(crate) fn render(
    manifest: &Manifest,
    base: &Path,
    options: &RenderOptions,
    dir: &Path,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    // The cluster CA: the manifest's `[tls] ca_dir`, else the state directory's, as
    // `svrkit up` would make it.
    let endpoints = if options.etcd.is_empty() {
        if manifest.registry.kind != RegistryChoice::Etcd {
            bail!(
                "pods on several nodes need one registry: give the manifest [registry] kind = \"etcd\" \
                 with the cluster's endpoints, or --etcd URL"
            );
        }
        manifest.registry.endpoints.clone()
    } else {
        options.etcd.clone()
    };
    let ns = options.namespace.as_str();
    check_name(ns)?;
    for s in &manifest.services {
        check_name(&s.name)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_dir = manifest
        .tls
        .ca_dir
        .clone()
        .unwrap_or_else(|| options.state.join("tls"));
    let certs = ClusterCerts::open(&ca_dir, &manifest.tls.cluster, false)?;
    let secret = super::up::cluster_secret(&ca_dir)?;
    let mut files = Vec::new();
    let mut write = |name: String, object: Value| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.yaml"));
        let mut text = String::from("# Rendered by `svrkit deploy --render kubernetes`.\n");
        yaml(&object, 0, &mut text);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
        Ok(())
    };
    write(
        "00-namespace".into(),
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }),
    )?;
    write(
        "01-secret-cluster".into(),
        secret_object(ns, "svrkit-cluster", "Opaque", &[("secret", secret)]),
    )?;
    let etcd_env = manifest.registry.etcd_env(base);
    let etcd_file = |var: &str| {
        etcd_env
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| std::fs::read_to_string(v).with_context(|| format!("reading {v}")))
            .transpose()
    };
    let etcd_tls = match (
        etcd_file("SVRKIT_ETCD_CA")?,
        etcd_file("SVRKIT_ETCD_CERT")?,
        etcd_file("SVRKIT_ETCD_KEY")?,
    ) {
        (Some(ca), cert, key) => {
            let mut data = vec![("ca.crt", ca)];
            if let (Some(cert), Some(key)) = (cert, key) {
                data.push(("tls.crt", cert));
                data.push(("tls.key", key));
            }
            write(
                "01-secret-etcd-client".into(),
                secret_object(ns, "svrkit-etcd-client", "Opaque", &data),
            )?;
            true
        }
        _ => false,
    };
    let ca_pem = std::fs::read_to_string(certs.ca_file())
        .with_context(|| format!("reading {}", certs.ca_file().display()))?;
    for spec in &manifest.services {
        let name = &spec.name;
        if manifest.tls.enabled {
            let issued = certs.mint(name, VALIDITY)?;
            write(
                format!("02-secret-{name}-tls"),
                secret_object(
                    ns,
                    &format!("{name}-tls"),
                    "kubernetes.io/tls",
                    &[
                        ("tls.crt", issued.cert_pem),
                        ("tls.key", issued.key_pem),
                        ("ca.crt", ca_pem.clone()),
                    ],
                ),
            )?;
        }
        let stateful = spec.is_stateful();
        let env = settings(manifest, spec, &endpoints, etcd_tls);
        write(
            format!("03-configmap-{name}"),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": { "name": format!("{name}-config"), "namespace": ns, "labels": labels(spec) },
                "data": env,
            }),
        )?;
        let pod = pod_template(spec, options, manifest.tls.enabled, etcd_tls, stateful);
        if stateful {
            write(
                format!("04-service-{name}-headless"),
                json!({
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": { "name": name, "namespace": ns, "labels": labels(spec) },
                    "spec": {
                        "clusterIP": "None",
                        "publishNotReadyAddresses": true,
                        "selector": { "app.kubernetes.io/name": name },
                        "ports": [{ "name": "rpc", "port": RPC_PORT, "targetPort": "rpc" }],
                    },
                }),
            )?;
            write(
                format!("05-statefulset-{name}"),
                json!({
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "metadata": { "name": name, "namespace": ns, "labels": labels(spec) },
                    "spec": {
                        "serviceName": name,
                        "replicas": spec.instances,
                        // A shard's replicas start together: its Raft group needs a majority.
                        "podManagementPolicy": "Parallel",
                        "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
                        "template": pod,
                        "volumeClaimTemplates": [{
                            "metadata": { "name": "data" },
                            "spec": {
                                "accessModes": ["ReadWriteOnce"],
                                "resources": { "requests": { "storage": options.volume } },
                            },
                        }],
                    },
                }),
            )?;
        } else {
            write(
                format!("05-deployment-{name}"),
                json!({
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": { "name": name, "namespace": ns, "labels": labels(spec) },
                    "spec": {
                        "replicas": spec.instances,
                        "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
                        "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
                        "template": pod,
                    },
                }),
            )?;
        }
        if !spec.public.is_empty() {
            let ports: Vec<Value> = spec
                .public
                .iter()
                .map(|(var, port)| {
                    json!({ "name": port_name(var), "port": port, "targetPort": port_name(var) })
                })
                .collect();
            write(
                format!("06-service-{name}"),
                json!({
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": { "name": name, "namespace": ns, "labels": labels(spec) },
                    "spec": {
                        "type": "LoadBalancer",
                        "selector": { "app.kubernetes.io/name": name },
                        "ports": ports,
                    },
                }),
            )?;
        }
    }
    Ok(files)
}

/// A Kubernetes object name: lowercase letters, digits and `-`, 1 to 52 characters (room
/// for the suffixes added to it).
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 52
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "{name:?} cannot name Kubernetes objects: use lowercase letters, digits and '-' (at most 52)"
        ))
    }
}

/// A container port's name for the variable holding its address (`WX_HTTP` → `http`):
/// lowercase, at most 15 characters.
fn port_name(var: &str) -> String {
    let name = var
        .strip_prefix("WX_")
        .or_else(|| var.strip_prefix("SVRKIT_"))
        .unwrap_or(var)
        .to_ascii_lowercase()
        .replace('_', "-");
    name.chars().take(15).collect()
}

fn labels(spec: &ServiceSpec) -> Value {
    json!({ "app.kubernetes.io/name": spec.name, "app.kubernetes.io/part-of": "svrkit" })
}

fn secret_object(ns: &str, name: &str, kind: &str, data: &[(&str, String)]) -> Value {
    let data: BTreeMap<&str, &str> = data.iter().map(|(k, v)| (*k, v.as_str())).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name, "namespace": ns },
        "type": kind,
        "stringData": data,
    })
}

/// A service's settings, as its ConfigMap holds them (the environment of every pod).
fn settings(
    manifest: &Manifest,
    spec: &ServiceSpec,
    endpoints: &[String],
    etcd_tls: bool,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = spec.env.clone();
    let mut set = |k: &str, v: String| {
        env.entry(k.to_string()).or_insert(v);
    };
    set(
        "SVRKIT_REGISTRY",
        format!("etcd@{}:{}", manifest.tls.cluster, endpoints.join(",")),
    );
    set("SVRKIT_LISTEN", format!("0.0.0.0:{RPC_PORT}"));
    set("SVRKIT_ADMIN", format!("0.0.0.0:{ADMIN_PORT}"));
    set("SVRKIT_DATA_DIR", "/data".to_string());
    if spec.is_stateful() {
        let shards: Vec<String> = (0..spec.instances)
            .map(|i| format!("{}-{i}", spec.name))
            .collect();
        set("SVRKIT_SHARDS", shards.join(","));
        if spec.replicas > 1 {
            set("SVRKIT_REPLICAS", spec.replicas.to_string());
        }
    }
    if manifest.tls.enabled {
        set("SVRKIT_TLS_CERT", "/etc/svrkit/tls/tls.crt".to_string());
        set("SVRKIT_TLS_KEY", "/etc/svrkit/tls/tls.key".to_string());
        set("SVRKIT_TLS_CA", "/etc/svrkit/tls/ca.crt".to_string());
        if let Some(policy) = spec.policy()
            && let Ok(json) = serde_json::to_string(&policy)
        {
            set("SVRKIT_CALL_POLICY", json);
        }
    }
    if etcd_tls {
        set("SVRKIT_ETCD_CA", "/etc/svrkit/etcd/ca.crt".to_string());
        if manifest.registry.cert.is_some() {
            set("SVRKIT_ETCD_CERT", "/etc/svrkit/etcd/tls.crt".to_string());
            set("SVRKIT_ETCD_KEY", "/etc/svrkit/etcd/tls.key".to_string());
        }
        if let Some(name) = &manifest.registry.server_name {
            set("SVRKIT_ETCD_SERVER_NAME", name.clone());
        }
    }
    for (var, port) in &spec.public {
        set(var, format!("0.0.0.0:{port}"));
    }
    env
}

/// The pod template of a service's pods.
fn pod_template(
    spec: &ServiceSpec,
    options: &RenderOptions,
    tls: bool,
    etcd_tls: bool,
    stateful: bool,
) -> Value {
    let name = &spec.name;
    let mut ports = vec![
        json!({ "name": "rpc", "containerPort": RPC_PORT }),
        json!({ "name": "admin", "containerPort": ADMIN_PORT }),
    ];
    for (var, port) in &spec.public {
        ports.push(json!({ "name": port_name(var), "containerPort": port }));
    }
    let field = |path: &str| json!({ "fieldRef": { "fieldPath": path } });
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    if tls {
        mounts.push(json!({ "name": "tls", "mountPath": "/etc/svrkit/tls", "readOnly": true }));
        volumes.push(json!({ "name": "tls", "secret": { "secretName": format!("{name}-tls"), "defaultMode": 0o400 } }));
    }
    if etcd_tls {
        mounts.push(json!({ "name": "etcd", "mountPath": "/etc/svrkit/etcd", "readOnly": true }));
        volumes.push(json!({ "name": "etcd", "secret": { "secretName": "svrkit-etcd-client", "defaultMode": 0o400 } }));
    }
    // The root filesystem is read-only: data on its volume (a claim of its own for a
    // stateful pod), and a scratch /tmp.
    mounts.push(json!({ "name": "data", "mountPath": "/data" }));
    if !stateful {
        volumes.push(json!({ "name": "data", "emptyDir": {} }));
    }
    mounts.push(json!({ "name": "tmp", "mountPath": "/tmp" }));
    volumes.push(json!({ "name": "tmp", "emptyDir": {} }));
    let probe = |path: &str, period: u32, failures: u32| {
        json!({
            "httpGet": { "path": path, "port": "admin" },
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 2,
        })
    };
    let selector = json!({ "matchLabels": { "app.kubernetes.io/name": name } });
    // Never two replicas of a shard on one node; spread over zones where there are zones.
    let affinity = if stateful {
        json!({
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    { "labelSelector": selector, "topologyKey": "kubernetes.io/hostname" }
                ],
                "preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 100,
                    "podAffinityTerm": { "labelSelector": selector, "topologyKey": "topology.kubernetes.io/zone" },
                }],
            }
        })
    } else {
        json!({
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 100,
                    "podAffinityTerm": { "labelSelector": selector, "topologyKey": "kubernetes.io/hostname" },
                }],
            }
        })
    };
    json!({
        "metadata": { "labels": labels(spec) },
        "spec": {
            "terminationGracePeriodSeconds": GRACE_SECS,
            "affinity": affinity,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 10001,
                "fsGroup": 10001,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [{
                "name": name,
                "image": options.image,
                "command": [spec.bin()],
                "args": spec.args,
                "ports": ports,
                "envFrom": [{ "configMapRef": { "name": format!("{name}-config") } }],
                "env": [
                    { "name": "SVRKIT_INSTANCE_ID", "valueFrom": field("metadata.name") },
                    { "name": "SVRKIT_ADVERTISE", "valueFrom": field("status.podIP") },
                    { "name": svrkit::secret::CLUSTER_SECRET_VAR, "valueFrom": { "secretKeyRef": { "name": "svrkit-cluster", "key": "secret" } } },
                ],
                "readinessProbe": probe("/readyz", 2, 3),
                "livenessProbe": probe("/healthz", 10, 6),
                "lifecycle": { "preStop": { "exec": { "command": ["sleep", PRE_STOP_SECS.to_string()] } } },
                "volumeMounts": mounts,
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"] },
                },
            }],
            "volumes": volumes,
        },
    })
}

/// Writes `value` as YAML at `indent`: strings that read the same unquoted are written
/// plain, the others as double-quoted JSON strings, which YAML reads alike.
fn yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let key = text(key);
                match v {
                    Value::Object(m) if m.is_empty() => {
                        out.push_str(&format!("{pad}{key}: {{}}\n"))
                    }
                    Value::Array(a) if a.is_empty() => out.push_str(&format!("{pad}{key}: []\n")),
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        yaml(v, indent + 2, out);
                    }
                    scalar => out.push_str(&format!("{pad}{key}: {}\n", scalar_text(scalar))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        yaml(item, indent + 2, &mut inner);
                        // The first line's indent becomes the item's dash.
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&inner[indent + 2..]);
                    }
                    Value::Array(_) | Value::Object(_) => {
                        out.push_str(&format!("{pad}- {}\n", item));
                    }
                    scalar => out.push_str(&format!("{pad}- {}\n", scalar_text(scalar))),
                }
            }
        }
        scalar => out.push_str(&format!("{pad}{}\n", scalar_text(scalar))),
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => text(s),
        other => other.to_string(),
    }
}

/// A string as YAML: plain when it cannot be read as anything else (a name, a path, a
/// quantity such as `10Gi`), else double-quoted.
fn text(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_'))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}
