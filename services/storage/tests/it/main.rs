//! The storage tier's integration tests, one module per subject, linked into one test
//! binary.

mod replicated;
mod shard;
