//! Code generation end to end, one module per subject, linked into one test binary.

mod dynamic_client;
mod snapshot;
mod wire_schema;
