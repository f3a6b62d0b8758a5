//! Reading svrkit's method options out of the descriptor pool.
//!
//! prost-build hands generators `prost_types::MethodOptions`, which drops extensions, so
//! the options are read here with prost-reflect (which keeps them) and passed to the
//! generator by fully qualified method name.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, Value};

use crate::Error;

/// Where the options are declared, relative to an include directory.
pub(crate) const OPTIONS_FILE: &str = "svrkit/options.proto";

/// The options' IDL, built in: an import of [`OPTIONS_FILE`] that no include directory
/// answers is answered with it, so a crate that depends on svrkit-codegen from a registry
/// needs no copy of svrkit's `idl/` directory.
pub(crate) const OPTIONS_SOURCE: &str = include_str!("../proto/svrkit/options.proto");

/// Answers [`OPTIONS_FILE`] with [`OPTIONS_SOURCE`] (after the include directories).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BuiltInOptions;

impl protox::file::FileResolver for BuiltInOptions {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == OPTIONS_FILE {
            protox::file::File::from_source(name, OPTIONS_SOURCE)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// The svrkit options of one method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MethodOptions {
    /// `(svrkit.idempotent)`.
    pub idempotent: bool,
    /// `(svrkit.timeout_ms)`, 0 when unset.
    pub timeout_ms: u32,
    /// `(svrkit.priority)`, 0 when unset.
    pub priority: u32,
    /// `(svrkit.stale_read)`.
    pub stale_read: bool,
}

/// Options of every method in the pool, keyed `package.Service.Method`. Refuses streaming
/// methods and out-of-range values.
pub(crate) fn collect(pool: &DescriptorPool) -> Result<HashMap<String, MethodOptions>, Error> {
    let idempotent = pool.get_extension_by_name("svrkit.idempotent");
    let timeout = pool.get_extension_by_name("svrkit.timeout_ms");
    let priority = pool.get_extension_by_name("svrkit.priority");
    let stale_read = pool.get_extension_by_name("svrkit.stale_read");
    let mut out = HashMap::new();
    for service in pool.services() {
        for method in service.methods() {
            let file = service.parent_file().name().to_string();
            if method.is_client_streaming() || method.is_server_streaming() {
                return Err(Error::Streaming {
                    file,
                    service: service.full_name().to_string(),
                    method: method.name().to_string(),
                });
            }
            let raw = method.options();
            let read_u32 = |ext: &Option<prost_reflect::ExtensionDescriptor>| {
                ext.as_ref()
                    .filter(|e| raw.has_extension(e))
                    .and_then(|e| match raw.get_extension(e).as_ref() {
                        Value::U32(v) => Some(*v),
                        _ => None,
                    })
                    .unwrap_or(0)
            };
            let read_bool = |ext: &Option<prost_reflect::ExtensionDescriptor>| {
                ext.as_ref()
                    .filter(|e| raw.has_extension(e))
                    .is_some_and(|e| matches!(raw.get_extension(e).as_ref(), Value::Bool(true)))
            };
            let opts = MethodOptions {
                idempotent: read_bool(&idempotent),
                stale_read: read_bool(&stale_read),
                timeout_ms: read_u32(&timeout),
                priority: read_u32(&priority),
            };
            if opts.priority > 255 {
                return Err(Error::BadOption {
                    file,
                    service: service.full_name().to_string(),
                    method: method.name().to_string(),
                    problem: format!("(svrkit.priority) = {} is outside 1..=255", opts.priority),
                });
            }
            out.insert(method.full_name().to_string(), opts);
        }
    }
    Ok(out)
}
