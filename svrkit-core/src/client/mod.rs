//! The client: [`Channel`] (pool, balancing, retries, outlier ejection, collaborative
//! shedding), per-call [`CallOptions`], and the request and response types that flow
//! through tower layers.

mod channel;
mod conn;
mod connection;
mod endpoint;
mod grpc;
mod hedge;
pub(crate) mod metrics;
mod pick;
mod retry;

pub use crate::request::{CallOptions, RpcRequest, RpcResponse};
pub use channel::{
    Channel, ChannelBuilder, DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT, NOT_LEADER, PEER_SILENT,
    Target, WeakChannel,
};
pub use endpoint::{
    ADMISSION_LEVEL_TTL, EJECT_AFTER_FAILURES, EJECT_BASE, EJECT_MAX, LATENCY_HALF_LIFE_MS,
};
pub use retry::{DEFAULT_RETRY_RATIO, DEFAULT_RETRY_RESERVE, INITIAL_RETRIES, RetryBudget};
