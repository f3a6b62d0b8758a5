//! The floor: a multiplexed length-prefixed echo over TCP that does no per-request work.
//!
//! Frame: `u32 length (of what follows) | u64 id | payload`. The server copies each
//! complete frame back unchanged; the client matches responses to callers by id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Serves raw echo until the process ends.
pub(crate) async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(echo_connection(stream));
    }
}

async fn echo_connection(mut stream: TcpStream) -> std::io::Result<()> {
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    loop {
        if stream.read_buf(&mut rbuf).await? == 0 {
            return Ok(());
        }
        while rbuf.len() >= 4 {
            let len = u32::from_be_bytes([rbuf[0], rbuf[1], rbuf[2], rbuf[3]]) as usize;
            if rbuf.len() < 4 + len {
                break;
            }
            wbuf.extend_from_slice(&rbuf[..4 + len]);
            rbuf.advance(4 + len);
        }
        stream.write_all(&wbuf).await?;
        wbuf.clear();
    }
}

/// The next complete answer in `buf` (`u32 length | u64 id | payload`), taken off it.
pub(super) fn take_frame(buf: &mut BytesMut) -> Option<(u64, Bytes)> {
    if buf.len() < 12 {
        return None;
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len < 8 || buf.len() < 4 + len {
        return None;
    }
    buf.advance(4);
    let id = buf.get_u64();
    Some((id, buf.split_to(len - 8).freeze()))
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>;

/// A multiplexed raw client over one connection.
#[derive(Debug)]
pub(crate) struct RawClient {
    tx: mpsc::UnboundedSender<Bytes>,
    pending: Pending,
    next: AtomicU64,
}

impl RawClient {
    pub(crate) async fn connect(addr: SocketAddr) -> std::io::Result<RawClient> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let pending: Pending = Arc::default();
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            while let Some(frame) = rx.recv().await {
                buf.extend_from_slice(&frame);
                while let Ok(more) = rx.try_recv() {
                    buf.extend_from_slice(&more);
                }
                if writer.write_all(&buf).await.is_err() {
                    return;
                }
                buf.clear();
            }
        });
        let replies = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            loop {
                match reader.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                while let Some((id, payload)) = take_frame(&mut buf) {
                    let waiter = replies.lock().ok().and_then(|mut p| p.remove(&id));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(payload);
                    }
                }
            }
        });
        Ok(RawClient {
            tx,
            pending,
            next: AtomicU64::new(1),
        })
    }

    /// Sends `payload` and waits for it to come back.
    pub(crate) async fn call(&self, payload: &[u8]) -> Result<Bytes, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut frame = BytesMut::with_capacity(12 + payload.len());
        frame.put_u32((8 + payload.len()) as u32);
        frame.put_u64(id);
        frame.put_slice(payload);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().map_err(|_| "poisoned")?.insert(id, tx);
        self.tx
            .send(frame.freeze())
            .map_err(|_| "connection closed")?;
        rx.await.map_err(|_| "connection closed".to_string())
    }
}
