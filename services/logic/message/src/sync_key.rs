//! The SyncKey: what a device has, as an opaque token the server computes.
//!
//! Clients must treat it as opaque: keep the latest one and present it on the next sync.
//! Inside (documented for operators and for this crate's tests) it is 37 bytes, written
//! as 74 lower-case hex digits:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | format version, 2 |
//! | 1..9 | uid the key belongs to (big-endian) |
//! | 9..17 | profile: the account version the device has |
//! | 17..25 | contacts: the user's edge change counter the device has |
//! | 25..33 | messages: the highest mailbox sequence the device has |
//! | 33..37 | check: the first 4 bytes of `ring_hash` of bytes 0..33 |
//!
//! A key that does not decode, fails its check, or belongs to another user is
//! `bad_sync_key`; the empty key is a device's first sync.

use std::fmt::Write as _;

/// The versions a device has of each data type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncKey {
    /// The user.
    pub uid: u64,
    /// The account (profile) version.
    pub profile: u64,
    /// The contacts' change counter.
    pub contacts: u64,
    /// The mailbox sequence.
    pub messages: u64,
}

/// Why a presented key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncKeyError {
    /// Not 74 hex digits of a known format.
    #[error("malformed sync key")]
    Malformed,
    /// The check bytes do not match.
    #[error("corrupt sync key")]
    Corrupt,
    /// Made for another user.
    #[error("this sync key belongs to another user")]
    OtherUser,
}

const VERSION: u8 = 2;
const LEN: usize = 37;
const CHECKED: usize = LEN - 4;

fn check(payload: &[u8]) -> [u8; 4] {
    let hash = svrkit::balance::ring_hash(payload).to_be_bytes();
    [hash[0], hash[1], hash[2], hash[3]]
}

impl SyncKey {
    /// The token for this key.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.uid.to_be_bytes());
        bytes.extend_from_slice(&self.profile.to_be_bytes());
        bytes.extend_from_slice(&self.contacts.to_be_bytes());
        bytes.extend_from_slice(&self.messages.to_be_bytes());
        let sum = check(&bytes);
        bytes.extend_from_slice(&sum);
        let mut out = String::with_capacity(LEN * 2);
        for b in bytes {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// The key `token` holds for user `uid`; the empty token is a fresh device.
    pub fn decode(token: &str, uid: u64) -> Result<SyncKey, SyncKeyError> {
        if token.is_empty() {
            return Ok(SyncKey {
                uid,
                ..SyncKey::default()
            });
        }
        // Lowercase hex only, as `encode` writes it: one spelling per key.
        if token.len() != LEN * 2
            || !token
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(SyncKeyError::Malformed);
        }
        let bytes: Vec<u8> = (0..LEN)
            .map(|i| u8::from_str_radix(&token[i * 2..i * 2 + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| SyncKeyError::Malformed)?;
        if bytes[0] != VERSION {
            return Err(SyncKeyError::Malformed);
        }
        if check(&bytes[..CHECKED]) != bytes[CHECKED..] {
            return Err(SyncKeyError::Corrupt);
        }
        let word = |i: usize| bytes[i..i + 8].try_into().map_or(0, u64::from_be_bytes);
        let key = SyncKey {
            uid: word(1),
            profile: word(9),
            contacts: word(17),
            messages: word(25),
        };
        if key.uid != uid {
            return Err(SyncKeyError::OtherUser);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_did_not_make() {
        let key = SyncKey {
            uid: 42,
            profile: 3,
            contacts: 9,
            messages: u64::MAX - 1,
        };
        let token = key.encode();
        assert_eq!(token.len(), 74);
        assert_eq!(SyncKey::decode(&token, 42), Ok(key));
        assert_eq!(
            SyncKey::decode("", 7),
            Ok(SyncKey {
                uid: 7,
                ..SyncKey::default()
            })
        );
        assert_eq!(SyncKey::decode(&token, 43), Err(SyncKeyError::OtherUser));
        assert_eq!(
            SyncKey::decode(&token.to_uppercase(), 42),
            Err(SyncKeyError::Malformed),
            "one spelling per key"
        );
        assert_eq!(SyncKey::decode("zz", 42), Err(SyncKeyError::Malformed));
        assert_eq!(
            SyncKey::decode(&"g".repeat(66), 42),
            Err(SyncKeyError::Malformed)
        );
        let mut flipped = token.clone().into_bytes();
        flipped[40] = if flipped[40] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert_eq!(SyncKey::decode(&flipped, 42), Err(SyncKeyError::Corrupt));
        let mut other_version = token.into_bytes();
        other_version[1] = b'1';
        let other_version = String::from_utf8(other_version).expect("ascii");
        assert_eq!(
            SyncKey::decode(&other_version, 42),
            Err(SyncKeyError::Malformed)
        );
    }

    proptest::proptest! {
        /// Every key decodes back to itself for its user (and for no other); arbitrary
        /// text decodes only if it is the one spelling of its key.
        #[test]
        fn keys_have_one_spelling(uid: u64, profile: u64, contacts: u64, messages: u64, junk in "\\PC{0,80}") {
            let key = SyncKey { uid, profile, contacts, messages };
            let text = key.encode();
            proptest::prop_assert_eq!(SyncKey::decode(&text, uid), Ok(key));
            proptest::prop_assert!(SyncKey::decode(&text, uid ^ 1).is_err());
            if let Ok(parsed) = SyncKey::decode(&junk, uid)
                && !junk.is_empty()
            {
                proptest::prop_assert_eq!(parsed.encode(), junk);
            }
        }
    }
}
