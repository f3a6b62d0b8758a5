//! The batched floor: the raw echo server driven by a client that does as little per call
//! as a multiplexed client can — the strongest floor `svrkit-bench rpc` measures against.
//!
//! One connection. A call appends its frame to a shared write buffer under a short lock
//! and wakes the writer only when the buffer was empty; it then waits on its own slot,
//! allocated once per caller (no channel and no allocation per call). The writer yields
//! once before taking the buffer, so callers woken together leave in one `write`; the
//! reader completes slots by request id (the slot's index).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// One caller's place: the reply once it came, or the waker of the caller waiting.
#[derive(Debug, Default)]
struct Slot {
    reply: Option<Bytes>,
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Shared {
    out: Mutex<BytesMut>,
    wake_writer: Notify,
    slots: Box<[Mutex<Slot>]>,
}

/// A batched raw client over one connection, for at most `callers` callers at once.
#[derive(Debug, Clone)]
pub(crate) struct BatchedClient {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BatchedClient {
    /// Connects, with a slot for each of `callers` callers.
    pub(crate) async fn connect(addr: SocketAddr, callers: usize) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut reader, mut writer) = stream.into_split();
        let shared = Arc::new(Shared {
            out: Mutex::new(BytesMut::with_capacity(64 * 1024)),
            wake_writer: Notify::new(),
            slots: (0..callers.max(1)).map(|_| Mutex::default()).collect(),
        });
        let writes = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut batch = BytesMut::with_capacity(64 * 1024);
            loop {
                writes.wake_writer.notified().await;
                // Callers woken with this one append first: one write for all of them.
                tokio::task::yield_now().await;
                std::mem::swap(&mut *lock(&writes.out), &mut batch);
                if batch.is_empty() {
                    continue;
                }
                if writer.write_all(&batch).await.is_err() {
                    return;
                }
                batch.clear();
            }
        });
        let reads = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            loop {
                match reader.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                while let Some((id, payload)) = super::raw::take_frame(&mut buf) {
                    if let Some(slot) = reads.slots.get(id as usize) {
                        let mut slot = lock(slot);
                        slot.reply = Some(payload);
                        if let Some(waker) = slot.waker.take() {
                            waker.wake();
                        }
                    }
                }
            }
        });
        Ok(BatchedClient { shared })
    }

    /// Caller `index` sends `payload` and waits for it to come back.
    pub(crate) async fn call(&self, index: usize, payload: &[u8]) -> Result<Bytes, String> {
        let slots = self.shared.slots.len();
        let id = index % slots;
        let first = {
            let mut out = lock(&self.shared.out);
            let first = out.is_empty();
            out.put_u32((8 + payload.len()) as u32);
            out.put_u64(id as u64);
            out.put_slice(payload);
            first
        };
        if first {
            self.shared.wake_writer.notify_one();
        }
        let slot = &self.shared.slots[id];
        Ok(std::future::poll_fn(|cx| {
            let mut slot = lock(slot);
            match slot.reply.take() {
                Some(reply) => Poll::Ready(reply),
                None => {
                    slot.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await)
    }
}
