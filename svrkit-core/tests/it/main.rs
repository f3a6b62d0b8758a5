//! The framework's integration tests, one module per subject, linked into one test
//! binary (one link of the runtime and the echo service instead of one per file).

mod common;

mod admin;
mod bad_input;
mod client;
mod custom_balancer;
mod discovery;
mod etcd;
mod failover;
mod gray;
mod grpc;
mod instance_keys;
mod not_processed;
mod overload;
mod ownership;
mod propagation;
mod properties;
mod protocol_doc;
mod retry_per_hop;
mod server;
// Minting certificates needs the `mint` feature (on in the workspace's test build,
// where the echo service's and the CLI's dev-dependencies turn it on).
#[cfg(feature = "mint")]
mod tls;
