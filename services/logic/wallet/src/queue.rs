//! The per-envelope queues of the instance that owns an envelope.
//!
//! Every grab and open of one envelope is routed to one wallet instance (by the
//! envelope's key on the ring of instances) and waits here in that envelope's queue, in
//! arrival order. One task per busy envelope drains its queue: it takes what waits (up to
//! [`MAX_BATCH`]), writes each run of grabs as one `Grab` and each run of opens as one
//! `Open` to walletstore, and answers every waiter from the outcomes (an opening once its
//! credits are in the grabbers' wallets, while the queue goes on with the next batch). So the store sees
//! one writer per envelope, and a crowd of a thousand grabbers costs a few store writes
//! instead of a thousand writes contending on one record. The store still judges every
//! grab under the envelope's lock, so two instances that both believe they own an
//! envelope (while the ring changes) cannot oversell it.
//!
//! Bounded: at most `max_waiting` requests wait for one envelope and at most
//! `max_envelopes` envelopes have a queue; past either a request is refused
//! RESOURCE_EXHAUSTED, reason `busy`, before anything is reserved.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use svrkit::{Code, Status};
use tokio::sync::oneshot;
use wx_api::by_uid;
use wx_api::storage::{EnvelopeKey, EnvelopeOutcome, GrabRequest, OpenRequest, WalletStoreClient};

use crate::credits::Credits;

/// The most requests one store write judges.
pub const MAX_BATCH: usize = 256;

/// Which step a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reserve a share.
    Grab,
    /// Open the reservation.
    Open,
}

/// What a grab or open came to, with the envelope's counts after it.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The store's outcome for this user.
    pub outcome: EnvelopeOutcome,
    /// The envelope's shares.
    pub shares: u32,
    /// Shares opened or reserved after the write (grabs only).
    pub taken: u32,
}

struct Waiter {
    step: Step,
    uid: u64,
    answer: oneshot::Sender<Result<Outcome, Status>>,
}

#[derive(Default)]
struct Waiting {
    queue: VecDeque<Waiter>,
    /// A task is draining this queue.
    draining: bool,
}

/// The settings of the queues.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests waiting for one envelope.
    pub max_waiting: usize,
    /// Envelopes with a queue at once.
    pub max_envelopes: usize,
    /// How long a grab's reservation holds, in ms.
    pub reserve_ms: u64,
    /// No queue: every request is its own store write (for comparison in the benchmark).
    pub direct: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_waiting: 2_000,
            max_envelopes: 10_000,
            reserve_ms: 60_000,
            direct: false,
        }
    }
}

/// The queues of the envelopes this instance serves.
pub struct EnvelopeQueues {
    store: WalletStoreClient,
    credits: Arc<Credits>,
    limits: Limits,
    waiting: Mutex<HashMap<(u64, u64), Waiting>>,
}

impl std::fmt::Debug for EnvelopeQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeQueues")
            .field("limits", &self.limits)
            .field("envelopes", &self.envelopes())
            .finish()
    }
}

fn busy(message: String) -> Status {
    Status::resource_exhausted(message)
        .with_reason("busy")
        .with_not_processed()
}

impl EnvelopeQueues {
    /// Queues over `store`, handing credits of openings to `credits`.
    pub fn new(store: WalletStoreClient, credits: Arc<Credits>, limits: Limits) -> EnvelopeQueues {
        EnvelopeQueues {
            store,
            credits,
            limits,
            waiting: Mutex::default(),
        }
    }

    /// Envelopes with a queue now (a gauge).
    pub fn envelopes(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Runs `step` for `uid` on envelope `key` in its turn.
    pub async fn submit(
        self: &Arc<Self>,
        key: EnvelopeKey,
        step: Step,
        uid: u64,
    ) -> Result<Outcome, Status> {
        if self.limits.direct {
            let (mut outcomes, job_id) = self.write(key, step, vec![uid]).await?;
            self.credit(key, job_id).await;
            return outcomes
                .pop()
                .ok_or_else(|| Status::internal("the store answered no outcome"));
        }
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let envelopes = waiting.len();
            let entry = match waiting.entry((key.sender, key.seq)) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(_) if envelopes >= self.limits.max_envelopes => {
                    return Err(busy(format!(
                        "{envelopes} envelopes are being grabbed here; try again"
                    )));
                }
                Entry::Vacant(entry) => entry.insert(Waiting::default()),
            };
            if entry.queue.len() >= self.limits.max_waiting {
                metrics::counter!("wx_wallet_queue_refused_total").increment(1);
                return Err(busy(format!(
                    "{} requests wait for this envelope; try again",
                    entry.queue.len()
                )));
            }
            entry.queue.push_back(Waiter { step, uid, answer });
            !std::mem::replace(&mut entry.draining, true)
        };
        if start {
            let queues = Arc::clone(self);
            tokio::spawn(async move { queues.drain(key).await });
        }
        answered
            .await
            .map_err(|_| Status::internal("the envelope's queue stopped"))?
    }

    /// Drains envelope `key`'s queue until it is empty, then forgets it.
    async fn drain(self: Arc<Self>, key: EnvelopeKey) {
        loop {
            let batch: Vec<Waiter> = {
                let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(entry) = waiting.get_mut(&(key.sender, key.seq)) else {
                    return;
                };
                if entry.queue.is_empty() {
                    waiting.remove(&(key.sender, key.seq));
                    return;
                }
                let n = entry.queue.len().min(MAX_BATCH);
                entry.queue.drain(..n).collect()
            };
            metrics::histogram!("wx_wallet_queue_batch").record(batch.len() as f64);
            // Runs of one step, in arrival order.
            let mut rest = batch.into_iter().peekable();
            while let Some(first) = rest.next() {
                let step = first.step;
                let mut run = vec![first];
                while let Some(next) = rest.next_if(|w| w.step == step) {
                    run.push(next);
                }
                let uids = run.iter().map(|w| w.uid).collect();
                match self.write(key, step, uids).await {
                    Ok((outcomes, job_id)) => {
                        let answer = move || {
                            for (waiter, outcome) in run.into_iter().zip(outcomes) {
                                let _ = waiter.answer.send(Ok(outcome));
                            }
                        };
                        if job_id == 0 {
                            answer();
                        } else {
                            // Answered once the credits are in the wallets, while the
                            // queue goes on with the next batch.
                            let queues = Arc::clone(&self);
                            tokio::spawn(async move {
                                queues.credit(key, job_id).await;
                                answer();
                            });
                        }
                    }
                    Err(status) => {
                        for waiter in run {
                            let _ = waiter.answer.send(Err(status.clone()));
                        }
                    }
                }
            }
        }
    }

    /// Delivers the credit job `job_id` of an opening of envelope `key` (none when 0).
    /// A failure is left to the sweep, which delivers it later: the credit is durable.
    async fn credit(&self, key: EnvelopeKey, job_id: u64) {
        if job_id == 0 {
            return;
        }
        if let Err(status) = self.credits.run_job(key.sender, job_id).await {
            tracing::debug!(%status, job_id, "credits left to the sweep");
        }
    }

    /// One store write of `step` for `uids` on envelope `key`: an outcome per uid, in
    /// order, and the credit job an opening queued (0: none).
    async fn write(
        &self,
        key: EnvelopeKey,
        step: Step,
        uids: Vec<u64>,
    ) -> Result<(Vec<Outcome>, u64), Status> {
        let count = uids.len();
        let route = by_uid(key.sender);
        let mut job_id = 0;
        let outcomes: Vec<Outcome> = match step {
            Step::Grab => {
                let reply = self
                    .store
                    .grab_with(
                        GrabRequest {
                            envelope: Some(key),
                            uids,
                            reserve_ms: self.limits.reserve_ms,
                        },
                        route,
                    )
                    .await?;
                let (shares, taken) = (reply.shares, reply.taken);
                reply
                    .outcomes
                    .into_iter()
                    .map(|outcome| Outcome {
                        outcome,
                        shares,
                        taken,
                    })
                    .collect()
            }
            Step::Open => {
                let reply = self
                    .store
                    .open_with(
                        OpenRequest {
                            envelope: Some(key),
                            uids,
                        },
                        route,
                    )
                    .await?;
                job_id = reply.job_id;
                reply
                    .outcomes
                    .into_iter()
                    .map(|outcome| Outcome {
                        outcome,
                        ..Outcome::default()
                    })
                    .collect()
            }
        };
        if outcomes.len() != count {
            return Err(Status::internal(format!(
                "the store answered {} outcomes for {count} requests",
                outcomes.len()
            )));
        }
        Ok((outcomes, job_id))
    }
}

/// The status of a refused outcome, or `None` when it succeeded.
pub fn refusal(outcome: &EnvelopeOutcome) -> Option<Status> {
    (outcome.code != 0).then(|| {
        let status = Status::new(Code::from_u32(outcome.code), outcome.message.clone());
        if outcome.reason.is_empty() {
            status
        } else {
            status.with_reason(outcome.reason.clone())
        }
    })
}
