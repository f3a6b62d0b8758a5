//! `wx.seq.Seq`: per-user sequence numbers after WeChat's seqsvr.
//!
//! ## The guarantee
//!
//! For each uid, every number handed out is above every number handed out for that uid
//! before — across `kill -9`, restarts and failover to another instance. Gaps are allowed.
//!
//! ## How
//!
//! Users are grouped in [sections](wx_api::SEQ_SECTIONS). Each section has one record in
//! `seqstore`: its owner, a lease expiry, an epoch and `max_seq`, the highest number any
//! of its users may be given. An allocator serves a section only while it holds the lease:
//!
//! - **Allocation is from memory**: `cur[uid] + 1`, where every uid starts at the
//!   section's `max_seq` as read when the lease was taken. When the next number would pass
//!   `max_seq`, the allocator first persists `max_seq + step` (default 10,000) and only then
//!   answers — so after any crash, every number handed out is at most the persisted
//!   `max_seq`, which the next owner starts from.
//! - **Every write is a compare-and-set** on the record's version (lease renewals, step
//!   bumps, takeovers alike): once another allocator took the section, a deposed owner's
//!   writes are refused and it can never persist again.
//! - **The lease** (default 1 s, `WX_SEQ_LEASE_MS`) is renewed every third of its length.
//!   The holder stops serving a margin (a tenth of the lease) *before* its lease ends, as
//!   measured from when it sent its last successful write; a new owner — including the
//!   same instance restarted, which lost its memory — waits a margin *after* the stored
//!   expiry before taking over. So two allocators never serve one section at the same
//!   time, as long as the clocks of the machines involved disagree by less than the
//!   margin (one machine here).
//! - **Routing**: callers send a uid's requests to its section's instance on a
//!   consistent-hash ring (`wx_api::by_section`). An instance asked for a section another
//!   allocator holds answers "not mine" — UNAVAILABLE marked not processed — and the
//!   caller's channel retries on another instance within its retry budget. A request for
//!   a section whose lease has less than half its length left (its owner missed a
//!   renewal, so it is likely gone) waits for it to lapse, within the request's deadline,
//!   and takes the section over.
//!
//! Memory is bounded: each section remembers at most [`MAX_USERS_PER_SECTION`] users'
//! current numbers; past that it forgets them all and restarts every user of the section
//! at the persisted `max_seq` (a gap, never a step back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, Instant};

use svrkit::{Channel, Context, Status};
use tokio::sync::Mutex;
use wx_api::seq::seq_server::Seq;
use wx_api::seq::{NextReply, NextRequest};
use wx_api::storage::{
    GetSectionRequest, PutSectionRequest, PutSectionsRequest, SectionRecord, SeqStoreClient,
};

/// How many numbers one persisted step covers (seqsvr's published figure).
pub const DEFAULT_STEP: u64 = 10_000;
/// How long a lease lasts unless renewed.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(1);
/// The most users whose current number one section keeps in memory.
pub const MAX_USERS_PER_SECTION: usize = 65_536;

/// Settings of an allocator.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This instance's id, recorded as the owner of the sections it holds.
    pub instance: String,
    /// The lease length.
    pub lease: Duration,
    /// Numbers per persisted step.
    pub step: u64,
}

impl Settings {
    /// Defaults for the instance `id`.
    pub fn new(id: impl Into<String>) -> Settings {
        Settings {
            instance: id.into(),
            lease: DEFAULT_LEASE,
            step: DEFAULT_STEP,
        }
    }

    /// The safety margin on each side of a lease's end.
    fn margin(&self) -> Duration {
        (self.lease / 10).max(Duration::from_millis(20))
    }
}

/// A section this allocator holds.
#[derive(Debug)]
struct Held {
    /// The record as last written by us.
    record: SectionRecord,
    /// Where every user starts: the persisted `max_seq` when the section was taken, or
    /// when the users' numbers were last forgotten.
    base: u64,
    /// Serve only before this instant.
    valid_until: Instant,
    /// Each user's last number.
    cur: HashMap<u64, u64>,
}

#[derive(Debug, Default)]
struct Section {
    held: Option<Held>,
}

/// The allocator: serves `wx.seq.Seq` from the sections it leases in `seqstore`.
#[derive(Clone)]
pub struct SeqService {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    store: SeqStoreClient,
    /// The store's channel, to group renewals by the shard they go to.
    store_channel: Channel,
    sections: StdMutex<HashMap<u32, Arc<Mutex<Section>>>>,
}

impl std::fmt::Debug for SeqService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqService")
            .field("instance", &self.inner.settings.instance)
            .finish()
    }
}

/// "Not mine": the caller's channel may try another instance.
fn not_mine(section: u32, why: impl std::fmt::Display) -> Status {
    metrics::counter!("wx_seq_not_mine_total").increment(1);
    Status::not_mine(format!("section {section} is not served here: {why}"))
}

impl SeqService {
    /// An allocator persisting to `store`. Spawns the lease renewal task, which ends when
    /// the last clone of the service is dropped.
    pub fn new(store: Channel, settings: Settings) -> SeqService {
        let service = SeqService {
            inner: Arc::new(Inner {
                settings,
                store: SeqStoreClient::new(store.clone()),
                store_channel: store,
                sections: StdMutex::new(HashMap::new()),
            }),
        };
        tokio::spawn(renew_loop(Arc::downgrade(&service.inner)));
        service
    }

    fn section(&self, section: u32) -> Arc<Mutex<Section>> {
        let mut sections = self
            .inner
            .sections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(sections.entry(section).or_default())
    }

    /// The next number of `uid`.
    pub async fn next(&self, uid: u64) -> Result<NextReply, Status> {
        if uid == 0 {
            return Err(Status::invalid_argument("uid 0 has no sequence"));
        }
        let number = wx_api::seq_section(uid);
        let section = self.section(number);
        let mut section = section.lock().await;
        if section
            .held
            .as_ref()
            .is_some_and(|h| Instant::now() >= h.valid_until)
        {
            tracing::warn!(
                section = number,
                "lease not renewed in time; stopped serving"
            );
            section.held = None;
        }
        if section.held.is_none() {
            section.held = Some(self.inner.acquire(number).await?);
        }
        let Some(held) = section.held.as_mut() else {
            return Err(not_mine(number, "not acquired"));
        };
        if held.cur.len() >= MAX_USERS_PER_SECTION && !held.cur.contains_key(&uid) {
            held.cur.clear();
            held.base = held.record.max_seq;
        }
        let next = held.cur.get(&uid).copied().unwrap_or(held.base) + 1;
        if next > held.record.max_seq {
            let mut record = held.record.clone();
            record.max_seq = held.record.max_seq.max(next) + self.inner.settings.step - 1;
            match self.inner.write(record, held.record.version).await {
                Ok((record, valid_until)) => {
                    held.record = record;
                    held.valid_until = valid_until;
                }
                Err(status) => {
                    section.held = None;
                    return Err(status);
                }
            }
        }
        let Some(held) = section.held.as_mut() else {
            return Err(not_mine(number, "lost"));
        };
        held.cur.insert(uid, next);
        metrics::counter!("wx_seq_allocations_total").increment(1);
        Ok(NextReply {
            seq: next,
            section: number,
            epoch: held.record.epoch,
        })
    }
}

impl Inner {
    /// Writes `record` if the stored one is still at `expected_version`, extending the
    /// lease. Returns the stored record and until when it may be served.
    async fn write(
        &self,
        mut record: SectionRecord,
        expected_version: u64,
    ) -> Result<(SectionRecord, Instant), Status> {
        let section = record.section;
        let sent = Instant::now();
        record.lease_expiry_ms = wx_api::now_ms() + self.settings.lease.as_millis() as u64;
        let written = self
            .store
            .put_section_with(
                PutSectionRequest {
                    record: Some(record),
                    expected_version,
                },
                wx_api::by_section(section),
            )
            .await;
        match written {
            Ok(record) => Ok((record, sent + self.settings.lease - self.settings.margin())),
            Err(status) if status.code() == svrkit::Code::Aborted => Err(not_mine(
                section,
                format!("lost the lease ({})", status.message()),
            )),
            Err(status) => Err(Status::unavailable(format!(
                "section {section}: seqstore failed: {status}"
            ))),
        }
    }

    /// Takes `section`'s lease: at once when it is free or lapsed, after waiting when it
    /// lapses within the request's deadline, else "not mine".
    async fn acquire(&self, section: u32) -> Result<Held, Status> {
        let margin = self.settings.margin();
        loop {
            let record = self
                .store
                .get_section_with(GetSectionRequest { section }, wx_api::by_section(section))
                .await
                .map_err(|s| Status::unavailable(format!("section {section}: {s}")))?;
            let now = wx_api::now_ms();
            let free_at = record.lease_expiry_ms + margin.as_millis() as u64;
            if !record.owner.is_empty() && now < free_at {
                let wait = Duration::from_millis(free_at - now);
                // A live owner renews each third of the lease, so more than half a lease
                // left means it is alive: refuse at once. Less means it missed renewals
                // and is likely gone: wait it out if the caller's deadline allows.
                let lapsing = wait <= self.settings.lease / 2 + margin;
                let deadline = Context::current().deadline();
                let fits = deadline.is_none_or(|d| Instant::now() + wait + margin < d);
                if !(lapsing && fits) {
                    return Err(not_mine(
                        section,
                        format!(
                            "leased by {:?} (epoch {}) for {} ms more",
                            record.owner,
                            record.epoch,
                            free_at - now
                        ),
                    ));
                }
                tracing::info!(section, owner = %record.owner, ?wait, "waiting out a lease");
                tokio::time::sleep(wait).await;
                continue;
            }
            let version = record.version;
            let mut mine = record;
            mine.owner = self.settings.instance.clone();
            mine.epoch += 1;
            let (record, valid_until) = self.write(mine, version).await?;
            metrics::counter!("wx_seq_section_acquisitions_total").increment(1);
            tracing::info!(
                section,
                epoch = record.epoch,
                max_seq = record.max_seq,
                "took the section"
            );
            return Ok(Held {
                base: record.max_seq,
                record,
                valid_until,
                cur: HashMap::new(),
            });
        }
    }
}

/// Renews every held section's lease each third of its length, in one `PutSections`
/// per store shard: a round costs a few requests and durable writes however many
/// sections are held (a request per section made a 1 s lease cost a tenth of a core
/// with all 1,024 sections held). The shards' batches go out side by side.
async fn renew_loop(inner: std::sync::Weak<Inner>) {
    let Some(period) = inner.upgrade().map(|strong| strong.settings.lease / 3) else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let mut sections: Vec<(u32, Arc<Mutex<Section>>)> = strong
            .sections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(number, section)| (*number, Arc::clone(section)))
            .collect();
        sections.sort_unstable_by_key(|(number, _)| *number);
        let mut by_shard: HashMap<Option<String>, Vec<Arc<Mutex<Section>>>> = HashMap::new();
        for (number, section) in sections {
            by_shard
                .entry(strong.store_channel.owner_of(u64::from(number)))
                .or_default()
                .push(section);
        }
        futures_util::future::join_all(
            by_shard
                .into_values()
                .map(|sections| renew_batch(&strong, sections)),
        )
        .await;
    }
}

/// Renews the held ones among `sections` (all on one store shard) in one write. Their
/// locks are held until the answer is in, as a single renewal held its section's: a step
/// written meanwhile by `next` would make the renewal look like a lost lease. A section
/// whose lock stays taken for a margin is left out of this round: `next` is taking it
/// over (nothing to renew yet) or writing a step (which renews its lease too).
async fn renew_batch(inner: &Inner, sections: Vec<Arc<Mutex<Section>>>) {
    let margin = inner.settings.margin();
    let locked = futures_util::future::join_all(
        sections
            .into_iter()
            .map(|section| tokio::time::timeout(margin, section.lock_owned())),
    )
    .await;
    let guards: Vec<_> = locked
        .into_iter()
        .filter_map(Result::ok)
        .filter(|guard| guard.held.is_some())
        .collect();
    let Some(first) = guards.first().and_then(|g| g.held.as_ref()) else {
        return;
    };
    let route = wx_api::by_section(first.record.section);
    let sent = Instant::now();
    let expiry = wx_api::now_ms() + inner.settings.lease.as_millis() as u64;
    let puts = guards
        .iter()
        .filter_map(|g| g.held.as_ref())
        .map(|held| PutSectionRequest {
            record: Some(SectionRecord {
                lease_expiry_ms: expiry,
                ..held.record.clone()
            }),
            expected_version: held.record.version,
        })
        .collect();
    let reply = match inner
        .store
        .put_sections_with(PutSectionsRequest { puts }, route)
        .await
    {
        Ok(reply) if reply.results.len() == guards.len() => reply,
        Ok(reply) => {
            tracing::warn!(
                sent = guards.len(),
                answered = reply.results.len(),
                "lease renewal answered for a different number of sections"
            );
            return;
        }
        // The store is unreachable: keep the sections until their leases run out, then
        // `next` stops serving them.
        Err(status) => {
            tracing::warn!(%status, sections = guards.len(), "lease renewal failed");
            return;
        }
    };
    let valid_until = sent + inner.settings.lease - inner.settings.margin();
    for (mut guard, result) in guards.into_iter().zip(reply.results) {
        match result.record {
            Some(record) => {
                if let Some(held) = guard.held.as_mut() {
                    held.record = record;
                    held.valid_until = valid_until;
                }
            }
            None if svrkit::Code::from_u32(result.code) == svrkit::Code::Aborted => {
                let number = guard.held.as_ref().map(|h| h.record.section);
                tracing::warn!(section = ?number, message = %result.message, "lease lost");
                guard.held = None;
            }
            None => {
                let number = guard.held.as_ref().map(|h| h.record.section);
                tracing::warn!(section = ?number, code = result.code, message = %result.message, "lease renewal refused");
            }
        }
    }
}

impl Seq for SeqService {
    async fn next(&self, request: NextRequest) -> Result<NextReply, Status> {
        SeqService::next(self, request.uid).await
    }
}
