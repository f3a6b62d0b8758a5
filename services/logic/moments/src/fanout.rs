//! Moments posts fanned out: each job of momentsstore's durable queue adds the post's
//! pointer to every recipient's timeline. The lease, sweep and acknowledge loop is
//! [`wx_api::fanout::FanoutWorker`]; this is what it delivers.
//!
//! - Recipients are grouped by the shard that owns their timeline: one `AddToTimelines`
//!   per shard, not one call per friend, all shards at once.
//! - Adding a pointer twice is harmless (it is a key), so a job done twice is done once.
//! - Once acknowledged, the recipients are told (best effort, see [`crate::events`]).
//!
//! `WX_FAILPOINT_MOMENTS_ABORT_AFTER=N` aborts the process after its Nth timeline batch
//! was written (before the job is acknowledged): a deterministic crash mid-fan-out for
//! tests. Off unless set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::join_all;
use svrkit::{Channel, Status};
use wx_api::by_uid;
use wx_api::fanout::{Delivery, FanoutMetrics, FanoutWorker, Lease};
use wx_api::storage::{
    AckJobRequest, AddToTimelinesRequest, LeaseJobsRequest, MomentsStoreClient, TimelineItem,
    TimelineJob,
};

use crate::events::Events;

pub use wx_api::fanout::DEFAULT_LEASE;

/// The fan-out worker of one moments instance.
pub type Fanout = FanoutWorker<TimelineDelivery>;

/// Adds posts' pointers to timelines.
#[derive(Debug)]
pub struct TimelineDelivery {
    store: MomentsStoreClient,
    shards: Channel,
    events: Option<Events>,
    abort_after: Option<u64>,
    batches: AtomicU64,
}

/// A worker over momentsstore (`shards` is its sharded channel, to find every shard),
/// holding each job for `lease`; `abort_after` is the failpoint above.
pub fn worker(
    shards: Channel,
    events: Option<Events>,
    lease: std::time::Duration,
    abort_after: Option<u64>,
) -> Fanout {
    let delivery = TimelineDelivery {
        store: MomentsStoreClient::new(shards.clone()),
        shards: shards.clone(),
        events,
        abort_after,
        batches: AtomicU64::new(0),
    };
    FanoutWorker::new(delivery, shards, lease)
}

impl Delivery for TimelineDelivery {
    type Job = TimelineJob;

    const METRICS: FanoutMetrics = FanoutMetrics {
        depth: "wx_moments_fanout_depth",
        lag_seconds: "wx_moments_fanout_lag_seconds",
        jobs_total: "wx_moments_fanout_jobs_total",
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
                .lease_timeline_jobs_with(request, by_uid(shard_key))
                .await?,
        )
    }

    async fn ack(&self, shard_key: u64, job_id: u64) -> Result<(), Status> {
        self.store
            .ack_timeline_job_with(AckJobRequest { job_id }, by_uid(shard_key))
            .await?;
        Ok(())
    }

    async fn deliver(&self, job: &TimelineJob) -> Result<(), Status> {
        self.add_pointers(job).await
    }

    fn delivered(&self, job: &TimelineJob) {
        if let (Some(events), Some(entry)) = (&self.events, &job.entry) {
            let others: Vec<u64> = job
                .recipients
                .iter()
                .copied()
                .filter(|r| *r != entry.author)
                .collect();
            events.send(&others, crate::events::new_post(entry));
        }
    }
}

impl TimelineDelivery {
    /// Adds the job's pointer to every recipient's timeline, one batch per shard.
    async fn add_pointers(&self, job: &TimelineJob) -> Result<(), Status> {
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
