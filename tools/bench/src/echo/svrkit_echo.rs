//! svrkit's echo server, the system under test.

use svrkit::Status;

use super::wait::maybe_wait;
use crate::proto::svrkit_gen;

/// The echo service.
pub(super) struct SvrkitEcho {
    pub(super) waits: bool,
}

impl svrkit_gen::bench_server::Bench for SvrkitEcho {
    async fn echo(&self, request: svrkit_gen::Payload) -> Result<svrkit_gen::Payload, Status> {
        maybe_wait(self.waits).await;
        Ok(request)
    }
}
