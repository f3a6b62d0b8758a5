//! One server connection: preface check, frame handling, dispatch and graceful drain.
//!
//! The driver reads a batch of frames, and for each request decodes the header (borrowing
//! from the frame), routes it, builds the request context and polls the handler once,
//! inline. A handler that finishes on that poll has its response encoded straight into the
//! write buffer, with no task spawned; one that has to wait is spawned and answers through
//! the [`Outbox`] when done. Everything answered in a batch leaves in one `write`.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tower_service::Service;

use super::call::{HandlerCall, queued};
use super::metrics;
use super::router::{Router, ServerRequest};
use crate::context::Context;
use crate::protocol::{
    self, FRAME_HEAD_LEN, Frame, FrameError, FrameKind, GoAway, GoAwayReason, MAX_HEADER_LEN,
    PREFACE_LEN, RequestHeader, ResponseHeader,
};
use crate::status::{Code, Status};
use crate::transport::{Outbox, ReadOutcome, flush, read_some};

/// Settings a connection needs from its server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnConfig {
    pub(crate) max_frame_size: usize,
}

/// Handlers still running on this connection, by request id.
#[derive(Debug, Default)]
struct InFlight(Mutex<HashMap<u64, AbortHandle>>);

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, AbortHandle>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a spawned handler from [`InFlight`] however it ends (done or aborted).
struct InFlightGuard {
    in_flight: Arc<InFlight>,
    outbox: Arc<Outbox>,
    id: u64,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.in_flight.lock().remove(&self.id);
        // Wake the driver: it may be draining and waiting for the last handler.
        self.outbox.push(|_| {});
    }
}

/// Why the driver stopped.
enum End {
    /// Peer closed, or drain finished.
    Done,
    /// I/O error.
    Io(std::io::Error),
    /// Protocol error: deliver the queued goaway, then close without a reset.
    Linger,
}

/// How long a connection closed for a protocol error keeps reading (and discarding) so
/// its goaway reaches the peer instead of being destroyed by a TCP reset.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// At most this many bytes are discarded while lingering.
const LINGER_BYTES: usize = 4 << 20;

struct Driver<S> {
    svc: S,
    router: Arc<Router>,
    config: ConnConfig,
    peer: SocketAddr,
    outbox: Arc<Outbox>,
    in_flight: Arc<InFlight>,
    out: BytesMut,
    preface_ok: bool,
    draining: bool,
    last_id: u64,
}

/// Serves one accepted connection until the peer leaves, a protocol error, or the end of
/// a graceful drain after `shutdown` turns true.
pub(crate) async fn serve_connection<S>(
    stream: TcpStream,
    peer: SocketAddr,
    svc: S,
    router: Arc<Router>,
    config: ConnConfig,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<ServerRequest, Response = Bytes, Error = Status> + Send + 'static,
    S::Future: Send + 'static,
{
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "set_nodelay failed");
    }
    let mut d = Driver {
        svc,
        router,
        config,
        peer,
        outbox: Arc::new(Outbox::default()),
        in_flight: Arc::new(InFlight::default()),
        out: BytesMut::with_capacity(8 * 1024),
        preface_ok: false,
        draining: false,
        last_id: 0,
    };
    let mut rbuf = BytesMut::new();
    if *shutdown.borrow_and_update() {
        d.start_drain();
    }
    let end = loop {
        d.outbox.drain_into(&mut d.out);
        if let Err(e) = flush(&stream, &mut d.out) {
            break End::Io(e);
        }
        if d.draining && d.out.is_empty() && d.in_flight.lock().is_empty() {
            break End::Done;
        }
        tokio::select! {
            changed = shutdown.changed(), if !d.draining => {
                if changed.is_err() || *shutdown.borrow() {
                    d.start_drain();
                }
            }
            ready = stream.readable() => {
                if let Err(e) = ready {
                    break End::Io(e);
                }
                match read_some(&stream, &mut rbuf) {
                    Ok(ReadOutcome::Data) => {}
                    Ok(ReadOutcome::WouldBlock) => continue,
                    Ok(ReadOutcome::Eof) => break End::Done,
                    Err(e) => break End::Io(e),
                }
                if let Err((reason, message)) = d.handle_input(&mut rbuf).await {
                    tracing::debug!(peer = %d.peer, ?reason, %message, "closing svrkit connection");
                    metrics::rejected(match reason {
                        GoAwayReason::FrameTooLarge => "frame_too_large",
                        _ => "protocol_error",
                    });
                    d.goaway(reason, &message);
                    d.outbox.drain_into(&mut d.out);
                    break End::Linger;
                }
            }
            _ = d.outbox.notified(), if d.out.is_empty() => {}
            ready = stream.writable(), if !d.out.is_empty() => {
                if let Err(e) = ready {
                    break End::Io(e);
                }
            }
        }
    };
    match end {
        End::Io(e) => tracing::debug!(peer = %d.peer, error = %e, "svrkit connection I/O error"),
        End::Linger => linger_close(stream, d.out).await,
        End::Done => {}
    }
    // Nobody can receive the answers any more: stop the remaining handlers.
    for (_, handle) in d.in_flight.lock().drain() {
        handle.abort();
    }
}

impl<S> Driver<S>
where
    S: Service<ServerRequest, Response = Bytes, Error = Status> + Send + 'static,
    S::Future: Send + 'static,
{
    /// Handles every complete frame in `rbuf`. An error is fatal to the connection and
    /// carries the goaway to send.
    async fn handle_input(&mut self, rbuf: &mut BytesMut) -> Result<(), (GoAwayReason, String)> {
        let arrival = Instant::now();
        if !self.preface_ok {
            if rbuf.len() < PREFACE_LEN {
                return Ok(());
            }
            let preface = rbuf.split_to(PREFACE_LEN);
            let mut bytes = [0u8; PREFACE_LEN];
            bytes.copy_from_slice(&preface);
            protocol::check_preface(&bytes)
                .map_err(|e| (GoAwayReason::ProtocolError, e.to_string()))?;
            self.preface_ok = true;
        }
        loop {
            let frame = match protocol::decode_frame(rbuf, self.config.max_frame_size) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e @ FrameError::TooLarge { .. }) => {
                    return Err((GoAwayReason::FrameTooLarge, e.to_string()));
                }
                Err(e) => return Err((GoAwayReason::ProtocolError, e.to_string())),
            };
            match frame.kind {
                FrameKind::Request => self.on_request(frame, arrival).await,
                FrameKind::Cancel => {
                    if let Some(handle) = self.in_flight.lock().remove(&frame.id) {
                        handle.abort();
                    }
                }
                FrameKind::Ping => {
                    protocol::encode_frame_head(&mut self.out, FrameKind::Pong, frame.id, 0, 0)
                }
                FrameKind::Pong => {}
                FrameKind::Response | FrameKind::GoAway => {
                    return Err((
                        GoAwayReason::ProtocolError,
                        format!("a client may not send {:?} frames", frame.kind),
                    ));
                }
            }
        }
    }

    async fn on_request(&mut self, frame: Frame, arrival: Instant) {
        let id = frame.id;
        self.last_id = self.last_id.max(id);
        if self.draining {
            metrics::rejected("draining");
            let status = Status::unavailable("server is shutting down");
            encode_response(&mut self.out, id, Err(&status), self.config.max_frame_size);
            return;
        }
        let header = match RequestHeader::decode(&frame.header) {
            Ok(header) => header,
            Err(e) => {
                metrics::rejected("bad_header");
                let status = Status::invalid_argument(format!("malformed request header: {e}"));
                encode_response(&mut self.out, id, Err(&status), self.config.max_frame_size);
                return;
            }
        };
        let Some(route) = self.router.route(header.service, header.method) else {
            metrics::rejected("unimplemented");
            let status = if self.router.has_service(header.service) {
                Status::unimplemented(format!(
                    "unknown method {}/{}",
                    header.service, header.method
                ))
            } else {
                Status::unimplemented(format!("unknown service {}", header.service))
            };
            encode_response(&mut self.out, id, Err(&status), self.config.max_frame_size);
            return;
        };
        let desc = route.desc;
        let service_index = route.service;
        let ctx = Context::from_request(&header, arrival, desc.service);
        let method_metrics = route.metrics();

        // Back-pressure from server layers (for example a concurrency limit) holds here.
        if let Err(status) = std::future::poll_fn(|cx| self.svc.poll_ready(cx)).await {
            method_metrics.responded(status.code());
            encode_response(&mut self.out, id, Err(&status), self.config.max_frame_size);
            return;
        }
        if ctx.is_expired() {
            let status =
                Status::deadline_exceeded("the deadline passed before the handler started");
            method_metrics.responded(status.code());
            encode_response(&mut self.out, id, Err(&status), self.config.max_frame_size);
            return;
        }
        let start = Instant::now();
        method_metrics.started(queued(arrival, start));
        let request = ServerRequest {
            service: service_index,
            method: desc,
            body: frame.body,
        };
        let mut call = Box::pin(HandlerCall::new(self.svc.call(request), ctx));
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        if let Poll::Ready(result) = first {
            method_metrics.finished(code_of(&result), start.elapsed());
            encode_response(
                &mut self.out,
                id,
                result.as_ref().map(Bytes::as_ref),
                self.config.max_frame_size,
            );
            return;
        }

        let outbox = Arc::clone(&self.outbox);
        let in_flight = Arc::clone(&self.in_flight);
        let max_frame_size = self.config.max_frame_size;
        let router = Arc::clone(&self.router);
        let (service, method) = (desc.service, desc.method);
        let mut running = self.in_flight.lock();
        let task = tokio::spawn(async move {
            let guard = InFlightGuard {
                in_flight,
                outbox: Arc::clone(&outbox),
                id,
            };
            let result = call.await;
            if let Some(route) = router.route(service, method) {
                route.metrics().finished(code_of(&result), start.elapsed());
            }
            drop(guard);
            outbox.push(|buf| {
                encode_response(buf, id, result.as_ref().map(Bytes::as_ref), max_frame_size)
            });
        });
        running.insert(id, task.abort_handle());
    }

    fn start_drain(&mut self) {
        self.draining = true;
        self.goaway(GoAwayReason::Shutdown, "server is shutting down");
    }

    fn goaway(&mut self, reason: GoAwayReason, message: &str) {
        let goaway = GoAway {
            reason,
            message: truncate(message, 1024),
        };
        let len = goaway.encoded_len();
        protocol::encode_frame_head(&mut self.out, FrameKind::GoAway, self.last_id, len, 0);
        goaway.encode(&mut self.out);
    }
}

/// Writes what is left, half-closes, and discards input for a bounded time, so the peer
/// reads the goaway before the connection goes.
async fn linger_close(mut stream: TcpStream, mut out: BytesMut) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(LINGER, async {
        stream.write_all_buf(&mut out).await?;
        stream.shutdown().await?;
        let mut sink = vec![0u8; 64 * 1024];
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => discarded += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

fn code_of(result: &Result<Bytes, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Encodes a response frame; a body over the frame limit becomes `resource_exhausted`.
fn encode_response(
    buf: &mut BytesMut,
    id: u64,
    result: Result<&[u8], &Status>,
    max_frame_size: usize,
) {
    let too_large;
    let (code, message, body): (u32, &str, &[u8]) = match result {
        Ok(body) if FRAME_HEAD_LEN - 4 + body.len() + 8 <= max_frame_size => (0, "", body),
        Ok(body) => {
            too_large = Status::resource_exhausted(format!(
                "response of {} bytes exceeds the frame limit of {max_frame_size} bytes",
                body.len()
            ));
            (too_large.code().as_u32(), too_large.message(), &[])
        }
        Err(status) => (status.code().as_u32(), status.message(), &[]),
    };
    let header = ResponseHeader {
        code,
        message: truncate(message, MAX_HEADER_LEN - 64),
        admission_business: 0,
        admission_user: 0,
    };
    let header_len = header.encoded_len();
    protocol::encode_frame_head(buf, FrameKind::Response, id, header_len, body.len());
    header.encode(buf);
    buf.put_slice(body);
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
