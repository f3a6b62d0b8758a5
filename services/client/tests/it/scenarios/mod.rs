//! The scenarios the end-to-end suites run against a [`crate::harness::Backend`] (once
//! with the embedded registry, once with etcd), one module per subject. Each is named for
//! what it shows.

#![allow(dead_code, unreachable_pub)]

pub mod contacts;
pub mod durability;
pub mod edge;
pub mod envelopes;
pub mod input;
pub mod limits;
pub mod messaging;
pub mod metrics;
pub mod moments;
pub mod replication;
