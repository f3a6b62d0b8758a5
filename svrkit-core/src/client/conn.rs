//! A pooled connection over either protocol: svrkit's own ([`Connection`]) or gRPC
//! ([`GrpcConnection`]). Calls return a svrkit response frame either way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::connection::Connection;
use super::grpc::GrpcConnection;
use crate::grpc::Protocol;
use crate::protocol::{Frame, RequestHeader};
use crate::status::Status;

/// One open connection of an endpoint's pool.
#[derive(Debug, Clone)]
pub(crate) enum Conn {
    /// svrkit's protocol.
    Svrkit(Arc<Connection>),
    /// gRPC.
    Grpc(Arc<GrpcConnection>),
}

impl Conn {
    /// Connects to `peer` speaking `protocol`.
    pub(crate) async fn connect(
        peer: SocketAddr,
        protocol: Protocol,
        max_frame_size: usize,
        tls: Option<&crate::tls::ClientTls>,
    ) -> std::io::Result<Conn> {
        Ok(match protocol {
            Protocol::Svrkit => Conn::Svrkit(Connection::connect(peer, max_frame_size, tls).await?),
            Protocol::Grpc => Conn::Grpc(GrpcConnection::connect(peer, max_frame_size, tls).await?),
        })
    }

    /// The server's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        match self {
            Conn::Svrkit(c) => c.peer(),
            Conn::Grpc(c) => c.peer(),
        }
    }

    /// True while new calls may start on this connection.
    pub(crate) fn is_open(&self) -> bool {
        match self {
            Conn::Svrkit(c) => c.is_open(),
            Conn::Grpc(c) => c.is_open(),
        }
    }

    /// Calls in flight on this connection.
    pub(crate) fn in_flight(&self) -> usize {
        match self {
            Conn::Svrkit(c) => c.in_flight(),
            Conn::Grpc(c) => c.in_flight(),
        }
    }

    /// Stops the connection.
    pub(crate) fn close(&self) {
        match self {
            Conn::Svrkit(c) => c.close(),
            Conn::Grpc(c) => c.close(),
        }
    }

    /// Sends one request and waits for its response frame (or the deadline).
    pub(crate) async fn call(
        &self,
        header: &RequestHeader<'_>,
        body: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Frame, Status> {
        match self {
            Conn::Svrkit(c) => c.call(header, body, deadline).await,
            // Boxed: HTTP/2's future would otherwise enlarge every svrkit call's.
            Conn::Grpc(c) => Box::pin(c.call(header, body, deadline)).await,
        }
    }
}
