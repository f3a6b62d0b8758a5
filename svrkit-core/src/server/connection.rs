//! One server connection: preface check, frame handling, admission, dispatch, drain.
//!
//! The driver reads a batch of frames, and each request passes the [`Gate`] (header
//! decoded borrowing from the frame, routed, authorized, owned, admitted by DAGOR) —
//! all before the body is decoded or any task exists, so a shed
//! request costs almost nothing. An admitted request gets a worker slot (when the server
//! has a worker limit; otherwise it starts at once) and its handler is polled once,
//! inline: a handler that finishes on that poll has its response encoded straight into the
//! write buffer, with no task spawned. One that has to wait, or that must queue for a
//! worker, continues in a task and answers through the [`Outbox`]. Everything answered in
//! a batch leaves in one `write`.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::AbortHandle;
use tower_service::Service;

use super::call::{HandlerCall, queued, rpc_span};
use super::gate::{Admitted, Gate};
use super::metrics::{self, MethodMetrics};
use super::recent::CallNote;
use super::router::ServerRequest;
use super::shared::ServerShared;
use crate::context::Context;
use crate::overload::Priority;
use crate::protocol::{
    self, FRAME_HEAD_LEN, Frame, FrameError, FrameKind, GoAway, GoAwayReason, MAX_HEADER_LEN,
    PREFACE_LEN, ResponseHeader,
};
use crate::status::{BoxError, Code, MAX_DETAILS_LEN, Status};
use crate::transport::{Link, Outbox, ReadOutcome};

/// How long a connection closed for a protocol error keeps reading (and discarding) so
/// its goaway reaches the peer instead of being destroyed by a TCP reset.
const LINGER: Duration = Duration::from_secs(1);
/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many bytes are discarded while lingering.
const LINGER_BYTES: usize = 4 << 20;

/// Counts a connection for as long as it lives.
struct Counted<'a>(&'a ServerShared);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a connection's driver shares with the tasks of its slow handlers.
#[derive(Debug)]
struct ConnShared {
    server: Arc<ServerShared>,
    outbox: Outbox,
    /// Requests running in tasks, with their abort handles (`None` only while the driver
    /// spawns the task).
    in_flight: Mutex<HashMap<u64, Option<AbortHandle>>>,
}

impl ConnShared {
    fn in_flight(&self) -> MutexGuard<'_, HashMap<u64, Option<AbortHandle>>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the response of a task's request and leaves the in-flight table, in one
    /// step as the driver sees it (it reads the table before it drains the outbox): a
    /// driver that finds the table empty also finds the response.
    fn respond(&self, id: u64, result: Result<&[u8], &Status>) {
        let level = self.server.level();
        let max = self.server.max_frame_size;
        let mut running = self.in_flight();
        running.remove(&id);
        self.outbox
            .push(|buf| encode_response(buf, id, result, max, level));
    }
}

/// Removes a spawned request from the in-flight table if it ended without responding
/// (aborted, or its handler panicked), and then wakes the driver, which may be draining
/// and waiting for the last one. A response already did both.
struct InFlightGuard {
    conn: Arc<ConnShared>,
    id: u64,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let removed = self.conn.in_flight().remove(&self.id).is_some();
        if removed {
            self.conn.outbox.push(|_| {});
        }
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

struct Driver<S> {
    svc: S,
    peer: SocketAddr,
    /// The client's service name, verified by mutual TLS.
    identity: Option<Arc<str>>,
    out: BytesMut,
    preface_ok: bool,
    draining: bool,
    last_id: u64,
    /// The latest clock reading of this batch of frames: when the bytes were read, then
    /// when each handler that finished inline ended. The next request in the batch starts
    /// then, so a request costs one clock read, not three.
    now: Instant,
    /// The caller name of the last request, shared by the contexts of the next ones from
    /// the same caller (a connection almost always carries one caller).
    last_caller: Option<Arc<str>>,
}

/// Serves one accepted connection until the peer leaves, a protocol error, or the end of
/// a graceful drain after `shutdown` turns true.
pub(crate) async fn serve_connection<S>(
    stream: TcpStream,
    peer: SocketAddr,
    svc: S,
    server: Arc<ServerShared>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<ServerRequest, Response = Bytes> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "set_nodelay failed");
    }
    let (mut link, grpc) = match &server.tls {
        None => {
            // svrkit's preface starts with `S`, HTTP/2's with `P` (see `crate::grpc`).
            let Some(first) = first_byte(&stream, &mut shutdown).await else {
                return;
            };
            (Link::plain(stream), first == b'P')
        }
        Some(tls) => match Link::server(stream, tls, HANDSHAKE_TIMEOUT).await {
            Ok(link) => {
                let grpc = link.negotiated_h2();
                (link, grpc)
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                metrics::rejected("tls_handshake");
                return;
            }
        },
    };
    let identity = server
        .tls
        .as_ref()
        .zip(link.peer_certificate())
        .and_then(|(tls, der)| tls.peer_identity(der))
        .map(Arc::<str>::from);
    server
        .connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let counted_server = Arc::clone(&server);
    let _counted = Counted(&counted_server);
    if grpc {
        let info = super::grpc::ConnInfo {
            server,
            identity,
            peer,
            shutdown,
            buffered: Arc::default(),
        };
        return super::grpc::serve_grpc(link, info, svc).await;
    }
    let conn = Arc::new(ConnShared {
        server,
        outbox: Outbox::default(),
        in_flight: Mutex::default(),
    });
    let mut d = Driver {
        svc,
        peer,
        identity,
        out: BytesMut::with_capacity(8 * 1024),
        preface_ok: false,
        now: Instant::now(),
        last_caller: None,
        draining: false,
        last_id: 0,
    };
    let mut rbuf = BytesMut::new();
    if *shutdown.borrow_and_update() {
        d.start_drain();
    }
    let end = loop {
        // Read before the outbox is drained: a task leaves the table and queues its
        // response in one step, so an empty table means every response is queued.
        let idle = conn.in_flight().is_empty();
        conn.outbox.drain_into(&mut d.out);
        if let Err(e) = link.flush(&mut d.out) {
            break End::Io(e);
        }
        let unsent = !d.out.is_empty() || link.wants_write();
        if d.draining && !unsent && idle {
            break End::Done;
        }
        tokio::select! {
            changed = shutdown.changed(), if !d.draining => {
                if changed.is_err() || *shutdown.borrow() {
                    d.start_drain();
                }
            }
            ready = link.readable() => {
                if let Err(e) = ready {
                    break End::Io(e);
                }
                match link.read_some(&mut rbuf) {
                    Ok(ReadOutcome::Data) => {}
                    Ok(ReadOutcome::WouldBlock) => continue,
                    Ok(ReadOutcome::Eof) => break End::Done,
                    Err(e) => break End::Io(e),
                }
                if let Err((reason, message)) = d.handle_input(&conn, &mut rbuf).await {
                    tracing::debug!(peer = %d.peer, ?reason, %message, "closing svrkit connection");
                    metrics::rejected(match reason {
                        GoAwayReason::FrameTooLarge => "frame_too_large",
                        _ => "protocol_error",
                    });
                    d.goaway(reason, &message);
                    conn.outbox.drain_into(&mut d.out);
                    break End::Linger;
                }
            }
            _ = conn.outbox.notified(), if !unsent => {
                // A handler task that answers wakes this task, which tokio then runs
                // before the other ready ones (its LIFO slot): other handlers answering
                // at the same moment would each get a write of their own. Letting them
                // run first sends their answers in one write.
                if !conn.in_flight().is_empty() {
                    tokio::task::yield_now().await;
                }
            }
            ready = link.writable(), if unsent => {
                if let Err(e) = ready {
                    break End::Io(e);
                }
            }
        }
    };
    match end {
        End::Io(e) => tracing::debug!(peer = %d.peer, error = %e, "svrkit connection I/O error"),
        End::Linger => linger_close(link, d.out).await,
        End::Done => {}
    }
    // Nobody can receive the answers any more: stop the remaining handlers.
    for handle in conn.in_flight().drain().filter_map(|(_, handle)| handle) {
        handle.abort();
    }
}

impl<S> Driver<S>
where
    S: Service<ServerRequest, Response = Bytes> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    /// Handles every complete frame in `rbuf`. An error is fatal to the connection and
    /// carries the goaway to send.
    async fn handle_input(
        &mut self,
        conn: &Arc<ConnShared>,
        rbuf: &mut BytesMut,
    ) -> Result<(), (GoAwayReason, String)> {
        let arrival = Instant::now();
        self.now = arrival;
        if !self.preface_ok {
            let Some(preface) = rbuf.first_chunk::<PREFACE_LEN>() else {
                return Ok(());
            };
            if crate::tls::looks_like_tls(preface) {
                return Err((
                    GoAwayReason::ProtocolError,
                    "this server speaks plain svrkit, not TLS".to_string(),
                ));
            }
            protocol::check_preface(preface)
                .map_err(|e| (GoAwayReason::ProtocolError, e.to_string()))?;
            let _ = rbuf.split_to(PREFACE_LEN);
            self.preface_ok = true;
        }
        let max_frame_size = conn.server.max_frame_size;
        loop {
            let frame = match protocol::decode_frame(rbuf, max_frame_size) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e @ FrameError::TooLarge { .. }) => {
                    return Err((GoAwayReason::FrameTooLarge, e.to_string()));
                }
                Err(e) => return Err((GoAwayReason::ProtocolError, e.to_string())),
            };
            match frame.kind {
                FrameKind::Request => self.on_request(conn, frame, arrival).await,
                FrameKind::Cancel => {
                    if let Some(Some(handle)) = conn.in_flight().remove(&frame.id) {
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

    /// Encodes a response straight into this batch's write buffer.
    fn respond(&mut self, conn: &ConnShared, id: u64, result: Result<&[u8], &Status>) {
        let level = conn.server.level();
        encode_response(&mut self.out, id, result, conn.server.max_frame_size, level);
    }

    /// A request: through the [`Gate`], then dispatched (or answered with the refusal).
    async fn on_request(&mut self, conn: &Arc<ConnShared>, frame: Frame, arrival: Instant) {
        let id = frame.id;
        self.last_id = self.last_id.max(id);
        let gate = Gate {
            server: &conn.server,
            identity: self.identity.as_deref(),
            draining: self.draining,
        };
        let admitted = match gate.pass(&frame.header, arrival) {
            Ok(admitted) => admitted,
            Err(refused) => {
                refused.count(crate::grpc::Protocol::Svrkit);
                self.respond(conn, id, Err(&refused.status));
                return;
            }
        };
        let Admitted {
            header,
            route,
            priority,
        } = admitted;
        let server = &*conn.server;
        let desc = route.desc;
        let method_metrics = route.metrics();
        let (business, user) = (priority.business, priority.user);
        let caller = match &self.last_caller {
            Some(last) if **last == *header.caller => Some(Arc::clone(last)),
            _ if header.caller.is_empty() => None,
            _ => {
                let caller: Arc<str> = Arc::from(header.caller);
                self.last_caller = Some(Arc::clone(&caller));
                Some(caller)
            }
        };
        let declared = caller.is_some();
        let ctx = Context::from_request_by(&header, arrival, desc.service, caller)
            .verified(self.identity.clone())
            .with_business_priority(business)
            .with_user_priority(user);
        let note = CallNote::of(&ctx, arrival, crate::grpc::Protocol::Svrkit);

        // Back-pressure from server layers holds here.
        let mut waited = false;
        let ready = std::future::poll_fn(|cx| {
            let poll = self.svc.poll_ready(cx);
            waited |= poll.is_pending();
            poll
        })
        .await
        .map_err(|error| Status::from_error(error.into()));
        if waited {
            self.now = Instant::now();
        }
        if let Err(status) = ready {
            method_metrics.responded(status.code());
            self.respond(conn, id, Err(&status));
            return;
        }
        let start = self.now;
        if ctx.deadline().is_some_and(|deadline| start >= deadline) {
            method_metrics.responded(Code::DeadlineExceeded);
            let status =
                Status::deadline_exceeded("the deadline passed before the handler started");
            self.respond(conn, id, Err(&status));
            return;
        }
        let deadline = ctx.deadline();
        let span = rpc_span(&ctx, desc.method, self.peer, crate::grpc::Protocol::Svrkit);
        let request = ServerRequest {
            service: route.service,
            method: desc,
            body: frame.body,
            ctx,
            peer: self.peer,
        };
        let handler = span.in_scope(|| self.svc.call(request));
        let handler = async move { handler.await.map_err(|e| Status::from_error(e.into())) };
        let permit = match &server.workers {
            None => None,
            Some(workers) => match Arc::clone(workers).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    // Every worker is busy: wait in the queue, in a task.
                    let queued = Queued {
                        conn: Arc::clone(conn),
                        workers: Arc::clone(workers),
                        id,
                        priority,
                        arrival,
                        method_metrics: Arc::clone(method_metrics),
                        note,
                        caller: self.record_caller(declared),
                        desc,
                    };
                    let call = HandlerCall::new(handler, span, deadline);
                    spawn_tracked(conn, id, queue_for_worker(queued, call));
                    return;
                }
            },
        };

        let queued = queued(arrival, start);
        if let Some(admission) = &server.admission {
            admission.started(queued);
        }
        method_metrics.started(queued);
        let mut call = Box::pin(HandlerCall::new(handler, span, deadline));
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        if let Poll::Ready(result) = first {
            self.now = Instant::now();
            let code = code_of(&result);
            method_metrics.finished(code, self.now.saturating_duration_since(start));
            let caller = match &self.identity {
                Some(identity) => Some(&**identity),
                None if declared => self.last_caller.as_deref(),
                None => None,
            };
            server
                .recent
                .observe(&note, desc.service, desc.method, caller, code, self.now);
            self.respond(conn, id, result.as_ref().map(Bytes::as_ref));
            return;
        }
        let task_conn = Arc::clone(conn);
        let task_metrics = Arc::clone(method_metrics);
        let caller = self.record_caller(declared);
        spawn_tracked(conn, id, async move {
            let _permit = permit;
            let result = call.await;
            let code = code_of(&result);
            let end = Instant::now();
            task_metrics.finished(code, end.saturating_duration_since(start));
            task_conn.server.recent.observe(
                &note,
                desc.service,
                desc.method,
                caller.as_deref(),
                code,
                end,
            );
            task_conn.respond(id, result.as_ref().map(Bytes::as_ref));
        });
    }

    /// The caller a recorded call names: the verified identity, else the declared name
    /// of this request (the connection's last).
    fn record_caller(&self, declared: bool) -> Option<Arc<str>> {
        match &self.identity {
            Some(identity) => Some(Arc::clone(identity)),
            None if declared => self.last_caller.clone(),
            None => None,
        }
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

/// The first byte the client sent, without taking it; `None` when the client leaves or
/// the server shuts down first.
async fn first_byte(stream: &TcpStream, shutdown: &mut watch::Receiver<bool>) -> Option<u8> {
    if *shutdown.borrow_and_update() {
        return None;
    }
    let mut byte = [0u8; 1];
    loop {
        tokio::select! {
            peeked = stream.peek(&mut byte) => {
                return match peeked {
                    Ok(1) => Some(byte[0]),
                    _ => None,
                };
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return None;
                }
            }
        }
    }
}

/// Runs `task` for request `id`, cancellable through the connection's in-flight table.
fn spawn_tracked(conn: &Arc<ConnShared>, id: u64, task: impl Future<Output = ()> + Send + 'static) {
    let guard = InFlightGuard {
        conn: Arc::clone(conn),
        id,
    };
    // Listed before it can finish, without holding the table while spawning (which may
    // wake another worker, whose handlers would then wait on the table to respond).
    conn.in_flight().insert(id, None);
    let handle = tokio::spawn(async move {
        let _guard = guard;
        task.await;
    });
    // Cancellable from here, unless it already finished and left the table. Only this
    // driver reads handles, and only after this returns.
    if let Some(slot) = conn.in_flight().get_mut(&id) {
        *slot = Some(handle.abort_handle());
    }
}

/// A request waiting for a worker.
struct Queued {
    conn: Arc<ConnShared>,
    workers: Arc<Semaphore>,
    id: u64,
    priority: Priority,
    arrival: Instant,
    method_metrics: Arc<MethodMetrics>,
    note: CallNote,
    caller: Option<Arc<str>>,
    desc: &'static crate::method::MethodDesc,
}

/// Waits for a worker (at most until the deadline), then runs the handler — unless the
/// admission level tightened while it waited: a request that would now be refused is
/// refused at the head of the queue too, so a backlog admitted before the server noticed
/// its overload drains at once instead of running late.
async fn queue_for_worker<F>(q: Queued, call: HandlerCall<F>)
where
    F: Future<Output = Result<Bytes, Status>> + Send,
{
    let permit: Option<OwnedSemaphorePermit> = match call.deadline() {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), q.workers.acquire_owned())
            .await
            .ok()
            .and_then(Result::ok),
        None => q.workers.acquire_owned().await.ok(),
    };
    let Some(_permit) = permit else {
        q.method_metrics.responded(Code::DeadlineExceeded);
        let status = Status::deadline_exceeded("the deadline passed while waiting for a worker");
        q.conn.respond(q.id, Err(&status));
        return;
    };
    if let Some(admission) = &q.conn.server.admission
        && !admission.still_admitted(q.priority)
    {
        q.method_metrics.responded(Code::Overloaded);
        let (b, u) = admission.wire_level();
        let status = Status::overloaded(format!(
            "shed by admission control while queued: priority ({}, {}) is below the level ({b}, {u})",
            q.priority.business, q.priority.user
        ));
        q.conn.respond(q.id, Err(&status));
        return;
    }
    let start = Instant::now();
    let queued = queued(q.arrival, start);
    if let Some(admission) = &q.conn.server.admission {
        admission.started(queued);
    }
    q.method_metrics.started(queued);
    let result = call.await;
    let code = code_of(&result);
    let end = Instant::now();
    q.method_metrics
        .finished(code, end.saturating_duration_since(start));
    q.conn.server.recent.observe(
        &q.note,
        q.desc.service,
        q.desc.method,
        q.caller.as_deref(),
        code,
        end,
    );
    q.conn.respond(q.id, result.as_ref().map(Bytes::as_ref));
}

/// Writes what is left, half-closes, and discards input for a bounded time, so the peer
/// reads the goaway before the connection goes.
async fn linger_close(link: Link, out: BytesMut) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(LINGER, async {
        let mut stream = link.finish(out).await?;
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
    (admission_business, admission_user): (u32, u32),
) {
    let too_large;
    // A "not mine" passed on from a call of the handler's own is not about this request.
    let passed_on = result.is_err_and(Status::is_passed_on);
    let not_processed = !passed_on && result.is_err_and(Status::is_not_mine);
    let (code, message, reason, details, body): (u32, &str, &str, &[u8], &[u8]) = match result {
        Ok(body) if FRAME_HEAD_LEN - 4 + body.len() + 16 <= max_frame_size => {
            (0, "", "", &[], body)
        }
        Ok(body) => {
            too_large = Status::resource_exhausted(format!(
                "response of {} bytes exceeds the frame limit of {max_frame_size} bytes",
                body.len()
            ));
            (too_large.code().as_u32(), too_large.message(), "", &[], &[])
        }
        Err(status) => {
            let details: &[u8] = match status.details().len() {
                len if len > MAX_DETAILS_LEN => {
                    tracing::warn!(
                        len,
                        max = MAX_DETAILS_LEN,
                        "status details over the limit are not sent"
                    );
                    &[]
                }
                _ => status.details(),
            };
            let reason = status.reason().unwrap_or("");
            (
                status.code().as_u32(),
                status.message(),
                reason,
                details,
                &[],
            )
        }
    };
    let header = ResponseHeader {
        code,
        message: truncate(message, MAX_HEADER_LEN - 256 - MAX_DETAILS_LEN),
        admission_business,
        admission_user,
        not_processed,
        passed_on,
        reason,
        details,
    };
    let header_len = header.encoded_len();
    protocol::encode_frame_head(buf, FrameKind::Response, id, header_len, body.len());
    header.encode(buf);
    buf.put_slice(body);
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
