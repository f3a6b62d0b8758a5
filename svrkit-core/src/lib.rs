//! # svrkit
//!
//! The runtime every svrkit service links: a documented, multiplexed binary RPC protocol
//! over TCP ([`protocol`]), a tower-compatible client ([`Channel`]) and server
//! ([`Server`]), [`Status`] codes, and a request [`Context`] — deadline, trace id,
//! priorities, uid and gray tag — that propagates across calls by itself.
//!
//! Service authors rarely use this crate directly: `svrkit-codegen` turns their proto3
//! IDL into `foo_client::FooClient` and `foo_server::{Foo, FooServer}`, which use the
//! hidden [`codegen`] module only.
//!
//! Crate layout, one concern per module:
//! - [`status`]: `Code` and `Status`.
//! - [`protocol`]: frames, the preface, and header codecs (see `docs/PROTOCOL.md`).
//! - `transport`: the socket driver both sides share (read batching, write coalescing).
//! - [`client`]: `Channel`, connection pool, reconnect back-off, `CallOptions`.
//! - [`server`]: builder, routing, dispatch, deadlines, graceful shutdown, metrics.
//! - [`context`]: the task-local request context.
//! - `propagation`: the context on the wire both ways, and the priority rule.
//! - `dynamic` (feature `dynamic`): calling any method by name with run-time descriptors.
//! - [`metadata`]: the bounded request metadata (auth tokens, tenant ids, baggage).
//! - `otel` (feature `otel`): exporting svrkit's spans to OpenTelemetry, one trace across
//!   every hop; `otlp` adds the OTLP exporter behind `SVRKIT_OTLP_ENDPOINT`.
//! - [`discovery`]: registries (embedded, etcd, static) and channels that follow them.
//! - [`config`]: gray-release configuration (publish to a selector, promote, roll back).
//! - [`selector`]: who a gray release reaches (users by percentage or list, instances).
//! - [`store`]: the error registries and configuration stores share.
//! - [`balance`]: consistent-hash ring and balancing strategies.
//! - [`overload`]: DAGOR admission control, collaborative shedding, adaptive throttling.
//! - [`launch`]: running a service as a process (address, registry, admin, signals) from the environment.
//! - [`admin`]: the admin HTTP endpoint (`/metrics`, `/status`, `/healthz`, `/readyz`).
//! - [`policy`]: the call policy — which verified callers may call which methods.
//! - [`tls`]: mutual TLS between services (identities in SPIFFE-style URI names).
//! - [`process_limits`]: the process's open-file limit, raised to what it may be.
//! - [`secret`]: the cluster secret and the signing keys derived from it.
//! - [`method`]: static service and method descriptions generated from the IDL.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod client;
#[doc(hidden)]
pub mod codegen;
pub mod config;
pub mod context;
pub mod discovery;
#[cfg(feature = "dynamic")]
pub mod dynamic;
pub mod grpc;
pub mod launch;
pub mod metadata;
pub mod method;
#[cfg(feature = "otel")]
pub mod otel;
pub mod overload;
pub mod policy;
pub mod process_limits;
mod process_metrics;
mod propagation;
pub mod protocol;
mod random;
mod request;
pub mod secret;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod tls;
mod transport;

pub use client::{CallOptions, Channel, ChannelBuilder};
pub use context::Context;
pub use method::{MethodDesc, ServiceDesc};
pub use server::Server;
pub use status::{BoxError, Code, Status};

/// A boxed, sendable future: what handlers and client layers return.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Includes the code `svrkit-codegen` generated for a protobuf package in `build.rs`:
/// `svrkit::include_proto!("svrkit.demo");`
#[macro_export]
macro_rules! include_proto {
    ($package:tt) => {
        include!(concat!(env!("OUT_DIR"), concat!("/", $package, ".rs")));
    };
}
