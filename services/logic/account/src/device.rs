//! Known devices: a credential a device gets from a successful sign-in and presents at
//! the next, so that the account can tell its owner's devices from everyone else.
//!
//! The credential is `d1.UID.DEVICE.TAG`: the uid, a random 64-bit device id (16 hex
//! digits) and the first 8 bytes of HMAC-SHA256 of both under the cluster's
//! `wx.account.device` key ([`svrkit::secret`]), 16 hex digits. Nothing is stored: a
//! credential proves itself, for its uid only, and a client cannot make one. What it
//! buys a device:
//!
//! - wrong passwords from it slow down only it, never the account's other devices, and
//!   wrong passwords from unknown devices never slow it down (see [`crate::throttle`]);
//! - a share of the password-hashing queue is kept for it, so a flood of sign-ins from
//!   unknown devices cannot take sign-in away from the owner.
//!
//! Without a cluster secret (a service started by hand) no credentials are issued and
//! every device is unknown.

use svrkit::secret::SigningKey;

/// The purpose the cluster's device key is derived for.
pub const SIGNING_PURPOSE: &str = "wx.account.device";

/// Issues and recognises device credentials.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    key: Option<SigningKey>,
}

impl Devices {
    /// Credentials signed with `key`.
    pub fn signed(key: SigningKey) -> Devices {
        Devices { key: Some(key) }
    }

    /// No credentials: every device is unknown.
    pub fn none() -> Devices {
        Devices { key: None }
    }

    fn payload(uid: u64, device: u64) -> [u8; 16] {
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&uid.to_be_bytes());
        payload[8..].copy_from_slice(&device.to_be_bytes());
        payload
    }

    /// A credential for device `device` of `uid`; `None` without a key.
    pub fn issue(&self, uid: u64, device: u64) -> Option<String> {
        let key = self.key.as_ref()?;
        let tag: [u8; 8] = key.tag(&Devices::payload(uid, device));
        Some(format!(
            "d1.{uid}.{device:016x}.{:016x}",
            u64::from_be_bytes(tag)
        ))
    }

    /// The device `credential` names, when it is genuine and `uid`'s (0: any uid, as
    /// before the name is looked up; the uid it names comes with it).
    pub fn recognise(&self, credential: &str) -> Option<(u64, u64)> {
        let key = self.key.as_ref()?;
        if credential.len() > 64 {
            return None;
        }
        let mut parts = credential.split('.');
        let (Some("d1"), Some(uid), Some(device), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let hex16 = |s: &str| {
            (s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .then(|| u64::from_str_radix(s, 16).ok())
                .flatten()
        };
        let uid: u64 = uid.parse().ok().filter(|u| *u != 0)?;
        let device = hex16(device)?;
        let tag = hex16(tag)?;
        key.verify(&Devices::payload(uid, device), &tag.to_be_bytes())
            .then_some((uid, device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(secret: &str) -> Devices {
        let secret = svrkit::secret::ClusterSecret::from_hex(&secret.repeat(32)).expect("secret");
        Devices::signed(secret.key(SIGNING_PURPOSE))
    }

    #[test]
    fn a_credential_proves_its_device_and_uid_and_cannot_be_made_by_a_client() {
        let ours = devices("ab");
        let credential = ours.issue(42, 0x1234).expect("issued");
        assert_eq!(ours.recognise(&credential), Some((42, 0x1234)));
        // Another cluster's, another uid's (the tag binds both), mangled: not recognised.
        let theirs = devices("cd").issue(42, 0x1234).expect("issued");
        assert_eq!(ours.recognise(&theirs), None);
        let moved = credential.replacen("d1.42.", "d1.43.", 1);
        assert_eq!(ours.recognise(&moved), None);
        for junk in [
            "",
            "d1",
            "d1.42.x.y",
            &credential.to_uppercase(),
            &format!("{credential}."),
        ] {
            assert_eq!(ours.recognise(junk), None, "{junk:?}");
        }
        // Without a key nothing is issued or recognised.
        assert_eq!(Devices::none().issue(42, 1), None);
        assert_eq!(Devices::none().recognise(&credential), None);
    }
}
