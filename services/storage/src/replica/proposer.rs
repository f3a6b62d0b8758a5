//! Group proposals: the writes waiting for a shard's leader go into the Raft log
//! together, one entry for many handlers' batches, with a few entries in flight at once.
//!
//! Each log entry costs openraft and the disks the same whatever it holds (encoding, one
//! append on every replica, one apply), so entries carrying one small batch each cap a
//! shard far below what its replicas can write. Proposals queue here; while
//! [`IN_FLIGHT`] entries are being replicated, the queue grows, and the next entry takes
//! everything queued (up to [`MAX_ENTRY_BYTES`]). Every handler's batch is still applied
//! whole and at once, since the entry is; handlers writing the same key hold its stripe
//! lock until their write is applied, so batches in one entry never conflict.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::types::{Command, Raft};

/// Entries being replicated at once per shard.
pub const IN_FLIGHT: usize = 4;
/// The most bytes of keys and values one entry carries (a single larger batch goes
/// alone).
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

/// One handler's batch and who waits for its outcome.
struct Proposal {
    command: Command,
    done: oneshot::Sender<Result<(), String>>,
}

/// The queue of one shard's proposals.
#[derive(Debug, Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<Proposal>,
}

fn size(command: &Command) -> usize {
    command
        .ops
        .iter()
        .map(|op| op.keyspace.len() + op.key.len() + op.value.as_ref().map_or(0, Vec::len))
        .sum()
}

impl Proposer {
    /// Starts proposing to `raft`.
    pub fn start(raft: Raft) -> Proposer {
        let (queue, proposals) = mpsc::unbounded_channel();
        tokio::spawn(propose(raft, proposals));
        Proposer { queue }
    }

    /// Proposes `command` and waits until it is committed and applied here (or failed).
    pub async fn write(&self, command: Command) -> Result<(), String> {
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Proposal { command, done })
            .map_err(|_| "the shard's proposer stopped".to_string())?;
        outcome
            .await
            .map_err(|_| "the shard's proposer stopped".to_string())?
    }
}

async fn propose(raft: Raft, mut proposals: mpsc::UnboundedReceiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut held: Option<Proposal> = None;
    loop {
        let first = match held.take() {
            Some(p) => p,
            None => match proposals.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        // Everything that queued while the slots were busy goes in this entry.
        let mut bytes = size(&first.command);
        let mut batch = vec![first];
        while bytes < MAX_ENTRY_BYTES {
            match proposals.try_recv() {
                Ok(p) => {
                    let more = size(&p.command);
                    if bytes + more > MAX_ENTRY_BYTES {
                        held = Some(p);
                        break;
                    }
                    bytes += more;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let mut waiting = Vec::with_capacity(batch.len());
            let mut ops = Vec::new();
            for p in batch {
                ops.extend(p.command.ops);
                waiting.push(p.done);
            }
            metrics::histogram!("wx_storage_raft_batches_per_entry").record(waiting.len() as f64);
            let outcome = raft
                .client_write(Command { ops })
                .await
                .map(drop)
                .map_err(|e| e.to_string());
            for done in waiting {
                let _ = done.send(outcome.clone());
            }
            drop(slot);
        });
    }
}
