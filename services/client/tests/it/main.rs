//! The backend end to end through its gateways (embedded registry, etcd, a real
//! browser), one module per subject, linked into one test binary.

mod harness;
mod scenarios;

mod backend;
mod backend_etcd;
mod browser;
mod hosts;
