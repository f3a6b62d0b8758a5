//! Page cursors: the position of the last entry a page went past, as 48 hex digits
//! (created ms, author, seq). Timelines and albums are ordered by that triple, so "below
//! the cursor" is well defined however many posts arrive meanwhile: a new post sorts
//! above every cursor taken before it, and nothing already paged past comes again.

use svrkit::Status;
use wx_api::storage::TimelineEntry;

/// The cursor of position `e`.
pub fn encode(e: &TimelineEntry) -> String {
    format!("{:016x}{:016x}{:016x}", e.created_ms, e.author, e.seq)
}

/// The position of `cursor` (`None` for the empty cursor: the first page).
pub fn decode(cursor: &str) -> Result<Option<TimelineEntry>, Status> {
    if cursor.is_empty() {
        return Ok(None);
    }
    let bad =
        || Status::invalid_argument("pass back a next_cursor unchanged").with_reason("bad_cursor");
    // Lowercase hex only, as `encode` writes it: one spelling per position.
    if cursor.len() != 48
        || !cursor
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(bad());
    }
    let word = |i: usize| u64::from_str_radix(&cursor[i * 16..i * 16 + 16], 16).map_err(|_| bad());
    Ok(Some(TimelineEntry {
        created_ms: word(0)?,
        author: word(1)?,
        seq: word(2)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let e = TimelineEntry {
            created_ms: 1_700_000_000_123,
            author: u64::MAX,
            seq: 7,
        };
        assert_eq!(decode(&encode(&e)).expect("decodes"), Some(e));
        assert_eq!(decode("").expect("empty"), None);
        for bad in [
            "x",
            &"g".repeat(48),
            &"0".repeat(47),
            &"0".repeat(49),
            "ä".repeat(24).as_str(),
            &"A".repeat(48),
        ] {
            let status = decode(bad).expect_err(bad);
            assert_eq!(status.code(), svrkit::Code::InvalidArgument);
            assert_eq!(status.reason(), Some("bad_cursor"));
        }
    }

    proptest::proptest! {
        /// Every position encodes to a cursor that decodes back to it; arbitrary text
        /// decodes only if it is the one spelling of its position.
        #[test]
        fn cursors_have_one_spelling(created_ms: u64, author: u64, seq: u64, junk in "\\PC{0,60}") {
            let entry = TimelineEntry { created_ms, author, seq };
            let text = encode(&entry);
            proptest::prop_assert_eq!(decode(&text).ok().flatten(), Some(entry));
            if let Ok(Some(parsed)) = decode(&junk) {
                proptest::prop_assert_eq!(encode(&parsed), junk);
            }
        }
    }
}
