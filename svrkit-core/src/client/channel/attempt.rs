//! One attempt of a call on one instance: connect (or reuse a connection), send, decode
//! the response, and keep the instance's load, health, latency and admission level up to
//! date for the balancer.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::ChannelInner;
use crate::client::RpcResponse;
use crate::client::endpoint::{ConnectFailed, Endpoint};
use crate::client::pick::EndpointSet;
use crate::protocol::{RequestHeader, ResponseHeader};
use crate::status::{Code, Status};

impl ChannelInner {
    /// One attempt on one instance, with its load, health and level bookkeeping.
    pub(super) async fn attempt(
        &self,
        set: &EndpointSet,
        index: usize,
        header: &RequestHeader<'_>,
        body: &[u8],
        deadline: Instant,
    ) -> Result<RpcResponse, Failed> {
        let endpoint = &set.endpoints[index];
        // Load and latency feed the balancer's choice, which only exists with several.
        let balancing = set.endpoints.len() > 1;
        let conn = match endpoint.connection(&self.settings, deadline).await {
            Ok(conn) => conn,
            Err(ConnectFailed(error)) => {
                endpoint.failed(true, self.now_ms());
                return Err(Failed {
                    status: Status::unavailable(error).with_not_processed(),
                    sent: false,
                });
            }
        };
        let _load = balancing.then(|| InFlight::new(endpoint));
        // Latency only feeds the balancer: no clock reads for a single instance.
        let start = balancing.then(Instant::now);
        let frame = match conn.call(header, body, Some(deadline)).await {
            Ok(frame) => frame,
            Err(status) => {
                // The connection broke, or nothing came back before the deadline (an
                // instance cut off from the network answers nothing): failures toward
                // its ejection either way.
                if status.reason() == Some(super::PEER_SILENT) {
                    endpoint.failed(true, self.now_ms());
                } else if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) {
                    endpoint.failed(false, self.now_ms());
                }
                return Err(Failed { status, sent: true });
            }
        };
        if let Some(start) = start {
            let fed_at = start.saturating_duration_since(self.epoch).as_millis() as u64;
            endpoint.observe_latency(start.elapsed(), fed_at);
        }
        let response = ResponseHeader::decode(&frame.header).map_err(|e| Failed {
            status: Status::internal(format!("bad response header from {}: {e}", conn.peer())),
            sent: true,
        })?;
        endpoint.learn(response.admission_business, response.admission_user, || {
            self.now_ms()
        });
        match Code::from_u32(response.code) {
            Code::Ok => {
                endpoint.succeeded();
                Ok(RpcResponse {
                    body: frame.body,
                    admission_business: response.admission_business,
                    admission_user: response.admission_user,
                })
            }
            code => {
                // A failure the instance passed on from further down says nothing of it.
                if !response.passed_on
                    && matches!(
                        code,
                        Code::Unavailable | Code::Internal | Code::Unknown | Code::DataLoss
                    )
                {
                    endpoint.failed(false, self.now_ms());
                } else {
                    endpoint.succeeded();
                }
                let mut status = Status::new(code, response.message);
                if !response.reason.is_empty() {
                    status = status.with_reason(response.reason);
                }
                if !response.details.is_empty() {
                    status = status.with_details(frame.header.slice_ref(response.details));
                }
                let status = if response.passed_on {
                    status.passed_on()
                } else if code == Code::Overloaded || response.not_processed {
                    // The server sheds overload before dispatch, so the handler never
                    // ran; a handler says so itself for a request that was not its to
                    // serve.
                    status.with_not_processed()
                } else {
                    status
                };
                Err(Failed { status, sent: true })
            }
        }
    }
}

/// A failed attempt, and whether its request left this process at all.
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) status: Status,
    pub(super) sent: bool,
}

/// Counts a call against its instance's load while it runs.
struct InFlight<'a>(&'a Endpoint);

impl<'a> InFlight<'a> {
    fn new(endpoint: &'a Endpoint) -> InFlight<'a> {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(endpoint)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
