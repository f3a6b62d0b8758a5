//! Fuzzes every opaque token a client hands the backend: the session token
//! (`account::Token`), the SyncKey (`message::SyncKey`) and the Moments page cursor
//! (`moments::cursor`). None may panic, and whatever parses must be what its own encoder
//! writes: one spelling per token, so no two strings name the same session or position.
//! Run from `services/`, seeded with the committed examples:
//! `cargo +nightly fuzz run --fuzz-dir fuzz client_tokens fuzz/corpus/client_tokens fuzz/seeds/client_tokens`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = text.parse::<account::Token>() {
        assert_eq!(token.to_string(), text, "a session token has one spelling");
    }
    // The uid a key is checked against: taken from the input, so matching keys are found.
    let uid = data.iter().fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(*b));
    for uid in [uid, 1] {
        if let Ok(key) = message::SyncKey::decode(text, uid, &message::SyncKeyCheck::checksummed())
            && !text.is_empty()
        {
            assert_eq!(key.encode(&message::SyncKeyCheck::checksummed()), text, "a SyncKey re-encodes to itself");
        }
    }
    if let Ok(Some(position)) = moments::cursor::decode(text) {
        assert_eq!(
            moments::cursor::encode(&position),
            text,
            "a cursor re-encodes to itself"
        );
    }
});
