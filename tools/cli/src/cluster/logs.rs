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
        // The tail: only the end of a long log is read.
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        let mut offset = len.saturating_sub(TAIL_BYTES);
        let text = read_from(path, &mut offset, TAIL_BYTES).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[lines.len().saturating_sub(args.lines)..] {
            print_log_line(prefix, name, line);
        }
        offsets.push(offset);
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
            if let Ok(fresh) = read_from(path, offset, FOLLOW_CHUNK) {
                for line in fresh.lines() {
                    print_log_line(prefix, name, line);
                }
            }
        }
    }
    Ok(())
}

/// How much of the end of a log the first screen reads.
const TAIL_BYTES: u64 = 4 << 20;
/// At most this much is read from a followed log per look.
const FOLLOW_CHUNK: u64 = 1 << 20;

/// The complete lines of `path` from `offset` on (at most `max` bytes of them), moving
/// `offset` past them: only what was appended since the last look is read. A log that
/// shrank was replaced or truncated and is read from its start; a line longer than `max`
/// comes out in pieces.
fn read_from(path: &std::path::Path, offset: &mut u64, max: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    if file.metadata()?.len() < *offset {
        *offset = 0;
    }
    file.seek(SeekFrom::Start(*offset))?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    let end = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(newline) => newline + 1,
        None if bytes.len() as u64 == max => bytes.len(),
        None => 0,
    };
    *offset += end as u64;
    Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

fn print_log_line(prefix: bool, name: &str, line: &str) {
    if prefix {
        outln!("{name:<16} | {line}");
    } else {
        outln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn following_reads_only_what_was_appended_and_restarts_after_truncation() {
        let dir = svrkit_testkit::tempdir("logs");
        let path = dir.path().join("svc-1.log");
        std::fs::write(&path, "one\ntwo\npart").expect("write");
        let mut offset = 0;
        assert_eq!(
            read_from(&path, &mut offset, 1024).expect("read"),
            "one\ntwo\n"
        );
        assert_eq!(offset, 8, "the partial line waits for its end");
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        log.write_all(b"ial\nthree\n").expect("append");
        assert_eq!(
            read_from(&path, &mut offset, 1024).expect("read"),
            "partial\nthree\n"
        );
        assert_eq!(read_from(&path, &mut offset, 1024).expect("read"), "");
        // Bounded: a long run of appended lines comes out a chunk at a time.
        log.write_all(b"aaaa\nbbbb\ncccc\n").expect("append");
        assert_eq!(
            read_from(&path, &mut offset, 10).expect("read"),
            "aaaa\nbbbb\n"
        );
        assert_eq!(read_from(&path, &mut offset, 10).expect("read"), "cccc\n");
        // Replaced by a shorter file: read from its start.
        std::fs::write(&path, "new\n").expect("replace");
        assert_eq!(read_from(&path, &mut offset, 1024).expect("read"), "new\n");
    }
}
