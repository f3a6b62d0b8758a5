//! Refusing IDL that is valid protobuf but would generate Rust that cannot compile.
//!
//! prost-build and svrkit's generator both write items into one module per protobuf
//! package: prost-build a `snake_case` module for every message with nested types or
//! oneofs, svrkit `<service>_methods`, `<service>_client` and `<service>_server` for every
//! service. Two of them with one name would not compile, so the clash is reported here,
//! naming the file and both items, before any code is written. Everything else about
//! names (keywords, RPCs that collide with helpers or with each other) is resolved by the
//! rules in [`crate::names`] instead of refused.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, MessageDescriptor};

use crate::{Error, names};

/// Whether prost-build writes a module for `message` (nested types or real oneofs).
fn has_module(message: &MessageDescriptor) -> bool {
    message.child_messages().any(|m| !m.is_map_entry())
        || message.child_enums().next().is_some()
        || message.oneofs().any(|o| !o.is_synthetic())
}

/// Checks that the modules generated for each package have distinct names.
pub(crate) fn names(pool: &DescriptorPool) -> Result<(), Error> {
    // package -> module name -> (file, item that owns it)
    let mut modules: HashMap<String, HashMap<String, (String, String)>> = HashMap::new();
    let mut claim = |package: &str, module: String, file: &str, item: String| {
        let taken = modules.entry(package.to_string()).or_default();
        match taken.get(&module) {
            Some((_, other)) if *other != item => Err(Error::Unsupported {
                file: file.to_string(),
                item: item.clone(),
                problem: format!(
                    "its generated module `{module}` would collide with the one of {other}; \
                     rename one of them"
                ),
            }),
            _ => {
                taken.insert(module, (file.to_string(), item));
                Ok(())
            }
        }
    };
    for message in pool.all_messages() {
        if message.parent_message().is_none() && has_module(&message) {
            claim(
                message.package_name(),
                names::module_ident(message.name()),
                message.parent_file().name(),
                format!("message {}", message.full_name()),
            )?;
        }
    }
    for service in pool.services() {
        let rust = names::type_name(service.name());
        let item = format!("service {}", service.full_name());
        for module in [
            names::methods_module(&rust),
            names::client_module(&rust),
            names::server_module(&rust),
        ] {
            claim(
                service.package_name(),
                module,
                service.parent_file().name(),
                item.clone(),
            )?;
        }
    }
    Ok(())
}
