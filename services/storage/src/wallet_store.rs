//! `wx.storage.WalletStore`: wallets, their ledgers and the red envelopes their owners
//! sent, on the owner's shard.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `wallets` | uid | `WalletRecord` |
//! | `ledger` | uid, entry | `LedgerEntry` |
//! | `transfers` | uid, transfer id (bytes) | `Transfer` (what makes a transfer id once only) |
//! | `envelopes` | sender, seq | `EnvelopeRecord` |
//! | `expiries` | expires ms, sender, seq | empty (envelopes not yet closed) |
//! | `wallet_totals` | `minted` | cents ever topped up on this shard |
//! | `queue_credits` | job id | `CreditJob` (see [`crate::queue`]) |
//!
//! Every write takes the locks of what it reads first (a wallet, an envelope, the minted
//! total) and commits everything it changes in one batch, so a crash leaves either all
//! of a movement or none of it. An opening credits grabbers whose wallets may live on
//! other shards: the credit is a job queued in the opening's own write, delivered
//! (idempotently, by transfer id) by the wallet service, and counted as money in flight
//! until it is applied.

use fjall::Keyspace;
use prost::Message;
use svrkit::{Code, Status};
use wx_api::storage::wallet_store_server::WalletStore;
use wx_api::storage::{
    Account, AckJobReply, AckJobRequest, AuditReply, AuditRequest, CreateEnvelopeRequest,
    CreditJob, CreditReply, CreditRequest, EnvelopeGrab, EnvelopeKey, EnvelopeOutcome,
    EnvelopeRecord, ExpireDueReply, ExpireDueRequest, GetWalletRequest, GrabReply, GrabRequest,
    HasTransfersReply, HasTransfersRequest, HistoryReply, HistoryRequest, LeaseJobsReply,
    LeaseJobsRequest, LedgerEntry, OpenReply, OpenRequest, TopUpRequest, Transfer, TransferReply,
    WalletCredit, WalletRecord, account,
};

use wx_api::money::{
    MAX_ENVELOPE_TOTAL, MAX_GREETING_CHARS, MAX_SHARES, check_top_up, check_transfer_id,
    history_limit, open_transfer_id,
};

use crate::codec::{decode, get, id_key, pair_key, word};
use crate::engine::{Engine, StorageError, WriteBatch};
use crate::queue::Queue;

/// The most grabs or opens one call judges.
pub const MAX_BATCH: usize = 1_000;
/// The most members an envelope names (a group's ceiling).
const MAX_MEMBERS: usize = wx_api::MAX_GROUP_MEMBERS as usize;
/// The longest a reservation holds.
const MAX_RESERVE_MS: u64 = 24 * 3600 * 1000;
/// The key of the minted total in `wallet_totals`.
const MINTED: &[u8] = b"minted";

/// The amount of the next share to open: random in [1, 2 × the mean of what is left],
/// leaving at least 1 for each share after it; the last share takes all that is left.
/// `remaining` is at least `left` (every share gets at least a cent), which this keeps.
pub fn share_amount(remaining: u64, left: u32, random: u64) -> u64 {
    if left <= 1 {
        return remaining;
    }
    let left = u64::from(left);
    let most = (remaining.saturating_mul(2) / left)
        .min(remaining.saturating_sub(left - 1))
        .max(1);
    1 + random % most
}

/// A refusal of one grab or open, as an outcome.
fn refused(uid: u64, status: &Status) -> EnvelopeOutcome {
    EnvelopeOutcome {
        uid,
        code: status.code().as_u32(),
        reason: status.reason().unwrap_or_default().to_string(),
        message: status.message().to_string(),
        ..Default::default()
    }
}

fn refusal(code: Code, reason: &str, message: impl Into<String>) -> Status {
    Status::new(code, message).with_reason(reason)
}

/// The key of `(uid, transfer_id)` in `transfers`.
fn transfer_key(uid: u64, transfer_id: &str) -> Vec<u8> {
    let mut key = id_key(uid).to_vec();
    key.extend_from_slice(transfer_id.as_bytes());
    key
}

/// The lock of `uid`'s wallet.
fn wallet_lock(uid: u64) -> [u8; 9] {
    let mut key = [b'w'; 9];
    key[1..].copy_from_slice(&uid.to_be_bytes());
    key
}

/// The lock of an envelope.
fn envelope_lock(sender: u64, seq: u64) -> [u8; 17] {
    let mut key = [b'e'; 17];
    key[1..].copy_from_slice(&pair_key(sender, seq));
    key
}

fn expiry_key(expires_ms: u64, sender: u64, seq: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&expires_ms.to_be_bytes());
    key[8..].copy_from_slice(&pair_key(sender, seq));
    key
}

fn wallet_account(uid: u64) -> Account {
    Account {
        kind: account::Kind::Wallet as i32,
        uid,
        seq: 0,
    }
}

/// The account of envelope (`sender`, `seq`).
pub fn envelope_account(sender: u64, seq: u64) -> Account {
    Account {
        kind: account::Kind::Envelope as i32,
        uid: sender,
        seq,
    }
}

/// The wallet store of one shard.
pub struct WalletStoreService {
    engine: Engine,
    wallets: Keyspace,
    ledger: Keyspace,
    transfers: Keyspace,
    envelopes: Keyspace,
    expiries: Keyspace,
    totals: Keyspace,
    credits: Queue,
}

impl std::fmt::Debug for WalletStoreService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalletStoreService")
            .field("engine", &self.engine)
            .finish()
    }
}

/// A wallet read for a change: the record and where the next ledger line goes.
struct Posting<'a> {
    store: &'a WalletStoreService,
    wallet: WalletRecord,
}

impl Posting<'_> {
    /// Moves `transfer` in or out of this wallet (`change` signed cents) in `batch`: the
    /// balance, a ledger line and the transfer's record. Refuses to go below zero.
    fn post(
        &mut self,
        batch: &mut WriteBatch,
        transfer: &Transfer,
        incoming: bool,
    ) -> Result<(), Status> {
        let balance = if incoming {
            self.wallet.balance.checked_add(transfer.amount)
        } else {
            self.wallet.balance.checked_sub(transfer.amount)
        };
        let balance = balance.ok_or_else(|| {
            if incoming {
                Status::failed_precondition("the balance would overflow")
                    .with_reason("balance_overflow")
            } else {
                refusal(
                    Code::FailedPrecondition,
                    "insufficient_funds",
                    format!(
                        "the balance is {} cents, {} are needed",
                        self.wallet.balance, transfer.amount
                    ),
                )
            }
        })?;
        let uid = self.wallet.uid;
        let entry = self.wallet.next_entry.max(1);
        let amount = i64::try_from(transfer.amount).unwrap_or(i64::MAX);
        let line = LedgerEntry {
            entry,
            transfer: Some(transfer.clone()),
            change: if incoming { amount } else { -amount },
            balance_after: balance,
        };
        self.wallet.balance = balance;
        self.wallet.next_entry = entry + 1;
        let store = self.store;
        batch.insert(
            &store.ledger,
            pair_key(uid, entry).to_vec(),
            line.encode_to_vec(),
        );
        batch.insert(
            &store.transfers,
            transfer_key(uid, &transfer.transfer_id),
            transfer.encode_to_vec(),
        );
        Ok(())
    }

    /// Writes the wallet record into `batch`.
    fn save(&self, batch: &mut WriteBatch) {
        batch.insert(
            &self.store.wallets,
            id_key(self.wallet.uid).to_vec(),
            self.wallet.encode_to_vec(),
        );
    }
}

impl WalletStoreService {
    /// The store on `engine`.
    pub fn new(engine: Engine) -> Result<WalletStoreService, StorageError> {
        Ok(WalletStoreService {
            wallets: engine.keyspace("wallets")?,
            ledger: engine.keyspace("ledger")?,
            transfers: engine.keyspace("transfers")?,
            envelopes: engine.keyspace("envelopes")?,
            expiries: engine.keyspace("expiries")?,
            totals: engine.keyspace("wallet_totals")?,
            credits: Queue::open(&engine, "credits")?,
            engine,
        })
    }

    fn wallet(&self, uid: u64) -> Result<WalletRecord, StorageError> {
        Ok(
            get::<WalletRecord>(&self.wallets, &id_key(uid))?.unwrap_or(WalletRecord {
                uid,
                balance: 0,
                next_entry: 1,
                next_envelope: 1,
            }),
        )
    }

    fn posting(&self, uid: u64) -> Result<Posting<'_>, StorageError> {
        Ok(Posting {
            store: self,
            wallet: self.wallet(uid)?,
        })
    }

    fn transfer(&self, uid: u64, transfer_id: &str) -> Result<Option<Transfer>, StorageError> {
        get::<Transfer>(&self.transfers, &transfer_key(uid, transfer_id))
    }

    fn envelope(&self, key: &EnvelopeKey) -> Result<EnvelopeRecord, Status> {
        get::<EnvelopeRecord>(&self.envelopes, &pair_key(key.sender, key.seq))?.ok_or_else(|| {
            refusal(
                Code::NotFound,
                "no_envelope",
                format!("no envelope {}/{}", key.sender, key.seq),
            )
        })
    }

    fn save_envelope(&self, batch: &mut WriteBatch, envelope: &EnvelopeRecord) {
        batch.insert(
            &self.envelopes,
            pair_key(envelope.sender, envelope.seq).to_vec(),
            envelope.encode_to_vec(),
        );
    }

    fn minted(&self) -> Result<u64, StorageError> {
        Ok(self.totals.get(MINTED)?.map_or(0, |v| word(&v, 0)))
    }

    /// Judges one grab of `uid` on `envelope` at `now`, changing it when it reserves.
    fn grab_one(
        envelope: &mut EnvelopeRecord,
        uid: u64,
        now: u64,
        reserve_ms: u64,
    ) -> Result<EnvelopeGrab, Status> {
        if envelope.refunded || now >= envelope.expires_ms {
            return Err(refusal(
                Code::FailedPrecondition,
                "expired",
                "this envelope has expired",
            ));
        }
        if !envelope.members.contains(&uid) {
            return Err(refusal(
                Code::PermissionDenied,
                "not_member",
                "only the chat's members get this envelope",
            ));
        }
        // A reservation that lapsed unopened goes back to the envelope.
        envelope
            .grabs
            .retain(|g| g.amount > 0 || g.reserved_until_ms > now);
        if let Some(mine) = envelope.grabs.iter().find(|g| g.uid == uid) {
            if mine.amount > 0 {
                return Err(refusal(
                    Code::AlreadyExists,
                    "already_grabbed",
                    "you opened a share of this envelope already",
                ));
            }
            // Grabbed before and not opened: the same reservation (a retry).
            return Ok(*mine);
        }
        if envelope.grabs.len() >= envelope.shares as usize {
            return Err(refusal(
                Code::ResourceExhausted,
                "all_taken",
                "every share of this envelope is taken",
            ));
        }
        let grab = EnvelopeGrab {
            uid,
            grabbed_ms: now,
            reserved_until_ms: now + reserve_ms,
            amount: 0,
            opened_ms: 0,
        };
        envelope.grabs.push(grab);
        Ok(grab)
    }

    /// Judges one open of `uid` on `envelope` at `now`: the amount, and whether it was
    /// opened now (false: opened before, a retry).
    fn open_one(envelope: &mut EnvelopeRecord, uid: u64, now: u64) -> Result<(u64, bool), Status> {
        let opened = envelope.grabs.iter().filter(|g| g.amount > 0).count();
        let Some(mine) = envelope.grabs.iter_mut().find(|g| g.uid == uid) else {
            return Err(refusal(
                Code::FailedPrecondition,
                "not_grabbed",
                "grab a share of this envelope before opening it",
            ));
        };
        if mine.amount > 0 {
            return Ok((mine.amount, false));
        }
        if envelope.refunded || now >= envelope.expires_ms {
            return Err(refusal(
                Code::FailedPrecondition,
                "expired",
                "this envelope has expired",
            ));
        }
        if mine.reserved_until_ms <= now {
            return Err(refusal(
                Code::FailedPrecondition,
                "reservation_expired",
                "your share was not opened in time and went back to the envelope",
            ));
        }
        let left = envelope.shares.saturating_sub(opened as u32);
        let amount = share_amount(envelope.remaining, left, svrkit::context::random_u64());
        mine.amount = amount;
        mine.opened_ms = now;
        envelope.remaining -= amount;
        Ok((amount, true))
    }

    /// Closes one envelope whose time is up (under its and its sender's locks): gives
    /// back what is left. The cents given back.
    async fn expire_one(&self, expires_ms: u64, sender: u64, seq: u64) -> Result<u64, Status> {
        let (e, w) = (envelope_lock(sender, seq), wallet_lock(sender));
        let _guards = self.engine.lock_all(&[&e[..], &w[..]]).await;
        let mut batch = self.engine.batch();
        batch.remove(&self.expiries, expiry_key(expires_ms, sender, seq).to_vec());
        let key = EnvelopeKey { sender, seq };
        let mut envelope = match self.envelope(&key) {
            Ok(envelope) => envelope,
            Err(status) if status.code() == Code::NotFound => {
                self.engine.commit(batch).await?;
                return Ok(0);
            }
            Err(status) => return Err(status),
        };
        if envelope.refunded {
            self.engine.commit(batch).await?;
            return Ok(0);
        }
        let refund = envelope.remaining;
        if refund > 0 {
            let transfer = Transfer {
                transfer_id: format!("refund:{seq}"),
                from: Some(envelope_account(sender, seq)),
                to: Some(wallet_account(sender)),
                amount: refund,
                at_ms: wx_api::now_ms(),
            };
            let mut posting = self.posting(sender)?;
            posting.post(&mut batch, &transfer, true)?;
            posting.save(&mut batch);
        }
        envelope.remaining = 0;
        envelope.refunded = true;
        self.save_envelope(&mut batch, &envelope);
        self.engine.commit(batch).await?;
        metrics::counter!("wx_walletstore_envelopes_expired_total").increment(1);
        Ok(refund)
    }
}

impl WalletStore for WalletStoreService {
    async fn top_up(&self, request: TopUpRequest) -> Result<TransferReply, Status> {
        check_top_up(&request.transfer_id, request.amount)?;
        let w = wallet_lock(request.uid);
        let _guards = self.engine.lock_all(&[&w[..], MINTED]).await;
        if let Some(done) = self.transfer(request.uid, &request.transfer_id)? {
            if done.amount != request.amount
                || done.from.as_ref().map(|a| a.kind()) != Some(account::Kind::Mint)
            {
                return Err(refusal(
                    Code::AlreadyExists,
                    "transfer_id_reused",
                    "this transfer id was used for another transfer",
                ));
            }
            return Ok(TransferReply {
                transfer: Some(done),
                balance: self.wallet(request.uid)?.balance,
                applied: false,
            });
        }
        let transfer = Transfer {
            transfer_id: request.transfer_id,
            from: Some(Account::default()),
            to: Some(wallet_account(request.uid)),
            amount: request.amount,
            at_ms: wx_api::now_ms(),
        };
        let mut batch = self.engine.batch();
        let mut posting = self.posting(request.uid)?;
        posting.post(&mut batch, &transfer, true)?;
        posting.save(&mut batch);
        let minted = self.minted()?.saturating_add(request.amount);
        batch.insert(&self.totals, MINTED.to_vec(), minted.to_be_bytes().to_vec());
        self.engine.commit(batch).await?;
        metrics::counter!("wx_walletstore_minted_cents_total").increment(request.amount);
        Ok(TransferReply {
            transfer: Some(transfer),
            balance: posting.wallet.balance,
            applied: true,
        })
    }

    async fn get_wallet(&self, request: GetWalletRequest) -> Result<WalletRecord, Status> {
        Ok(self.wallet(request.uid)?)
    }

    async fn history(&self, request: HistoryRequest) -> Result<HistoryReply, Status> {
        let limit = history_limit(request.limit) as usize;
        let before = if request.before == 0 {
            u64::MAX
        } else {
            request.before
        };
        let mut entries = Vec::with_capacity(limit);
        let range = pair_key(request.uid, 0).to_vec()..pair_key(request.uid, before).to_vec();
        for item in self.ledger.range(range).rev().take(limit) {
            let (key, value) = item.into_inner().map_err(StorageError::from)?;
            entries.push(decode::<LedgerEntry>(&key, &value)?);
        }
        Ok(HistoryReply { entries })
    }

    async fn create_envelope(
        &self,
        request: CreateEnvelopeRequest,
    ) -> Result<EnvelopeRecord, Status> {
        let mut envelope = request
            .envelope
            .ok_or_else(|| Status::invalid_argument("no envelope given"))?;
        check_transfer_id(&envelope.transfer_id)?;
        if envelope.shares == 0
            || envelope.shares > MAX_SHARES
            || envelope.total < u64::from(envelope.shares)
            || envelope.total > MAX_ENVELOPE_TOTAL
            || envelope.members.len() > MAX_MEMBERS
            || envelope.greeting.chars().count() > MAX_GREETING_CHARS
            || envelope.expires_ms <= envelope.created_ms
        {
            return Err(Status::invalid_argument(
                "an envelope of 1 to 100 shares of at least a cent, at most 20,000 cents",
            ));
        }
        let sender = envelope.sender;
        let w = wallet_lock(sender);
        let _guard = self.engine.lock(&w).await;
        if let Some(done) = self.transfer(sender, &envelope.transfer_id)? {
            let to = done.to.unwrap_or_default();
            if to.kind() != account::Kind::Envelope {
                return Err(refusal(
                    Code::AlreadyExists,
                    "transfer_id_reused",
                    "this transfer id was used for another transfer",
                ));
            }
            return self.envelope(&EnvelopeKey {
                sender,
                seq: to.seq,
            });
        }
        let mut posting = self.posting(sender)?;
        let seq = posting.wallet.next_envelope.max(1);
        posting.wallet.next_envelope = seq + 1;
        envelope.seq = seq;
        envelope.remaining = envelope.total;
        envelope.refunded = false;
        envelope.grabs.clear();
        let transfer = Transfer {
            transfer_id: envelope.transfer_id.clone(),
            from: Some(wallet_account(sender)),
            to: Some(envelope_account(sender, seq)),
            amount: envelope.total,
            at_ms: envelope.created_ms,
        };
        let mut batch = self.engine.batch();
        posting.post(&mut batch, &transfer, false)?;
        posting.save(&mut batch);
        self.save_envelope(&mut batch, &envelope);
        batch.insert(
            &self.expiries,
            expiry_key(envelope.expires_ms, sender, seq).to_vec(),
            Vec::new(),
        );
        self.engine.commit(batch).await?;
        metrics::counter!("wx_walletstore_envelopes_created_total").increment(1);
        Ok(envelope)
    }

    async fn grab(&self, request: GrabRequest) -> Result<GrabReply, Status> {
        let key = request
            .envelope
            .ok_or_else(|| Status::invalid_argument("no envelope named"))?;
        if request.uids.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH} grabs in one call"
            )));
        }
        let reserve_ms = request.reserve_ms.clamp(1, MAX_RESERVE_MS);
        let _guard = self.engine.lock(&envelope_lock(key.sender, key.seq)).await;
        let mut envelope = self.envelope(&key)?;
        let before = envelope.clone();
        let now = wx_api::now_ms();
        let outcomes: Vec<EnvelopeOutcome> = request
            .uids
            .iter()
            .map(
                |&uid| match Self::grab_one(&mut envelope, uid, now, reserve_ms) {
                    Ok(grab) => EnvelopeOutcome {
                        uid,
                        reserved_until_ms: grab.reserved_until_ms,
                        ..Default::default()
                    },
                    Err(status) => refused(uid, &status),
                },
            )
            .collect();
        if envelope != before {
            let mut batch = self.engine.batch();
            self.save_envelope(&mut batch, &envelope);
            self.engine.commit(batch).await?;
        }
        Ok(GrabReply {
            outcomes,
            shares: envelope.shares,
            taken: envelope.grabs.len() as u32,
        })
    }

    async fn open(&self, request: OpenRequest) -> Result<OpenReply, Status> {
        let key = request
            .envelope
            .ok_or_else(|| Status::invalid_argument("no envelope named"))?;
        if request.uids.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH} opens in one call"
            )));
        }
        let _guard = self.engine.lock(&envelope_lock(key.sender, key.seq)).await;
        let mut envelope = self.envelope(&key)?;
        let now = wx_api::now_ms();
        let from = envelope_account(key.sender, key.seq);
        let mut credits = Vec::new();
        let mut outcomes = Vec::with_capacity(request.uids.len());
        for &uid in &request.uids {
            match Self::open_one(&mut envelope, uid, now) {
                Ok((amount, fresh)) => {
                    if fresh {
                        credits.push(WalletCredit {
                            to: uid,
                            amount,
                            transfer_id: open_transfer_id(key.sender, key.seq),
                            from: Some(from),
                            at_ms: now,
                        });
                    }
                    outcomes.push(EnvelopeOutcome {
                        uid,
                        amount,
                        ..Default::default()
                    });
                }
                Err(status) => outcomes.push(refused(uid, &status)),
            }
        }
        let mut job_id = 0;
        if !credits.is_empty() {
            let mut batch = self.engine.batch();
            self.save_envelope(&mut batch, &envelope);
            job_id = self
                .credits
                .push(&mut batch, &CreditJob { credits }.encode_to_vec());
            self.engine.commit(batch).await?;
        }
        Ok(OpenReply { outcomes, job_id })
    }

    async fn get_envelope(&self, request: EnvelopeKey) -> Result<EnvelopeRecord, Status> {
        self.envelope(&request)
    }

    async fn credit(&self, request: CreditRequest) -> Result<CreditReply, Status> {
        if request.credits.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH} credits in one call"
            )));
        }
        let locks: Vec<[u8; 9]> = request.credits.iter().map(|c| wallet_lock(c.to)).collect();
        let lock_refs: Vec<&[u8]> = locks.iter().map(|k| &k[..]).collect();
        let _guards = self.engine.lock_all(&lock_refs).await;
        let mut postings: std::collections::HashMap<u64, Posting<'_>> =
            std::collections::HashMap::new();
        let mut batch = self.engine.batch();
        let mut applied = 0u32;
        let mut seen = std::collections::HashSet::new();
        for credit in request.credits {
            // The service's own ids (`envelope:…`), not a client's: bounded only.
            if credit.transfer_id.is_empty() || credit.transfer_id.len() > 128 {
                return Err(Status::invalid_argument(
                    "a credit's transfer id is 1 to 128 bytes",
                ));
            }
            if !seen.insert((credit.to, credit.transfer_id.clone()))
                || self.transfer(credit.to, &credit.transfer_id)?.is_some()
            {
                continue;
            }
            let transfer = Transfer {
                transfer_id: credit.transfer_id,
                from: credit.from,
                to: Some(wallet_account(credit.to)),
                amount: credit.amount,
                at_ms: credit.at_ms,
            };
            let posting = match postings.entry(credit.to) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(self.posting(credit.to)?),
            };
            posting.post(&mut batch, &transfer, true)?;
            applied += 1;
        }
        for posting in postings.values() {
            posting.save(&mut batch);
        }
        if !batch.is_empty() {
            self.engine.commit(batch).await?;
        }
        Ok(CreditReply { applied })
    }

    async fn expire_due(&self, request: ExpireDueRequest) -> Result<ExpireDueReply, Status> {
        let limit = request.limit.clamp(1, 256) as usize;
        let mut due = Vec::new();
        let end = expiry_key(request.now_ms.saturating_add(1), 0, 0).to_vec();
        for item in self.expiries.range(..end).take(limit) {
            let key = item.key().map_err(StorageError::from)?;
            due.push((word(&key, 0), word(&key, 1), word(&key, 2)));
        }
        let mut reply = ExpireDueReply::default();
        for (expires_ms, sender, seq) in due {
            reply.refunded += self.expire_one(expires_ms, sender, seq).await?;
            reply.expired += 1;
        }
        Ok(reply)
    }

    async fn lease_credits(&self, request: LeaseJobsRequest) -> Result<LeaseJobsReply, Status> {
        let reply = self.credits.answer_lease(&request)?;
        if request.job_id == 0 {
            metrics::gauge!("wx_walletstore_credits_depth").set(reply.depth as f64);
        }
        Ok(reply)
    }

    async fn ack_credit(&self, request: AckJobRequest) -> Result<AckJobReply, Status> {
        self.credits.ack(request.job_id).await?;
        Ok(AckJobReply {})
    }

    async fn audit(&self, _request: AuditRequest) -> Result<AuditReply, Status> {
        let mut reply = AuditReply {
            minted: self.minted()?,
            ..Default::default()
        };
        for item in self.wallets.iter() {
            let (key, value) = item.into_inner().map_err(StorageError::from)?;
            reply.balances += decode::<WalletRecord>(&key, &value)?.balance;
            reply.wallets += 1;
        }
        for item in self.envelopes.iter() {
            let (key, value) = item.into_inner().map_err(StorageError::from)?;
            let envelope = decode::<EnvelopeRecord>(&key, &value)?;
            if !envelope.refunded {
                reply.in_envelopes += envelope.remaining;
                reply.envelopes += 1;
            }
        }
        for job in self.credits.all()? {
            let credits = CreditJob::decode(&job.payload[..]).map_err(|e| {
                Status::data_loss(format!("credit job {} does not decode: {e}", job.id))
            })?;
            reply.owed.extend(credits.credits);
        }
        Ok(reply)
    }

    async fn has_transfers(
        &self,
        request: HasTransfersRequest,
    ) -> Result<HasTransfersReply, Status> {
        if request.transfer_ids.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH} transfer ids in one call"
            )));
        }
        let applied = request
            .transfer_ids
            .iter()
            .map(|id| Ok(self.transfer(request.uid, id)?.is_some()))
            .collect::<Result<_, StorageError>>()?;
        Ok(HasTransfersReply { applied })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_share_is_at_least_a_cent_and_they_add_up_to_the_total(
            shares in 1u32..=MAX_SHARES,
            extra in 0u64..=MAX_ENVELOPE_TOTAL,
            randoms in proptest::collection::vec(any::<u64>(), 100),
        ) {
            let total = (u64::from(shares) + extra).min(MAX_ENVELOPE_TOTAL);
            let mut remaining = total;
            let mut sum = 0;
            for i in 0..shares {
                let amount = share_amount(remaining, shares - i, randoms[i as usize]);
                prop_assert!(amount >= 1, "a share of {amount}");
                prop_assert!(amount <= remaining);
                remaining -= amount;
                prop_assert!(remaining >= u64::from(shares - i - 1));
                sum += amount;
            }
            prop_assert_eq!(sum, total);
            prop_assert_eq!(remaining, 0);
        }
    }

    fn store() -> (WalletStoreService, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "wx-walletstore-{}-{:x}",
            std::process::id(),
            svrkit::context::random_u64()
        ));
        let engine = Engine::open(&dir).expect("open");
        (WalletStoreService::new(engine).expect("store"), dir)
    }

    async fn top_up(s: &WalletStoreService, uid: u64, amount: u64, id: &str) -> TransferReply {
        s.top_up(TopUpRequest {
            uid,
            amount,
            transfer_id: id.into(),
        })
        .await
        .expect("top-up")
    }

    fn envelope(
        sender: u64,
        members: &[u64],
        total: u64,
        shares: u32,
        id: &str,
    ) -> CreateEnvelopeRequest {
        let now = wx_api::now_ms();
        CreateEnvelopeRequest {
            envelope: Some(EnvelopeRecord {
                sender,
                group_id: 9,
                members: members.to_vec(),
                total,
                shares,
                greeting: "Happy new year".into(),
                created_ms: now,
                expires_ms: now + 60_000,
                transfer_id: id.into(),
                ..Default::default()
            }),
        }
    }

    async fn audit(s: &WalletStoreService) -> AuditReply {
        s.audit(AuditRequest {}).await.expect("audit")
    }

    /// Delivers every queued credit job to `s` itself (one shard) and acknowledges it.
    async fn deliver_credits(s: &WalletStoreService) {
        let leased = s
            .lease_credits(LeaseJobsRequest {
                max: 64,
                lease_ms: 60_000,
                job_id: 0,
            })
            .await
            .expect("lease");
        for job in leased.jobs {
            let credits = CreditJob::decode(&job.job[..])
                .expect("a credit job")
                .credits;
            // Twice: a redelivered job moves nothing more.
            for _ in 0..2 {
                s.credit(CreditRequest {
                    credits: credits.clone(),
                })
                .await
                .expect("credit");
            }
            s.ack_credit(AckJobRequest { job_id: job.job_id })
                .await
                .expect("ack");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn money_moves_once_per_transfer_id_and_never_below_zero() {
        let (s, dir) = store();
        assert!(top_up(&s, 1, 500, "t1").await.applied);
        let again = top_up(&s, 1, 500, "t1").await;
        assert!(!again.applied, "a retried top-up moves nothing");
        assert_eq!(again.balance, 500);
        let reused = s
            .top_up(TopUpRequest {
                uid: 1,
                amount: 7,
                transfer_id: "t1".into(),
            })
            .await
            .expect_err("another amount under a used id");
        assert_eq!(reused.reason(), Some("transfer_id_reused"));
        for (amount, id) in [
            (0, "t2"),
            (wx_api::money::MAX_TOPUP + 1, "t3"),
            (5, ""),
            (5, &*"x".repeat(65)),
        ] {
            assert_eq!(
                s.top_up(TopUpRequest {
                    uid: 1,
                    amount,
                    transfer_id: id.into()
                })
                .await
                .expect_err("refused")
                .code(),
                Code::InvalidArgument
            );
        }
        // More than the balance: refused, nothing moves.
        let short = s
            .create_envelope(envelope(1, &[1, 2], 501, 2, "e1"))
            .await
            .expect_err("short");
        assert_eq!(short.reason(), Some("insufficient_funds"));
        assert_eq!(s.wallet(1).expect("wallet").balance, 500);
        let created = s
            .create_envelope(envelope(1, &[1, 2], 300, 2, "e1"))
            .await
            .expect("created");
        let retried = s
            .create_envelope(envelope(1, &[1, 2], 300, 2, "e1"))
            .await
            .expect("retried");
        assert_eq!(
            created.seq, retried.seq,
            "a retry answers the same envelope"
        );
        assert_eq!(s.wallet(1).expect("wallet").balance, 200);
        let a = audit(&s).await;
        assert_eq!((a.minted, a.balances, a.in_envelopes), (500, 200, 300));
        let history = s
            .history(HistoryRequest {
                uid: 1,
                before: 0,
                limit: 0,
            })
            .await
            .expect("history");
        let changes: Vec<i64> = history.entries.iter().map(|e| e.change).collect();
        assert_eq!(changes, [-300, 500], "newest first");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grabs_reserve_at_most_the_shares_and_opens_add_up_to_the_total() {
        let (s, dir) = store();
        top_up(&s, 1, 10_000, "t").await;
        let members: Vec<u64> = (1..=20).collect();
        let e = s
            .create_envelope(envelope(1, &members, 1_000, 5, "e"))
            .await
            .expect("created");
        let key = EnvelopeKey {
            sender: 1,
            seq: e.seq,
        };
        let mut uids: Vec<u64> = (2..=20).collect();
        uids.push(99); // not a member
        uids.push(2); // twice
        let grabbed = s
            .grab(GrabRequest {
                envelope: Some(key),
                uids: uids.clone(),
                reserve_ms: 60_000,
            })
            .await
            .expect("grab");
        let ok: Vec<u64> = grabbed
            .outcomes
            .iter()
            .filter(|o| o.code == 0)
            .map(|o| o.uid)
            .collect();
        assert_eq!(
            ok,
            [2, 3, 4, 5, 6, 2],
            "five shares; a repeat keeps its reservation"
        );
        let reasons: Vec<&str> = grabbed.outcomes.iter().map(|o| o.reason.as_str()).collect();
        assert_eq!(reasons[5], "all_taken");
        assert_eq!(reasons[19], "not_member");
        let not_grabbed = s
            .open(OpenRequest {
                envelope: Some(key),
                uids: vec![7],
            })
            .await
            .expect("open");
        assert_eq!(not_grabbed.outcomes[0].reason, "not_grabbed");
        assert_eq!(not_grabbed.job_id, 0, "a refusal queues no credit");
        let opened = s
            .open(OpenRequest {
                envelope: Some(key),
                uids: vec![2, 3, 4, 5, 6, 2],
            })
            .await
            .expect("open");
        let amounts: Vec<u64> = opened.outcomes.iter().map(|o| o.amount).collect();
        assert!(amounts.iter().all(|a| *a >= 1));
        assert_eq!(
            amounts[5], amounts[0],
            "opening again answers the same amount"
        );
        assert_eq!(amounts[..5].iter().sum::<u64>(), 1_000);
        let again = s
            .grab(GrabRequest {
                envelope: Some(key),
                uids: vec![2],
                reserve_ms: 60_000,
            })
            .await
            .expect("grab");
        assert_eq!(again.outcomes[0].reason, "already_grabbed");
        // In flight until delivered; then in the wallets, once.
        let a = audit(&s).await;
        assert_eq!(a.owed.iter().map(|c| c.amount).sum::<u64>(), 1_000);
        assert_eq!(a.balances + a.in_envelopes + 1_000, a.minted);
        deliver_credits(&s).await;
        let a = audit(&s).await;
        assert!(a.owed.is_empty());
        assert_eq!((a.balances, a.in_envelopes), (a.minted, 0));
        assert_eq!(s.wallet(2).expect("wallet").balance, amounts[0]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lapsed_reservation_frees_its_share_and_an_expired_envelope_refunds_once() {
        let (s, dir) = store();
        top_up(&s, 1, 1_000, "t").await;
        let mut request = envelope(1, &[2, 3], 100, 1, "e");
        let now = wx_api::now_ms();
        if let Some(e) = request.envelope.as_mut() {
            e.expires_ms = now + 1_500;
        }
        let e = s.create_envelope(request).await.expect("created");
        let key = EnvelopeKey {
            sender: 1,
            seq: e.seq,
        };
        let grab = |uid: u64, reserve_ms: u64| {
            s.grab(GrabRequest {
                envelope: Some(key),
                uids: vec![uid],
                reserve_ms,
            })
        };
        let first = grab(2, 1).await.expect("grab").outcomes.remove(0);
        assert_eq!(first.code, 0);
        // Once 2's one-millisecond reservation lapsed, 3 takes the share and 2 cannot open.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while wx_api::now_ms() <= first.reserved_until_ms {
            assert!(std::time::Instant::now() < deadline);
            tokio::task::yield_now().await;
        }
        assert_eq!(grab(3, 60_000).await.expect("grab").outcomes[0].code, 0);
        let late = s
            .open(OpenRequest {
                envelope: Some(key),
                uids: vec![2],
            })
            .await
            .expect("open");
        assert_eq!(
            late.outcomes[0].reason, "not_grabbed",
            "its reservation went back"
        );
        // Past its time: nobody opens, and what is left goes back to the sender once.
        let after = now + 1_500;
        assert_eq!(
            s.expire_due(ExpireDueRequest {
                now_ms: after - 1,
                limit: 10
            })
            .await
            .expect("not yet")
            .expired,
            0
        );
        while wx_api::now_ms() < after {
            assert!(std::time::Instant::now() < deadline);
            tokio::task::yield_now().await;
        }
        let refused = s
            .open(OpenRequest {
                envelope: Some(key),
                uids: vec![3],
            })
            .await
            .expect("open");
        assert_eq!(refused.outcomes[0].reason, "expired");
        let expired = s
            .expire_due(ExpireDueRequest {
                now_ms: after,
                limit: 10,
            })
            .await
            .expect("expire");
        assert_eq!((expired.expired, expired.refunded), (1, 100));
        let twice = s
            .expire_due(ExpireDueRequest {
                now_ms: after + 10_000,
                limit: 10,
            })
            .await
            .expect("expire");
        assert_eq!(twice.expired, 0, "closed once");
        assert_eq!(s.wallet(1).expect("wallet").balance, 1_000);
        let a = audit(&s).await;
        assert_eq!((a.balances, a.in_envelopes), (1_000, 0));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_share_is_at_most_twice_the_mean_of_what_is_left() {
        // 100 cents over 4 shares: the mean is 25, so at most 50.
        assert_eq!(share_amount(100, 4, 49), 50);
        assert_eq!(share_amount(100, 4, 50), 1);
        assert_eq!(share_amount(100, 1, 7), 100);
        // As many cents as shares: a cent each.
        assert_eq!(share_amount(3, 3, u64::MAX), 1);
    }
}
