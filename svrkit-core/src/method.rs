//! Static descriptions of services and methods, generated from the IDL.
//!
//! The code generator emits one [`MethodDesc`] per RPC with the method options from
//! `idl/svrkit/options.proto`; clients and servers read behaviour (timeout, idempotency,
//! business priority) from it instead of repeating it by hand.

use std::sync::Arc;
use std::time::Duration;

/// One RPC method and the options its IDL declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodDesc {
    /// Fully qualified service name, e.g. `svrkit.demo.Echo`.
    pub service: &'static str,
    /// Method name as written in the IDL, e.g. `Echo`.
    pub method: &'static str,
    /// `(svrkit.idempotent)`: repeating the call has no further effect, so it may be
    /// retried or hedged.
    pub idempotent: bool,
    /// `(svrkit.timeout_ms)`: the call's default timeout; `None` uses the channel default.
    pub timeout: Option<Duration>,
    /// `(svrkit.priority)`: business priority 1 (most important) ..= 255; 0 is unset.
    pub priority: u32,
    /// `(svrkit.stale_read)`: a read any replica of a replicated shard may answer (it may
    /// lag the leader a little); false means the leader answers, linearizably.
    pub stale_read: bool,
}

/// A service: its name and methods, in IDL order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceDesc {
    /// Fully qualified service name.
    pub name: &'static str,
    /// The methods.
    pub methods: &'static [MethodDesc],
}

impl ServiceDesc {
    /// The method with this name.
    pub fn method(&self, name: &str) -> Option<&'static MethodDesc> {
        self.methods.iter().find(|m| m.method == name)
    }
}

/// A method described at run time (from a descriptor pool, say), for calls that have no
/// generated description: `svrkit call`, a gateway, a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicMethod {
    /// Fully qualified service name.
    pub service: String,
    /// Method name as written in the IDL.
    pub method: String,
    /// As [`MethodDesc::idempotent`].
    pub idempotent: bool,
    /// As [`MethodDesc::timeout`].
    pub timeout: Option<Duration>,
    /// As [`MethodDesc::priority`].
    pub priority: u32,
    /// As [`MethodDesc::stale_read`].
    pub stale_read: bool,
}

/// The method a client request calls: generated from the IDL (the common case, a pointer)
/// or described at run time.
#[derive(Debug, Clone)]
pub enum Method {
    /// A generated description.
    Static(&'static MethodDesc),
    /// A description built at run time.
    Dynamic(Arc<DynamicMethod>),
}

impl Method {
    /// Fully qualified service name.
    pub fn service(&self) -> &str {
        match self {
            Method::Static(m) => m.service,
            Method::Dynamic(m) => &m.service,
        }
    }

    /// Method name as written in the IDL.
    pub fn method(&self) -> &str {
        match self {
            Method::Static(m) => m.method,
            Method::Dynamic(m) => &m.method,
        }
    }

    /// Whether it may be retried or hedged.
    pub fn idempotent(&self) -> bool {
        match self {
            Method::Static(m) => m.idempotent,
            Method::Dynamic(m) => m.idempotent,
        }
    }

    /// Its default timeout, if its IDL sets one.
    pub fn timeout(&self) -> Option<Duration> {
        match self {
            Method::Static(m) => m.timeout,
            Method::Dynamic(m) => m.timeout,
        }
    }

    /// Its business priority (0: unset).
    pub fn priority(&self) -> u32 {
        match self {
            Method::Static(m) => m.priority,
            Method::Dynamic(m) => m.priority,
        }
    }

    /// Whether any replica of a replicated shard may answer it.
    pub fn stale_read(&self) -> bool {
        match self {
            Method::Static(m) => m.stale_read,
            Method::Dynamic(m) => m.stale_read,
        }
    }
}

impl From<&'static MethodDesc> for Method {
    fn from(desc: &'static MethodDesc) -> Method {
        Method::Static(desc)
    }
}

impl From<DynamicMethod> for Method {
    fn from(desc: DynamicMethod) -> Method {
        Method::Dynamic(Arc::new(desc))
    }
}
