//! The client: [`Channel`] (pool, balancing, retries, outlier ejection, collaborative
//! shedding), per-call [`CallOptions`], and the request and response types that flow
//! through tower layers.

mod channel;
mod connection;
mod endpoint;
pub(crate) mod metrics;
mod options;
mod pick;
mod retry;

use bytes::Bytes;

pub use channel::{
    Channel, ChannelBuilder, DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT, Target, WeakChannel,
};
pub use endpoint::{
    ADMISSION_LEVEL_TTL, EJECT_AFTER_FAILURES, EJECT_BASE, EJECT_MAX, LATENCY_HALF_LIFE_MS,
};
pub use options::CallOptions;
pub use retry::{DEFAULT_RETRY_RATIO, DEFAULT_RETRY_RESERVE, INITIAL_RETRIES, RetryBudget};

use crate::method::Method;

/// A request as it flows through client layers: the method, the encoded body and the
/// per-call options. The body is `Bytes`, so retrying layers can resend it cheaply.
#[derive(Debug, Clone)]
pub struct RpcRequest {
    /// The method called (`(&DESC).into()` for a generated description).
    pub method: Method,
    /// The encoded request message.
    pub body: Bytes,
    /// Per-call options.
    pub options: CallOptions,
}

/// A successful response.
#[derive(Debug, Clone)]
pub struct RpcResponse {
    /// The encoded response message.
    pub body: Bytes,
    /// The server's admission level when it answered, business part (DAGOR).
    pub admission_business: u32,
    /// The server's admission level when it answered, user part (DAGOR).
    pub admission_user: u32,
}
