//! `wx.storage.MsgStore`: each user's mailbox, ordered by the user's own sequence.
//!
//! Deliveries to a mailbox are accepted only above its last sequence, under the mailbox's
//! lock, so the mailbox only ever grows at its end: a reader that saw sequence N will
//! never later find a message below N appear. A (sender, client message id) index makes
//! re-sending idempotent. Trimming follows the devices: a message goes once every device
//! of the user acknowledged it (by syncing past it), or once it is older than the
//! retention period, whichever comes first; devices unseen for that long stop counting.

use std::time::Duration;

use fjall::Keyspace;
use prost::Message;
use svrkit::Status;
use wx_api::storage::msg_store_server::MsgStore;
use wx_api::storage::{
    AckJobReply, AckJobRequest, AckReply, AckRequest, ClaimClientIdReply, ClaimClientIdRequest,
    DeliverBatchReply, DeliverBatchRequest, DeliverMessageReply, DeliverMessageRequest,
    DeliveryOutcome, FanoutJob, GetGroupRequest, GroupRecord, LeaseJobsReply, LeaseJobsRequest,
    PostGroupMessageReply, PostGroupMessageRequest, PutGroupRequest, ReadMailboxReply,
    ReadMailboxRequest, StoredMessage,
};

use crate::codec::{decode, get, id_key, pair_key, word};
use crate::engine::{Engine, StorageError};
use crate::queue::Queue;

/// The most messages one Read returns.
pub const MAX_READ: u32 = 200;
/// How long messages and devices are kept without an acknowledgement (WeChat-like: 7 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest message text a mailbox accepts, in bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// The longest client message id or device id, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// The most messages one acknowledgement trims (the rest go with later ones).
const MAX_TRIM: usize = 1_000;
/// The most devices a mailbox tracks; past it the least recently seen is forgotten.
const MAX_DEVICES: usize = 16;
/// The most items one DeliverBatch takes.
pub const MAX_BATCH: usize = 1_000;
/// The longest group name, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 256;

/// A mailbox's bookkeeping.
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    last_seq: u64,
    kept_from_seq: u64,
}

impl Meta {
    fn encode(self) -> Vec<u8> {
        let mut out = self.last_seq.to_be_bytes().to_vec();
        out.extend_from_slice(&self.kept_from_seq.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Meta {
        Meta {
            last_seq: word(bytes, 0),
            kept_from_seq: word(bytes, 1),
        }
    }
}

/// The message store of one shard.
#[derive(Clone)]
pub struct MsgStoreService {
    engine: Engine,
    mailbox: Keyspace,
    dedup: Keyspace,
    meta: Keyspace,
    devices: Keyspace,
    groups: Keyspace,
    group_dedup: Keyspace,
    claims: Keyspace,
    claims_by_age: Keyspace,
    fanout: std::sync::Arc<Queue>,
    retention: Duration,
}

impl std::fmt::Debug for MsgStoreService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgStoreService")
            .field("engine", &self.engine)
            .field("retention", &self.retention)
            .finish()
    }
}

/// A conversation as keys name it: `g` and the group id, or `u` and the other person of
/// a one-to-one chat (seen from the mailbox of `owner`).
fn conversation(owner: u64, message: &StoredMessage) -> (u8, u64) {
    if message.group_id != 0 {
        (b'g', message.group_id)
    } else if message.from == owner {
        (b'u', message.to)
    } else {
        (b'u', message.from)
    }
}

/// The dedup key: owner, sender, conversation, client message id. The conversation is
/// part of it, so a client id reused in another conversation can never make a mailbox
/// take one message for another (the claim, [`claim_key`], refuses that reuse first).
fn dedup_key(owner: u64, message: &StoredMessage) -> Vec<u8> {
    let (kind, id) = conversation(owner, message);
    let mut key = pair_key(owner, message.from).to_vec();
    key.push(kind);
    key.extend_from_slice(&id.to_be_bytes());
    key.extend_from_slice(message.client_msg_id.as_bytes());
    key
}

/// The dedup key of stores written before conversations were part of it (removed with
/// the message it names when trimmed).
fn legacy_dedup_key(owner: u64, message: &StoredMessage) -> Vec<u8> {
    let mut key = pair_key(owner, message.from).to_vec();
    key.extend_from_slice(message.client_msg_id.as_bytes());
    key
}

/// The claim key: sender, client message id.
fn claim_key(owner: u64, client_msg_id: &str) -> Vec<u8> {
    let mut key = id_key(owner).to_vec();
    key.extend_from_slice(client_msg_id.as_bytes());
    key
}

/// The claims of `owner` by age: owner, claimed ms, client message id.
fn claim_age_key(owner: u64, claimed_ms: u64, client_msg_id: &str) -> Vec<u8> {
    let mut key = pair_key(owner, claimed_ms).to_vec();
    key.extend_from_slice(client_msg_id.as_bytes());
    key
}

/// A claim's value: conversation kind and id, text digest, when it was made.
fn claim_value(kind: u8, id: u64, digest: u64, claimed_ms: u64) -> Vec<u8> {
    let mut value = Vec::with_capacity(25);
    value.push(kind);
    value.extend_from_slice(&id.to_be_bytes());
    value.extend_from_slice(&digest.to_be_bytes());
    value.extend_from_slice(&claimed_ms.to_be_bytes());
    value
}

/// The refusal of a client message id already used for another message.
fn reused(client_msg_id: &str) -> Status {
    Status::already_exists(format!(
        "client_msg_id {client_msg_id:?} was used for another message; use a new one"
    ))
    .with_reason("client_msg_id_reused")
}

/// The device key: owner, device id.
fn device_key(owner: u64, device: &str) -> Vec<u8> {
    let mut key = id_key(owner).to_vec();
    key.extend_from_slice(device.as_bytes());
    key
}

impl MsgStoreService {
    /// The store on `engine`, keeping unacknowledged messages for `retention`.
    pub fn new(engine: Engine, retention: Duration) -> Result<MsgStoreService, StorageError> {
        Ok(MsgStoreService {
            mailbox: engine.keyspace("mailbox")?,
            dedup: engine.keyspace("mailbox_dedup")?,
            meta: engine.keyspace("mailbox_meta")?,
            devices: engine.keyspace("mailbox_devices")?,
            groups: engine.keyspace("groups")?,
            group_dedup: engine.keyspace("group_dedup")?,
            claims: engine.keyspace("client_id_claims")?,
            claims_by_age: engine.keyspace("client_id_claims_by_age")?,
            fanout: std::sync::Arc::new(Queue::open(&engine, "group_fanout")?),
            engine,
            retention,
        })
    }

    fn meta(&self, owner: u64) -> Result<Meta, StorageError> {
        Ok(self
            .meta
            .get(id_key(owner))?
            .map(|b| Meta::decode(&b))
            .unwrap_or_default())
    }
    /// Stages one delivery in `batch` (the caller holds `owner`'s lock); `metas` holds the
    /// mailboxes this batch already changed.
    fn stage(
        &self,
        batch: &mut crate::engine::WriteBatch,
        metas: &mut std::collections::HashMap<u64, Meta>,
        owner: u64,
        message: StoredMessage,
    ) -> Result<DeliveryOutcome, Status> {
        if owner == 0 || message.seq == 0 {
            return Err(Status::invalid_argument(
                "a delivery needs an owner and a seq",
            ));
        }
        if message.text.len() > MAX_TEXT_BYTES || message.client_msg_id.len() > MAX_ID_BYTES {
            return Err(Status::invalid_argument(format!(
                "texts are at most {MAX_TEXT_BYTES} bytes and ids {MAX_ID_BYTES}"
            )));
        }
        let dedup = (!message.client_msg_id.is_empty()).then(|| dedup_key(owner, &message));
        if let Some(key) = &dedup
            && let Some(seq) = self.dedup.get(key).map_err(StorageError::from)?
        {
            let seq = word(&seq, 0);
            if let Some(first) = get::<StoredMessage>(&self.mailbox, &pair_key(owner, seq))? {
                if first.text != message.text {
                    return Err(reused(&message.client_msg_id));
                }
                return Ok(DeliveryOutcome {
                    message: Some(first),
                    stored: false,
                    stale: false,
                });
            }
        }
        let meta = match metas.entry(owner) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.meta(owner)?),
        };
        if message.seq <= meta.last_seq {
            return Ok(DeliveryOutcome {
                message: Some(message),
                stored: false,
                stale: true,
            });
        }
        meta.last_seq = message.seq;
        batch.insert(
            &self.mailbox,
            pair_key(owner, message.seq).to_vec(),
            message.encode_to_vec(),
        );
        if let Some(key) = dedup {
            batch.insert(&self.dedup, key, message.seq.to_be_bytes().to_vec());
        }
        Ok(DeliveryOutcome {
            message: Some(message),
            stored: true,
            stale: false,
        })
    }

    /// Writes the staged mailboxes' bookkeeping into `batch`.
    fn stage_metas(
        &self,
        batch: &mut crate::engine::WriteBatch,
        metas: std::collections::HashMap<u64, Meta>,
    ) {
        for (owner, meta) in metas {
            batch.insert(&self.meta, id_key(owner).to_vec(), meta.encode());
        }
    }

    fn group(&self, group_id: u64) -> Result<Option<GroupRecord>, StorageError> {
        get::<GroupRecord>(&self.groups, &id_key(group_id))
    }
}

impl MsgStore for MsgStoreService {
    async fn deliver(&self, request: DeliverMessageRequest) -> Result<DeliverMessageReply, Status> {
        let owner = request.owner;
        let message = request
            .message
            .ok_or_else(|| Status::invalid_argument("no message given"))?;
        let _guard = self.engine.lock(&id_key(owner)).await;
        let mut batch = self.engine.batch();
        let mut metas = std::collections::HashMap::new();
        let seq = message.seq;
        let outcome = self.stage(&mut batch, &mut metas, owner, message)?;
        if outcome.stale {
            let last = metas.get(&owner).map_or(0, |m| m.last_seq);
            return Err(Status::aborted(format!(
                "mailbox {owner} is at sequence {last}; {seq} is not above it"
            )));
        }
        if outcome.stored {
            self.stage_metas(&mut batch, metas);
            self.engine.commit(batch).await?;
            metrics::counter!("wx_msgstore_messages_stored_total").increment(1);
        }
        Ok(DeliverMessageReply {
            message: outcome.message,
            stored: outcome.stored,
        })
    }

    async fn deliver_batch(
        &self,
        request: DeliverBatchRequest,
    ) -> Result<DeliverBatchReply, Status> {
        if request.items.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH} deliveries per batch"
            )));
        }
        let keys: Vec<[u8; 8]> = request.items.iter().map(|i| id_key(i.owner)).collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let _guards = self.engine.lock_all(&refs).await;
        let mut batch = self.engine.batch();
        let mut metas = std::collections::HashMap::new();
        let mut outcomes = Vec::with_capacity(request.items.len());
        for item in request.items {
            let message = item
                .message
                .ok_or_else(|| Status::invalid_argument("no message given"))?;
            outcomes.push(self.stage(&mut batch, &mut metas, item.owner, message)?);
        }
        let stored = outcomes.iter().filter(|o| o.stored).count();
        if stored > 0 {
            self.stage_metas(&mut batch, metas);
            self.engine.commit(batch).await?;
            metrics::counter!("wx_msgstore_messages_stored_total").increment(stored as u64);
        }
        Ok(DeliverBatchReply { outcomes })
    }

    async fn put_group(&self, request: PutGroupRequest) -> Result<GroupRecord, Status> {
        let mut group = request
            .group
            .ok_or_else(|| Status::invalid_argument("no group given"))?;
        if group.group_id == 0 || group.name.len() > MAX_GROUP_NAME_BYTES {
            return Err(Status::invalid_argument(format!(
                "a group needs an id and a name of at most {MAX_GROUP_NAME_BYTES} bytes"
            )));
        }
        if group.members.len() > wx_api::MAX_GROUP_MEMBERS as usize {
            return Err(Status::resource_exhausted(format!(
                "a group holds at most {} members",
                wx_api::MAX_GROUP_MEMBERS
            )));
        }
        let key = id_key(group.group_id);
        let _guard = self.engine.lock(&key).await;
        let current = self.group(group.group_id)?.map_or(0, |g| g.version);
        if current != request.expected_version {
            return Err(Status::aborted(format!(
                "group {} is at version {current}, not {}",
                group.group_id, request.expected_version
            )));
        }
        group.version = current + 1;
        let mut batch = self.engine.batch();
        batch.insert(&self.groups, key.to_vec(), group.encode_to_vec());
        self.engine.commit(batch).await?;
        Ok(group)
    }

    async fn get_group(&self, request: GetGroupRequest) -> Result<GroupRecord, Status> {
        self.group(request.group_id)?
            .ok_or_else(|| Status::not_found(format!("no group {}", request.group_id)))
    }

    async fn post_group_message(
        &self,
        request: PostGroupMessageRequest,
    ) -> Result<PostGroupMessageReply, Status> {
        let mut message = request
            .message
            .ok_or_else(|| Status::invalid_argument("no message given"))?;
        if message.text.len() > MAX_TEXT_BYTES
            || message.client_msg_id.is_empty()
            || message.client_msg_id.len() > MAX_ID_BYTES
        {
            return Err(Status::invalid_argument(format!(
                "a group message has at most {MAX_TEXT_BYTES} bytes of text and a client id of 1 to {MAX_ID_BYTES} bytes"
            )));
        }
        let key = id_key(request.group_id);
        let _guard = self.engine.lock(&key).await;
        let group = self
            .group(request.group_id)?
            .ok_or_else(|| Status::not_found(format!("no group {}", request.group_id)))?;
        if !group.members.contains(&message.from) {
            return Err(Status::permission_denied(format!(
                "user {} is not a member of group {}",
                message.from, request.group_id
            ))
            .with_reason("not_member"));
        }
        let mut dedup = pair_key(request.group_id, message.from).to_vec();
        dedup.extend_from_slice(message.client_msg_id.as_bytes());
        if let Some(first) = self.group_dedup.get(&dedup).map_err(StorageError::from)? {
            let job_id = word(&first, 0);
            let first: StoredMessage = decode(&dedup, first.get(8..).unwrap_or_default())?;
            if first.text != message.text {
                return Err(reused(&message.client_msg_id));
            }
            return Ok(PostGroupMessageReply {
                message: Some(first),
                job_id,
                stored: false,
            });
        }
        message.group_id = request.group_id;
        message.to = 0;
        message.seq = 0;
        let job = FanoutJob {
            group_id: request.group_id,
            message: Some(message.clone()),
            recipients: group.members,
        };
        let mut batch = self.engine.batch();
        let job_id = self.fanout.push(&mut batch, &job.encode_to_vec());
        let mut value = job_id.to_be_bytes().to_vec();
        value.extend_from_slice(&message.encode_to_vec());
        batch.insert(&self.group_dedup, dedup, value);
        self.engine.commit(batch).await?;
        metrics::counter!("wx_msgstore_group_messages_total").increment(1);
        Ok(PostGroupMessageReply {
            message: Some(message),
            job_id,
            stored: true,
        })
    }

    async fn lease_fanout(&self, request: LeaseJobsRequest) -> Result<LeaseJobsReply, Status> {
        let reply = self.fanout.answer_lease(&request)?;
        if request.job_id == 0 {
            metrics::gauge!("wx_msgstore_fanout_depth").set(reply.depth as f64);
            metrics::gauge!("wx_msgstore_fanout_lag_seconds").set(reply.lag_ms as f64 / 1000.0);
        }
        Ok(reply)
    }

    async fn ack_fanout(&self, request: AckJobRequest) -> Result<AckJobReply, Status> {
        self.fanout.ack(request.job_id).await?;
        Ok(AckJobReply {})
    }

    async fn claim_client_id(
        &self,
        request: ClaimClientIdRequest,
    ) -> Result<ClaimClientIdReply, Status> {
        let owner = request.owner;
        let id = &request.client_msg_id;
        if owner == 0 || id.is_empty() || id.len() > MAX_ID_BYTES {
            return Err(Status::invalid_argument(format!(
                "a claim needs an owner and a client_msg_id of 1 to {MAX_ID_BYTES} bytes"
            )));
        }
        let (kind, conversation) = match (request.group_id, request.peer) {
            (0, 0) => {
                return Err(Status::invalid_argument(
                    "a claim names its conversation: a group or a peer",
                ));
            }
            (0, peer) => (b'u', peer),
            (group, _) => (b'g', group),
        };
        let _guard = self.engine.lock(&id_key(owner)).await;
        let key = claim_key(owner, id);
        if let Some(claimed) = self.claims.get(&key).map_err(StorageError::from)? {
            let same = claimed.first() == Some(&kind)
                && word(claimed.get(1..).unwrap_or_default(), 0) == conversation
                && word(claimed.get(9..).unwrap_or_default(), 0) == request.digest;
            return if same {
                Ok(ClaimClientIdReply { first: false })
            } else {
                Err(reused(id))
            };
        }
        let now = wx_api::now_ms();
        let mut batch = self.engine.batch();
        batch.insert(
            &self.claims,
            key,
            claim_value(kind, conversation, request.digest, now),
        );
        batch.insert(
            &self.claims_by_age,
            claim_age_key(owner, now, id),
            Vec::new(),
        );
        self.engine.commit(batch).await?;
        Ok(ClaimClientIdReply { first: true })
    }

    async fn read(&self, request: ReadMailboxRequest) -> Result<ReadMailboxReply, Status> {
        let limit = match request.limit {
            0 => MAX_READ,
            n => n.min(MAX_READ),
        } as usize;
        let meta = self.meta(request.owner)?;
        let from = pair_key(request.owner, request.after_seq.saturating_add(1));
        let to = pair_key(request.owner, u64::MAX);
        let mut messages = Vec::with_capacity(limit.min(64));
        let mut has_more = false;
        for item in self.mailbox.range(from..=to) {
            let (key, value) = item.into_inner().map_err(StorageError::from)?;
            if messages.len() == limit {
                has_more = true;
                break;
            }
            messages.push(decode::<StoredMessage>(&key, &value)?);
        }
        Ok(ReadMailboxReply {
            messages,
            has_more,
            kept_from_seq: meta.kept_from_seq,
            last_seq: meta.last_seq,
        })
    }

    async fn ack(&self, request: AckRequest) -> Result<AckReply, Status> {
        let owner = request.owner;
        if request.device.is_empty() || request.device.len() > MAX_ID_BYTES {
            return Err(Status::invalid_argument(format!(
                "a device id has 1 to {MAX_ID_BYTES} bytes"
            )));
        }
        let _guard = self.engine.lock(&id_key(owner)).await;
        let now = wx_api::now_ms();
        let retention_ms = self.retention.as_millis() as u64;
        let mut meta = self.meta(owner)?;
        let mut batch = self.engine.batch();
        // Every device of the owner: (key, acked seq, last seen).
        let mut devices = Vec::new();
        let prefix = id_key(owner);
        for item in self.devices.prefix(prefix) {
            let (key, value) = item.into_inner().map_err(StorageError::from)?;
            devices.push((key.to_vec(), word(&value, 0), word(&value, 1)));
        }
        let this = device_key(owner, &request.device);
        let acked = request.seq.min(meta.last_seq);
        match devices.iter_mut().find(|d| d.0 == this) {
            Some(d) => {
                d.1 = d.1.max(acked);
                d.2 = now;
            }
            None => devices.push((this, acked, now)),
        }
        // Devices away longer than the retention period stop holding messages back.
        devices.sort_by_key(|d| std::cmp::Reverse(d.2));
        let (keep, gone): (Vec<_>, Vec<_>) = devices
            .into_iter()
            .enumerate()
            .partition(|(i, d)| *i < MAX_DEVICES && now.saturating_sub(d.2) <= retention_ms);
        for (_, (key, _, _)) in gone {
            batch.remove(&self.devices, key);
        }
        for (_, (key, seq, seen)) in &keep {
            let mut value = seq.to_be_bytes().to_vec();
            value.extend_from_slice(&seen.to_be_bytes());
            batch.insert(&self.devices, key.clone(), value);
        }
        let all_have = keep.iter().map(|(_, d)| d.1).min().unwrap_or(0);
        // Trim what every device has, and anything older than the retention period.
        let mut trimmed = 0;
        let from = pair_key(owner, meta.kept_from_seq);
        let to = pair_key(owner, u64::MAX);
        for item in self.mailbox.range(from..=to) {
            let (key, value) = item.into_inner().map_err(StorageError::from)?;
            let message = decode::<StoredMessage>(&key, &value)?;
            let expired = now.saturating_sub(message.sent_ms) > retention_ms;
            if (message.seq > all_have && !expired) || trimmed == MAX_TRIM {
                break;
            }
            batch.remove(&self.mailbox, key.to_vec());
            if !message.client_msg_id.is_empty() {
                batch.remove(&self.dedup, dedup_key(owner, &message));
                batch.remove(&self.dedup, legacy_dedup_key(owner, &message));
            }
            meta.kept_from_seq = message.seq + 1;
            trimmed += 1;
        }
        // The owner's client-id claims past the retention period, oldest first.
        let from = pair_key(owner, 0);
        let to = pair_key(owner, now.saturating_sub(retention_ms));
        for item in self.claims_by_age.range(from..=to).take(MAX_TRIM) {
            let (key, _) = item.into_inner().map_err(StorageError::from)?;
            let id = std::str::from_utf8(key.get(16..).unwrap_or_default()).unwrap_or_default();
            batch.remove(&self.claims, claim_key(owner, id));
            batch.remove(&self.claims_by_age, key.to_vec());
        }
        if trimmed > 0 {
            batch.insert(&self.meta, id_key(owner).to_vec(), meta.encode());
            metrics::counter!("wx_msgstore_messages_trimmed_total").increment(trimmed as u64);
        }
        // Not waited for: a lost acknowledgement only delays trimming until the device's
        // next sync acknowledges again.
        self.engine.apply(batch).await?;
        Ok(AckReply {
            kept_from_seq: meta.kept_from_seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, sent_ms: u64, id: &str) -> StoredMessage {
        StoredMessage {
            seq,
            msg_id: seq,
            from: 7,
            to: 1,
            text: format!("m{seq}"),
            sent_ms,
            client_msg_id: id.to_string(),
            group_id: 0,
            envelope: None,
        }
    }

    async fn store(retention: Duration) -> (MsgStoreService, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "wx-msgstore-{}-{:x}",
            std::process::id(),
            svrkit::context::random_u64()
        ));
        let engine = Engine::open(&dir).expect("open");
        (MsgStoreService::new(engine, retention).expect("store"), dir)
    }

    async fn deliver(s: &MsgStoreService, m: StoredMessage) -> Result<DeliverMessageReply, Status> {
        s.deliver(DeliverMessageRequest {
            owner: 1,
            message: Some(m),
        })
        .await
    }

    async fn seqs(s: &MsgStoreService) -> Vec<u64> {
        let read = s
            .read(ReadMailboxRequest {
                owner: 1,
                after_seq: 0,
                limit: 0,
            })
            .await
            .expect("read");
        read.messages.iter().map(|m| m.seq).collect()
    }

    async fn ack(s: &MsgStoreService, device: &str, seq: u64) -> u64 {
        s.ack(AckRequest {
            owner: 1,
            device: device.into(),
            seq,
        })
        .await
        .expect("ack")
        .kept_from_seq
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliveries_only_grow_are_idempotent_and_trim_after_every_device() {
        let (s, dir) = store(DEFAULT_RETENTION).await;
        let now = wx_api::now_ms();
        // Both devices are known before anything arrives.
        ack(&s, "phone", 0).await;
        ack(&s, "desktop", 0).await;
        assert!(deliver(&s, message(5, now, "a")).await.expect("5").stored);
        // A lower sequence after a higher one is refused, so readers never miss it.
        let stale = deliver(&s, message(4, now, "b")).await.expect_err("stale");
        assert_eq!(stale.code(), svrkit::Code::Aborted);
        // The same client id and text again: the first delivery back, not stored twice.
        let resend = StoredMessage {
            text: "m5".to_string(),
            ..message(9, now, "a")
        };
        let again = deliver(&s, resend).await.expect("dup");
        assert!(!again.stored);
        assert_eq!(again.message.expect("message").seq, 5);
        deliver(&s, message(6, now, "c")).await.expect("6");
        assert_eq!(seqs(&s).await, [5, 6]);
        // One device synced past both: nothing goes while the other has not.
        assert_eq!(ack(&s, "phone", 6).await, 0);
        assert_eq!(seqs(&s).await, [5, 6]);
        assert_eq!(ack(&s, "desktop", 5).await, 6);
        assert_eq!(seqs(&s).await, [6]);
        // A re-send of a trimmed message is stored anew only under a new sequence; its
        // dedup entry went with it.
        let resent = deliver(&s, message(7, now, "a")).await.expect("resent");
        assert!(resent.stored);
        let bad = s
            .ack(AckRequest {
                owner: 1,
                device: "x".repeat(MAX_ID_BYTES + 1),
                seq: 1,
            })
            .await
            .expect_err("long device id");
        assert_eq!(bad.code(), svrkit::Code::InvalidArgument);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_id_names_one_message_of_one_conversation() {
        let (s, dir) = store(DEFAULT_RETENTION).await;
        let now = wx_api::now_ms();
        let claim = |group_id, peer, digest| ClaimClientIdRequest {
            owner: 7,
            client_msg_id: "dup1".to_string(),
            group_id,
            peer,
            digest,
        };
        // The first claim, and a re-send's.
        assert!(
            s.claim_client_id(claim(0, 1, 11))
                .await
                .expect("first")
                .first
        );
        assert!(
            !s.claim_client_id(claim(0, 1, 11))
                .await
                .expect("re-send")
                .first
        );
        // The same id for another chat, a group, or another text: refused, clearly.
        for other in [claim(0, 2, 11), claim(5, 0, 11), claim(0, 1, 12)] {
            let refused = s.claim_client_id(other).await.expect_err("reused");
            assert_eq!(refused.code(), svrkit::Code::AlreadyExists);
            assert_eq!(refused.reason(), Some("client_msg_id_reused"));
        }
        let nowhere = s
            .claim_client_id(claim(0, 0, 11))
            .await
            .expect_err("no chat");
        assert_eq!(nowhere.code(), svrkit::Code::InvalidArgument);
        // In a mailbox, a direct message and a group message with one client id are two
        // messages: the second is stored, not taken for the first.
        assert!(
            deliver(&s, message(1, now, "dup1"))
                .await
                .expect("direct")
                .stored
        );
        let in_group = StoredMessage {
            group_id: 5,
            ..message(2, now, "dup1")
        };
        let stored = deliver(&s, in_group).await.expect("group copy");
        assert!(stored.stored, "the group's copy is delivered");
        assert_eq!(seqs(&s).await, [1, 2]);
        // Within one conversation, the id with another text is refused, never acknowledged.
        let other_text = StoredMessage {
            text: "something else".to_string(),
            ..message(3, now, "dup1")
        };
        let refused = deliver(&s, other_text).await.expect_err("other text");
        assert_eq!(refused.reason(), Some("client_msg_id_reused"));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn old_messages_and_absent_devices_expire_after_the_retention_period() {
        let (s, dir) = store(Duration::from_secs(3600)).await;
        let now = wx_api::now_ms();
        ack(&s, "phone", 0).await;
        ack(&s, "tablet", 0).await;
        // Two messages sent more than the retention period ago, one just now.
        deliver(&s, message(1, now - 7_200_000, "old1"))
            .await
            .expect("1");
        deliver(&s, message(2, now - 7_200_000, "old2"))
            .await
            .expect("2");
        deliver(&s, message(3, now, "new")).await.expect("3");
        // Nobody acknowledged them, yet the old ones go at the next acknowledgement.
        assert_eq!(ack(&s, "phone", 0).await, 3);
        assert_eq!(seqs(&s).await, [3]);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
