//! Session tokens: `uid.session_id`, the session id 32 lowercase hex digits of randomness.

use std::fmt;
use std::str::FromStr;

use svrkit::Status;
use wx_api::storage::SessionRecord;

/// A parsed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The user.
    pub uid: u64,
    /// The session's id.
    pub session_id: String,
}

impl Token {
    /// The token of a stored session.
    pub fn of(session: &SessionRecord) -> Token {
        Token {
            uid: session.uid,
            session_id: session.session_id.clone(),
        }
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.uid, self.session_id)
    }
}

/// A token that does not have the `uid.session_id` shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadToken;

impl FromStr for Token {
    type Err = BadToken;

    fn from_str(s: &str) -> Result<Token, BadToken> {
        let (uid, id) = s.split_once('.').ok_or(BadToken)?;
        // Digits only, no sign, no leading zero: one spelling per token.
        let canonical = !uid.is_empty()
            && uid.bytes().all(|b| b.is_ascii_digit())
            && !(uid.len() > 1 && uid.starts_with('0'));
        if !canonical {
            return Err(BadToken);
        }
        let uid: u64 = uid.parse().map_err(|_| BadToken)?;
        let hex = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if uid == 0 || !hex {
            return Err(BadToken);
        }
        Ok(Token {
            uid,
            session_id: id.to_string(),
        })
    }
}

/// 64 random bits from the system's generator (a new device's id).
pub(crate) fn random_u64() -> Result<u64, Status> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| Status::internal(format!("no randomness: {e}")))?;
    Ok(u64::from_be_bytes(bytes))
}

/// 128 random bits as 32 hex digits.
pub(crate) fn new_session_id() -> Result<String, Status> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Status::internal(format!("no randomness: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_forgeries_do_not_parse() {
        let id = new_session_id().expect("random");
        assert_eq!(id.len(), 32);
        let token = Token {
            uid: 42,
            session_id: id.clone(),
        };
        assert_eq!(token.to_string().parse::<Token>(), Ok(token));
        for bad in [
            "",
            "42",
            "42.",
            "x.0123456789abcdef0123456789abcdef",
            "0.0123456789abcdef0123456789abcdef",
            "42.0123456789ABCDEF0123456789abcdef",
            "42.0123456789abcdef0123456789abcde",
            "42.0123456789abcdef0123456789abcdef0",
            "042.0123456789abcdef0123456789abcdef",
            "+42.0123456789abcdef0123456789abcdef",
            " 42.0123456789abcdef0123456789abcdef",
            "42.0123456789abcdef0123456789abcdef ",
            "18446744073709551616.0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(bad.parse::<Token>(), Err(BadToken), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Every token parses back to itself; arbitrary text parses only if it is the
        /// one spelling of its token (the fuzz target's property, on stable).
        #[test]
        fn tokens_have_one_spelling(uid: u64, id in "[0-9a-f]{32}", junk in "\\PC{0,48}") {
            let token = Token { uid, session_id: id };
            let text = token.to_string();
            proptest::prop_assert_eq!(text.parse::<Token>().ok(), Some(token));
            if let Ok(parsed) = junk.parse::<Token>() {
                proptest::prop_assert_eq!(parsed.to_string(), junk);
            }
        }
    }
}
