//! The cluster secret, and the keys services derive from it for what they sign.
//!
//! Some things a service hands to clients must come back unforged: a continuation token
//! (a sync key, a cursor), a credential a device keeps. A service signs them with a key
//! that every instance of the cluster shares and no client knows. One secret per
//! cluster, `SVRKIT_CLUSTER_SECRET` (at least 32 hex digits; `svrkit up` makes one in its
//! state directory and hands it to every instance), and one key per purpose derived from
//! it ([`ClusterSecret::key`], HMAC-SHA256 of the purpose's name), so that a signature
//! made for one purpose is worth nothing for another.

use ring::hmac;

/// The environment variable holding the cluster secret, in hex.
pub const CLUSTER_SECRET_VAR: &str = "SVRKIT_CLUSTER_SECRET";

/// The fewest bytes a cluster secret holds.
pub const MIN_SECRET_BYTES: usize = 16;

/// A cluster secret that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Not hex digits.
    #[error("a cluster secret is hex digits")]
    NotHex,
    /// The system's random generator failed.
    #[error("the system's random generator failed")]
    NoRandomness,
    /// Too short to be a secret.
    #[error("a cluster secret holds at least {MIN_SECRET_BYTES} bytes ({} hex digits)", MIN_SECRET_BYTES * 2)]
    TooShort,
}

/// The secret every instance of a cluster shares.
#[derive(Clone)]
pub struct ClusterSecret {
    key: hmac::Key,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(…)")
    }
}

impl ClusterSecret {
    /// The secret written as `hex` (at least [`MIN_SECRET_BYTES`] bytes).
    pub fn from_hex(hex: &str) -> Result<ClusterSecret, SecretError> {
        let hex = hex.trim();
        if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SecretError::NotHex);
        }
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok())
            .collect();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort);
        }
        Ok(ClusterSecret {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    /// The secret in `SVRKIT_CLUSTER_SECRET`; `Ok(None)` when it is not set.
    pub fn from_env() -> Result<Option<ClusterSecret>, SecretError> {
        match std::env::var(CLUSTER_SECRET_VAR) {
            Ok(hex) if !hex.trim().is_empty() => ClusterSecret::from_hex(&hex).map(Some),
            _ => Ok(None),
        }
    }

    /// A fresh random secret of 32 bytes from the system's generator, in hex (what
    /// `svrkit up` writes for a new cluster).
    pub fn generate_hex() -> Result<String, SecretError> {
        use ring::rand::SecureRandom as _;
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SecretError::NoRandomness)?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The key for `purpose` (a name such as `wx.message.sync_key`).
    pub fn key(&self, purpose: &str) -> SigningKey {
        let derived = hmac::sign(&self.key, purpose.as_bytes());
        SigningKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }
}

/// A key for one purpose: signs and checks short tags.
#[derive(Clone)]
pub struct SigningKey {
    key: hmac::Key,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

impl SigningKey {
    /// The tag of `data`: the first `N` bytes (at most 32) of its HMAC-SHA256.
    pub fn tag<const N: usize>(&self, data: &[u8]) -> [u8; N] {
        let full = hmac::sign(&self.key, data);
        let mut tag = [0u8; N];
        let n = N.min(full.as_ref().len());
        tag[..n].copy_from_slice(&full.as_ref()[..n]);
        tag
    }

    /// Whether `tag` is the tag of `data`, compared in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let full = hmac::sign(&self.key, data);
        let expected = full.as_ref().get(..tag.len()).unwrap_or_default();
        // Every byte compared, whatever the first difference: no timing to learn from.
        !tag.is_empty()
            && expected.len() == tag.len()
            && expected
                .iter()
                .zip(tag)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_secret_and_purpose_and_tags_verify() {
        let secret = ClusterSecret::from_hex(&"ab".repeat(32)).expect("a secret");
        let other = ClusterSecret::from_hex(&"cd".repeat(32)).expect("a secret");
        let sync = secret.key("wx.message.sync_key");
        let tag: [u8; 8] = sync.tag(b"payload");
        assert!(sync.verify(b"payload", &tag));
        assert!(!sync.verify(b"payload!", &tag));
        assert!(!secret.key("another.purpose").verify(b"payload", &tag));
        assert!(!other.key("wx.message.sync_key").verify(b"payload", &tag));
        assert!(!sync.verify(b"payload", &[]), "an empty tag proves nothing");
    }

    #[test]
    fn secrets_are_hex_and_long_enough() {
        assert_eq!(
            ClusterSecret::from_hex("xyz").err(),
            Some(SecretError::NotHex)
        );
        assert_eq!(
            ClusterSecret::from_hex("abc").err(),
            Some(SecretError::NotHex)
        );
        assert_eq!(
            ClusterSecret::from_hex("abcd").err(),
            Some(SecretError::TooShort)
        );
        let generated = ClusterSecret::generate_hex().expect("random");
        assert_eq!(generated.len(), 64);
        assert!(ClusterSecret::from_hex(&generated).is_ok());
        assert_ne!(Ok(generated), ClusterSecret::generate_hex());
    }
}
