//! The gate every request passes before it is dispatched: a chain of named checks, each
//! of which either lets the request on or refuses it with the status to answer.
//!
//! The checks run in this order, cheapest and least informative first, and all of them
//! before the body is decoded or any task exists, so that a refused request costs almost
//! nothing:
//!
//! 1. [`Gate::open`]: a draining server takes no new work;
//! 2. [`decode`]: the header must parse (it borrows from the frame);
//! 3. [`Gate::route`]: the server must serve the service and method;
//! 4. [`Gate::authorize`]: the call policy must let the verified caller call the method;
//! 5. [`Gate::owned`]: a shard takes only keys it owns;
//! 6. [`Gate::admit`]: DAGOR admission, at the priority the request carries (stamped by
//!    the entry service, inherited by every hop after it).
//!
//! What happens after the gate (server back-pressure, the deadline, the handler) is the
//! connection's dispatch.

use std::time::Instant;

use super::metrics;
use super::router::Route;
use super::shared::ServerShared;
use crate::grpc::Protocol;
use crate::overload::Priority;
use crate::propagation::incoming_priority;
use crate::protocol::RequestHeader;
use crate::status::Status;

/// The checks of one connection, as of one batch of frames.
#[derive(Debug)]
pub(super) struct Gate<'a, 'i> {
    /// What every connection of the server shares (router, policy, ownership, admission).
    pub(super) server: &'a ServerShared,
    /// The caller's service name, verified by mutual TLS.
    pub(super) identity: Option<&'i str>,
    /// True once the server is shutting down.
    pub(super) draining: bool,
}

/// A request the gate let through, with what its checks learned.
#[derive(Debug)]
pub(super) struct Admitted<'a, 'f> {
    /// The decoded header, borrowing from the frame.
    pub(super) header: RequestHeader<'f>,
    /// The method it calls.
    pub(super) route: &'a Route,
    /// The priority it was admitted at.
    pub(super) priority: Priority,
}

/// A request the gate refused: the status to answer, and where to count it.
#[derive(Debug)]
pub(super) struct Refused<'a> {
    /// The answer.
    pub(super) status: Status,
    /// The reason on `svrkit_server_rejected_total`, for refusals counted there.
    rejected: Option<&'static str>,
    /// The method, once known: the refusal counts on its own response counter too.
    method: Option<&'a Route>,
}

impl Refused<'_> {
    /// Counts the refusal on the server's and the method's counters.
    pub(super) fn count(&self, protocol: Protocol) {
        if let Some(reason) = self.rejected {
            metrics::rejected(reason);
        }
        if let Some(route) = self.method {
            route.metrics_of(protocol).responded(self.status.code());
        }
    }
}

impl<'a> Gate<'a, '_> {
    /// Runs every check on the raw header of a request that arrived at `arrival`.
    pub(super) fn pass<'f>(
        &self,
        raw_header: &'f [u8],
        arrival: Instant,
    ) -> Result<Admitted<'a, 'f>, Refused<'a>> {
        self.open()?;
        let header = decode(raw_header)?;
        let (route, priority) = self.pass_header(&header, arrival)?;
        Ok(Admitted {
            header,
            route,
            priority,
        })
    }

    /// The checks after decoding, on a header however it arrived (a gRPC request's is
    /// read from its HTTP/2 headers): route, policy, ownership, admission.
    pub(super) fn pass_header(
        &self,
        header: &RequestHeader<'_>,
        arrival: Instant,
    ) -> Result<(&'a Route, Priority), Refused<'a>> {
        let route = self.route(header)?;
        self.authorize(route, header)?;
        self.owned(route, header)?;
        let priority = incoming_priority(header, route.desc.priority);
        self.admit(route, priority, arrival)?;
        Ok((route, priority))
    }

    /// A draining server refuses new requests (the client retries them elsewhere).
    pub(super) fn open(&self) -> Result<(), Refused<'a>> {
        if self.draining {
            return Err(Refused {
                status: Status::unavailable("server is shutting down"),
                rejected: Some("draining"),
                method: None,
            });
        }
        Ok(())
    }

    /// The route of the method the header names.
    pub(super) fn route(&self, header: &RequestHeader<'_>) -> Result<&'a Route, Refused<'a>> {
        let router = &*self.server.router;
        router.route(header.service, header.method).ok_or_else(|| {
            let status = if router.has_service(header.service) {
                Status::unimplemented(format!(
                    "unknown method {}/{}",
                    header.service, header.method
                ))
            } else {
                Status::unimplemented(format!("unknown service {}", header.service))
            };
            Refused {
                status,
                rejected: Some("unimplemented"),
                method: None,
            }
        })
    }

    /// The call policy, when the server has one: who may call this method, and whether a
    /// call on a user's behalf (a uid in the header) is allowed from this caller.
    pub(super) fn authorize(
        &self,
        route: &'a Route,
        header: &RequestHeader<'_>,
    ) -> Result<(), Refused<'a>> {
        let Some(policy) = &self.server.policy else {
            return Ok(());
        };
        let desc = route.desc;
        policy
            .check(self.identity, desc.service, desc.method, header.uid != 0)
            .map_err(|status| Refused {
                status,
                rejected: Some("permission_denied"),
                method: Some(route),
            })
    }

    /// A shard takes only the keys it owns; another shard's key is refused "not mine"
    /// (not processed, so the caller may send it where it belongs).
    pub(super) fn owned(
        &self,
        route: &'a Route,
        header: &RequestHeader<'_>,
    ) -> Result<(), Refused<'a>> {
        let (Some(ownership), Some(key)) = (&self.server.ownership, header.routing_key) else {
            return Ok(());
        };
        ownership.owns(key).map_err(|e| Refused {
            status: Status::not_mine(format!(
                "key {key} belongs to {}, not to this shard",
                e.owner
            )),
            rejected: Some("not_mine"),
            method: Some(route),
        })
    }

    /// DAGOR admission: a request below the server's admission level is shed.
    pub(super) fn admit(
        &self,
        route: &'a Route,
        priority: Priority,
        arrival: Instant,
    ) -> Result<(), Refused<'a>> {
        let Some(admission) = &self.server.admission else {
            return Ok(());
        };
        if admission.admit(priority, arrival) {
            return Ok(());
        }
        let (b, u) = admission.wire_level();
        Err(Refused {
            status: Status::overloaded(format!(
                "shed by admission control: priority ({}, {}) is below the level ({b}, {u})",
                priority.business, priority.user
            )),
            rejected: None,
            method: Some(route),
        })
    }
}

/// The request header, decoded from the frame it borrows from.
pub(super) fn decode(raw: &[u8]) -> Result<RequestHeader<'_>, Refused<'static>> {
    RequestHeader::decode(raw).map_err(|e| Refused {
        status: Status::invalid_argument(format!("malformed request header: {e}")),
        rejected: Some("bad_header"),
        method: None,
    })
}

#[cfg(test)]
mod tests {

    use bytes::BytesMut;

    use super::*;
    use crate::server::router::Router;
    use crate::status::Code;

    impl Refused<'_> {
        fn code(&self) -> Code {
            self.status.code()
        }
    }

    fn server(router: Router) -> ServerShared {
        ServerShared::with_router(router)
    }

    fn header_bytes(service: &str, method: &str) -> BytesMut {
        let header = RequestHeader {
            service,
            method,
            ..RequestHeader::default()
        };
        let mut buf = BytesMut::new();
        header.encode(&mut buf);
        buf
    }

    #[test]
    fn a_draining_server_refuses_before_reading_the_header() {
        let server = server(Router::default());
        let gate = Gate {
            server: &server,
            identity: None,
            draining: true,
        };
        let refused = gate
            .pass(b"\xff not a header", Instant::now())
            .expect_err("draining");
        assert_eq!(refused.code(), Code::Unavailable);
        assert_eq!(refused.rejected, Some("draining"));
    }

    #[test]
    fn a_malformed_header_is_an_invalid_argument() {
        let refused = decode(b"\xff\xff\xff").expect_err("malformed");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(
            refused
                .status
                .message()
                .contains("malformed request header"),
            "{}",
            refused.status
        );
    }

    #[test]
    fn unknown_services_and_methods_are_unimplemented() {
        let server = server(Router::default());
        let gate = Gate {
            server: &server,
            identity: None,
            draining: false,
        };
        let raw = header_bytes("test.Nobody", "Ping");
        let refused = gate.pass(&raw, Instant::now()).expect_err("unknown");
        assert_eq!(refused.code(), Code::Unimplemented);
        assert_eq!(refused.status.message(), "unknown service test.Nobody");
        assert_eq!(refused.rejected, Some("unimplemented"));
        assert!(refused.method.is_none(), "no method to count it on");
    }
}
