//! The group fan-out worker: takes jobs from msgstore's durable queue and delivers each
//! message into every recipient's mailbox.
//!
//! - A job is leased first (by id right after the send that enqueued it; by sweeping every
//!   msgstore shard for the rest), so two workers do not work on it at once; a worker that
//!   dies leaves its lease to expire and the job to be leased again.
//! - Recipients are grouped by the msgstore shard that owns them: one `DeliverBatch` per
//!   shard, not one call per member. Each recipient's copy takes that recipient's next
//!   sequence; a copy whose sequence arrived behind a concurrent delivery is "stale" and
//!   takes a new one in the next round.
//! - Deliveries are deduplicated by (recipient, sender, client message id) in the
//!   mailbox, so a job delivered twice (a retried lease) still reaches each member once.
//! - Acknowledged only when every recipient has the message.
//!
//! `WX_FAILPOINT_FANOUT_ABORT_AFTER=N` aborts the process after it stored N copies (right
//! after the write that stored the Nth, before the job is acknowledged): a deterministic
//! crash mid-fan-out for tests. Off unless set.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use svrkit::{Channel, Status};
use wx_api::by_uid;
use wx_api::seq::{NextRequest, SeqClient};
use wx_api::storage::{
    AckFanoutRequest, DeliverBatchRequest, DeliverMessageRequest, FanoutJob, LeaseFanoutRequest,
    MsgStoreClient, StoredMessage,
};

use crate::Notifier;

/// How long a worker holds a job before another may take it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);
/// How often every shard is swept for jobs nobody is working on.
pub const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Rounds of delivery (each retrying the stale copies) before a job is left for later.
const ROUNDS: usize = 8;

/// The fan-out worker of one message instance.
#[derive(Debug)]
pub struct Fanout {
    store: MsgStoreClient,
    shards: Channel,
    seq: SeqClient,
    notifier: Option<Notifier>,
    lease: Duration,
    abort_after: Option<u64>,
    delivered: AtomicU64,
}

impl Fanout {
    /// A worker over msgstore (`shards` is its sharded channel, to find every shard).
    pub fn new(
        shards: Channel,
        seq: SeqClient,
        notifier: Option<Notifier>,
        lease: Duration,
        abort_after: Option<u64>,
    ) -> Fanout {
        Fanout {
            store: MsgStoreClient::new(shards.clone()),
            shards,
            seq,
            notifier,
            lease,
            abort_after,
            delivered: AtomicU64::new(0),
        }
    }

    /// Leases job `job_id` on the shard of `group_id` and delivers it (the fast path,
    /// right after a send).
    pub async fn run_job(&self, group_id: u64, job_id: u64) -> Result<(), Status> {
        let leased = self
            .store
            .lease_fanout_with(
                LeaseFanoutRequest {
                    max: 1,
                    lease_ms: self.lease.as_millis() as u64,
                    job_id,
                },
                by_uid(group_id),
            )
            .await?;
        for job in leased.jobs {
            self.finish(group_id, job.job_id, job.job.unwrap_or_default())
                .await?;
        }
        Ok(())
    }

    /// Sweeps every shard for jobs nobody holds, forever (until the process ends).
    pub async fn sweep_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            for key in self.shards.instance_keys() {
                let leased = self
                    .store
                    .lease_fanout_with(
                        LeaseFanoutRequest {
                            max: 16,
                            lease_ms: self.lease.as_millis() as u64,
                            job_id: 0,
                        },
                        by_uid(key),
                    )
                    .await;
                let leased = match leased {
                    Ok(leased) => leased,
                    Err(status) => {
                        tracing::debug!(%status, "fan-out sweep of a shard failed");
                        continue;
                    }
                };
                metrics::gauge!("wx_message_fanout_depth").set(leased.depth as f64);
                metrics::gauge!("wx_message_fanout_lag_seconds").set(leased.lag_ms as f64 / 1000.0);
                for job in leased.jobs {
                    let body = job.job.unwrap_or_default();
                    if let Err(status) = self.finish(key, job.job_id, body).await {
                        tracing::warn!(job = job.job_id, %status, "fan-out failed; retried later");
                    }
                }
            }
        }
    }

    /// Delivers `job` and acknowledges it on the shard that `shard_key` routes to.
    async fn finish(&self, shard_key: u64, job_id: u64, job: FanoutJob) -> Result<(), Status> {
        self.deliver(&job).await?;
        self.store
            .ack_fanout_with(AckFanoutRequest { job_id }, by_uid(shard_key))
            .await?;
        metrics::counter!("wx_message_fanout_jobs_total").increment(1);
        if let Some(notifier) = &self.notifier {
            for uid in &job.recipients {
                notifier.notify(*uid, 0);
            }
        }
        Ok(())
    }

    /// Puts the job's message in every recipient's mailbox.
    async fn deliver(&self, job: &FanoutJob) -> Result<(), Status> {
        let message = job
            .message
            .clone()
            .ok_or_else(|| Status::internal("a fan-out job without a message"))?;
        let mut pending: Vec<u64> = job.recipients.clone();
        pending.sort_unstable();
        pending.dedup();
        for _ in 0..ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            // Each recipient's next sequence, concurrently.
            let mut seqs = tokio::task::JoinSet::new();
            for &uid in &pending {
                let seq = self.seq.clone();
                seqs.spawn(async move {
                    let reply = seq
                        .next_with(
                            NextRequest { uid },
                            wx_api::by_section(wx_api::seq_section(uid)),
                        )
                        .await;
                    (uid, reply)
                });
            }
            // Grouped by the shard owning each recipient.
            let mut by_shard: HashMap<String, Vec<DeliverMessageRequest>> = HashMap::new();
            while let Some(joined) = seqs.join_next().await {
                let (uid, reply) = joined.map_err(|e| Status::internal(e.to_string()))?;
                let Ok(reply) = reply else { continue };
                let shard = self.shards.owner_of(uid).unwrap_or_default();
                by_shard
                    .entry(shard)
                    .or_default()
                    .push(DeliverMessageRequest {
                        owner: uid,
                        message: Some(StoredMessage {
                            seq: reply.seq,
                            to: uid,
                            ..message.clone()
                        }),
                    });
            }
            // Recipients whose sequence or batch failed, or whose copy was stale, stay
            // pending for the next round.
            let mut done = std::collections::HashSet::new();
            for (_, items) in by_shard {
                let key = items[0].owner;
                let owners: Vec<u64> = items.iter().map(|i| i.owner).collect();
                match self
                    .store
                    .deliver_batch_with(DeliverBatchRequest { items }, by_uid(key))
                    .await
                {
                    Ok(reply) => {
                        for (owner, outcome) in owners.iter().zip(&reply.outcomes) {
                            if !outcome.stale {
                                done.insert(*owner);
                            }
                            if outcome.stored {
                                self.count_delivery();
                            }
                        }
                    }
                    Err(status) => tracing::debug!(%status, "a fan-out batch failed; retrying"),
                }
            }
            pending.retain(|u| !done.contains(u));
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(Status::unavailable(format!(
                "{} recipient(s) still pending",
                pending.len()
            )))
        }
    }

    fn count_delivery(&self) {
        metrics::counter!("wx_message_fanout_deliveries_total").increment(1);
        let n = self.delivered.fetch_add(1, Ordering::SeqCst) + 1;
        if self.abort_after.is_some_and(|limit| n >= limit) {
            tracing::error!(
                n,
                "failpoint WX_FAILPOINT_FANOUT_ABORT_AFTER reached: aborting"
            );
            std::process::abort();
        }
    }
}
