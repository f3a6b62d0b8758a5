//! Fuzzes a whole WebSocket session on access-long: the first byte says whether to
//! authenticate first, the rest is split at NUL into frames (text when UTF-8, binary
//! otherwise). The endpoint runs over a server that answers every method at once (the
//! harness of `services/access/tests/websocket_sessions.rs`); every frame the server
//! sends must be a JSON object, and nothing may panic (on any thread).
//! Run from `services/`:
//! `cargo +nightly fuzz run --fuzz-dir fuzz ws_session fuzz/corpus/ws_session fuzz/seeds/ws_session`.
#![no_main]

#[allow(dead_code)]
#[path = "../../access/tests/support/answering.rs"]
mod answering;
#[path = "../../access/tests/support/ws_session.rs"]
mod ws_session;

use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn harness() -> &'static (tokio::runtime::Runtime, SocketAddr) {
    static HARNESS: OnceLock<(tokio::runtime::Runtime, SocketAddr)> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let addr = runtime.block_on(answering::websocket());
        (runtime, addr)
    })
}

fuzz_target!(|data: &[u8]| {
    let [auth, frames @ ..] = data else {
        return;
    };
    let (runtime, addr) = harness();
    runtime.block_on(ws_session::drive(*addr, frames, auth & 1 == 1));
});
