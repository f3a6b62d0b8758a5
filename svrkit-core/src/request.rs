//! What one call carries through client layers: the request ([`RpcRequest`]: method,
//! body, per-call [`CallOptions`]) and the successful response ([`RpcResponse`]). Low in
//! the crate, so that the client, the throttle and the propagation rule all import it
//! from below.

use std::time::Duration;

use bytes::Bytes;

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

/// Options for one call. Unset fields fall back to the request context, then the IDL
/// method options, then the channel defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) priority: Option<u32>,
    pub(crate) routing_key: Option<u64>,
    pub(crate) uid: Option<u64>,
    pub(crate) attempt: u32,
}

impl CallOptions {
    /// Default options.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// Caps this call at `timeout` (an earlier inherited deadline still wins).
    pub fn timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the business priority, overriding the context's and the IDL's.
    pub fn priority(mut self, priority: u32) -> CallOptions {
        self.priority = Some(priority);
        self
    }

    /// Routes by this key (usually a uid) where the balancer hashes keys to instances.
    pub fn routing_key(mut self, key: u64) -> CallOptions {
        self.routing_key = Some(key);
        self
    }

    /// Sets the uid the call acts for, overriding the context's.
    pub fn uid(mut self, uid: u64) -> CallOptions {
        self.uid = Some(uid);
        self
    }

    /// Sets the attempt number sent in the header (retry layers set this).
    pub fn attempt(mut self, attempt: u32) -> CallOptions {
        self.attempt = attempt;
        self
    }

    /// The timeout set on this call, if any.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The routing key, if any.
    pub fn get_routing_key(&self) -> Option<u64> {
        self.routing_key
    }

    /// The attempt number (0: first attempt).
    pub fn get_attempt(&self) -> u32 {
        self.attempt
    }
}
