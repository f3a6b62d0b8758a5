//! A durable job queue on a shard's engine, for fan-out: group messages (msgstore) and
//! Moments timelines (momentsstore); `wx_api::fanout` is the worker on the other side.
//!
//! - **Enqueue with the data**: [`Queue::push`] adds a job to the caller's write batch, so
//!   the job commits atomically with whatever it fans out ("accepted" means "will be
//!   delivered"); nothing is enqueued for a write that failed.
//! - **Lease, then acknowledge**: a worker leases jobs for a while; a job acknowledged is
//!   deleted durably; a job whose lease expired (its worker died) is leased again. Leases
//!   live in memory: after the store itself restarts every job is leasable at once. So a
//!   job may be delivered more than once, and its consumer must be idempotent (fan-out
//!   deduplicates by message and recipient).
//! - **Bounded**: jobs are leased oldest first, at most [`MAX_LEASE`] per call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use fjall::Keyspace;

use crate::engine::WriteBatch;
use wx_api::storage::{LeaseJobsReply, LeaseJobsRequest, LeasedJob};

use crate::codec::word;
use crate::engine::{Engine, StorageError};

/// The most jobs one lease hands out.
pub const MAX_LEASE: usize = 64;

/// A leased job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id (increasing in enqueue order).
    pub id: u64,
    /// When it was enqueued, in ms since the Unix epoch.
    pub created_ms: u64,
    /// What to do, as the producer encoded it.
    pub payload: Vec<u8>,
}

/// A named durable queue in an engine.
pub struct Queue {
    engine: Engine,
    jobs: Keyspace,
    next_id: AtomicU64,
    leases: Mutex<HashMap<u64, Instant>>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("next_id", &self.next_id.load(Ordering::Relaxed))
            .finish()
    }
}

impl Queue {
    /// Opens (or creates) the queue `name` in `engine`.
    pub fn open(engine: &Engine, name: &str) -> Result<Queue, StorageError> {
        let jobs = engine.keyspace(&format!("queue_{name}"))?;
        let last = match jobs.last_key_value() {
            Some(item) => {
                let key = item.key().map_err(StorageError::from)?;
                word(&key, 0)
            }
            None => 0,
        };
        Ok(Queue {
            engine: engine.clone(),
            jobs,
            next_id: AtomicU64::new(last + 1),
            leases: Mutex::new(HashMap::new()),
        })
    }

    /// Adds a job to `batch`; it exists once the batch is committed. Returns its id.
    pub fn push(&self, batch: &mut WriteBatch, payload: &[u8]) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut value = wx_api::now_ms().to_be_bytes().to_vec();
        value.extend_from_slice(payload);
        batch.insert(&self.jobs, id.to_be_bytes().to_vec(), value);
        metrics::counter!("wx_queue_jobs_enqueued_total").increment(1);
        id
    }

    fn job(id: u64, value: &[u8]) -> Job {
        Job {
            id,
            created_ms: word(value, 0),
            payload: value.get(8..).unwrap_or_default().to_vec(),
        }
    }

    /// Leases up to `max` jobs (oldest first) that nobody holds, for `lease`; or only job
    /// `only` when given.
    pub fn lease(
        &self,
        max: usize,
        lease: Duration,
        only: Option<u64>,
    ) -> Result<Vec<Job>, StorageError> {
        let now = Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        leases.retain(|_, until| *until > now);
        let mut out = Vec::new();
        let mut take = |id: u64, value: &[u8], out: &mut Vec<Job>| {
            if leases.contains_key(&id) {
                return;
            }
            leases.insert(id, now + lease);
            out.push(Queue::job(id, value));
        };
        match only {
            Some(id) => {
                if let Some(value) = self.jobs.get(id.to_be_bytes())? {
                    take(id, &value, &mut out);
                }
            }
            None => {
                for item in self.jobs.iter() {
                    let (key, value) = item.into_inner().map_err(StorageError::from)?;
                    let id = word(&key, 0);
                    take(id, &value, &mut out);
                    if out.len() >= max.min(MAX_LEASE) {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deletes job `id` durably (done with it). Acknowledging twice is harmless.
    pub async fn ack(&self, id: u64) -> Result<(), StorageError> {
        let mut batch = self.engine.batch();
        batch.remove(&self.jobs, id.to_be_bytes().to_vec());
        self.engine.commit(batch).await?;
        self.leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        metrics::counter!("wx_queue_jobs_done_total").increment(1);
        Ok(())
    }

    /// Every job on the queue, oldest first (waiting or leased): what an audit counts.
    pub fn all(&self) -> Result<Vec<Job>, StorageError> {
        self.jobs
            .iter()
            .map(|item| {
                let (key, value) = item.into_inner().map_err(StorageError::from)?;
                Ok(Queue::job(word(&key, 0), &value))
            })
            .collect()
    }

    /// Jobs waiting or leased, and the age of the oldest in ms (the lag).
    pub fn depth(&self) -> Result<(u64, u64), StorageError> {
        let mut depth = 0;
        let mut oldest = None;
        for item in self.jobs.iter() {
            let (_, value) = item.into_inner().map_err(StorageError::from)?;
            if oldest.is_none() {
                oldest = Some(Queue::job(0, &value).created_ms);
            }
            depth += 1;
        }
        let lag = oldest.map_or(0, |t| wx_api::now_ms().saturating_sub(t));
        Ok((depth, lag))
    }

    /// Answers a lease request of the shared job-queue shape: the jobs now leased (for
    /// `lease_ms`, clamped to 0.1 s .. 10 min), and for a sweep (no `job_id`) the
    /// queue's depth and lag, which scan the queue and are skipped on a send's own lease.
    pub fn answer_lease(&self, request: &LeaseJobsRequest) -> Result<LeaseJobsReply, StorageError> {
        let lease = Duration::from_millis(request.lease_ms.clamp(100, 600_000));
        let only = (request.job_id != 0).then_some(request.job_id);
        let jobs = self.lease(request.max as usize, lease, only)?;
        let (depth, lag_ms) = match only {
            Some(_) => (0, 0),
            None => self.depth()?,
        };
        Ok(LeaseJobsReply {
            jobs: jobs
                .into_iter()
                .map(|job| LeasedJob {
                    job_id: job.id,
                    job: job.payload.into(),
                    created_ms: job.created_ms,
                })
                .collect(),
            depth,
            lag_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_commit_with_their_batch_lease_expire_and_survive_reopening() {
        let dir = std::env::temp_dir().join(format!(
            "wx-queue-{}-{:x}",
            std::process::id(),
            svrkit::context::random_u64()
        ));
        {
            let engine = Engine::open(&dir).expect("open");
            let queue = Queue::open(&engine, "t").expect("queue");
            let data = engine.keyspace("data").expect("data");
            let mut batch = engine.batch();
            batch.insert(&data, b"k".to_vec(), b"v".to_vec());
            let a = queue.push(&mut batch, b"a");
            let b = queue.push(&mut batch, b"b");
            engine.commit(batch).await.expect("commit");
            // A batch never committed leaves no job.
            let mut dropped = engine.batch();
            queue.push(&mut dropped, b"never");
            drop(dropped);

            let leased = queue
                .lease(10, Duration::from_secs(60), None)
                .expect("lease");
            assert_eq!(
                leased
                    .iter()
                    .map(|j| (j.id, j.payload.clone()))
                    .collect::<Vec<_>>(),
                [(a, b"a".to_vec()), (b, b"b".to_vec())]
            );
            assert!(
                queue
                    .lease(10, Duration::from_secs(60), None)
                    .expect("lease")
                    .is_empty()
            );
            queue.ack(a).await.expect("ack");
            assert_eq!(queue.depth().expect("depth").0, 1);
            // An expired lease hands the job out again.
            let short = Queue::open(&engine, "t2").expect("queue");
            let mut batch = engine.batch();
            let c = short.push(&mut batch, b"c");
            engine.commit(batch).await.expect("commit");
            assert_eq!(
                short
                    .lease(1, Duration::ZERO, Some(c))
                    .expect("lease")
                    .len(),
                1
            );
            assert_eq!(
                short
                    .lease(1, Duration::from_secs(60), Some(c))
                    .expect("again")
                    .len(),
                1
            );
        }
        // After a restart the unacknowledged job is there, leasable at once, and new ids
        // continue above the old ones.
        let engine = Engine::open(&dir).expect("reopen");
        let queue = Queue::open(&engine, "t").expect("queue");
        let left = queue
            .lease(10, Duration::from_secs(60), None)
            .expect("lease");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].payload, b"b");
        let mut batch = engine.batch();
        let next = queue.push(&mut batch, b"d");
        assert!(next > left[0].id);
        drop((queue, engine));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
