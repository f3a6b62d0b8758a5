//! `svrkit logs`: a service's or an instance's log, optionally followed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;

use super::{StateArgs, failed, usage};
use crate::Failure;

/// Options of `svrkit logs`.
#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    /// A service (all its instances) or one instance id.
    name: String,
    #[command(flatten)]
    state: StateArgs,
    /// Lines to show from the end of each log.
    #[arg(short = 'n', long, default_value_t = 50)]
    lines: usize,
    /// Keep printing what is appended, until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
}

pub(crate) async fn logs(args: LogsArgs) -> Result<(), Failure> {
    let dir = args.state.dir().map_err(failed)?;
    let logs_dir = dir.join("logs");
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&logs_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e
                        .file_name()
                        .to_string_lossy()
                        .strip_suffix(".log")?
                        .to_string();
                    let matches = name == args.name
                        || name
                            .strip_prefix(&args.name)
                            .and_then(|rest| rest.strip_prefix('-'))
                            .is_some_and(|rest| {
                                rest.chars().all(|c| c.is_ascii_digit())
                                    || rest
                                        .strip_prefix("gray-")
                                        .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
                            });
                    matches.then(|| (name, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        return Err(usage(anyhow!(
            "no logs for {:?} in {}",
            args.name,
            logs_dir.display()
        )));
    }
    let prefix = files.len() > 1;
    let mut offsets = Vec::new();
    for (name, path) in &files {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[lines.len().saturating_sub(args.lines)..] {
            print_log_line(prefix, name, line);
        }
        offsets.push(text.len());
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for ((name, path), offset) in files.iter().zip(offsets.iter_mut()) {
            let bytes = std::fs::read(path).unwrap_or_default();
            if bytes.len() < *offset {
                *offset = 0; // truncated or replaced
            }
            let fresh = String::from_utf8_lossy(&bytes[*offset..]).into_owned();
            if let Some(end) = fresh.rfind('\n') {
                for line in fresh[..end].lines() {
                    print_log_line(prefix, name, line);
                }
                *offset += end + 1;
            }
        }
    }
    Ok(())
}

fn print_log_line(prefix: bool, name: &str, line: &str) {
    if prefix {
        outln!("{name:<16} | {line}");
    } else {
        outln!("{line}");
    }
}
