//! `wx.message.Message`: store-and-forward messaging with SyncKey sync.
//!
//! ## Send
//!
//! Only between friends: the recipient's edge to the sender must be FRIEND, so a block
//! (which leaves the blocked side's edge untouched) answers the same `not_friend` as a
//! stranger and is never revealed. The message gets the recipient's next sequence from
//! `seq` and is stored in the recipient's mailbox, then under the sender's next sequence
//! in the sender's own (their other devices sync what they sent). Each store is
//! idempotent by (sender, client message id), so a client that did not hear the answer
//! sends again with the same id and gets the same message back. A mailbox accepts
//! sequences only above its last one; a send that lost a race to a concurrent send (its
//! sequence arrived second) takes a new sequence and tries again.
//!
//! Then both users' live connections are told to sync ([`notify`], coalesced per user).
//!
//! ## Sync
//!
//! The device presents its [`SyncKey`] (empty the first time). Presenting it proves the
//! device has everything up to it (no separate ACK), so the mailbox may trim what every
//! device has. The answer holds the messages above the key (oldest first, at most 200,
//! `has_more` when more wait), the changes to the user's relations since the key (from
//! contactstore's change log, removals included), the user's profile when its version is
//! newer, and a new key.
//! A key below what the mailbox still keeps is `sync_key_expired`: the device starts over
//! from an empty key.

pub mod fanout;
pub mod notify;
pub mod sync_key;

use svrkit::Status;
use wx_api::account::{AccountClient, ExistsRequest, GetProfilesRequest};
use wx_api::message::message_server::Message;
use wx_api::message::{
    AddMembersRequest, ChatMessage, CreateGroupRequest, GroupInfo, GroupInfoRequest,
    LeaveGroupReply, LeaveGroupRequest, SendGroupRequest, SendReply, SendRequest, SyncReply,
    SyncRequest,
};
use wx_api::seq::{NextRequest, SeqClient};
use wx_api::storage::{
    AckRequest, ClaimClientIdRequest, ContactStoreClient, DeliverMessageRequest, EdgeState,
    EnvelopeNotice, GetEdgesRequest, GetGroupRequest, GroupRecord, ListChangesRequest,
    MsgStoreClient, PostGroupMessageRequest, PutGroupRequest, ReadMailboxRequest, StoredMessage,
};
use wx_api::{acting_user, by_uid, retry_on_conflict};

pub use fanout::Fanout;
pub use notify::Notifier;
pub use sync_key::{SyncKey, SyncKeyCheck, SyncKeyError};

/// The longest text a message may carry, in bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// The longest client message id and device id, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// How many times a send takes a new sequence after losing a race for a mailbox.
const DELIVERY_ATTEMPTS: usize = 5;
/// How many times a group change is re-read and re-applied after losing a race.
const GROUP_UPDATE_ATTEMPTS: usize = 4;

/// The message service.
#[derive(Debug, Clone)]
pub struct MessageService {
    store: MsgStoreClient,
    seq: SeqClient,
    contacts: ContactStoreClient,
    account: AccountClient,
    notifier: Option<Notifier>,
    fanout: std::sync::Arc<Fanout>,
    sync_check: SyncKeyCheck,
}

impl MessageService {
    /// A service over its stores and peers; `notifier` pushes "sync" (none: no pushes);
    /// `fanout` delivers group messages.
    pub fn new(
        store: MsgStoreClient,
        seq: SeqClient,
        contacts: ContactStoreClient,
        account: AccountClient,
        notifier: Option<Notifier>,
        fanout: std::sync::Arc<Fanout>,
    ) -> MessageService {
        MessageService {
            store,
            seq,
            contacts,
            account,
            notifier,
            fanout,
            sync_check: SyncKeyCheck::checksummed(),
        }
    }

    /// Checks sync keys as `check` says (signed with the cluster's key, where there is
    /// one; checksummed by default).
    pub fn sync_key_check(mut self, check: SyncKeyCheck) -> MessageService {
        self.sync_check = check;
        self
    }

    /// Fails unless every one of `members` is a friend of `me`.
    async fn all_friends(&self, me: u64, members: &[u64]) -> Result<(), Status> {
        let friends = self.friends_among(me, members).await?;
        match members.iter().find(|m| !friends.contains(m)) {
            Some(m) => Err(Status::permission_denied(format!(
                "user {m} is not your friend; only friends can be added to a group"
            ))
            .with_reason("not_friend")),
            None => Ok(()),
        }
    }

    /// The group, if `me` is in it.
    async fn group_of(&self, group_id: u64, me: u64) -> Result<GroupRecord, Status> {
        let group = self
            .store
            .get_group_with(GetGroupRequest { group_id }, by_uid(group_id))
            .await?;
        if group.members.contains(&me) {
            Ok(group)
        } else {
            Err(
                Status::permission_denied(format!("you are not a member of group {group_id}"))
                    .with_reason("not_member"),
            )
        }
    }

    /// Changes the group with `change` under optimistic concurrency (re-reads on a race).
    async fn update_group(
        &self,
        group_id: u64,
        me: u64,
        change: impl Fn(&mut GroupRecord) -> Result<(), Status>,
    ) -> Result<GroupRecord, Status> {
        retry_on_conflict(GROUP_UPDATE_ATTEMPTS, || async {
            let mut group = self.group_of(group_id, me).await?;
            let version = group.version;
            change(&mut group)?;
            self.store
                .put_group_with(
                    PutGroupRequest {
                        group: Some(group),
                        expected_version: version,
                    },
                    by_uid(group_id),
                )
                .await
        })
        .await
    }

    /// Claims the client's message id `id` of `sender` for one message: to the group
    /// `group_id`, or (when it is 0) to `peer`, with `text`. A re-send of that message
    /// passes; the same id for another conversation or text is refused ALREADY_EXISTS
    /// (`client_msg_id_reused`) before anything is stored, so an id can never make a
    /// mailbox take a new message for an old one and acknowledge it undelivered.
    async fn claim(
        &self,
        sender: u64,
        id: &str,
        group_id: u64,
        peer: u64,
        text: &str,
    ) -> Result<(), Status> {
        self.store
            .claim_client_id_with(
                ClaimClientIdRequest {
                    owner: sender,
                    client_msg_id: id.to_string(),
                    group_id,
                    peer,
                    digest: text_digest(text),
                },
                by_uid(sender),
            )
            .await?;
        Ok(())
    }

    /// Stores `message` in `owner`'s mailbox under a fresh sequence of `owner`.
    async fn deliver(&self, owner: u64, message: StoredMessage) -> Result<StoredMessage, Status> {
        retry_on_conflict(DELIVERY_ATTEMPTS, || {
            let mut message = message.clone();
            async move {
                let seq = self
                    .seq
                    .next_with(
                        NextRequest { uid: owner },
                        wx_api::by_section(wx_api::seq_section(owner)),
                    )
                    .await?;
                message.seq = seq.seq;
                let reply = self
                    .store
                    .deliver_with(
                        DeliverMessageRequest {
                            owner,
                            message: Some(message),
                        },
                        by_uid(owner),
                    )
                    .await?;
                reply
                    .message
                    .ok_or_else(|| Status::internal("msgstore answered no message"))
            }
        })
        .await
    }

    /// Which of `peers` `owner` has as friends (one read of `owner`'s edges).
    async fn friends_among(
        &self,
        owner: u64,
        peers: &[u64],
    ) -> Result<std::collections::HashSet<u64>, Status> {
        if peers.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let edges = self
            .contacts
            .get_edges_with(
                GetEdgesRequest {
                    owner,
                    peers: peers.to_vec(),
                },
                by_uid(owner),
            )
            .await?;
        Ok(edges
            .edges
            .iter()
            .filter(|e| e.state() == EdgeState::Friend)
            .map(|e| e.peer)
            .collect())
    }

    /// Tells `uid`'s devices to sync, but the connection `except` (0: every one).
    fn notify(&self, uid: u64, except: u64) {
        if let Some(notifier) = &self.notifier {
            notifier.notify(uid, except);
        }
    }
}

fn info(g: GroupRecord) -> GroupInfo {
    GroupInfo {
        group_id: g.group_id,
        name: g.name,
        owner: g.owner,
        members: g.members,
    }
}

/// The most bytes of message text one sync page carries (about 16 full-length messages):
/// a page is bounded by size as well as by count, and the SyncKey continues it, so a
/// client's one small request can never ask the gateway for megabytes.
pub const MAX_SYNC_BYTES: usize = 256 * 1024;
/// What a message costs a page besides its text (ids, numbers, field names).
const MESSAGE_OVERHEAD_BYTES: usize = 160;

/// Keeps the oldest messages whose size fits `budget` (the first always, so every page
/// moves the key forward); true when some were cut.
fn keep_within(messages: &mut Vec<StoredMessage>, budget: usize) -> bool {
    let mut used = 0;
    let fit = messages
        .iter()
        .take_while(|m| {
            used += m.text.len() + m.client_msg_id.len() + MESSAGE_OVERHEAD_BYTES;
            used <= budget
        })
        .count()
        .max(1)
        .min(messages.len());
    let cut = fit < messages.len();
    messages.truncate(fit);
    cut
}

/// The longest group name, in characters.
pub const MAX_GROUP_NAME_CHARS: usize = 64;

/// Checks a group's name: at most [`MAX_GROUP_NAME_CHARS`] characters, none of them a
/// control character (NUL, newlines, escapes: a name is one line of text on every
/// member's screen).
fn check_group_name(name: &str) -> Result<(), Status> {
    if name.chars().count() > MAX_GROUP_NAME_CHARS {
        return Err(Status::invalid_argument(format!(
            "a group name is at most {MAX_GROUP_NAME_CHARS} characters"
        ))
        .with_reason("bad_group_name"));
    }
    if name.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "a group name is one line of text: no control characters (NUL, newlines, tabs)",
        )
        .with_reason("bad_group_name"));
    }
    Ok(())
}

/// Checks a message's text and client id; the errors name their reason first.
/// A digest of a message's text (FNV-1a, 64 bits): stable across builds and processes, as
/// claims are stored; it tells a re-send from another message with the same id, which
/// only its sender could forge.
fn text_digest(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn check_text(text: &str, client_msg_id: &str) -> Result<(), Status> {
    if text.trim().is_empty() {
        return Err(Status::invalid_argument("a message needs some text").with_reason("empty_text"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(Status::invalid_argument(format!(
            "a message is at most {MAX_TEXT_BYTES} bytes, this one is {}",
            text.len()
        ))
        .with_reason("text_too_long"));
    }
    if client_msg_id.len() > MAX_ID_BYTES {
        return Err(Status::invalid_argument(format!(
            "client_msg_id is at most {MAX_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The red envelope a send carries, if any: only the wallet service (which has just
/// created it) may attach one, so a client cannot show an envelope that holds nothing.
/// The caller is the wallet's certificate name under mutual TLS (what counts in a
/// deployment), else the service name its calls declare.
fn envelope_of(envelope: Option<EnvelopeNotice>) -> Result<Option<EnvelopeNotice>, Status> {
    let from_wallet = matches!(
        svrkit::Context::current().caller(),
        Some(WALLET_SERVICE | wx_api::wallet::wallet_methods::SERVICE_NAME)
    );
    match envelope {
        Some(_) if !from_wallet => Err(Status::permission_denied(
            "only the wallet service sends red envelopes",
        )
        .with_reason("not_wallet")),
        envelope => Ok(envelope),
    }
}

/// The wallet service's name in the manifest (its certificate's).
const WALLET_SERVICE: &str = "wallet";

fn chat(m: StoredMessage) -> ChatMessage {
    ChatMessage {
        group_id: m.group_id,
        seq: m.seq,
        msg_id: m.msg_id,
        from: m.from,
        to: m.to,
        text: m.text,
        sent_ms: m.sent_ms,
        client_msg_id: m.client_msg_id,
        envelope: m.envelope,
    }
}

impl Message for MessageService {
    async fn send(&self, request: SendRequest) -> Result<SendReply, Status> {
        let me = acting_user()?;
        let envelope = envelope_of(request.envelope)?;
        if request.text.trim().is_empty() {
            return Err(
                Status::invalid_argument("a message needs some text").with_reason("empty_text")
            );
        }
        if request.text.len() > MAX_TEXT_BYTES {
            return Err(Status::invalid_argument(format!(
                "a message is at most {MAX_TEXT_BYTES} bytes, this one is {}",
                request.text.len()
            ))
            .with_reason("text_too_long"));
        }
        if request.client_msg_id.len() > MAX_ID_BYTES {
            return Err(Status::invalid_argument(format!(
                "client_msg_id is at most {MAX_ID_BYTES} bytes"
            )));
        }
        if request.to == 0 {
            return Err(Status::invalid_argument(
                "\"to\" names no user: user ids start at 1",
            ));
        }
        if request.to == me {
            return Err(Status::invalid_argument(
                "send to a friend, not to yourself",
            ));
        }
        // The recipient's edge decides: a block leaves it other than FRIEND.
        if !self.friends_among(request.to, &[me]).await?.contains(&me) {
            let exists = self
                .account
                .exists(ExistsRequest {
                    uids: vec![request.to],
                })
                .await?;
            if !exists.exists.first().copied().unwrap_or(false) {
                return Err(Status::not_found(format!("no user {}", request.to))
                    .with_reason("unknown_user"));
            }
            return Err(Status::permission_denied(format!(
                "user {} is not your friend",
                request.to
            ))
            .with_reason("not_friend"));
        }
        let client_msg_id = if request.client_msg_id.is_empty() {
            format!("server-{:x}", svrkit::context::random_u64())
        } else {
            self.claim(me, &request.client_msg_id, 0, request.to, &request.text)
                .await?;
            request.client_msg_id
        };
        let message = StoredMessage {
            seq: 0,
            msg_id: svrkit::context::random_u64(),
            from: me,
            to: request.to,
            text: request.text,
            sent_ms: wx_api::now_ms(),
            client_msg_id,
            group_id: 0,
            envelope,
        };
        // The recipient's copy first: once it is stored the message is sent, and a re-send
        // after a failure below finds it and completes the sender's copy.
        let delivered = self.deliver(request.to, message).await?;
        let own = StoredMessage {
            seq: 0,
            ..delivered.clone()
        };
        let own = self.deliver(me, own).await?;
        metrics::counter!("wx_message_sent_total").increment(1);
        self.notify(request.to, 0);
        // The sender's other devices sync; the connection it sent on has the answer.
        self.notify(me, wx_api::origin_connection());
        Ok(SendReply {
            msg_id: own.msg_id,
            seq: own.seq,
            sent_ms: own.sent_ms,
        })
    }

    async fn sync(&self, request: SyncRequest) -> Result<SyncReply, Status> {
        let me = acting_user()?;
        let key = SyncKey::decode(&request.sync_key, me, &self.sync_check)
            .map_err(|e| Status::invalid_argument(format!("{e}")).with_reason("bad_sync_key"))?;
        let device = if request.device.is_empty() {
            "default".to_string()
        } else if request.device.len() > MAX_ID_BYTES {
            return Err(Status::invalid_argument(format!(
                "a device id is at most {MAX_ID_BYTES} bytes"
            )));
        } else {
            request.device
        };
        metrics::counter!("wx_message_syncs_total").increment(1);
        // The four reads and the acknowledgement are independent: one round trip of
        // latency, not four. The key proves the device has everything up to it; a first
        // sync (key 0) makes the device known, so nothing it has not seen is trimmed from
        // then on.
        let ack = self.store.ack_with(
            AckRequest {
                owner: me,
                device,
                seq: key.messages,
            },
            by_uid(me),
        );
        let read = self.store.read_with(
            ReadMailboxRequest {
                owner: me,
                after_seq: key.messages,
                limit: request.limit,
            },
            by_uid(me),
        );
        let changes = self.contacts.list_changes_with(
            ListChangesRequest {
                owner: me,
                after: key.contacts,
                limit: 0,
            },
            by_uid(me),
        );
        let profiles = self
            .account
            .get_profiles(GetProfilesRequest { uids: vec![me] });
        let (_, read, changes, profiles) = tokio::try_join!(ack, read, changes, profiles)?;
        if key.messages > 0 && read.kept_from_seq > key.messages + 1 {
            return Err(Status::failed_precondition(format!(
                "messages up to {} are gone; sync again from an empty key",
                read.kept_from_seq - 1
            ))
            .with_reason("sync_key_expired"));
        }
        if key.contacts > 0 && changes.trimmed_to > key.contacts {
            return Err(Status::failed_precondition(format!(
                "contact changes up to {} are gone; sync again from an empty key",
                changes.trimmed_to
            ))
            .with_reason("sync_key_expired"));
        }
        let profile = profiles.profiles.into_iter().next();
        let profile_version = profile.as_ref().map_or(key.profile, |p| p.version);
        let mut messages = read.messages;
        let cut = keep_within(&mut messages, MAX_SYNC_BYTES);
        let newest = messages.last().map_or(key.messages, |m| m.seq);
        let contacts_seen = changes.changes.last().map_or(key.contacts, |c| c.counter);
        let next = SyncKey {
            uid: me,
            profile: profile_version.max(key.profile),
            contacts: contacts_seen.max(key.contacts),
            messages: newest.max(key.messages),
        };
        Ok(SyncReply {
            messages: messages.into_iter().map(chat).collect(),
            profile: profile.filter(|p| p.version > key.profile),
            has_more: cut || read.has_more || changes.has_more,
            sync_key: next.encode(&self.sync_check),
            contacts: changes.changes,
        })
    }

    async fn create_group(&self, request: CreateGroupRequest) -> Result<GroupInfo, Status> {
        let me = acting_user()?;
        let mut members: Vec<u64> = request.members.into_iter().filter(|m| *m != me).collect();
        members.sort_unstable();
        members.dedup();
        if members.len() + 1 > wx_api::MAX_GROUP_MEMBERS as usize {
            return Err(Status::resource_exhausted(format!(
                "a group holds at most {} members",
                wx_api::MAX_GROUP_MEMBERS
            )));
        }
        check_group_name(&request.name)?;
        self.all_friends(me, &members).await?;
        members.insert(0, me);
        let group = GroupRecord {
            group_id: 1 + svrkit::context::random_u64() % ((1u64 << 53) - 1),
            owner: me,
            name: request.name,
            members,
            created_ms: wx_api::now_ms(),
            version: 0,
        };
        let group_id = group.group_id;
        let group = self
            .store
            .put_group_with(
                PutGroupRequest {
                    group: Some(group),
                    expected_version: 0,
                },
                by_uid(group_id),
            )
            .await?;
        Ok(info(group))
    }

    async fn add_members(&self, request: AddMembersRequest) -> Result<GroupInfo, Status> {
        let me = acting_user()?;
        let mut new: Vec<u64> = request.members;
        new.sort_unstable();
        new.dedup();
        self.all_friends(me, &new).await?;
        let group = self
            .update_group(request.group_id, me, |g| {
                for m in &new {
                    if !g.members.contains(m) {
                        g.members.push(*m);
                    }
                }
                if g.members.len() > wx_api::MAX_GROUP_MEMBERS as usize {
                    return Err(Status::resource_exhausted(format!(
                        "a group holds at most {} members",
                        wx_api::MAX_GROUP_MEMBERS
                    )));
                }
                Ok(())
            })
            .await?;
        Ok(info(group))
    }

    async fn leave_group(&self, request: LeaveGroupRequest) -> Result<LeaveGroupReply, Status> {
        let me = acting_user()?;
        self.update_group(request.group_id, me, |g| {
            g.members.retain(|m| *m != me);
            Ok(())
        })
        .await?;
        Ok(LeaveGroupReply {})
    }

    async fn send_group(&self, request: SendGroupRequest) -> Result<SendReply, Status> {
        let me = acting_user()?;
        check_text(&request.text, &request.client_msg_id)?;
        let envelope = envelope_of(request.envelope)?;
        let client_msg_id = if request.client_msg_id.is_empty() {
            format!("server-{:x}", svrkit::context::random_u64())
        } else {
            self.claim(
                me,
                &request.client_msg_id,
                request.group_id,
                0,
                &request.text,
            )
            .await?;
            request.client_msg_id
        };
        let message = StoredMessage {
            seq: 0,
            msg_id: svrkit::context::random_u64(),
            from: me,
            to: 0,
            text: request.text,
            sent_ms: wx_api::now_ms(),
            client_msg_id,
            group_id: request.group_id,
            envelope,
        };
        let posted = self
            .store
            .post_group_message_with(
                PostGroupMessageRequest {
                    group_id: request.group_id,
                    message: Some(message),
                },
                by_uid(request.group_id),
            )
            .await?;
        let message = posted.message.unwrap_or_default();
        // Accepted: the job is durable. Deliver now; the sweep retries if this fails.
        let (fanout, group_id, job_id) = (self.fanout.clone(), request.group_id, posted.job_id);
        tokio::spawn(async move {
            if let Err(status) = fanout.run_job(group_id, job_id).await {
                tracing::debug!(%status, job_id, "fan-out left to the sweep");
            }
        });
        metrics::counter!("wx_message_group_sent_total").increment(1);
        Ok(SendReply {
            msg_id: message.msg_id,
            seq: 0,
            sent_ms: message.sent_ms,
        })
    }

    async fn get_group_info(&self, request: GroupInfoRequest) -> Result<GroupInfo, Status> {
        let me = acting_user()?;
        Ok(info(self.group_of(request.group_id, me).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_one_line_of_bounded_text() {
        assert!(check_group_name("lunch 🍜").is_ok());
        assert!(check_group_name("").is_ok());
        assert!(check_group_name(&"x".repeat(MAX_GROUP_NAME_CHARS)).is_ok());
        for bad in ["a\0b", "two\nlines", "tab\there", "\u{1b}[31mred"] {
            let refused = check_group_name(bad).expect_err(bad);
            assert_eq!(refused.reason(), Some("bad_group_name"), "{bad:?}");
        }
        assert!(check_group_name(&"x".repeat(MAX_GROUP_NAME_CHARS + 1)).is_err());
    }

    #[test]
    fn a_sync_page_is_bounded_by_bytes_and_always_moves_on() {
        let message = |seq: u64, len: usize| StoredMessage {
            seq,
            text: "x".repeat(len),
            ..StoredMessage::default()
        };
        let mut big: Vec<StoredMessage> = (1..=200).map(|s| message(s, MAX_TEXT_BYTES)).collect();
        assert!(keep_within(&mut big, MAX_SYNC_BYTES), "cut");
        let bytes: usize = big.iter().map(|m| m.text.len()).sum();
        assert!(
            bytes <= MAX_SYNC_BYTES && big.len() >= 15,
            "{} messages, {bytes} bytes",
            big.len()
        );
        assert_eq!(
            big.last().map(|m| m.seq),
            Some(big.len() as u64),
            "the oldest first"
        );
        // One message larger than the budget still goes alone: the key moves on.
        let mut one = vec![message(1, 100), message(2, 100)];
        assert!(keep_within(&mut one, 10));
        assert_eq!(one.len(), 1);
        // Small pages are untouched.
        let mut small: Vec<StoredMessage> = (1..=50).map(|s| message(s, 10)).collect();
        assert!(!keep_within(&mut small, MAX_SYNC_BYTES));
        assert_eq!(small.len(), 50);
        assert!(!keep_within(&mut Vec::new(), MAX_SYNC_BYTES));
    }

    #[test]
    fn text_digests_are_stable_and_tell_texts_apart() {
        // FNV-1a's published vectors: claims stored today must match tomorrow's digests.
        assert_eq!(text_digest(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(text_digest("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(text_digest("hello A"), text_digest("hello B"));
    }
}
