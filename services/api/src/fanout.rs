//! The durable fan-out worker, once for every kind of job: group messages into mailboxes,
//! Moments posts into timelines.
//!
//! Jobs sit in a durable queue on the storage shard that enqueued them, and the worker
//! only ever moves them forward through three steps:
//!
//! - **lease**: a job is leased first (by id right after the write that enqueued it; by
//!   sweeping every shard for the rest), so two workers do not work on it at once; a
//!   worker that dies leaves its lease to expire and the job to be leased again;
//! - **deliver**: what the job carries reaches every recipient; delivering must be
//!   idempotent, since a job whose lease expired mid-way is delivered again;
//! - **acknowledge**: only once every recipient has it; then the recipients are told
//!   (best effort).
//!
//! What a job is, how it is delivered and whom to tell is a [`Delivery`]; the worker
//! ([`FanoutWorker`]) is the same loop for all of them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use svrkit::{Channel, Status};

use crate::storage::LeaseJobsReply;

/// How long a worker holds a job before another may take it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);
/// How often every shard is swept for jobs nobody is working on.
pub const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Jobs leased from one shard per sweep.
const SWEEP_BATCH: u32 = 16;

/// One job leased from a shard's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedJob<J> {
    /// Its id in the shard's queue.
    pub job_id: u64,
    /// What it carries.
    pub job: J,
}

/// What a lease call answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease<J> {
    /// The jobs now held by this worker.
    pub jobs: Vec<LeasedJob<J>>,
    /// Jobs on the shard (waiting or leased).
    pub depth: u64,
    /// The age of the oldest job on the shard, in milliseconds.
    pub lag_ms: u64,
}

impl<J: prost::Message + Default> Lease<J> {
    /// The jobs of a reply of the shared queue shape, decoded. A job that does not decode
    /// is a bug of its producer: the lease fails loudly rather than dropping it (it stays
    /// in the queue, leased again after its lease).
    pub fn decode(reply: LeaseJobsReply) -> Result<Lease<J>, Status> {
        let jobs = reply
            .jobs
            .into_iter()
            .map(|leased| {
                J::decode(leased.job)
                    .map(|job| LeasedJob {
                        job_id: leased.job_id,
                        job,
                    })
                    .map_err(|e| {
                        Status::data_loss(format!(
                            "fan-out job {} does not decode: {e}",
                            leased.job_id
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Lease {
            jobs,
            depth: reply.depth,
            lag_ms: reply.lag_ms,
        })
    }
}

/// The names of a worker's metrics (gauges of the queue, a counter of jobs done).
#[derive(Debug, Clone, Copy)]
pub struct FanoutMetrics {
    /// Gauge: jobs on the last shard swept.
    pub depth: &'static str,
    /// Gauge: the age of its oldest job, in seconds.
    pub lag_seconds: &'static str,
    /// Counter: jobs delivered and acknowledged.
    pub jobs_total: &'static str,
}

/// A kind of fan-out job: its queue, how it is delivered, and whom to tell.
pub trait Delivery: Send + Sync + 'static {
    /// What a job carries.
    type Job: Send + Sync;

    /// The worker's metric names.
    const METRICS: FanoutMetrics;

    /// Leases up to `max` free jobs (or only `job_id`, when it is not 0) for `lease_ms` on
    /// the shard that `shard_key` routes to.
    fn lease(
        &self,
        shard_key: u64,
        max: u32,
        lease_ms: u64,
        job_id: u64,
    ) -> impl Future<Output = Result<Lease<Self::Job>, Status>> + Send;

    /// Marks `job_id` done on the shard that `shard_key` routes to.
    fn ack(&self, shard_key: u64, job_id: u64) -> impl Future<Output = Result<(), Status>> + Send;

    /// Brings the job to every recipient. Must be idempotent.
    fn deliver(&self, job: &Self::Job) -> impl Future<Output = Result<(), Status>> + Send;

    /// Tells the recipients of an acknowledged job (best effort).
    fn delivered(&self, job: &Self::Job);
}

/// The fan-out worker of one instance: runs jobs right after they are enqueued, and
/// sweeps every shard for the ones nobody finished.
#[derive(Debug)]
pub struct FanoutWorker<D> {
    delivery: D,
    shards: Channel,
    lease: Duration,
}

impl<D: Delivery> FanoutWorker<D> {
    /// A worker delivering with `delivery`, over the queue's sharded channel `shards` (to
    /// find every shard), holding each job for `lease`.
    pub fn new(delivery: D, shards: Channel, lease: Duration) -> FanoutWorker<D> {
        FanoutWorker {
            delivery,
            shards,
            lease,
        }
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// Leases job `job_id` on the shard that `shard_key` routes to and runs it (the fast
    /// path, right after the write that enqueued it).
    pub async fn run_job(&self, shard_key: u64, job_id: u64) -> Result<(), Status> {
        let leased = self
            .delivery
            .lease(shard_key, 1, self.lease_ms(), job_id)
            .await?;
        for job in leased.jobs {
            self.finish(shard_key, job).await?;
        }
        Ok(())
    }

    /// Sweeps every shard for jobs nobody holds, forever (until the process ends).
    pub async fn sweep_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            self.sweep().await;
        }
    }

    /// One sweep of every shard.
    pub async fn sweep(&self) {
        for key in self.shards.instance_keys() {
            let leased = match self
                .delivery
                .lease(key, SWEEP_BATCH, self.lease_ms(), 0)
                .await
            {
                Ok(leased) => leased,
                Err(status) => {
                    tracing::debug!(%status, "fan-out sweep of a shard failed");
                    continue;
                }
            };
            metrics::gauge!(D::METRICS.depth).set(leased.depth as f64);
            metrics::gauge!(D::METRICS.lag_seconds).set(leased.lag_ms as f64 / 1000.0);
            for job in leased.jobs {
                let job_id = job.job_id;
                if let Err(status) = self.finish(key, job).await {
                    tracing::warn!(job = job_id, %status, "fan-out failed; retried later");
                }
            }
        }
    }

    /// Delivers a leased job, acknowledges it on the shard that `shard_key` routes to,
    /// then tells its recipients.
    async fn finish(&self, shard_key: u64, leased: LeasedJob<D::Job>) -> Result<(), Status> {
        self.delivery.deliver(&leased.job).await?;
        self.delivery.ack(shard_key, leased.job_id).await?;
        metrics::counter!(D::METRICS.jobs_total).increment(1);
        self.delivery.delivered(&leased.job);
        Ok(())
    }
}
