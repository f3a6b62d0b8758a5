//! Fuzzes the access tier's action parsing: the first byte picks an action (or an unknown
//! name), the second whether a user is signed in, the rest is the JSON body. A real
//! gateway runs it over a server that answers every method at once (the same harness as
//! `services/access/tests/actions.rs`). No body may panic the gateway; every answer is a
//! JSON object or an error with a code and a matching HTTP status.
//! Run from `services/`:
//! `cargo +nightly fuzz run --fuzz-dir fuzz gateway_actions fuzz/corpus/gateway_actions fuzz/seeds/gateway_actions`.
#![no_main]

#[allow(dead_code)]
#[path = "../../access/tests/support/answering.rs"]
mod answering;

use std::sync::{Arc, OnceLock};

use access::actions::ACTIONS;
use access::{Caller, Gateway};
use libfuzzer_sys::fuzz_target;

fn harness() -> &'static (tokio::runtime::Runtime, Arc<Gateway>) {
    static HARNESS: OnceLock<(tokio::runtime::Runtime, Arc<Gateway>)> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let gateway = runtime.block_on(answering::gateway());
        (runtime, gateway)
    })
}

fuzz_target!(|data: &[u8]| {
    let [pick, signed, body @ ..] = data else {
        return;
    };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let action = ACTIONS
        .get(usize::from(*pick))
        .map_or("no.such.action", |a| a.name);
    let caller = if signed & 1 == 1 {
        Caller::User { uid: 7 }
    } else {
        Caller::Anonymous {
            ip: [127, 0, 0, 1].into(),
        }
    };
    let (runtime, gateway) = harness();
    match runtime.block_on(gateway.act(caller, action, body, Some("7.00112233445566778899aabbccddeeff"))) {
        Ok(value) => assert!(value.is_object(), "{action}: {value}"),
        Err(e) => {
            let status = e.http_status().as_u16();
            assert!((400..600).contains(&status), "{action}: {status}");
            assert!(e.body()["error"]["code"].is_string());
        }
    }
});
