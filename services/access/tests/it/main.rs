//! The access tier's integration tests, one module per subject, linked into one test
//! binary.

#[path = "../support/answering.rs"]
mod answering;
#[path = "../support/ws_session.rs"]
mod ws_session;

mod actions;
mod edge_admission;
mod edge_tls;
mod stamping;
mod trace;
mod websocket_sessions;
