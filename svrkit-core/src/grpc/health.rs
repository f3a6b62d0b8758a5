//! `grpc.health.v1.Health`: what Kubernetes gRPC probes, `grpc-health-probe` and load
//! balancers ask. The server answers it from its own state: `SERVING` while it takes
//! requests and its own checks hold ([`crate::Server::ready_when`]; `svrkit::launch`
//! passes the admin endpoint's), `NOT_SERVING` once it drains or while accepting
//! connections fails (out of descriptors, [`crate::process_limits`]).

/// The service's full name.
pub(crate) const SERVICE: &str = "grpc.health.v1.Health";

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HealthCheckRequest {
    /// The service asked about; empty means the whole server.
    #[prost(string, tag = "1")]
    pub(crate) service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HealthCheckResponse {
    /// A [`ServingStatus`].
    #[prost(int32, tag = "1")]
    pub(crate) status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum ServingStatus {
    Serving = 1,
    NotServing = 2,
    /// Watch's answer for a service the server does not know.
    ServiceUnknown = 3,
}

impl ServingStatus {
    /// The status of a server that is `ready` (or not).
    pub(crate) fn of(ready: bool) -> ServingStatus {
        if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }

    /// The encoded `HealthCheckResponse`.
    pub(crate) fn response(self) -> Vec<u8> {
        prost::Message::encode_to_vec(&HealthCheckResponse {
            status: self as i32,
        })
    }
}
