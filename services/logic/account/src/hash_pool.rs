//! A fixed pool of threads for CPU-bound work (password hashing), with a bounded queue.
//!
//! Under a burst of sign-ins beyond what the cores can hash, an unbounded queue grows
//! until every hash finishes after its caller has given up: the pool stays busy and
//! nothing succeeds. So the queue is bounded, and what is queued is dropped unrun when
//! its caller has gone or its deadline has passed by the time a thread takes it. A
//! request finding the queue full is refused `overloaded` at once: the caller's DAGOR
//! client backs off, and the hashes that are run are run in time: under twice and four
//! times the hashing capacity, sign-ins went from few or none succeeding to most of what
//! the cores can hash (`svrkit-bench backend-overload --mix 1,0,0,0,0`; figures in
//! `docs/MEASUREMENTS.md`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use svrkit::Status;

type Job = Box<dyn FnOnce() + Send>;

/// The part of the queue (a quarter) only known devices' sign-ins may take.
pub(crate) const KNOWN_SHARE: usize = 4;

/// Threads that run jobs in turn, and the bound of their queue.
#[derive(Debug)]
pub(crate) struct HashPool {
    jobs: mpsc::Sender<Job>,
    /// Jobs queued and not yet taken by a thread.
    queued: Arc<AtomicUsize>,
    max_queued: usize,
}

impl HashPool {
    /// `threads` threads (at least one), queueing at most `max_queued` jobs.
    pub(crate) fn start(name: &str, threads: usize, max_queued: usize) -> HashPool {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a {name} thread");
            }
        }
        HashPool {
            jobs,
            queued: Arc::default(),
            max_queued,
        }
    }

    /// Jobs waiting for a thread now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The most jobs that may wait.
    pub(crate) fn capacity(&self) -> usize {
        self.max_queued
    }

    /// A place in the queue, or `overloaded` at once when it is full. Taken before the
    /// work that leads to a hash (reading the account), a refusal costs nothing more. A
    /// `known` device (see `crate::device`) may take any place; the others leave the
    /// last [`KNOWN_SHARE`] of the queue free for known devices, so a flood of sign-ins
    /// from unknown devices cannot take sign-in away from the owners.
    pub(crate) fn reserve(&self, known: bool) -> Result<Reserved<'_>, Status> {
        let limit = if known {
            self.max_queued
        } else {
            self.max_queued
                - (self.max_queued / KNOWN_SHARE)
                    .max(1)
                    .min(self.max_queued - 1)
        };
        let queued = self.queued.fetch_add(1, Ordering::Relaxed);
        if queued >= limit {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!("wx_account_hashes_refused_total").increment(1);
            return Err(Status::overloaded(format!(
                "{queued} password checks are already waiting; retry later"
            ))
            .with_not_processed());
        }
        Ok(Reserved {
            pool: self,
            armed: true,
        })
    }
}

/// A place in a [`HashPool`]'s queue; dropped unused, it is given back.
#[derive(Debug)]
#[must_use = "the place is given back when this is dropped"]
pub(crate) struct Reserved<'a> {
    pool: &'a HashPool,
    /// Still this value's to give back (not yet handed to a job).
    armed: bool,
}

impl Reserved<'_> {
    /// Runs `work` on a pool thread in this place, unless `deadline` passes before a
    /// thread takes it (`deadline_exceeded`). Dropping the returned future before then
    /// drops the work unrun.
    pub(crate) async fn run<T: Send + 'static>(
        mut self,
        deadline: Option<Instant>,
        work: impl FnOnce() -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let pool = self.pool;
        self.armed = false;
        let (done, result) = tokio::sync::oneshot::channel();
        // The place is the job's from here: a thread gives it back when it takes the job.
        let taken = Arc::clone(&pool.queued);
        let job: Job = Box::new(move || {
            taken.fetch_sub(1, Ordering::Relaxed);
            if done.is_closed() {
                return;
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                let _ = done.send(Err(Status::deadline_exceeded(
                    "the deadline passed while the password check waited",
                )));
                return;
            }
            let _ = done.send(work());
        });
        if pool.jobs.send(job).is_err() {
            pool.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(Status::internal("the hashing pool is gone"));
        }
        result
            .await
            .map_err(|_| Status::internal("a hashing thread died"))?
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use svrkit::Code;

    use super::*;

    /// [`HashPool::reserve`], then [`Reserved::run`].
    async fn run<T: Send + 'static>(
        pool: &HashPool,
        deadline: Option<Instant>,
        work: impl FnOnce() -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        pool.reserve(true)?.run(deadline, work).await
    }

    /// Occupies the pool's one thread until the returned sender is dropped or sent to.
    async fn occupy(
        pool: &Arc<HashPool>,
    ) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let task_pool = Arc::clone(pool);
        let busy = tokio::spawn(async move {
            let _ = run(&task_pool, None, move || {
                let _ = started.send(());
                let _ = held.recv();
                Ok(())
            })
            .await;
        });
        running.await.expect("the thread takes the job");
        (release, busy)
    }

    /// Lets the spawned callers run until `n` jobs are queued (a bounded number of turns:
    /// each caller queues on its first).
    async fn until_queued(pool: &HashPool, n: usize) {
        for _ in 0..1000 {
            if pool.queued() >= n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{n} jobs queued in time; {} are", pool.queued());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_the_queued_still_run() {
        let pool = Arc::new(HashPool::start("test", 1, 2));
        let (release, busy) = occupy(&pool).await;
        let queued: Vec<_> = (0..2u32)
            .map(|i| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move { run(&pool, None, move || Ok(i)).await })
            })
            .collect();
        until_queued(&pool, 2).await;
        let refused = run(&pool, None, || Ok(9))
            .await
            .expect_err("the queue is full");
        assert_eq!(refused.code(), Code::Overloaded);
        drop(release);
        busy.await.expect("the first job ends");
        for (i, job) in queued.into_iter().enumerate() {
            assert_eq!(job.await.expect("joins").expect("runs"), i as u32);
        }
        assert_eq!(pool.queued(), 0);
        assert_eq!(run(&pool, None, || Ok(5)).await.expect("runs"), 5);
    }

    #[tokio::test]
    async fn a_reserved_place_counts_until_used_or_dropped() {
        let pool = HashPool::start("test", 1, 1);
        let place = pool.reserve(true).expect("a place");
        assert_eq!(pool.queued(), 1);
        let refused = pool.reserve(true).expect_err("the only place is taken");
        assert_eq!(refused.code(), Code::Overloaded);
        drop(place);
        assert_eq!(pool.queued(), 0);
        let place = pool.reserve(true).expect("given back");
        assert_eq!(place.run(None, || Ok(3)).await.expect("runs"), 3);
        assert_eq!(pool.queued(), 0);
    }

    #[test]
    fn unknown_devices_leave_a_share_of_the_queue_to_known_ones() {
        let pool = HashPool::start("test", 1, 8);
        let unknown: Vec<_> = (0..6)
            .map(|_| pool.reserve(false).expect("a place"))
            .collect();
        let refused = pool
            .reserve(false)
            .expect_err("the known devices' share is left");
        assert_eq!(refused.code(), Code::Overloaded);
        let known: Vec<_> = (0..2)
            .map(|_| pool.reserve(true).expect("a known place"))
            .collect();
        assert!(pool.reserve(true).is_err(), "and then the queue is full");
        drop((unknown, known));
        assert_eq!(pool.queued(), 0);
    }

    #[tokio::test]
    async fn work_whose_caller_left_or_whose_deadline_passed_is_not_run() {
        let pool = Arc::new(HashPool::start("test", 1, 4));
        let (release, busy) = occupy(&pool).await;
        let ran = Arc::new(AtomicUsize::new(0));
        // One caller gives up while queued, one has a deadline already past.
        let left = {
            let (pool, ran) = (Arc::clone(&pool), Arc::clone(&ran));
            tokio::spawn(async move {
                run(&pool, None, move || {
                    ran.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
                .await
            })
        };
        let late = {
            let (pool, ran) = (Arc::clone(&pool), Arc::clone(&ran));
            let past = Instant::now() - Duration::from_millis(1);
            tokio::spawn(async move {
                run(&pool, Some(past), move || {
                    ran.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
                .await
            })
        };
        until_queued(&pool, 2).await;
        left.abort();
        assert!(left.await.expect_err("aborted").is_cancelled());
        drop(release);
        busy.await.expect("the first job ends");
        let late = late.await.expect("joins").expect_err("past its deadline");
        assert_eq!(late.code(), Code::DeadlineExceeded);
        // A job after them runs: the two before it were taken and dropped unrun.
        assert_eq!(run(&pool, None, || Ok(1)).await.expect("runs"), 1);
        assert_eq!(ran.load(Ordering::Relaxed), 0);
    }
}
