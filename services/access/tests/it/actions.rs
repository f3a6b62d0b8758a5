//! Every action with arbitrary JSON bodies, through a real gateway over a server that
//! answers everything at once: no body panics the gateway, every answer is a JSON object
//! or an error with a code, and an error's HTTP status matches its code — the
//! `gateway_actions` fuzz target's property, run on stable in every suite run.

use crate::answering;

use access::Caller;
use access::actions::ACTIONS;
use proptest::prelude::*;
use serde_json::{Value, json};

/// JSON values as a client might send them: the fields actions read, with values of
/// every type, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,24}".prop_map(Value::String),
        "[0-9]{1,22}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((field(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("uid".to_string()),
        Just("uids".to_string()),
        Just("peer".to_string()),
        Just("peers".to_string()),
        Just("name".to_string()),
        Just("password".to_string()),
        Just("nickname".to_string()),
        Just("text".to_string()),
        Just("to".to_string()),
        Just("group_id".to_string()),
        Just("members".to_string()),
        Just("seq".to_string()),
        Just("author".to_string()),
        Just("cursor".to_string()),
        Just("limit".to_string()),
        Just("sync_key".to_string()),
        Just("visibility".to_string()),
        Just("listed".to_string()),
        Just("media".to_string()),
        Just("comment_id".to_string()),
        Just("private_fields".to_string()),
        Just("region".to_string()),
        Just("greeting".to_string()),
        Just("client_msg_id".to_string()),
        "[a-z_]{1,12}",
    ]
}

fn body() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::collection::vec((field(), json_value()), 0..8)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        json_value(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_500))]

    #[test]
    fn no_body_breaks_an_action(index in 0..ACTIONS.len() + 2, body in body(), signed_in: bool) {
        let runtime = answering::runtime();
        let gateway = runtime.block_on(answering::gateway_once());
        let action = ACTIONS.get(index).map_or("no.such.action", |a| a.name);
        let caller = if signed_in {
            Caller::User { uid: 7 }
        } else {
            Caller::Anonymous { ip: [127, 0, 0, 1].into() }
        };
        let answer = runtime.block_on(gateway.act(caller, action, body, Some("7.00112233445566778899aabbccddeeff")));
        match answer {
            Ok(value) => prop_assert!(value.is_object(), "{action}: {value}"),
            Err(e) => {
                let status = e.http_status().as_u16();
                prop_assert!((400..600).contains(&status), "{action}: {status}");
                let body = e.body();
                prop_assert!(body["error"]["code"].is_string(), "{action}: {body}");
            }
        }
    }
}
