//! The timeline fan-out worker: takes jobs from momentsstore's durable queue and adds the
//! post's pointer to every recipient's timeline.
//!
//! - A job is leased first (by id right after the post that enqueued it; by sweeping every
//!   momentsstore shard for the rest), so two workers do not work on it at once; a worker
//!   that dies leaves its lease to expire and the job to be leased again.
//! - Recipients are grouped by the shard that owns their timeline: one `AddToTimelines`
//!   per shard, not one call per friend, all shards at once.
//! - Adding a pointer twice is harmless (it is a key), so a job done twice is done once.
//! - Acknowledged only when every recipient's timeline has the pointer; then the
//!   recipients are told (best effort, see [`crate::events`]).
//!
//! `WX_FAILPOINT_MOMENTS_ABORT_AFTER=N` aborts the process after its Nth timeline batch
//! was written (before the job is acknowledged): a deterministic crash mid-fan-out for
//! tests. Off unless set.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use svrkit::{Channel, Status};
use wx_api::by_uid;
use wx_api::storage::{
    AckTimelineJobRequest, AddToTimelinesRequest, LeaseTimelineJobsRequest, MomentsStoreClient,
    TimelineItem, TimelineJob,
};

use crate::events::Events;

/// How long a worker holds a job before another may take it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);
/// How often every shard is swept for jobs nobody is working on.
pub const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// The fan-out worker of one moments instance.
#[derive(Debug)]
pub struct Fanout {
    store: MomentsStoreClient,
    shards: Channel,
    events: Option<Events>,
    lease: Duration,
    abort_after: Option<u64>,
    batches: AtomicU64,
}

impl Fanout {
    /// A worker over momentsstore (`shards` is its sharded channel, to find every shard).
    pub fn new(
        shards: Channel,
        events: Option<Events>,
        lease: Duration,
        abort_after: Option<u64>,
    ) -> Fanout {
        Fanout {
            store: MomentsStoreClient::new(shards.clone()),
            shards,
            events,
            lease,
            abort_after,
            batches: AtomicU64::new(0),
        }
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// Leases job `job_id` on the shard of `author` and runs it (the fast path, right
    /// after a post).
    pub async fn run_job(&self, author: u64, job_id: u64) -> Result<(), Status> {
        let leased = self
            .store
            .lease_timeline_jobs_with(
                LeaseTimelineJobsRequest {
                    max: 1,
                    lease_ms: self.lease_ms(),
                    job_id,
                },
                by_uid(author),
            )
            .await?;
        for job in leased.jobs {
            self.finish(author, job.job_id, job.job.unwrap_or_default())
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
                    .lease_timeline_jobs_with(
                        LeaseTimelineJobsRequest {
                            max: 16,
                            lease_ms: self.lease_ms(),
                            job_id: 0,
                        },
                        by_uid(key),
                    )
                    .await;
                let leased = match leased {
                    Ok(leased) => leased,
                    Err(status) => {
                        tracing::debug!(%status, "timeline sweep of a shard failed");
                        continue;
                    }
                };
                metrics::gauge!("wx_moments_fanout_depth").set(leased.depth as f64);
                metrics::gauge!("wx_moments_fanout_lag_seconds").set(leased.lag_ms as f64 / 1000.0);
                for job in leased.jobs {
                    let body = job.job.unwrap_or_default();
                    if let Err(status) = self.finish(key, job.job_id, body).await {
                        tracing::warn!(job = job.job_id, %status, "timeline fan-out failed; retried later");
                    }
                }
            }
        }
    }

    /// Runs `job` and acknowledges it on the shard that `shard_key` routes to.
    async fn finish(&self, shard_key: u64, job_id: u64, job: TimelineJob) -> Result<(), Status> {
        self.deliver(&job).await?;
        self.store
            .ack_timeline_job_with(AckTimelineJobRequest { job_id }, by_uid(shard_key))
            .await?;
        metrics::counter!("wx_moments_fanout_jobs_total").increment(1);
        if let (Some(events), Some(entry)) = (&self.events, &job.entry) {
            let others: Vec<u64> = job
                .recipients
                .iter()
                .copied()
                .filter(|r| *r != entry.author)
                .collect();
            events.send(&others, crate::events::new_post(entry));
        }
        Ok(())
    }

    /// Adds the job's pointer to every recipient's timeline, one batch per shard.
    async fn deliver(&self, job: &TimelineJob) -> Result<(), Status> {
        let entry = job
            .entry
            .ok_or_else(|| Status::internal("a timeline job without its post"))?;
        let mut by_shard: HashMap<String, Vec<TimelineItem>> = HashMap::new();
        for &reader in &job.recipients {
            let shard = self.shards.owner_of(reader).unwrap_or_default();
            by_shard.entry(shard).or_default().push(TimelineItem {
                reader,
                entry: Some(entry),
            });
        }
        let batches = by_shard.into_values().map(|items| async move {
            let key = items[0].reader;
            let n = items.len();
            let reply = self
                .store
                .add_to_timelines_with(AddToTimelinesRequest { items }, by_uid(key))
                .await?;
            metrics::counter!("wx_moments_pointers_total").increment(n as u64);
            self.count_batch();
            Ok::<_, Status>(reply.added)
        });
        for outcome in join_all(batches).await {
            outcome?;
        }
        Ok(())
    }

    fn count_batch(&self) {
        let n = self.batches.fetch_add(1, Ordering::SeqCst) + 1;
        if self.abort_after.is_some_and(|limit| n >= limit) {
            tracing::error!(
                n,
                "failpoint WX_FAILPOINT_MOMENTS_ABORT_AFTER reached: aborting"
            );
            std::process::abort();
        }
    }
}
