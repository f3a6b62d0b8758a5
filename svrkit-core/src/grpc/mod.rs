//! gRPC beside svrkit's own protocol: every [`Server`](crate::Server) also answers gRPC
//! (HTTP/2, `application/grpc`) on the same port, and a [`Channel`](crate::Channel) built
//! with [`Protocol::Grpc`] calls plain gRPC servers (tonic, grpc-go, grpcio).
//!
//! svrkit's protocol stays the fast path between svrkit processes; gRPC is how anything
//! else reaches a svrkit service: another language's client, `grpcurl`, Envoy, a
//! Kubernetes gRPC probe. A request body is the same protobuf either way, so the bridge
//! only translates the envelope. HTTP/2 is hyper's (and h2's), not svrkit's own.
//!
//! # Telling the protocols apart
//!
//! On a plain port the first byte decides: an HTTP/2 connection preface starts with `P`
//! (`PRI * HTTP/2.0`), svrkit's with `S` (`SVRK`). With TLS the ALPN protocol decides: a
//! client offering `h2` speaks gRPC, one offering nothing speaks svrkit. Mutual TLS is the
//! same either way: a gRPC client must present a certificate of the cluster CA, and its
//! identity meets the same call policy.
//!
//! # What a gRPC request carries
//!
//! | gRPC | svrkit |
//! |---|---|
//! | `:path` `/PACKAGE.Service/Method` | service and method |
//! | `grpc-timeout` | the deadline |
//! | `traceparent` (W3C) | trace id and parent span |
//! | `svrkit-user-priority` (1 ..= 128, lower is more important) | DAGOR's user priority |
//! | `svrkit-business-priority` (1 ..= 255) | business priority; without it, the method's `(svrkit.priority)` option |
//! | `svrkit-uid`, `svrkit-caller`, `svrkit-gray`, `svrkit-attempt`, `svrkit-routing-key` | the request header's fields of the same names |
//! | any other key (not `grpc-*`, not HTTP/2's own) | request metadata, with [`crate::metadata`]'s bounds; a `-bin` key's value is base64-decoded |
//!
//! Messages must not be compressed (`grpc-encoding` other than `identity` is refused
//! `UNIMPLEMENTED`), and a message is bounded by the server's frame limit.
//!
//! # What an answer carries
//!
//! Status codes are gRPC's own 0 ..= 16 both ways. svrkit's `OVERLOADED` (a request DAGOR
//! shed before its handler ran) travels as `RESOURCE_EXHAUSTED` with the trailer
//! `svrkit-code: overloaded`. `grpc-message` carries the message (percent-encoded), and
//! `grpc-status-details-bin` a `google.rpc.Status` whose details hold a
//! `google.rpc.ErrorInfo` (domain `svrkit`, reason = [`Status::reason`]) and the status's
//! [`details`](Status::details) as a `google.protobuf.BytesValue`. svrkit's own trailers
//! let a svrkit client keep what its protocol carries: `svrkit-admission`
//! (`BUSINESS,USER`: the server's DAGOR level, so callers throttle before sending),
//! `svrkit-not-processed` and `svrkit-passed-on`.
//!
//! # Streaming
//!
//! svrkit methods are unary; an IDL with a streaming method is refused by the code
//! generator. The two built-in services that stream do so over gRPC only:
//! `grpc.health.v1.Health` (`Check`, and `Watch`, which follows the server's readiness)
//! and `grpc.reflection.v1.ServerReflection` (and `v1alpha`), which serves the
//! descriptors the code generator embedded in each service.

pub(crate) mod body;
pub(crate) mod health;
pub(crate) mod io;
pub(crate) mod reflection;
pub(crate) mod wire;

pub use wire::{decode_timeout, encode_timeout, from_grpc_code, to_grpc_code};

/// Which protocol a connection speaks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// svrkit's own multiplexed protocol (`docs/PROTOCOL.md`): the fast path.
    #[default]
    Svrkit,
    /// gRPC over HTTP/2.
    Grpc,
}

impl Protocol {
    /// `"svrkit"` or `"grpc"`, as metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Svrkit => "svrkit",
            Protocol::Grpc => "grpc",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "svrkit" => Ok(Protocol::Svrkit),
            "grpc" => Ok(Protocol::Grpc),
            other => Err(format!(
                "unknown protocol {other:?} (expected svrkit or grpc)"
            )),
        }
    }
}
