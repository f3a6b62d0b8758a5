//! Group messages fanned out: each job of msgstore's durable queue puts one message into
//! every recipient's mailbox. The lease, sweep and acknowledge loop is
//! [`wx_api::fanout::FanoutWorker`]; this is what it delivers.
//!
//! - Recipients are grouped by the msgstore shard that owns them: one `DeliverBatch` per
//!   shard, not one call per member. Each recipient's copy takes that recipient's next
//!   sequence; a copy whose sequence arrived behind a concurrent delivery is "stale" and
//!   takes a new one in the next round.
//! - Deliveries are deduplicated by (recipient, sender, client message id) in the
//!   mailbox, so a job delivered twice (a retried lease) still reaches each member once.
//!
//! `WX_FAILPOINT_FANOUT_ABORT_AFTER=N` aborts the process after it stored N copies (right
//! after the write that stored the Nth, before the job is acknowledged): a deterministic
//! crash mid-fan-out for tests. Off unless set.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use svrkit::{Channel, Status};
use wx_api::by_uid;
use wx_api::fanout::{Delivery, FanoutMetrics, FanoutWorker, Lease};
use wx_api::seq::{NextRequest, SeqClient};
use wx_api::storage::{
    AckJobRequest, DeliverBatchRequest, DeliverMessageRequest, FanoutJob, LeaseJobsRequest,
    MsgStoreClient, StoredMessage,
};

use crate::Notifier;

pub use wx_api::fanout::DEFAULT_LEASE;

/// Rounds of delivery (each retrying the stale copies) before a job is left for later.
const ROUNDS: usize = 8;

/// The fan-out worker of one message instance.
pub type Fanout = FanoutWorker<GroupDelivery>;

/// Delivers group messages into mailboxes.
#[derive(Debug)]
pub struct GroupDelivery {
    store: MsgStoreClient,
    shards: Channel,
    seq: SeqClient,
    notifier: Option<Notifier>,
    abort_after: Option<u64>,
    delivered: AtomicU64,
}

/// A worker over msgstore (`shards` is its sharded channel, to find every shard), holding
/// each job for `lease`; `abort_after` is the failpoint above.
pub fn worker(
    shards: Channel,
    seq: SeqClient,
    notifier: Option<Notifier>,
    lease: std::time::Duration,
    abort_after: Option<u64>,
) -> Fanout {
    let delivery = GroupDelivery {
        store: MsgStoreClient::new(shards.clone()),
        shards: shards.clone(),
        seq,
        notifier,
        abort_after,
        delivered: AtomicU64::new(0),
    };
    FanoutWorker::new(delivery, shards, lease)
}

impl Delivery for GroupDelivery {
    type Job = FanoutJob;

    const METRICS: FanoutMetrics = FanoutMetrics {
        depth: "wx_message_fanout_depth",
        lag_seconds: "wx_message_fanout_lag_seconds",
        jobs_total: "wx_message_fanout_jobs_total",
    };

    async fn lease(
        &self,
        shard_key: u64,
        max: u32,
        lease_ms: u64,
        job_id: u64,
    ) -> Result<Lease<Self::Job>, Status> {
        let request = LeaseJobsRequest {
            max,
            lease_ms,
            job_id,
        };
        Lease::decode(
            self.store
                .lease_fanout_with(request, by_uid(shard_key))
                .await?,
        )
    }

    async fn ack(&self, shard_key: u64, job_id: u64) -> Result<(), Status> {
        self.store
            .ack_fanout_with(AckJobRequest { job_id }, by_uid(shard_key))
            .await?;
        Ok(())
    }

    async fn deliver(&self, job: &FanoutJob) -> Result<(), Status> {
        self.deliver_message(job).await
    }

    fn delivered(&self, job: &FanoutJob) {
        if let Some(notifier) = &self.notifier {
            for uid in &job.recipients {
                notifier.notify(*uid, 0);
            }
        }
    }
}

impl GroupDelivery {
    /// Puts the job's message in every recipient's mailbox.
    async fn deliver_message(&self, job: &FanoutJob) -> Result<(), Status> {
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
            let mut done = HashSet::new();
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
