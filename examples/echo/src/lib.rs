//! The svrkit example service: `svrkit.demo.Echo`.
//!
//! `Echo` returns its payload with the request context the server saw; `Relay` calls
//! `Echo` on a next hop and returns both views. Together they make context propagation
//! visible: one trace id across hops, the second hop's parent span is the first hop's
//! span, its remaining deadline is smaller, and priority and uid arrive unchanged.

#![warn(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use svrkit::{Context, Status};

/// Generated messages, client and server of `svrkit.demo`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    svrkit::include_proto!("svrkit.demo");
}

pub use proto::echo_client::EchoClient;
pub use proto::echo_server::{Echo, EchoServer};
pub use proto::{ContextSeen, EchoReply, EchoRequest, RelayReply};

/// The Echo service. `next` is where `Relay` forwards to.
#[derive(Debug, Clone)]
pub struct EchoService {
    name: Arc<str>,
    next: Option<EchoClient>,
    /// Every `Echo` fails with INTERNAL when set: a broken build, to gray-release.
    faulty: bool,
}

impl EchoService {
    /// A service that names itself `name` in replies and cannot relay.
    pub fn new(name: impl Into<Arc<str>>) -> EchoService {
        EchoService {
            name: name.into(),
            next: None,
            faulty: false,
        }
    }

    /// Makes every `Echo` fail with INTERNAL: what a broken build does, for trying a gray
    /// release's automatic rollback (`echo serve` with `ECHO_FAULT=internal`).
    pub fn faulty(mut self) -> EchoService {
        self.faulty = true;
        self
    }

    /// Lets `Relay` forward to `next`.
    pub fn with_next_hop(mut self, next: EchoClient) -> EchoService {
        self.next = Some(next);
        self
    }

    fn seen(&self) -> ContextSeen {
        let ctx = Context::current();
        ContextSeen {
            server: self.name.to_string(),
            remaining_ms: ctx.remaining().map_or(0, |d| d.as_millis() as u64),
            trace_id: ctx.trace_id(),
            parent_span_id: ctx.parent_span_id(),
            span_id: ctx.span_id(),
            caller: ctx.caller().unwrap_or_default().to_string(),
            business_priority: ctx.business_priority(),
            uid: ctx.uid(),
            gray_tag: ctx.gray_tag().unwrap_or_default().to_string(),
            attempt: ctx.attempt(),
            metadata: ctx
                .metadata()
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }
}

impl Echo for EchoService {
    async fn echo(&self, request: EchoRequest) -> Result<EchoReply, Status> {
        let seen = self.seen();
        tracing::debug!(instance = %self.name, "echo");
        if self.faulty {
            return Err(Status::internal(format!(
                "{} is a faulty build (ECHO_FAULT)",
                self.name
            )));
        }
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
        }
        Ok(EchoReply {
            payload: request.payload,
            seen: Some(seen),
        })
    }

    async fn relay(&self, request: EchoRequest) -> Result<RelayReply, Status> {
        let first = self.seen();
        tracing::debug!(instance = %self.name, "relay");
        let next = self
            .next
            .as_ref()
            .ok_or_else(|| Status::failed_precondition(format!("{} has no next hop", self.name)))?;
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
        }
        let reply = next
            .echo(EchoRequest {
                payload: request.payload,
                delay_ms: 0,
            })
            .await?;
        Ok(RelayReply {
            first: Some(first),
            second: reply.seen,
        })
    }
}
