//! Arbitrary WebSocket sessions against a real access-long endpoint over a server that
//! answers every method at once: garbage, binary frames, half requests, requests before
//! and after authenticating — the server answers with JSON objects, never panics, and
//! keeps serving. The `ws_session` fuzz target's property, run on stable.

use crate::answering;
use crate::ws_session;

use proptest::prelude::*;

fn frames() -> impl Strategy<Value = Vec<u8>> {
    let frame = prop_oneof![
        Just(br#"{"id":1,"action":"friends.list","body":{}}"#.to_vec()),
        Just(br#"{"id":"x","action":"profile.get","body":{"uids":[1,2,2]}}"#.to_vec()),
        Just(br#"{"op":"auth","token":"8.00112233445566778899aabbccddeeff"}"#.to_vec()),
        Just(
            br#"{"id":2,"action":"moments.post","body":{"text":"hi","visibility":"only"}}"#
                .to_vec()
        ),
        Just(br#"{"id":3}"#.to_vec()),
        "\\PC{0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(1u8..=255, 0..40),
    ];
    proptest::collection::vec(frame, 0..6).prop_map(|frames| frames.join(&0u8))
}

fn endpoint() -> std::net::SocketAddr {
    static ADDR: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();
    *ADDR.get_or_init(|| answering::runtime().block_on(answering::websocket()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn any_session_gets_json_answers(input in frames(), auth_first: bool) {
        let addr = endpoint();
        answering::runtime().block_on(ws_session::drive(addr, &input, auth_first));
    }
}

#[test]
fn a_well_formed_session_is_answered() {
    let addr = endpoint();
    let input = br#"{"id":1,"action":"friends.list","body":{}}"#;
    let answered = answering::runtime().block_on(ws_session::drive(addr, input, true));
    assert_eq!(answered, 2, "the auth reply and the answer");
}
