//! `svrkit console`: a live cluster view in the browser, from the registry.
//!
//! Serves a page at `/` and its data at `/api/cluster`: every registered instance (the
//! embedded registry or etcd) with its `/status` (fetched from its admin endpoint, a
//! second at most each, all at once), its health and — when a `svrkit up` deployment's
//! state directory is at hand — its restarts. The page polls the data every second and
//! shows services → instances: health, requests/s, error rate, p99, DAGOR level,
//! restarts, gray instances beside stable ones.

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
