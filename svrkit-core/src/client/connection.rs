//! One multiplexed client connection: many calls in flight, answered in any order.
//!
//! Callers encode their request frame straight into the connection's send buffer under
//! one short lock (which also assigns the request id and registers the reply slot), then
//! wait on a oneshot. The driver task writes the buffer, reads responses and completes the
//! slots. A caller that gives up (timeout, or its future dropped) removes its slot and
//! queues a cancel frame, so the server stops the handler.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use tokio::sync::{Notify, oneshot};

use crate::protocol::{
    self, Frame, FrameKind, GoAway, GoAwayReason, MAX_HEADER_LEN, PREFACE, RequestHeader,
};
use crate::status::Status;
use crate::transport::{Link, ReadOutcome};

/// The reply slot of one call.
type Reply = oneshot::Sender<Result<Frame, Status>>;

/// A call waiting for its response.
#[derive(Debug)]
struct Pending {
    reply: Reply,
    deadline: Option<Instant>,
}

/// How often the driver looks for calls past their deadline while any are pending.
/// Deadlines are enforced by the connection, not by a timer per call: one periodic
/// check replaces a timer-wheel insert and removal on every call, at the same 1 ms
/// granularity tokio's timers have.
const DEADLINE_SWEEP: std::time::Duration = std::time::Duration::from_millis(1);

/// How long a connection with calls in flight may hear nothing from the server before
/// the client sends a PING; see [`PROBE_TIMEOUT`].
const PROBE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// How long after that PING the connection is given up when still nothing came back: a
/// server cut off from the network answers nothing and resets nothing, and without the
/// probe its calls would each wait out their deadline, and the next ones too.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A client connection shared by every caller using it.
#[derive(Debug)]
pub(crate) struct Connection {
    shared: Mutex<Shared>,
    /// Mirrors `state == Open`, so choosing a connection takes no lock.
    open: AtomicBool,
    notify: Notify,
    max_frame_size: usize,
    peer: SocketAddr,
}

#[derive(Debug)]
struct Shared {
    out: BytesMut,
    next_id: u64,
    pending: HashMap<u64, Pending, BuildHasherDefault<IdHasher>>,
    state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Open,
    /// The server sent goaway; calls up to `last_id` will still be answered.
    Draining {
        last_id: u64,
    },
    /// Nothing more will be sent or received.
    Closed,
}

impl Connection {
    /// Connects, queues the preface and starts the driver task.
    pub(crate) async fn connect(
        peer: SocketAddr,
        max_frame_size: usize,
        tls: Option<&crate::tls::ClientTls>,
    ) -> std::io::Result<Arc<Connection>> {
        // The caller bounds the whole connect too (its connect timeout).
        let link = Link::dial(peer, tls).await?;
        let mut out = BytesMut::with_capacity(8 * 1024);
        out.put_slice(&PREFACE);
        let conn = Arc::new(Connection {
            shared: Mutex::new(Shared {
                out,
                next_id: 1,
                pending: HashMap::default(),
                state: State::Open,
            }),
            open: AtomicBool::new(true),
            notify: Notify::new(),
            max_frame_size,
            peer,
        });
        tokio::spawn(drive(Arc::clone(&conn), link));
        Ok(conn)
    }

    /// The server's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// True while new calls may start on this connection.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Moves the connection's state (keeping the lock-free `open` flag in step).
    fn set_state(&self, shared: &mut Shared, state: State) {
        self.open.store(state == State::Open, Ordering::Release);
        shared.state = state;
    }

    /// Calls in flight on this connection.
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    /// Stops the connection: pending calls fail and the driver exits.
    pub(crate) fn close(&self) {
        self.fail_pending(|_| true, || Status::unavailable("channel closed"));
        let mut shared = self.lock();
        self.set_state(&mut shared, State::Closed);
        drop(shared);
        self.notify.notify_one();
    }

    /// Sends one request and waits for its response frame (or the deadline).
    pub(crate) async fn call(
        &self,
        header: &RequestHeader<'_>,
        body: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Frame, Status> {
        let header_len = header.encoded_len();
        if header_len > MAX_HEADER_LEN {
            return Err(Status::invalid_argument(format!(
                "request header of {header_len} bytes exceeds {MAX_HEADER_LEN}"
            ))
            .with_not_processed());
        }
        let frame_len = protocol::FRAME_HEAD_LEN - 4 + header_len + body.len();
        if frame_len > self.max_frame_size {
            return Err(Status::resource_exhausted(format!(
                "request of {frame_len} bytes exceeds the frame limit of {} bytes",
                self.max_frame_size
            ))
            .with_not_processed());
        }
        let (tx, rx) = oneshot::channel();
        let (id, first) = {
            let mut shared = self.lock();
            if shared.state != State::Open {
                return Err(
                    Status::unavailable(format!("connection to {} is closing", self.peer))
                        .with_not_processed(),
                );
            }
            let id = shared.next_id;
            shared.next_id += 1;
            // Only the frame that finds the buffer empty wakes the driver: whoever
            // queued the frames before this one has woken it, and it takes the whole
            // buffer at once.
            let first = shared.out.is_empty();
            protocol::encode_frame_head(
                &mut shared.out,
                FrameKind::Request,
                id,
                header_len,
                body.len(),
            );
            header.encode(&mut shared.out);
            shared.out.put_slice(body);
            shared.pending.insert(
                id,
                Pending {
                    reply: tx,
                    deadline,
                },
            );
            (id, first)
        };
        if first {
            self.notify.notify_one();
        }

        let mut guard = CancelOnDrop {
            conn: self,
            id,
            armed: true,
        };
        // The driver answers with the response, or with deadline_exceeded (DEADLINE_SWEEP).
        let reply = rx.await;
        guard.armed = false;
        reply.unwrap_or_else(|_| {
            Err(Status::unavailable(format!(
                "connection to {} closed",
                self.peer
            )))
        })
    }

    /// Fails every pending call past its deadline and tells the server to stop them.
    /// Whether any expired.
    fn expire(&self, now: Instant, out: &mut BytesMut) -> bool {
        let expired: Vec<(u64, Pending)> = {
            let mut shared = self.lock();
            let ids: Vec<u64> = shared
                .pending
                .iter()
                .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| shared.pending.remove(&id).map(|p| (id, p)))
                .collect()
        };
        let any = !expired.is_empty();
        for (id, pending) in expired {
            protocol::encode_frame_head(out, FrameKind::Cancel, id, 0, 0);
            let _ = pending.reply.send(Err(Status::deadline_exceeded(format!(
                "no response from {} before the deadline",
                self.peer
            ))));
        }
        any
    }

    /// Fails (and forgets) every pending call whose id matches.
    fn fail_pending(&self, matches: impl Fn(u64) -> bool, status: impl Fn() -> Status) {
        let failed: Vec<Pending> = {
            let mut shared = self.lock();
            let ids: Vec<u64> = shared
                .pending
                .keys()
                .copied()
                .filter(|id| matches(*id))
                .collect();
            ids.iter()
                .filter_map(|id| shared.pending.remove(id))
                .collect()
        };
        for pending in failed {
            let _ = pending.reply.send(Err(status()));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Every critical section leaves `Shared` consistent, so a poisoned lock is usable.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a call's slot and tells the server to stop, unless the call completed.
struct CancelOnDrop<'a> {
    conn: &'a Connection,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut shared = self.conn.lock();
        if shared.pending.remove(&self.id).is_some() && shared.state != State::Closed {
            let first = shared.out.is_empty();
            protocol::encode_frame_head(&mut shared.out, FrameKind::Cancel, self.id, 0, 0);
            drop(shared);
            if first {
                self.conn.notify.notify_one();
            }
        }
    }
}

/// The connection's driver: writes queued frames, reads and routes responses.
async fn drive(conn: Arc<Connection>, mut link: Link) {
    let mut rbuf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut batch = Batch::default();
    let mut sweep = tokio::time::interval(DEADLINE_SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the server was last heard from (or the connection last had nothing to hear,
    // no call in flight), the PING sent since, if any, and whether anything was read
    // since the last sweep (the sweep reads the clock, not every read).
    let mut heard = Instant::now();
    let mut probe: Option<Instant> = None;
    let mut fresh = true;
    // Calls expired unanswered since the server was last heard from: the silence goes on
    // through the moments with no call in flight (calls with short deadlines would
    // otherwise never leave a second of silence to notice).
    let mut unanswered = false;
    let mut silent = false;
    let reason = loop {
        let pending;
        {
            let mut shared = conn.lock();
            pending = shared.pending.len();
            if pending == 0 && !unanswered {
                fresh = true;
            }
            if out.is_empty() {
                std::mem::swap(&mut shared.out, &mut out);
            }
            let finished = match shared.state {
                State::Closed => true,
                State::Draining { .. } => shared.pending.is_empty(),
                State::Open => false,
            };
            if finished && shared.out.is_empty() {
                drop(shared);
                let _ = link.flush(&mut out);
                break "closed".to_string();
            }
        }
        if let Err(e) = link.flush(&mut out) {
            break format!("write failed: {e}");
        }
        let unsent = !out.is_empty() || link.wants_write();
        tokio::select! {
            ready = link.readable() => {
                if let Err(e) = ready {
                    break format!("read failed: {e}");
                }
                match link.read_some(&mut rbuf) {
                    Ok(ReadOutcome::Data) => (fresh, unanswered) = (true, false),
                    Ok(ReadOutcome::WouldBlock) => continue,
                    Ok(ReadOutcome::Eof) => break "closed by the server".to_string(),
                    Err(e) => break format!("read failed: {e}"),
                }
                if let Err(e) = handle_frames(&conn, &mut rbuf, &mut out, &mut batch) {
                    break e;
                }
            }
            _ = conn.notify.notified(), if !unsent => {
                // The first caller to queue a request wakes this task, and tokio runs a
                // task just woken before the others that are ready (its LIFO slot): the
                // other callers woken by the last batch of responses would each get a
                // write of their own. Letting them run first sends them in one write.
                // A lone call has nobody to wait for (the calls in flight are counted
                // before it came, which spares taking the lock again).
                if pending > 0 {
                    tokio::task::yield_now().await;
                }
            }
            _ = sweep.tick(), if pending > 0 => {
                let now = Instant::now();
                if conn.expire(now, &mut out) {
                    unanswered = true;
                }
                if fresh {
                    (heard, probe, fresh) = (now, None, false);
                }
                match probe {
                    Some(sent) if now.saturating_duration_since(sent) >= PROBE_TIMEOUT => {
                        silent = true;
                        break format!(
                            "no answer to a ping within {PROBE_TIMEOUT:?} after {PROBE_AFTER:?} of silence"
                        );
                    }
                    None if now.saturating_duration_since(heard) >= PROBE_AFTER => {
                        protocol::encode_frame_head(&mut out, FrameKind::Ping, 0, 0, 0);
                        probe = Some(now);
                    }
                    _ => {}
                }
            }
            ready = link.writable(), if unsent => {
                if let Err(e) = ready {
                    break format!("write failed: {e}");
                }
            }
        }
    };
    tracing::debug!(peer = %conn.peer, %reason, "svrkit client connection ended");
    {
        let mut shared = conn.lock();
        conn.set_state(&mut shared, State::Closed);
    }
    conn.fail_pending(
        |_| true,
        || {
            let status = Status::unavailable(format!("connection to {} lost: {reason}", conn.peer));
            if silent {
                status.with_reason(crate::client::PEER_SILENT)
            } else {
                status
            }
        },
    );
}

/// Handles every complete frame in `rbuf`; an error ends the connection.
///
/// The responses of one read are matched to their calls under one lock, and answered
/// after it is released: the callers queueing requests take the same lock. `batch` is
/// the driver's, reused from read to read (left empty).
fn handle_frames(
    conn: &Connection,
    rbuf: &mut BytesMut,
    out: &mut BytesMut,
    batch: &mut Batch,
) -> Result<(), String> {
    let result = route_frames(conn, rbuf, out, &mut batch.responses);
    if !batch.responses.is_empty() {
        {
            let mut shared = conn.lock();
            for frame in batch.responses.drain(..) {
                if let Some(pending) = shared.pending.remove(&frame.id) {
                    batch.replies.push((pending.reply, frame));
                }
            }
        }
        for (reply, frame) in batch.replies.drain(..) {
            let _ = reply.send(Ok(frame));
        }
    }
    result
}

/// The responses of one read, and the calls they answer.
#[derive(Default)]
struct Batch {
    responses: Vec<Frame>,
    replies: Vec<(Reply, Frame)>,
}

/// Decodes every complete frame in `rbuf`, handling all but responses, which are left in
/// `responses` (in order) for [`handle_frames`] to route.
fn route_frames(
    conn: &Connection,
    rbuf: &mut BytesMut,
    out: &mut BytesMut,
    responses: &mut Vec<Frame>,
) -> Result<(), String> {
    loop {
        let frame = match protocol::decode_frame(rbuf, conn.max_frame_size) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(_) if crate::tls::looks_like_tls(rbuf) => {
                return Err(
                    "the server speaks TLS: give the channel mutual TLS credentials \
                     (svrkit::tls, or SVRKIT_TLS_* through svrkit::launch)"
                        .to_string(),
                );
            }
            Err(e) => return Err(format!("bad frame from server: {e}")),
        };
        match frame.kind {
            FrameKind::Response => responses.push(frame),
            FrameKind::Ping => {
                protocol::encode_frame_head(out, FrameKind::Pong, frame.id, 0, 0);
            }
            FrameKind::Pong => {}
            FrameKind::GoAway => {
                let goaway = GoAway::decode(&frame.header)
                    .map_err(|e| format!("bad goaway from server: {e}"))?;
                let last_id = frame.id;
                tracing::debug!(peer = %conn.peer, reason = ?goaway.reason, message = goaway.message, last_id, "goaway");
                if goaway.reason != GoAwayReason::Shutdown {
                    return Err(format!(
                        "server sent goaway ({:?}): {}",
                        goaway.reason, goaway.message
                    ));
                }
                {
                    let mut shared = conn.lock();
                    if shared.state == State::Open {
                        conn.set_state(&mut shared, State::Draining { last_id });
                    }
                }
                conn.fail_pending(
                    |id| id > last_id,
                    || Status::unavailable("server is shutting down").with_not_processed(),
                );
            }
            FrameKind::Request | FrameKind::Cancel => {
                return Err(format!("server sent a {:?} frame", frame.kind));
            }
        }
    }
}

/// Spreads sequential request ids over the hash table (Fibonacci hashing).
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
