//! Backup requests: the first attempt of a hedged call, and a second one to another
//! instance when the first is slow ([`crate::client::hedge::HedgePolicy`] decides when).

use std::pin::pin;
use std::time::{Duration, Instant};

use super::ChannelInner;
use super::attempt::Failed;
use crate::client::pick::{EndpointSet, Want, pick};
use crate::client::{RpcRequest, RpcResponse, metrics};
use crate::protocol::RequestHeader;

impl ChannelInner {
    /// The first attempt, with a backup to another instance if it is slow. Returns the
    /// outcome and the backup's instance, if one was sent.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn attempt_with_backup(
        &self,
        set: &EndpointSet,
        first: usize,
        header: &RequestHeader<'_>,
        request: &RpcRequest,
        deadline: Instant,
        delay: Duration,
        want: Want<'_>,
    ) -> (Result<RpcResponse, Failed>, Option<usize>) {
        let mut primary = pin!(self.attempt(set, first, header, &request.body, deadline));
        tokio::select! {
            result = &mut primary => return (result, None),
            () = tokio::time::sleep(delay) => {}
        }
        let tried_now = [first];
        let second = match pick(
            set,
            Want {
                tried: &tried_now,
                ..want
            },
        ) {
            Ok(second) if self.hedge.admit_backup() => second,
            _ => return (primary.await, None),
        };
        metrics::backup_sent();
        let backup_header = RequestHeader {
            attempt: header.attempt + 1,
            ..header.clone()
        };
        let mut backup = pin!(self.attempt(set, second, &backup_header, &request.body, deadline));
        // Whichever succeeds first wins; if one fails, wait for the other.
        let result = tokio::select! {
            result = &mut primary => match result {
                Ok(response) => Ok(response),
                Err(_) => backup.await,
            },
            result = &mut backup => match result {
                Ok(response) => Ok(response),
                Err(_) => primary.await,
            },
        };
        (result, Some(second))
    }
}
