//! The benchmark's side of its client processes ([`super::worker`]): starts them, reads
//! their counts, gives them orders, collects their reports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

/// How long a worker may take to report or to stop.
const ANSWER: Duration = Duration::from_secs(60);

/// Who connects where: the same for every worker.
pub(crate) struct Plan {
    pub(crate) gateways: Vec<SocketAddr>,
    pub(crate) tokens: PathBuf,
    pub(crate) connections: usize,
    pub(crate) per_worker: usize,
    pub(crate) per_user: usize,
    pub(crate) per_address: usize,
    pub(crate) opening: usize,
}

/// The counts of one worker, or their sum over the fleet.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Status {
    pub(crate) open: usize,
    /// Connections whose first sign-in was refused and that backed off.
    pub(crate) open_retried: usize,
    pub(crate) failed: usize,
    /// Connections that read the push of round 1 and of round 2 (round 2: of those not
    /// dropped).
    pub(crate) received: [usize; 2],
    pub(crate) dropped: usize,
    pub(crate) reconnected: usize,
    pub(crate) reconnect_failed: usize,
    /// When the latest reconnection signed in (µs since the epoch).
    pub(crate) last_reconnect_us: u64,
}

impl Status {
    /// Parses a worker's `status` line.
    fn parse(line: &str) -> Option<Status> {
        let mut n = line.strip_prefix("status ")?.split(' ');
        let mut next = || n.next()?.parse::<u64>().ok();
        Some(Status {
            open: next()? as usize,
            open_retried: next()? as usize,
            failed: next()? as usize,
            received: [next()? as usize, next()? as usize],
            dropped: next()? as usize,
            reconnected: next()? as usize,
            reconnect_failed: next()? as usize,
            last_reconnect_us: next()?,
        })
    }

    fn add(mut self, other: &Status) -> Status {
        self.open += other.open;
        self.open_retried += other.open_retried;
        self.failed += other.failed;
        self.received[0] += other.received[0];
        self.received[1] += other.received[1];
        self.dropped += other.dropped;
        self.reconnected += other.reconnected;
        self.reconnect_failed += other.reconnect_failed;
        self.last_reconnect_us = self.last_reconnect_us.max(other.last_reconnect_us);
        self
    }
}

/// What a worker's reader has seen.
#[derive(Default)]
struct Seen {
    status: Status,
    received: [Vec<u64>; 2],
    reported: bool,
    /// The answer to `drop`: how many connections drop.
    dropping: Option<usize>,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    seen: Arc<Mutex<Seen>>,
}

/// The running client processes.
pub(crate) struct Fleet {
    workers: Vec<Worker>,
}

impl Fleet {
    /// Starts `ceil(connections / per_worker)` workers, each holding its share.
    pub(crate) fn start(plan: &Plan) -> anyhow::Result<Fleet> {
        let exe = std::env::current_exe()?;
        let gateways: Vec<String> = plan.gateways.iter().map(ToString::to_string).collect();
        let mut workers = Vec::new();
        let mut first = 0;
        while first < plan.connections {
            let count = plan.per_worker.min(plan.connections - first);
            let mut child = Command::new(&exe)
                .arg("connections-worker")
                .args(["--gateways", &gateways.join(",")])
                .arg("--tokens")
                .arg(&plan.tokens)
                .args(["--first", &first.to_string()])
                .args(["--count", &count.to_string()])
                .args(["--per-user", &plan.per_user.to_string()])
                .args(["--per-address", &plan.per_address.to_string()])
                .args(["--opening", &plan.opening.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting a connections worker")?;
            let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
            let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
            let seen = Arc::new(Mutex::new(Seen::default()));
            tokio::spawn(read(stdout, Arc::clone(&seen)));
            workers.push(Worker { child, stdin, seen });
            first += count;
        }
        Ok(Fleet { workers })
    }

    /// How many processes hold the connections.
    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// The counts summed over every worker.
    pub(crate) fn status(&self) -> Status {
        self.workers.iter().fold(Status::default(), |sum, w| {
            sum.add(&w.seen.lock().unwrap_or_else(PoisonError::into_inner).status)
        })
    }

    /// Sends `line` to every worker.
    pub(crate) async fn tell(&mut self, line: &str) -> anyhow::Result<()> {
        for worker in &mut self.workers {
            worker
                .stdin
                .write_all(format!("{line}\n").as_bytes())
                .await?;
            worker.stdin.flush().await?;
        }
        Ok(())
    }

    /// Tells every worker to drop each connection whose index is a multiple of `every`;
    /// how many connections that is, once every worker has answered.
    pub(crate) async fn drop_every(&mut self, every: usize) -> anyhow::Result<usize> {
        self.tell(&format!("drop {every}")).await?;
        let deadline = Instant::now() + ANSWER;
        let mut total = 0;
        for worker in &self.workers {
            loop {
                let dropping = worker
                    .seen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .dropping;
                if let Some(n) = dropping {
                    total += n;
                    break;
                }
                if Instant::now() > deadline {
                    bail!("a worker did not answer `drop` within {ANSWER:?}");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(total)
    }

    /// Every connection's time of receipt of rounds 1 and 2 (see [`super::worker`]).
    pub(crate) async fn received(&mut self) -> anyhow::Result<[Vec<u64>; 2]> {
        for worker in &self.workers {
            worker
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .reported = false;
        }
        self.tell("report").await?;
        let deadline = Instant::now() + ANSWER;
        let mut all: [Vec<u64>; 2] = Default::default();
        for worker in &self.workers {
            loop {
                {
                    let mut seen = worker.seen.lock().unwrap_or_else(PoisonError::into_inner);
                    if seen.reported {
                        for (all, mine) in all.iter_mut().zip(&mut seen.received) {
                            all.append(mine);
                        }
                        break;
                    }
                }
                if Instant::now() > deadline {
                    bail!("a worker did not report within {ANSWER:?}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(all)
    }

    /// Tells every worker to close its connections and waits until each has exited.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.tell("stop").await?;
        for mut worker in self.workers {
            drop(worker.stdin);
            let status = tokio::time::timeout(ANSWER, worker.child.wait())
                .await
                .map_err(|_| anyhow!("a worker did not stop within {ANSWER:?}"))??;
            if !status.success() {
                bail!("a worker ended with {status}");
            }
        }
        Ok(())
    }
}

/// Reads a worker's lines into `seen` until it exits.
async fn read(stdout: tokio::process::ChildStdout, seen: Arc<Mutex<Seen>>) {
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(status) = Status::parse(&line) {
            seen.status = status;
        } else if let Some(rest) = line.strip_prefix("received ") {
            let (round, times) = rest.split_once(' ').unwrap_or((rest, ""));
            let round = if round == "2" { 1 } else { 0 };
            seen.received[round] = times
                .split(',')
                .filter_map(|t| t.parse::<u64>().ok())
                .collect();
        } else if let Some(n) = line.strip_prefix("dropping ") {
            seen.dropping = n.parse().ok();
        } else if line == "reported" {
            seen.reported = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_parses_and_sums() {
        let a = Status::parse("status 10 3 1 9 8 2 2 0 1700000000000000").expect("a status line");
        assert_eq!(
            (a.open, a.failed, a.received, a.dropped),
            (10, 1, [9, 8], 2)
        );
        assert_eq!(a.open_retried, 3);
        assert_eq!((a.reconnected, a.reconnect_failed), (2, 0));
        let b = Status::parse("status 5 0 0 5 4 1 0 1 1700000000000009").expect("a status line");
        let sum = a.add(&b);
        assert_eq!(
            (sum.open, sum.received, sum.reconnect_failed),
            (15, [14, 12], 1)
        );
        assert_eq!(sum.last_reconnect_us, 1_700_000_000_000_009);
        assert!(Status::parse("status 1 2").is_none());
        assert!(Status::parse("received 1 5,6").is_none());
    }
}
