//! The wallet service (`wx.wallet.Wallet`): balances and ledgers in cents, test top-ups,
//! and red envelopes.
//!
//! - **Money** lives in walletstore, sharded by uid; every movement is one transfer
//!   record with both legs, written with the balance it changes, once per transfer id
//!   (see `idl/wx/wallet_store.proto`). There is no payment provider: money enters by
//!   [`TopUp`](Wallet::top_up), which the operator may call, and users only on a
//!   service started with `WX_DEV_TOPUP=1`.
//! - **Sending** checks the chat (a friend both ways, or a group the sender is in, whose
//!   members are the envelope's possible takers), takes the money out of the sender's
//!   wallet in the write that creates the envelope, and sends the envelope as a chat
//!   message through the message service (store, push, sync), with a client message id
//!   of its own so a retried send neither pays nor posts twice.
//! - **Grabbing and opening** are two steps, routed to the instance that owns the
//!   envelope and queued there ([`queue`]); the amount is worked out when opened.
//! - **Expiry**: a sweep of every shard gives back what is left of envelopes whose time
//!   is up ([`sweep_expired_forever`]), exactly once (the store closes an envelope under
//!   its lock).

pub mod credits;
pub mod queue;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use svrkit::{Channel, Context, Status};
use wx_api::message::{GroupInfoRequest, MessageClient, SendGroupRequest, SendRequest};
use wx_api::money::{
    MAX_ENVELOPE_TOTAL, MAX_GREETING_CHARS, MAX_SHARES, check_top_up, check_transfer_id,
    history_limit,
};
use wx_api::relations::Relations;
use wx_api::storage::{
    EnvelopeKey, EnvelopeNotice, EnvelopeRecord, ExpireDueRequest, HasTransfersRequest,
    WalletCredit, WalletStoreClient,
};
use wx_api::wallet::wallet_server::Wallet;
use wx_api::wallet::{
    AuditReply, AuditRequest, BalanceReply, BalanceRequest, EnvelopeRef, EnvelopeView, GrabReply,
    HistoryReply, HistoryRequest, OpenReply, SendRequest as SendEnvelopeRequest, Taker, TopUpReply,
    TopUpRequest,
};
use wx_api::{acting_user, by_uid};

pub use queue::{EnvelopeQueues, Limits, Step};

/// How long an envelope stays open by default (24 hours).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often every shard is swept for envelopes whose time is up.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(1);
/// The greeting of an envelope sent without one.
pub const DEFAULT_GREETING: &str = "Best wishes";
/// Rounds of an audit at most, waiting for two that agree.
pub const AUDIT_ROUNDS: usize = 8;
/// The caller name the operator's tools present.
const OPERATOR: &str = "operator";

/// What the service is allowed and how long things last.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Users may top up their own wallets (`WX_DEV_TOPUP=1`; development only).
    pub dev_topup: bool,
    /// How long an envelope stays open.
    pub ttl: Duration,
    /// The envelope queues' bounds.
    pub limits: Limits,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            dev_topup: false,
            ttl: DEFAULT_TTL,
            limits: Limits::default(),
        }
    }
}

/// The wallet service.
#[derive(Debug, Clone)]
pub struct WalletService {
    store: WalletStoreClient,
    shards: Channel,
    message: MessageClient,
    relations: Relations,
    queues: Arc<EnvelopeQueues>,
    settings: Settings,
}

impl WalletService {
    /// The service over walletstore's sharded channel `shards`, sending envelopes through
    /// `message`, judging friendship by `relations`, delivering credits with `credits`.
    pub fn new(
        shards: Channel,
        message: MessageClient,
        relations: Relations,
        credits: Arc<credits::Credits>,
        settings: Settings,
    ) -> WalletService {
        let store = WalletStoreClient::new(shards.clone());
        WalletService {
            queues: Arc::new(EnvelopeQueues::new(store.clone(), credits, settings.limits)),
            store,
            shards,
            message,
            relations,
            settings,
        }
    }

    /// The envelope queues (for their gauge).
    pub fn queues(&self) -> Arc<EnvelopeQueues> {
        Arc::clone(&self.queues)
    }

    async fn envelope(&self, r: &EnvelopeRef) -> Result<EnvelopeRecord, Status> {
        let key = key_of(r)?;
        self.store.get_envelope_with(key, by_uid(key.sender)).await
    }

    /// Who may take a share of an envelope from `me` to friend `to` or group `group_id`:
    /// the friend, or the group's members now (the sender among them).
    async fn takers(&self, me: u64, to: u64, group_id: u64) -> Result<Vec<u64>, Status> {
        match (to, group_id) {
            (0, 0) | (1.., 1..) => Err(Status::invalid_argument(
                "send an envelope to a friend (\"to\") or a group (\"group_id\"), one of them",
            )
            .with_reason("bad_chat")),
            (to, 0) => {
                if to == me || !self.relations.mutual(me, &[to]).await?.contains(&to) {
                    return Err(
                        Status::permission_denied(format!("user {to} is not your friend"))
                            .with_reason("not_friend"),
                    );
                }
                Ok(vec![to])
            }
            (0, group_id) => Ok(self
                .message
                .get_group_info(GroupInfoRequest { group_id })
                .await?
                .members),
        }
    }

    /// Sends envelope `e` as a chat message from its sender (retries reuse its id).
    async fn announce(&self, e: &EnvelopeRecord) -> Result<(), Status> {
        let envelope = Some(EnvelopeNotice {
            sender: e.sender,
            seq: e.seq,
            total: e.total,
            shares: e.shares,
        });
        let client_msg_id = format!("envelope-{}", e.seq);
        if e.group_id != 0 {
            self.message
                .send_group(SendGroupRequest {
                    group_id: e.group_id,
                    text: e.greeting.clone(),
                    client_msg_id,
                    envelope,
                })
                .await?;
        } else {
            self.message
                .send(SendRequest {
                    to: e.to,
                    text: e.greeting.clone(),
                    client_msg_id,
                    envelope,
                })
                .await?;
        }
        Ok(())
    }

    /// Every shard's sums, repeated until two rounds in a row agree (at most
    /// [`AUDIT_ROUNDS`]): shards are read one after another, so a credit moving between
    /// two of them during a round may be counted twice or not at all, and only an audit
    /// two rounds confirm (`settled`) is exact.
    pub async fn audit_all(&self) -> Result<AuditReply, Status> {
        let mut last = self.audit_round().await?;
        for _ in 1..AUDIT_ROUNDS {
            let next = self.audit_round().await?;
            if next == last {
                return Ok(AuditReply {
                    settled: true,
                    ..next
                });
            }
            last = next;
        }
        Ok(last)
    }

    /// One round over every shard.
    async fn audit_round(&self) -> Result<AuditReply, Status> {
        let mut total = AuditReply::default();
        let mut owed: HashMap<u64, Vec<WalletCredit>> = HashMap::new();
        for key in self.shards.instance_keys() {
            let shard = self
                .store
                .audit_with(wx_api::storage::AuditRequest {}, by_uid(key))
                .await?;
            total.minted += shard.minted;
            total.balances += shard.balances;
            total.in_envelopes += shard.in_envelopes;
            total.wallets += shard.wallets;
            total.envelopes += shard.envelopes;
            for credit in shard.owed {
                owed.entry(credit.to).or_default().push(credit);
            }
        }
        for (uid, credits) in owed {
            for chunk in credits.chunks(1_000) {
                let applied = self
                    .store
                    .has_transfers_with(
                        HasTransfersRequest {
                            uid,
                            transfer_ids: chunk.iter().map(|c| c.transfer_id.clone()).collect(),
                        },
                        by_uid(uid),
                    )
                    .await?
                    .applied;
                total.in_flight += chunk
                    .iter()
                    .zip(applied.iter().chain(std::iter::repeat(&false)))
                    .filter(|(_, applied)| !**applied)
                    .map(|(c, _)| c.amount)
                    .sum::<u64>();
            }
        }
        total.balanced = total.minted == total.balances + total.in_envelopes + total.in_flight;
        Ok(total)
    }
}

/// The store key of an envelope reference.
fn key_of(r: &EnvelopeRef) -> Result<EnvelopeKey, Status> {
    if r.sender == 0 || r.seq == 0 {
        return Err(
            Status::invalid_argument("name an envelope by its sender and seq")
                .with_reason("no_envelope"),
        );
    }
    Ok(EnvelopeKey {
        sender: r.sender,
        seq: r.seq,
    })
}

/// How `me` sees envelope `e` at `now_ms`.
pub fn view(e: &EnvelopeRecord, me: u64, now_ms: u64) -> EnvelopeView {
    let mut takers: Vec<Taker> = e
        .grabs
        .iter()
        .filter(|g| g.amount > 0)
        .map(|g| Taker {
            uid: g.uid,
            amount: g.amount,
            opened_ms: g.opened_ms,
        })
        .collect();
    takers.sort_by_key(|t| t.opened_ms);
    EnvelopeView {
        envelope: Some(EnvelopeRef {
            sender: e.sender,
            seq: e.seq,
        }),
        to: e.to,
        group_id: e.group_id,
        total: e.total,
        shares: e.shares,
        greeting: e.greeting.clone(),
        created_ms: e.created_ms,
        expires_ms: e.expires_ms,
        taken: e
            .grabs
            .iter()
            .filter(|g| g.amount > 0 || g.reserved_until_ms > now_ms)
            .count() as u32,
        remaining: e.remaining,
        expired: e.refunded || now_ms >= e.expires_ms,
        mine: e.grabs.iter().find(|g| g.uid == me).map_or(0, |g| g.amount),
        takers,
    }
}

/// Checks a greeting: one line of at most [`MAX_GREETING_CHARS`] characters; blank gets
/// [`DEFAULT_GREETING`].
fn greeting(text: &str) -> Result<String, Status> {
    let text = text.trim();
    if text.chars().count() > MAX_GREETING_CHARS {
        return Err(Status::invalid_argument(format!(
            "a greeting is at most {MAX_GREETING_CHARS} characters"
        ))
        .with_reason("greeting_too_long"));
    }
    if text.chars().any(char::is_control) {
        return Err(
            Status::invalid_argument("a greeting is one line of text").with_reason("bad_greeting")
        );
    }
    Ok(if text.is_empty() {
        DEFAULT_GREETING.to_string()
    } else {
        text.to_string()
    })
}

/// The amounts of a send: `shares` (0 means 1) of at least a cent each out of `total`.
fn check_amounts(total: u64, shares: u32, takers: usize) -> Result<u32, Status> {
    let shares = shares.max(1);
    if total == 0 || total > MAX_ENVELOPE_TOTAL {
        return Err(Status::invalid_argument(format!(
            "an envelope holds 1 to {MAX_ENVELOPE_TOTAL} cents"
        ))
        .with_reason("bad_amount"));
    }
    if shares > MAX_SHARES || shares as usize > takers {
        return Err(Status::invalid_argument(format!(
            "at most {} shares here (the chat's size, and {MAX_SHARES} at most)",
            takers.min(MAX_SHARES as usize)
        ))
        .with_reason("too_many_shares"));
    }
    if total < u64::from(shares) {
        return Err(Status::invalid_argument(format!(
            "{shares} shares need at least {shares} cents: a cent each"
        ))
        .with_reason("amount_too_small"));
    }
    Ok(shares)
}

impl Wallet for WalletService {
    async fn balance(&self, _request: BalanceRequest) -> Result<BalanceReply, Status> {
        let me = acting_user()?;
        let wallet = self
            .store
            .get_wallet_with(wx_api::storage::GetWalletRequest { uid: me }, by_uid(me))
            .await?;
        Ok(BalanceReply {
            balance: wallet.balance,
        })
    }

    async fn history(&self, request: HistoryRequest) -> Result<HistoryReply, Status> {
        let me = acting_user()?;
        let limit = history_limit(request.limit);
        let page = self
            .store
            .history_with(
                wx_api::storage::HistoryRequest {
                    uid: me,
                    before: request.before,
                    limit,
                },
                by_uid(me),
            )
            .await?;
        let next_before = match page.entries.last() {
            Some(last) if page.entries.len() as u32 == limit && last.entry > 1 => last.entry,
            _ => 0,
        };
        Ok(HistoryReply {
            entries: page.entries,
            next_before,
        })
    }

    async fn top_up(&self, request: TopUpRequest) -> Result<TopUpReply, Status> {
        check_top_up(&request.transfer_id, request.amount)?;
        let operator = Context::current().caller() == Some(OPERATOR);
        let uid = if operator {
            match (request.uid, Context::current().uid()) {
                (0, 0) => {
                    return Err(Status::invalid_argument("name the wallet's uid"));
                }
                (0, acting) => acting,
                (uid, _) => uid,
            }
        } else {
            let me = acting_user()?;
            if !self.settings.dev_topup {
                return Err(Status::permission_denied(
                    "top-ups are off: there is no payment provider (WX_DEV_TOPUP=1 allows test money)",
                )
                .with_reason("topup_disabled"));
            }
            if request.uid != 0 && request.uid != me {
                return Err(Status::permission_denied("you top up your own wallet only")
                    .with_reason("not_yours"));
            }
            me
        };
        let reply = self
            .store
            .top_up_with(
                wx_api::storage::TopUpRequest {
                    uid,
                    amount: request.amount,
                    transfer_id: request.transfer_id,
                },
                by_uid(uid),
            )
            .await?;
        Ok(TopUpReply {
            balance: reply.balance,
            applied: reply.applied,
        })
    }

    async fn send(&self, request: SendEnvelopeRequest) -> Result<EnvelopeView, Status> {
        let me = acting_user()?;
        check_transfer_id(&request.transfer_id)?;
        let greeting = greeting(&request.greeting)?;
        // The amounts first (no reads), then against the chat's size.
        check_amounts(request.total, request.shares, MAX_SHARES as usize)?;
        let members = self.takers(me, request.to, request.group_id).await?;
        let shares = check_amounts(request.total, request.shares, members.len())?;
        let now = wx_api::now_ms();
        let ttl = u64::try_from(self.settings.ttl.as_millis()).unwrap_or(u64::MAX);
        let created = self
            .store
            .create_envelope_with(
                wx_api::storage::CreateEnvelopeRequest {
                    envelope: Some(EnvelopeRecord {
                        sender: me,
                        to: request.to,
                        group_id: request.group_id,
                        members,
                        total: request.total,
                        shares,
                        greeting,
                        created_ms: now,
                        expires_ms: now.saturating_add(ttl),
                        transfer_id: request.transfer_id,
                        ..Default::default()
                    }),
                },
                by_uid(me),
            )
            .await?;
        // The money has moved; the message says so. A failure here is answered, and the
        // client's retry (same transfer id) finds the envelope and sends the message
        // again under the same client message id.
        self.announce(&created).await?;
        metrics::counter!("wx_wallet_envelopes_sent_total").increment(1);
        Ok(view(&created, me, wx_api::now_ms()))
    }

    async fn grab(&self, request: EnvelopeRef) -> Result<GrabReply, Status> {
        let me = acting_user()?;
        let key = key_of(&request)?;
        let done = self.queues.submit(key, Step::Grab, me).await?;
        if let Some(refused) = queue::refusal(&done.outcome) {
            return Err(refused);
        }
        metrics::counter!("wx_wallet_grabs_total").increment(1);
        Ok(GrabReply {
            reserved_until_ms: done.outcome.reserved_until_ms,
            shares: done.shares,
            taken: done.taken,
        })
    }

    async fn open(&self, request: EnvelopeRef) -> Result<OpenReply, Status> {
        let me = acting_user()?;
        let key = key_of(&request)?;
        let done = self.queues.submit(key, Step::Open, me).await?;
        if let Some(refused) = queue::refusal(&done.outcome) {
            return Err(refused);
        }
        metrics::counter!("wx_wallet_opens_total").increment(1);
        Ok(OpenReply {
            amount: done.outcome.amount,
        })
    }

    async fn get(&self, request: EnvelopeRef) -> Result<EnvelopeView, Status> {
        let me = acting_user()?;
        let e = self.envelope(&request).await?;
        if e.sender != me && !e.members.contains(&me) {
            return Err(
                Status::permission_denied("only the chat's members see this envelope")
                    .with_reason("not_member"),
            );
        }
        Ok(view(&e, me, wx_api::now_ms()))
    }

    async fn audit(&self, _request: AuditRequest) -> Result<AuditReply, Status> {
        if Context::current().caller() != Some(OPERATOR) {
            return Err(Status::permission_denied("the audit is the operator's")
                .with_reason("not_operator"));
        }
        self.audit_all().await
    }
}

/// Gives back what is left of envelopes whose time is up, on every shard of `shards`,
/// every [`EXPIRY_SWEEP`], until the process ends.
pub async fn sweep_expired_forever(shards: Channel) {
    let store = WalletStoreClient::new(shards.clone());
    let limit = 64;
    loop {
        tokio::time::sleep(EXPIRY_SWEEP).await;
        for key in shards.instance_keys() {
            // Bounded: at most 16 rounds of `limit` per shard per sweep.
            for _ in 0..16 {
                let request = ExpireDueRequest {
                    now_ms: wx_api::now_ms(),
                    limit,
                };
                match store.expire_due_with(request, by_uid(key)).await {
                    Ok(done) => {
                        if done.expired > 0 {
                            metrics::counter!("wx_wallet_refunded_cents_total")
                                .increment(done.refunded);
                        }
                        if done.expired < limit {
                            break;
                        }
                    }
                    Err(status) => {
                        tracing::debug!(%status, "expiry sweep of a shard failed");
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_is_refused_with_its_own_reason_for_each_bad_amount() {
        let reason = |r: Result<u32, Status>| r.expect_err("refused").reason().map(str::to_string);
        assert_eq!(check_amounts(100, 3, 5).expect("fine"), 3);
        assert_eq!(check_amounts(1, 0, 1).expect("one share"), 1);
        assert_eq!(
            reason(check_amounts(0, 1, 5)).as_deref(),
            Some("bad_amount")
        );
        assert_eq!(
            reason(check_amounts(MAX_ENVELOPE_TOTAL + 1, 1, 5)).as_deref(),
            Some("bad_amount")
        );
        assert_eq!(
            reason(check_amounts(100, 6, 5)).as_deref(),
            Some("too_many_shares")
        );
        assert_eq!(
            reason(check_amounts(1_000, MAX_SHARES + 1, 500)).as_deref(),
            Some("too_many_shares")
        );
        assert_eq!(
            reason(check_amounts(2, 3, 5)).as_deref(),
            Some("amount_too_small")
        );
    }

    #[test]
    fn a_greeting_is_one_short_line_or_the_default() {
        assert_eq!(greeting("  ").expect("blank"), DEFAULT_GREETING);
        assert_eq!(greeting("恭喜发财").expect("short"), "恭喜发财");
        assert!(greeting(&"福".repeat(MAX_GREETING_CHARS)).is_ok());
        let long = greeting(&"福".repeat(MAX_GREETING_CHARS + 1)).expect_err("long");
        assert_eq!(long.reason(), Some("greeting_too_long"));
        let two = greeting("two\nlines").expect_err("two lines");
        assert_eq!(two.reason(), Some("bad_greeting"));
    }

    #[test]
    fn a_view_lists_takers_in_the_order_they_opened_and_what_is_mine() {
        use wx_api::storage::EnvelopeGrab;
        let grab = |uid, amount, opened_ms, reserved_until_ms| EnvelopeGrab {
            uid,
            grabbed_ms: 1,
            reserved_until_ms,
            amount,
            opened_ms,
        };
        let e = EnvelopeRecord {
            sender: 1,
            seq: 2,
            total: 100,
            shares: 4,
            remaining: 60,
            expires_ms: 1_000,
            grabs: vec![
                grab(5, 30, 20, 500),
                grab(6, 10, 10, 500),
                grab(7, 0, 0, 500),
                grab(8, 0, 0, 50),
            ],
            ..Default::default()
        };
        let v = view(&e, 5, 100);
        let takers: Vec<u64> = v.takers.iter().map(|t| t.uid).collect();
        assert_eq!(takers, [6, 5]);
        assert_eq!((v.mine, v.taken, v.expired), (30, 3, false));
        assert!(view(&e, 5, 1_000).expired);
    }
}
