//! The access tier: where clients enter.
//!
//! - **access-short** ([`http`]): every action over HTTP/JSON.
//! - The web client ([`web`]): plain HTML, CSS and JavaScript modules served by
//!   access-short at `/`, speaking the same API.
//! - **access-long** ([`ws`]): a WebSocket on which a signed-in client sends the same
//!   actions and receives pushes; [`push`] finds a user's live connections by uid across
//!   instances.
//!
//! Both authenticate the client (once per WebSocket, per request over HTTP), stamp the
//! uid, the user priority and the action's business priority ([`actions::ACTIONS`]) on
//! every downstream request, and rate-limit each user ([`ratelimit`]).
//!
//! Metrics (on each process's `/metrics`): `wx_access_actions_total{action}`,
//! `wx_access_rate_limited_total`, `wx_access_long_connections`,
//! `wx_access_push_delivered_total{kind}`, `wx_access_push_dropped_total`.

pub mod actions;
pub mod admission;
pub mod clients;
pub mod edge;
pub mod error;
pub mod gateway;
pub mod http;
mod json;
pub mod outbox;
pub mod push;
pub mod ratelimit;
pub mod web;
pub mod write_timeout;
pub mod ws;

pub use error::ApiError;
pub use gateway::{Caller, Gateway, Limits};
