//! What an echo handler does besides echoing: nothing, or (`rpc --handler-waits`) let the
//! scheduler run others once, as a handler does that waits on a store or another service.

/// Lets the task scheduler run others once, as a handler does that waits on a store or
/// another service (`rpc --handler-waits`), when `waits`.
pub(crate) async fn maybe_wait(waits: bool) {
    if waits {
        tokio::task::yield_now().await;
    }
}
