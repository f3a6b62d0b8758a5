//! Static descriptions of services and methods, generated from the IDL.
//!
//! The code generator emits one [`MethodDesc`] per RPC with the method options from
//! `idl/svrkit/options.proto`; clients and servers read behaviour (timeout, idempotency,
//! business priority) from it instead of repeating it by hand.

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
