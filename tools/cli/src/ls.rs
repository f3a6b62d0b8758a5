//! `svrkit ls`: services and instances in the registry.

use serde_json::{Value, json};
use svrkit::discovery::Instance;

use crate::Failure;
use crate::target::RegistryArgs;

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
    let instances = args
        .registry
        .instances(args.service.as_deref())
        .await
        .map_err(Failure::Failed)?;
    let mut rows = Vec::new();
    for instance in &instances {
        let status = status(instance).await;
        let health = crate::target::health(instance, status.as_ref());
        rows.push(json!({
            "service": instance.service,
            "id": instance.id,
            "address": instance.addr.to_string(),
            "version": instance.version,
            "protocols": instance
                .protocols
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join("+"),
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
        "{:<28} {:<28} {:<22} {:<11} {:<7} {:<10} {:<7} GRAY USERS",
        "SERVICE",
        "INSTANCE",
        "ADDRESS",
        "PROTOCOL",
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
            "{:<28} {:<28} {:<22} {:<11} {:<7} {:<10} {config:<7} {gray}",
            text("service"),
            text("id"),
            text("address"),
            text("protocols"),
            text("version"),
            text("health")
        );
    }
    if rows.is_empty() {
        outln!("(no instances registered)");
    }
    Ok(())
}
