//! Request metadata: a small map of string keys to bytes that travels with a request, for
//! auth tokens, tenant ids and baggage.
//!
//! It is field 13 of the request header (`map<string, bytes>`, see `docs/PROTOCOL.md`)
//! and lives in the request's [`Context`](crate::Context): a server reads it there (or in a
//! tower layer, from [`ServerRequest::context`](crate::server::ServerRequest::context)),
//! and every call made inside the context sends it on, as baggage does. A layer that
//! checks a secret (an auth token) should remove it from the context, so it goes no
//! further than the service that needed it.
//!
//! Bounded, so that a caller cannot make a server hold much: at most
//! [`MAX_ENTRIES`] entries, keys of at most [`MAX_KEY_LEN`] bytes of lowercase ASCII
//! letters, digits, `-`, `_` and `.`, and at most [`MAX_TOTAL_LEN`] bytes of keys and
//! values together. A request whose metadata breaks a bound is refused with
//! `INVALID_ARGUMENT` before its handler runs.

use bytes::Bytes;

/// At most this many entries.
pub const MAX_ENTRIES: usize = 64;
/// A key is at most this many bytes.
pub const MAX_KEY_LEN: usize = 64;
/// Keys and values together are at most this many bytes.
pub const MAX_TOTAL_LEN: usize = 8 * 1024;

/// Why metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// A key is empty, too long, or has a character outside `[a-z0-9._-]`.
    #[error("metadata key {0:?} must be 1 to 64 bytes of a-z, 0-9, '-', '_' or '.'")]
    BadKey(String),
    /// More than [`MAX_ENTRIES`] entries.
    #[error("metadata has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    /// Keys and values exceed [`MAX_TOTAL_LEN`] bytes.
    #[error("metadata exceeds {MAX_TOTAL_LEN} bytes")]
    TooLarge,
}

/// The metadata of one request: keys in the order first set, each once. Two are equal
/// when they hold the same entries, in whatever order.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    entries: Vec<(Box<str>, Bytes)>,
    total: usize,
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Metadata) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl Eq for Metadata {}

/// Checks a key against the rules in the module documentation.
fn check_key(key: &str) -> Result<(), MetadataError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(MetadataError::BadKey(
            key.chars().take(MAX_KEY_LEN + 1).collect(),
        ))
    }
}

impl Metadata {
    /// No entries, as a constant.
    pub const EMPTY: Metadata = Metadata {
        entries: Vec::new(),
        total: 0,
    };

    /// No entries.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.entries
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| v)
    }

    /// The value of `key`, when it is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Sets `key` to `value`, replacing an earlier value, within the bounds.
    pub fn insert(&mut self, key: &str, value: impl Into<Bytes>) -> Result<(), MetadataError> {
        check_key(key)?;
        let value = value.into();
        let replaced = self.get(key).map_or(0, |old| key.len() + old.len());
        let total = self.total - replaced + key.len() + value.len();
        if total > MAX_TOTAL_LEN {
            return Err(MetadataError::TooLarge);
        }
        match self.entries.iter().position(|(k, _)| &**k == key) {
            Some(index) => self.entries[index].1 = value,
            None if self.entries.len() >= MAX_ENTRIES => {
                return Err(MetadataError::TooManyEntries);
            }
            None => self.entries.push((key.into(), value)),
        }
        self.total = total;
        Ok(())
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Bytes> {
        let index = self.entries.iter().position(|(k, _)| &**k == key)?;
        let (k, v) = self.entries.remove(index);
        self.total -= k.len() + v.len();
        Some(v)
    }

    /// The entries, in the order first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True without entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replace_remove_and_read() {
        let mut m = Metadata::new();
        m.insert("tenant", "acme").expect("insert");
        m.insert("authorization", &b"\x00\xffbearer"[..])
            .expect("bytes");
        m.insert("tenant", "globex").expect("replace");
        assert_eq!(m.len(), 2);
        assert_eq!(m.get_str("tenant"), Some("globex"));
        assert_eq!(m.get_str("authorization"), None, "not UTF-8");
        assert_eq!(
            m.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["tenant", "authorization"]
        );
        assert_eq!(m.remove("tenant").as_deref(), Some(&b"globex"[..]));
        assert_eq!(m.remove("tenant"), None);
        assert_eq!(m.total, "authorization".len() + 8);
    }

    #[test]
    fn keys_and_sizes_are_bounded() {
        let mut m = Metadata::new();
        for bad in [
            "",
            "Tenant",
            "a b",
            "x:y",
            "ü",
            &"k".repeat(MAX_KEY_LEN + 1),
        ] {
            assert!(
                matches!(m.insert(bad, "v"), Err(MetadataError::BadKey(_))),
                "{bad:?}"
            );
        }
        m.insert(&"k".repeat(MAX_KEY_LEN), "v")
            .expect("longest key");
        assert_eq!(
            m.insert("big", vec![0u8; MAX_TOTAL_LEN]),
            Err(MetadataError::TooLarge)
        );
        let mut m = Metadata::new();
        for i in 0..MAX_ENTRIES {
            m.insert(&format!("k{i}"), "v").expect("within the count");
        }
        assert_eq!(
            m.insert("one-more", "v"),
            Err(MetadataError::TooManyEntries)
        );
        m.insert("k0", "replaced").expect("replacing adds no entry");
        // A refused insert changes nothing.
        assert_eq!(m.len(), MAX_ENTRIES);
        assert_eq!(m.get_str("k0"), Some("replaced"));
    }
}
