//! The `svrkit` command line, end to end, one module per subject, linked into one test
//! binary.

mod cli;
mod cluster;
mod console;
mod grpc;
mod render;
