//! `svrkit console`: a live cluster view in the browser, from the registry.
//!
//! Serves a page at `/` and its data at `/api/cluster`: every registered instance (the
//! embedded registry or etcd) with its `/status` (fetched from its admin endpoint, a
//! second at most each, all at once), its health and — when a `svrkit up` deployment's
//! state directory is at hand — its restarts. The page polls the data every second and
//! shows services → instances: health, requests/s, error rate, p99, DAGOR level,
//! restarts, gray instances beside stable ones. Choosing an instance shows its last 15
//! minutes as charts (`/api/history`, from its `/history`) and its recent and slowest
//! requests (`/api/rpcz`); a trace id draws the trace as a waterfall from every
//! instance's `/rpcz` (`/api/trace`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use svrkit::admin::host::{ALLOWED_HOSTS_VAR, AllowedHosts, check_host};

use anyhow::Context as _;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use svrkit::admin::page::asset;

use crate::Failure;
use crate::cluster::StateArgs;
use crate::target::RegistryArgs;

const PAGE: &str = include_str!("../assets/console.html");
const SCRIPT: &str = include_str!("../assets/console.js");

/// Options of `svrkit console`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConsoleArgs {
    /// Where the console listens (loopback by default; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8420")]
    listen: SocketAddr,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    state: StateArgs,
}

struct Console {
    registry: RegistryArgs,
    state_dir: Option<std::path::PathBuf>,
}

impl Console {
    /// The `/api/cluster` document.
    async fn cluster(&self) -> anyhow::Result<Value> {
        let instances = self.registry.instances(None).await?;
        let fetches = instances.iter().map(|i| {
            let admin = i.admin;
            async move {
                match admin {
                    Some(admin) => crate::http::get_json(admin, "/status").await,
                    None => None,
                }
            }
        });
        let statuses = join_all(fetches).await;
        let restarts: HashMap<String, u32> = self
            .state_dir
            .as_deref()
            .and_then(|dir| crate::cluster::read_state(dir).ok().flatten())
            .map(|state| {
                state
                    .instances
                    .into_iter()
                    .map(|v| (v.id, v.restarts))
                    .collect()
            })
            .unwrap_or_default();
        let rows: Vec<Value> = instances
            .iter()
            .zip(statuses)
            .map(|(i, status)| {
                json!({
                    "service": i.service,
                    "id": i.id,
                    "address": i.addr.to_string(),
                    "admin": i.admin.map(|a| a.to_string()),
                    "version": i.version,
                    "zone": i.zone,
                    "weight": i.weight,
                    "gray_users": i.gray_users.as_ref().map(crate::cluster::describe_selector),
                    "health": crate::target::health(i, status.as_ref()),
                    "restarts": restarts.get(&i.id),
                    "status": status,
                })
            })
            .collect();
        Ok(json!({ "instances": rows }))
    }
}

impl Console {
    /// `GET path` from the admin endpoint of the instance named `id`.
    async fn instance_json(&self, id: &str, path: &str) -> anyhow::Result<Value> {
        let instances = self.registry.instances(None).await?;
        let instance = instances
            .iter()
            .find(|i| i.id == id)
            .ok_or_else(|| anyhow::anyhow!("no instance named {id:?} is registered"))?;
        let admin = instance
            .admin
            .ok_or_else(|| anyhow::anyhow!("{id} has no admin endpoint"))?;
        crate::http::get_json(admin, path)
            .await
            .ok_or_else(|| anyhow::anyhow!("{id}'s admin endpoint did not answer {path}"))
    }

    /// Every instance's calls of trace `trace` (hex), each once, in the order they
    /// started, with the instance that served it.
    async fn trace(&self, trace: &str) -> anyhow::Result<Value> {
        let valid =
            !trace.is_empty() && trace.len() <= 32 && trace.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            anyhow::bail!("a trace id is 1 to 32 hex digits");
        }
        let instances = self.registry.instances(None).await?;
        let path = format!("/rpcz?trace={}", trace.to_ascii_lowercase());
        let fetches = instances.iter().map(|i| {
            let (admin, id, path) = (i.admin, i.id.clone(), path.clone());
            async move {
                let doc = match admin {
                    Some(admin) => crate::http::get_json(admin, &path).await,
                    None => None,
                };
                (id, doc)
            }
        });
        let mut seen = std::collections::HashSet::new();
        let mut calls = Vec::new();
        for (id, doc) in join_all(fetches).await {
            let Some(doc) = doc else { continue };
            for key in ["recent", "slowest"] {
                for call in doc[key].as_array().into_iter().flatten() {
                    let span = call["span_id"].as_str().unwrap_or("").to_string();
                    if seen.insert(span) {
                        let mut call = call.clone();
                        call["where"] = json!(id);
                        calls.push(call);
                    }
                }
            }
        }
        calls.sort_by_key(|c| c["at_unix_us"].as_u64().unwrap_or(0));
        Ok(json!({ "trace": trace, "calls": calls }))
    }
}

fn answer(result: anyhow::Result<Value>) -> Response {
    match result {
        Ok(doc) => axum::Json(doc).into_response(),
        Err(e) => (
            axum::http::StatusCode::BAD_GATEWAY,
            axum::Json(json!({ "error": format!("{e:#}") })),
        )
            .into_response(),
    }
}

/// The value of `key` in the request's query, percent-decoded.
fn query(raw: Option<&str>, key: &str) -> anyhow::Result<String> {
    let value = svrkit::admin::query_value(raw, key)
        .ok_or_else(|| anyhow::anyhow!("the query names no {key}"))?;
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| anyhow::anyhow!("a bad escape in {key}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| anyhow::anyhow!("{key} is not UTF-8"))
}

/// `path` of the instance the query names (`?instance=ID`).
async fn of_instance(console: &Console, raw: Option<&str>, path: &str) -> Response {
    answer(match query(raw, "instance") {
        Ok(id) => console.instance_json(&id, path).await,
        Err(e) => Err(e),
    })
}

async fn history(
    State(console): State<Arc<Console>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    of_instance(&console, raw.as_deref(), "/history").await
}

async fn rpcz(
    State(console): State<Arc<Console>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    of_instance(&console, raw.as_deref(), "/rpcz").await
}

async fn trace(
    State(console): State<Arc<Console>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    answer(match query(raw.as_deref(), "id") {
        Ok(id) => console.trace(&id).await,
        Err(e) => Err(e),
    })
}

/// Runs futures at once and collects their outputs in order.
async fn join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

async fn cluster(State(console): State<Arc<Console>>) -> Response {
    match console.cluster().await {
        Ok(doc) => axum::Json(doc).into_response(),
        Err(e) => (
            axum::http::StatusCode::BAD_GATEWAY,
            axum::Json(json!({ "error": format!("{e:#}") })),
        )
            .into_response(),
    }
}

pub(crate) async fn run(args: ConsoleArgs) -> Result<(), Failure> {
    let state_dir = args
        .state
        .dir()
        .ok()
        .filter(|d| d.join("state.json").exists());
    let console = Arc::new(Console {
        registry: args.registry,
        state_dir,
    });
    let app = svrkit::admin::page::shared()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route("/api/cluster", get(cluster))
        .route("/api/history", get(history))
        .route("/api/rpcz", get(rpcz))
        .route("/api/trace", get(trace))
        .with_state(console)
        .layer(axum::middleware::from_fn_with_state(
            AllowedHosts::from_env(ALLOWED_HOSTS_VAR),
            check_host,
        ));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))
        .map_err(Failure::Usage)?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::Failed(e.into()))?;
    outln!("console on http://{addr}/");
    axum::serve(listener, app)
        .with_graceful_shutdown(svrkit::launch::shutdown_signal())
        .await
        .map_err(|e| Failure::Failed(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_what_is_served() {
        assert!(PAGE.contains("src=\"/console.js\""));
        assert!(PAGE.contains("href=\"/svrkit.css\""));
        assert!(!PAGE.contains("<script>"));
        assert!(SCRIPT.contains("/api/cluster"));
    }
}
