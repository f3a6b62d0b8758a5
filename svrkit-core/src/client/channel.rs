//! `Channel`: the client side of svrkit, to one address or a set of them.
//!
//! A channel keeps a small pool of multiplexed connections per address, opens them on
//! first use, and reopens them after a failure with exponential back-off (while an address
//! is backing off, calls go to the others, or fail fast with `unavailable` when none is
//! left). It implements `tower::Service<RpcRequest>`, so any tower layer composes with it.
//! Cloning is cheap: clones share the pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use super::connection::Connection;
use super::{RpcRequest, RpcResponse};
use crate::context::{Context, new_id};
use crate::overload::{
    ADMIT_ALL, DEFAULT_BUSINESS_PRIORITY, Priority, level_from_wire, user_priority,
};
use crate::protocol::{DEFAULT_MAX_FRAME_SIZE, RequestHeader, ResponseHeader};
use crate::status::{Code, Status};

/// The timeout of a call when neither the context, the call nor the IDL sets one
/// (WeChat's default RPC timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long an instance's admission level, learnt from its responses, is used to refuse
/// requests locally (one DAGOR window), counted from when the level last changed. After
/// that the client sends everything again until a response tells it the level anew.
pub const ADMISSION_LEVEL_TTL: Duration = Duration::from_secs(1);

/// Settings of a [`Channel`].
#[derive(Debug, Clone)]
pub struct ChannelBuilder {
    connect_timeout: Duration,
    default_timeout: Duration,
    max_frame_size: usize,
    connections_per_address: usize,
    backoff_base: Duration,
    backoff_max: Duration,
    caller: &'static str,
}

impl Default for ChannelBuilder {
    fn default() -> Self {
        ChannelBuilder {
            connect_timeout: Duration::from_secs(1),
            default_timeout: DEFAULT_TIMEOUT,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            connections_per_address: 1,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            caller: "",
        }
    }
}

impl ChannelBuilder {
    /// How long one connection attempt may take (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The timeout of calls that set none anywhere else (default 500 ms).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// The largest frame sent or accepted (default 16 MiB).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Connections kept to each address (default 1; each one multiplexes any number of
    /// calls, more spread the work over more server threads).
    pub fn connections_per_address(mut self, n: usize) -> Self {
        self.connections_per_address = n.max(1);
        self
    }

    /// First and longest pause before reconnecting to a failed address (50 ms, 5 s).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }

    /// The service name this channel reports as caller outside of any handler.
    pub fn caller(mut self, name: &'static str) -> Self {
        self.caller = name;
        self
    }

    /// A channel to `addrs` that connects on first use.
    pub fn lazy(self, addrs: impl IntoIterator<Item = SocketAddr>) -> Channel {
        let slots = self.connections_per_address;
        let endpoints = addrs
            .into_iter()
            .map(|addr| Endpoint {
                addr,
                slots: (0..slots).map(|_| Slot::default()).collect(),
                next_slot: AtomicUsize::new(0),
                level: AtomicU32::new(ADMIT_ALL),
                level_at_ms: AtomicU64::new(0),
            })
            .collect();
        Channel {
            inner: Arc::new(ChannelInner {
                epoch: Instant::now(),
                endpoints,
                next: AtomicUsize::new(0),
                config: self,
            }),
        }
    }

    /// A channel to `addr`, connected before this returns.
    pub async fn connect(self, addr: SocketAddr) -> Result<Channel, Status> {
        let channel = self.lazy([addr]);
        let deadline = Instant::now() + channel.inner.config.connect_timeout;
        channel.inner.connection(deadline, 0).await?;
        Ok(channel)
    }
}

/// A client channel to one or more server addresses.
#[derive(Debug, Clone)]
pub struct Channel {
    inner: Arc<ChannelInner>,
}

#[derive(Debug)]
struct ChannelInner {
    epoch: Instant,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    config: ChannelBuilder,
}

#[derive(Debug)]
struct Endpoint {
    addr: SocketAddr,
    slots: Vec<Slot>,
    next_slot: AtomicUsize,
    /// The instance's admission level from its latest response (collaborative shedding).
    level: AtomicU32,
    /// When `level` was learnt, in ms since the channel's epoch.
    level_at_ms: AtomicU64,
}

impl Endpoint {
    /// True when the instance's recent level says it would shed `priority`.
    fn would_shed(&self, priority: u32, now_ms: impl FnOnce() -> u64) -> bool {
        let level = self.level.load(Ordering::Relaxed);
        level != ADMIT_ALL
            && priority > level
            && now_ms().saturating_sub(self.level_at_ms.load(Ordering::Relaxed))
                < ADMISSION_LEVEL_TTL.as_millis() as u64
    }

    /// Remembers the level a response carried. The TTL runs from when the level last
    /// changed, not from every response: an instance that keeps saying the same level is
    /// sent the full demand again once per TTL, so it sees what its callers were refusing
    /// for it and can relax. The common case — it admits everything and said so before —
    /// costs one load and no clock read.
    fn learn(&self, business: u32, user: u32, now_ms: impl FnOnce() -> u64) {
        let level = level_from_wire(business, user);
        if level != self.level.load(Ordering::Relaxed) {
            self.level.store(level, Ordering::Relaxed);
            self.level_at_ms.store(now_ms(), Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
    /// Held while connecting, so concurrent callers share one attempt.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct SlotState {
    conn: Option<Arc<Connection>>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open connection, if there is one.
    fn open(&self) -> Option<Arc<Connection>> {
        self.lock().conn.as_ref().filter(|c| c.is_open()).cloned()
    }

    /// When the slot may next try to connect (`None`: now).
    fn backing_off(&self, now: Instant) -> Option<String> {
        let state = self.lock();
        match state.retry_at {
            Some(at) if at > now => Some(state.last_error.clone()),
            _ => None,
        }
    }
}

impl Channel {
    /// The builder, for settings other than the defaults.
    pub fn builder() -> ChannelBuilder {
        ChannelBuilder::default()
    }

    /// A channel to `addrs` with default settings that connects on first use.
    pub fn lazy(addrs: impl IntoIterator<Item = SocketAddr>) -> Channel {
        ChannelBuilder::default().lazy(addrs)
    }

    /// A channel to `addr` with default settings, connected before this returns.
    pub async fn connect(addr: SocketAddr) -> Result<Channel, Status> {
        ChannelBuilder::default().connect(addr).await
    }

    /// The addresses this channel sends to.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.inner.endpoints.iter().map(|e| e.addr).collect()
    }

    /// Calls in flight on this channel's connections.
    pub fn in_flight(&self) -> usize {
        self.inner
            .endpoints
            .iter()
            .flat_map(|e| &e.slots)
            .filter_map(Slot::open)
            .map(|c| c.in_flight())
            .sum()
    }

    /// Sends one request and waits for its response.
    ///
    /// The header is filled from the current [`Context`], the call's options and the
    /// method's IDL options; see [`CallOptions`](super::CallOptions) for the order.
    pub async fn call(&self, request: RpcRequest) -> Result<RpcResponse, Status> {
        self.inner.call(request).await
    }
}

impl ChannelInner {
    async fn call(&self, request: RpcRequest) -> Result<RpcResponse, Status> {
        let ctx = Context::current();
        let opts = &request.options;
        let method = request.method;
        let now = Instant::now();
        let timeout = opts
            .timeout
            .or(method.timeout)
            .unwrap_or(self.config.default_timeout);
        let deadline = match ctx.deadline() {
            Some(inherited) => inherited.min(now + timeout),
            None => now + timeout,
        };
        if deadline <= now {
            return Err(Status::deadline_exceeded(format!(
                "deadline passed before calling {}/{}",
                method.service, method.method
            ))
            .with_not_processed());
        }
        let caller = if ctx.service().is_empty() {
            self.config.caller
        } else {
            ctx.service()
        };
        // Stamp priorities here, so every instance and every later hop sees the same.
        let business = match (
            opts.priority.filter(|p| *p != 0),
            ctx.business_priority(),
            method.priority,
        ) {
            (Some(p), _, _) => p,
            (None, 0, 0) => DEFAULT_BUSINESS_PRIORITY,
            (None, 0, idl) => idl,
            (None, inherited, _) => inherited,
        };
        let uid = opts.uid.unwrap_or(ctx.uid());
        let user = match ctx.user_priority() {
            0 => user_priority(uid),
            inherited => inherited,
        };
        let header = RequestHeader {
            service: method.service,
            method: method.method,
            timeout_us: u64::try_from((deadline - now).as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
            trace_id: if ctx.trace_id() == 0 {
                new_id()
            } else {
                ctx.trace_id()
            },
            span_id: ctx.span_id(),
            caller,
            business_priority: business,
            uid,
            user_priority: user,
            gray_tag: ctx.gray_tag().unwrap_or(""),
            attempt: opts.attempt.max(1),
        };
        let priority = Priority::new(business, user).index();
        let (endpoint, conn) = self.connection(deadline, priority).await?;
        let frame = conn.call(&header, &request.body, Some(deadline)).await?;
        let response = ResponseHeader::decode(&frame.header).map_err(|e| {
            Status::internal(format!("bad response header from {}: {e}", conn.peer()))
        })?;
        endpoint.learn(response.admission_business, response.admission_user, || {
            self.now_ms()
        });
        match Code::from_u32(response.code) {
            Code::Ok => Ok(RpcResponse {
                body: frame.body,
                admission_business: response.admission_business,
                admission_user: response.admission_user,
            }),
            code => {
                let status = Status::new(code, response.message);
                // The server sheds overload before dispatch, so the handler never ran.
                Err(if code == Code::Overloaded {
                    status.with_not_processed()
                } else {
                    status
                })
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// An open connection, chosen round robin over the addresses that are not backing off
    /// and would not shed a request of `priority` (its flat index).
    async fn connection(
        &self,
        deadline: Instant,
        priority: u32,
    ) -> Result<(&Endpoint, Arc<Connection>), Status> {
        let n = self.endpoints.len();
        if n == 0 {
            return Err(Status::unavailable("channel has no addresses").with_not_processed());
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last_error = String::new();
        let mut shed = 0;
        for i in 0..n {
            let endpoint = &self.endpoints[(start + i) % n];
            if endpoint.would_shed(priority, || self.now_ms()) {
                shed += 1;
                continue;
            }
            let slot_index =
                endpoint.next_slot.fetch_add(1, Ordering::Relaxed) % endpoint.slots.len();
            let slot = &endpoint.slots[slot_index];
            if let Some(conn) = slot.open() {
                return Ok((endpoint, conn));
            }
            if let Some(error) = slot.backing_off(Instant::now()) {
                last_error = error;
                continue;
            }
            match self.connect_slot(endpoint.addr, slot, deadline).await {
                Ok(conn) => return Ok((endpoint, conn)),
                Err(error) => last_error = error,
            }
        }
        if shed == n {
            crate::overload::metrics::local_shed("collaborative");
            let p = Priority::from_index(priority);
            return Err(Status::overloaded(format!(
                "every instance is shedding priority ({}, {}); refused without sending",
                p.business, p.user
            ))
            .with_not_processed());
        }
        Err(
            Status::unavailable(format!("no reachable instance: {last_error}"))
                .with_not_processed(),
        )
    }

    /// Opens the slot's connection, or waits for the caller already doing so.
    async fn connect_slot(
        &self,
        addr: SocketAddr,
        slot: &Slot,
        deadline: Instant,
    ) -> Result<Arc<Connection>, String> {
        let _gate = slot.connecting.lock().await;
        if let Some(conn) = slot.open() {
            return Ok(conn);
        }
        if let Some(error) = slot.backing_off(Instant::now()) {
            return Err(error);
        }
        let limit = deadline.min(Instant::now() + self.config.connect_timeout);
        let attempt = tokio::time::timeout_at(
            limit.into(),
            Connection::connect(addr, self.config.max_frame_size),
        )
        .await;
        let mut state = slot.lock();
        match attempt {
            Ok(Ok(conn)) => {
                state.failures = 0;
                state.retry_at = None;
                state.conn = Some(Arc::clone(&conn));
                Ok(conn)
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => format!("connect to {addr}: {e}"),
                    _ => format!("connect to {addr}: timed out"),
                };
                let exp = state.failures.min(16);
                state.failures = state.failures.saturating_add(1);
                let pause = self
                    .config
                    .backoff_base
                    .saturating_mul(1 << exp)
                    .min(self.config.backoff_max);
                // Up to 20 % jitter so clients that failed together do not return together.
                let jitter = pause.mul_f64((new_id() % 1000) as f64 / 5000.0);
                state.retry_at = Some(Instant::now() + pause + jitter);
                state.last_error = error.clone();
                tracing::debug!(%addr, %error, ?pause, "svrkit connect failed; backing off");
                Err(error)
            }
        }
    }
}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        for slot in self.endpoints.iter().flat_map(|e| &e.slots) {
            if let Some(conn) = slot.lock().conn.take() {
                conn.close();
            }
        }
    }
}

impl tower_service::Service<RpcRequest> for Channel {
    type Response = RpcResponse;
    type Error = Status;
    type Future = crate::BoxFuture<'static, Result<RpcResponse, Status>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RpcRequest) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.call(request).await })
    }
}
