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
    AckReply, AckRequest, DeliverMessageReply, DeliverMessageRequest, ReadMailboxReply,
    ReadMailboxRequest, StoredMessage,
};

use crate::codec::{decode, get, id_key, pair_key};
use crate::engine::{Engine, StorageError};

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
        let word = |i: usize| {
            bytes
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes)
        };
        Meta {
            last_seq: word(0),
            kept_from_seq: word(1),
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

/// The dedup key: owner, sender, client message id.
fn dedup_key(owner: u64, sender: u64, client_msg_id: &str) -> Vec<u8> {
    let mut key = pair_key(owner, sender).to_vec();
    key.extend_from_slice(client_msg_id.as_bytes());
    key
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
}

impl MsgStore for MsgStoreService {
    async fn deliver(&self, request: DeliverMessageRequest) -> Result<DeliverMessageReply, Status> {
        let owner = request.owner;
        let message = request
            .message
            .ok_or_else(|| Status::invalid_argument("no message given"))?;
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
        let _guard = self.engine.lock(&id_key(owner)).await;
        let dedup = (!message.client_msg_id.is_empty())
            .then(|| dedup_key(owner, message.from, &message.client_msg_id));
        if let Some(key) = &dedup
            && let Some(seq) = self.dedup.get(key).map_err(StorageError::from)?
        {
            let seq = seq.as_ref().try_into().map_or(0, u64::from_be_bytes);
            if let Some(first) = get::<StoredMessage>(&self.mailbox, &pair_key(owner, seq))? {
                return Ok(DeliverMessageReply {
                    message: Some(first),
                    stored: false,
                });
            }
        }
        let mut meta = self.meta(owner)?;
        if message.seq <= meta.last_seq {
            return Err(Status::aborted(format!(
                "mailbox {owner} is at sequence {}; {} is not above it",
                meta.last_seq, message.seq
            )));
        }
        meta.last_seq = message.seq;
        let mut batch = self.engine.batch();
        batch.insert(
            &self.mailbox,
            pair_key(owner, message.seq).to_vec(),
            message.encode_to_vec(),
        );
        if let Some(key) = dedup {
            batch.insert(&self.dedup, key, message.seq.to_be_bytes().to_vec());
        }
        batch.insert(&self.meta, id_key(owner).to_vec(), meta.encode());
        self.engine.commit(batch).await?;
        metrics::counter!("wx_msgstore_messages_stored_total").increment(1);
        Ok(DeliverMessageReply {
            message: Some(message),
            stored: true,
        })
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
            let word = |i: usize| {
                value
                    .get(i * 8..i * 8 + 8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_be_bytes)
            };
            devices.push((key.to_vec(), word(0), word(1)));
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
                batch.remove(
                    &self.dedup,
                    dedup_key(owner, message.from, &message.client_msg_id),
                );
            }
            meta.kept_from_seq = message.seq + 1;
            trimmed += 1;
        }
        if trimmed > 0 {
            batch.insert(&self.meta, id_key(owner).to_vec(), meta.encode());
            metrics::counter!("wx_msgstore_messages_trimmed_total").increment(trimmed as u64);
        }
        self.engine.commit(batch).await?;
        Ok(AckReply {
            kept_from_seq: meta.kept_from_seq,
        })
    }
}
