//! Building a manifest's binaries with cargo.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::manifest::Manifest;

/// Builds the packages of `services` with cargo and returns each binary's path by name.
pub(crate) fn build(
    manifest: &Manifest,
    profile: &str,
    services: &[&super::manifest::ServiceSpec],
) -> anyhow::Result<HashMap<String, PathBuf>> {
    let mut found = HashMap::new();
    let to_build: Vec<_> = services.iter().filter(|s| s.binary.is_none()).collect();
    for s in services {
        if let Some(binary) = &s.binary {
            found.insert(s.bin().to_string(), binary.clone());
        }
    }
    if to_build.is_empty() {
        return Ok(found);
    }
    let workspace = manifest
        .workspace
        .clone()
        .unwrap_or_else(|| PathBuf::from("."));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(&workspace)
        .args([
            "build",
            "--message-format=json-render-diagnostics",
            "--profile",
        ])
        .arg(if profile == "debug" { "dev" } else { profile });
    for s in &to_build {
        command.args(["-p", s.package(), "--bin", s.bin()]);
    }
    eprintln!(
        "building {} ({profile}) in {}",
        to_build
            .iter()
            .map(|s| s.bin())
            .collect::<Vec<_>>()
            .join(", "),
        workspace.display()
    );
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !output.status.success() {
        bail!("cargo build failed ({})", output.status);
    }
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(message) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            found.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    for s in &to_build {
        if !found.contains_key(s.bin()) {
            bail!(
                "cargo built no binary {:?} in package {:?}",
                s.bin(),
                s.package()
            );
        }
    }
    Ok(found)
}
