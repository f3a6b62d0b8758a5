//! tonic's echo server (gRPC over HTTP/2), the first peer.

use super::wait::maybe_wait;
use crate::proto::tonic_gen;

/// The echo service.
pub(super) struct TonicEcho {
    pub(super) waits: bool,
}

#[tonic::async_trait]
impl tonic_gen::bench_server::Bench for TonicEcho {
    async fn echo(
        &self,
        request: tonic::Request<tonic_gen::Payload>,
    ) -> Result<tonic::Response<tonic_gen::Payload>, tonic::Status> {
        maybe_wait(self.waits).await;
        Ok(tonic::Response::new(request.into_inner()))
    }
}
