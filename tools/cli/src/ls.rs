//! `svrkit ls`: services and instances in the registry.

use anyhow::anyhow;
use serde_json::{Value, json};
use svrkit::discovery::Instance;

use crate::Failure;
use crate::target::{RegistryArgs, Store};

/// Options of `svrkit ls`.
#[derive(Debug, clap::Args)]
pub(crate) struct LsArgs {
    /// Only this service.
    service: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Print JSON (one object per instance) for scripts.
    #[arg(long)]
    json: bool,
}

/// The instance's `/status`, if it has an admin endpoint that answers.
async fn status(instance: &Instance) -> Option<Value> {
    crate::http::get_json(instance.admin?, "/status").await
}

pub(crate) async fn run(args: LsArgs) -> Result<(), Failure> {
    let instances: Vec<Instance> = match args.registry.store() {
        Store::Embedded(registry) => {
            let services = match &args.service {
                Some(service) => vec![service.clone()],
                None => registry.services().map_err(|e| Failure::Failed(e.into()))?,
            };
            let mut all = Vec::new();
            for service in services {
                all.extend(
                    registry
                        .live(&service)
                        .map_err(|e| Failure::Failed(e.into()))?,
                );
            }
            all
        }
        Store::Etcd(registry) => {
            let all = registry
                .all()
                .await
                .map_err(|e| Failure::Failed(anyhow!("{e}")))?;
            all.into_iter()
                .filter(|i| args.service.as_ref().is_none_or(|s| *s == i.service))
                .collect()
        }
    };
    let mut rows = Vec::new();
    for instance in &instances {
        let status = status(instance).await;
        let health = match (&instance.admin, &status) {
            (None, _) => "unknown",
            (Some(_), None) => "down",
            (Some(_), Some(s)) if s["ready"] == true => "ready",
            (Some(_), Some(_)) => "not ready",
        };
        rows.push(json!({
            "service": instance.service,
            "id": instance.id,
            "address": instance.addr.to_string(),
            "version": instance.version,
            "health": health,
            "config_version": status.as_ref().map_or(Value::Null, |s| s["config_version"].clone()),
            "gray_users": instance.gray_users.as_ref().map(crate::cluster::describe_selector),
        }));
    }
    if args.json {
        for row in rows {
            outln!("{row}");
        }
        return Ok(());
    }
    outln!(
        "{:<28} {:<28} {:<22} {:<7} {:<10} {:<7} GRAY USERS",
        "SERVICE",
        "INSTANCE",
        "ADDRESS",
        "VERSION",
        "HEALTH",
        "CONFIG"
    );
    for row in &rows {
        let text = |k: &str| row[k].as_str().unwrap_or("-").to_string();
        let config = row["config_version"]
            .as_u64()
            .map_or("-".to_string(), |v| v.to_string());
        let gray = row["gray_users"].as_str().unwrap_or("");
        outln!(
            "{:<28} {:<28} {:<22} {:<7} {:<10} {config:<7} {gray}",
            text("service"),
            text("id"),
            text("address"),
            text("version"),
            text("health")
        );
    }
    if rows.is_empty() {
        outln!("(no instances registered)");
    }
    Ok(())
}
