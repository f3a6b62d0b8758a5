//! The SyncKey: what a device has, as an opaque token the server computes.
//!
//! Clients must treat it as opaque: keep the latest one and present it on the next sync.
//! Inside (documented for operators and for this crate's tests) it is the payload and a
//! check, written as lower-case hex digits:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | format version: 3 (signed) or 2 (checksummed) |
//! | 1..9 | uid the key belongs to (big-endian) |
//! | 9..17 | profile: the account version the device has |
//! | 17..25 | contacts: the user's edge change counter the device has |
//! | 25..33 | messages: the highest mailbox sequence the device has |
//! | 33..41 | version 3: the first 8 bytes of HMAC-SHA256 of bytes 0..33 under the cluster's `wx.message.sync_key` key ([`svrkit::secret`]) |
//! | 33..37 | version 2: the first 4 bytes of `ring_hash` of bytes 0..33 |
//!
//! With a cluster secret (every `svrkit up` deployment) keys are signed, version 3, and
//! a client cannot forge one, for itself or anyone; without one (a service started by
//! hand) they are only checksummed, version 2. A service accepts only the version it
//! writes. A key that does not decode, fails its check, is of the other version, or
//! belongs to another user is `bad_sync_key` (a client then syncs again from the empty
//! key, its device's first sync).

use std::fmt::Write as _;

use svrkit::secret::SigningKey;

/// The purpose the cluster's sync-key signing key is derived for.
pub const SIGNING_PURPOSE: &str = "wx.message.sync_key";

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
    /// Not hex digits of the format this service writes.
    #[error("malformed sync key")]
    Malformed,
    /// The check bytes do not match: corrupted, or not made by this cluster.
    #[error("corrupt sync key")]
    Corrupt,
    /// Made for another user.
    #[error("this sync key belongs to another user")]
    OtherUser,
}

/// How keys are checked: signed with the cluster's key, or (without a cluster secret)
/// checksummed.
#[derive(Debug, Clone, Default)]
pub struct SyncKeyCheck {
    key: Option<SigningKey>,
}

impl SyncKeyCheck {
    /// Keys signed with `key` (version 3).
    pub fn signed(key: SigningKey) -> SyncKeyCheck {
        SyncKeyCheck { key: Some(key) }
    }

    /// Keys only checksummed (version 2): for a deployment without a cluster secret.
    pub fn checksummed() -> SyncKeyCheck {
        SyncKeyCheck { key: None }
    }

    /// Whether keys are signed.
    pub fn is_signed(&self) -> bool {
        self.key.is_some()
    }

    fn version(&self) -> u8 {
        if self.key.is_some() { 3 } else { 2 }
    }

    fn check_len(&self) -> usize {
        if self.key.is_some() { 8 } else { 4 }
    }

    fn check(&self, payload: &[u8]) -> Vec<u8> {
        match &self.key {
            Some(key) => key.tag::<8>(payload).to_vec(),
            None => svrkit::balance::ring_hash(payload).to_be_bytes()[..4].to_vec(),
        }
    }

    fn verify(&self, payload: &[u8], check: &[u8]) -> bool {
        match &self.key {
            Some(key) => key.verify(payload, check),
            None => self.check(payload) == check,
        }
    }
}

/// The payload's length: version and four words.
const PAYLOAD: usize = 33;

impl SyncKey {
    /// The token for this key, checked as `check` says.
    pub fn encode(&self, check: &SyncKeyCheck) -> String {
        let mut bytes = Vec::with_capacity(PAYLOAD + 8);
        bytes.push(check.version());
        bytes.extend_from_slice(&self.uid.to_be_bytes());
        bytes.extend_from_slice(&self.profile.to_be_bytes());
        bytes.extend_from_slice(&self.contacts.to_be_bytes());
        bytes.extend_from_slice(&self.messages.to_be_bytes());
        let sum = check.check(&bytes);
        bytes.extend_from_slice(&sum);
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// The key `token` holds for user `uid`, checked as `check` says; the empty token is
    /// a fresh device.
    pub fn decode(token: &str, uid: u64, check: &SyncKeyCheck) -> Result<SyncKey, SyncKeyError> {
        if token.is_empty() {
            return Ok(SyncKey {
                uid,
                ..SyncKey::default()
            });
        }
        let len = PAYLOAD + check.check_len();
        // Lowercase hex only, as `encode` writes it: one spelling per key.
        if token.len() != len * 2
            || !token
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(SyncKeyError::Malformed);
        }
        let bytes: Vec<u8> = (0..len)
            .map(|i| u8::from_str_radix(&token[i * 2..i * 2 + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| SyncKeyError::Malformed)?;
        if bytes[0] != check.version() {
            return Err(SyncKeyError::Malformed);
        }
        if !check.verify(&bytes[..PAYLOAD], &bytes[PAYLOAD..]) {
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

    fn signed(secret_byte: &str) -> SyncKeyCheck {
        let secret =
            svrkit::secret::ClusterSecret::from_hex(&secret_byte.repeat(32)).expect("secret");
        SyncKeyCheck::signed(secret.key(SIGNING_PURPOSE))
    }

    #[test]
    fn round_trips_and_refuses_what_it_did_not_make() {
        for (check, len) in [(SyncKeyCheck::checksummed(), 74), (signed("ab"), 82)] {
            let key = SyncKey {
                uid: 42,
                profile: 3,
                contacts: 9,
                messages: u64::MAX - 1,
            };
            let token = key.encode(&check);
            assert_eq!(token.len(), len);
            assert_eq!(SyncKey::decode(&token, 42, &check), Ok(key));
            assert_eq!(
                SyncKey::decode("", 7, &check),
                Ok(SyncKey {
                    uid: 7,
                    ..SyncKey::default()
                })
            );
            assert_eq!(
                SyncKey::decode(&token, 43, &check),
                Err(SyncKeyError::OtherUser)
            );
            assert_eq!(
                SyncKey::decode(&token.to_uppercase(), 42, &check),
                Err(SyncKeyError::Malformed),
                "one spelling per key"
            );
            assert_eq!(
                SyncKey::decode("zz", 42, &check),
                Err(SyncKeyError::Malformed)
            );
            let mut flipped = token.clone().into_bytes();
            flipped[40] = if flipped[40] == b'0' { b'1' } else { b'0' };
            let flipped = String::from_utf8(flipped).expect("ascii");
            assert_eq!(
                SyncKey::decode(&flipped, 42, &check),
                Err(SyncKeyError::Corrupt)
            );
            let mut other_version = token.into_bytes();
            other_version[1] = b'1';
            let other_version = String::from_utf8(other_version).expect("ascii");
            assert_eq!(
                SyncKey::decode(&other_version, 42, &check),
                Err(SyncKeyError::Malformed)
            );
        }
    }

    #[test]
    fn a_client_cannot_forge_a_signed_key() {
        let ours = signed("ab");
        let key = SyncKey {
            uid: 42,
            messages: 1_000_000,
            ..SyncKey::default()
        };
        // The checksummed spelling anyone can compute, another cluster's signature, and
        // a signed key whose payload was changed: all refused.
        let checksummed = key.encode(&SyncKeyCheck::checksummed());
        assert_eq!(
            SyncKey::decode(&checksummed, 42, &ours),
            Err(SyncKeyError::Malformed)
        );
        let theirs = key.encode(&signed("cd"));
        assert_eq!(
            SyncKey::decode(&theirs, 42, &ours),
            Err(SyncKeyError::Corrupt)
        );
        let genuine = SyncKey { messages: 5, ..key }.encode(&ours);
        let forged = format!("{}{}", &key.encode(&ours)[..66], &genuine[66..]);
        assert_eq!(
            SyncKey::decode(&forged, 42, &ours),
            Err(SyncKeyError::Corrupt)
        );
    }

    proptest::proptest! {
        /// Every key decodes back to itself for its user (and for no other); arbitrary
        /// text decodes only if it is the one spelling of its key.
        #[test]
        fn keys_have_one_spelling(uid: u64, profile: u64, contacts: u64, messages: u64, junk in "\\PC{0,90}") {
            for check in [SyncKeyCheck::checksummed(), signed("ab")] {
                let key = SyncKey { uid, profile, contacts, messages };
                let text = key.encode(&check);
                proptest::prop_assert_eq!(SyncKey::decode(&text, uid, &check), Ok(key));
                proptest::prop_assert!(SyncKey::decode(&text, uid ^ 1, &check).is_err());
                if let Ok(parsed) = SyncKey::decode(&junk, uid, &check)
                    && !junk.is_empty()
                {
                    proptest::prop_assert_eq!(parsed.encode(&check), junk.clone());
                }
            }
        }
    }
}
