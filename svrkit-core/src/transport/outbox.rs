//! A byte buffer of encoded frames waiting for the connection's driver to write them.

use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use tokio::sync::Notify;

/// Frames queued by other tasks for the connection driver.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    buf: Mutex<BytesMut>,
    notify: Notify,
}

impl Outbox {
    /// Appends frames under the lock and wakes the driver.
    pub(crate) fn push(&self, encode: impl FnOnce(&mut BytesMut)) {
        encode(&mut self.lock());
        self.notify.notify_one();
    }

    /// Moves everything queued onto the end of `out`.
    pub(crate) fn drain_into(&self, out: &mut BytesMut) {
        let mut buf = self.lock();
        if buf.is_empty() {
            return;
        }
        if out.is_empty() {
            std::mem::swap(&mut *buf, out);
        } else {
            out.extend_from_slice(&buf);
            buf.clear();
        }
    }

    /// Resolves once something was pushed since the last wake-up.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, BytesMut> {
        // A panic while appending bytes cannot leave the buffer in an unsafe state.
        self.buf.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
