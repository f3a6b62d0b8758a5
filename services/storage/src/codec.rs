//! Keys and values: big-endian ids so that keys sort by id; prost-encoded records.

use fjall::Keyspace;
use prost::Message;

use crate::engine::StorageError;

/// `id` as 8 big-endian bytes.
pub(crate) fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// The `i`th big-endian u64 of `bytes` (0 when `bytes` is too short): the fixed-width
/// numbers of keys and small values.
pub(crate) fn word(bytes: &[u8], i: usize) -> u64 {
    bytes
        .get(i * 8..i * 8 + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// Two ids, big-endian: sorts by the first, then the second.
pub(crate) fn pair_key(a: u64, b: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&a.to_be_bytes());
    key[8..].copy_from_slice(&b.to_be_bytes());
    key
}

/// Reads and decodes the record under `key`.
pub(crate) fn get<M: Message + Default>(
    ks: &Keyspace,
    key: &[u8],
) -> Result<Option<M>, StorageError> {
    match ks.get(key)? {
        None => Ok(None),
        Some(bytes) => decode(key, &bytes).map(Some),
    }
}

/// Decodes a record read under `key`.
pub(crate) fn decode<M: Message + Default>(key: &[u8], bytes: &[u8]) -> Result<M, StorageError> {
    M::decode(bytes).map_err(|source| StorageError::Corrupt {
        key: key.iter().map(|b| format!("{b:02x}")).collect(),
        source,
    })
}
