//! Pushes to live connections, across access-long instances.
//!
//! A user's connections may sit on any instance. Each instance tells the *presence owner*
//! of a uid — the access-long instance owning the uid on the consistent-hash ring of
//! `wx.access.Push` instances — when it holds the uid's first connection and when it
//! closed the last (`Announce`), and repeats what it holds every
//! [`REANNOUNCE`] so an owner that restarted — or the next instance on the ring, which
//! takes over while the owner is down — learns it again. A push (`Deliver`) is routed
//! by uid to the owner, which forwards it (`DeliverLocal`) to each instance holding a
//! connection of the uid. Two hops at most; no central presence store; presence is soft
//! state that heals itself.
//!
//! An owner that has just started knows nothing yet, and the others' next round may be a
//! [`REANNOUNCE`] away (a process killed and back within a second may never have left
//! the registry, so nobody saw the set change). For [`WARMUP`] after it starts, an owner
//! therefore forwards every push to *every* access-long instance as well as to the
//! holders it has heard of: a logout's `session_ended` reaches each connection of the
//! session at once, whatever restarted when, for one request per instance per push
//! during that minute.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use svrkit::{Channel, Code, Status};
use tokio::sync::mpsc;
use wx_api::access::push_server::Push;
use wx_api::access::{
    AnnounceReply, AnnounceRequest, DeliverReply, DeliverRequest, EndpointReply, EndpointRequest,
    PushClient,
};
use wx_api::by_uid;

/// How often an instance repeats the presence it holds.
pub const REANNOUNCE: Duration = Duration::from_secs(30);
/// How long after it starts an owner sends pushes to every instance: two presence
/// rounds, so every other instance has repeated what it holds at least once.
pub const WARMUP: Duration = Duration::from_secs(2 * REANNOUNCE.as_secs());
/// Frames queued for one connection before pushes to it are dropped (a stalled client).
pub const QUEUE: usize = 256;

/// A connection's outgoing queue.
type Outbox = mpsc::Sender<String>;

/// The connections on this instance and the presence this instance owns.
#[derive(Debug)]
pub struct Hub {
    me: SocketAddr,
    owners: PushClient,
    /// The access-long instances (the channel `owners` calls through).
    instances: Channel,
    /// Until when pushes go to every instance (see [`WARMUP`]).
    warm_until: std::time::Instant,
    next_id: AtomicU64,
    /// uid -> its connections here.
    local: Mutex<HashMap<u64, Vec<Connection>>>,
    /// uid -> instances holding its connections (for uids this instance owns).
    presence: Mutex<HashMap<u64, HashSet<SocketAddr>>>,
    peers: Mutex<HashMap<SocketAddr, PushClient>>,
}

/// One live connection of a user.
#[derive(Debug)]
struct Connection {
    id: u64,
    /// Names it across instances in [`wx_api::ORIGIN_CONNECTION`] (random, not 0).
    origin: u64,
    outbox: Outbox,
    /// [`session_digest`] of the token it signed in with.
    session: u64,
    /// Notified when that session ends (logout).
    ended: Arc<tokio::sync::Notify>,
}

/// The push kind that ends the connections of one session: its body is
/// `{"session": DIGEST}` ([`session_digest`] of the token, as a string).
pub const SESSION_ENDED: &str = "session_ended";

/// A digest naming a session token among one user's connections (the token itself never
/// travels in a push).
pub fn session_digest(token: &str) -> u64 {
    svrkit::balance::ring_hash(token.as_bytes())
}

/// A registered connection; unregisters itself when dropped.
#[derive(Debug)]
pub struct Registration {
    hub: Arc<Hub>,
    uid: u64,
    id: u64,
    origin: u64,
}

impl Registration {
    /// What names this connection in the requests it makes
    /// ([`wx_api::ORIGIN_CONNECTION`]), so that news of their own changes skips it.
    pub fn origin(&self) -> u64 {
        self.origin
    }
}

impl Hub {
    /// The hub of the instance serving RPC at `me`; `owners` reaches the presence owners
    /// (a channel balancing by consistent hash over the `wx.access.Push` instances, see
    /// `wx_api::presence`).
    pub fn new(me: SocketAddr, owners: Channel) -> Arc<Hub> {
        Arc::new(Hub {
            me,
            owners: PushClient::new(owners.clone()),
            instances: owners,
            warm_until: std::time::Instant::now() + WARMUP,
            next_id: AtomicU64::new(1),
            local: Mutex::default(),
            presence: Mutex::default(),
            peers: Mutex::default(),
        })
    }

    /// Adds a connection of `uid` signed in with `token`; the first one is announced to
    /// the uid's owner. `ended` is notified when the token's session ends.
    pub async fn register(
        self: &Arc<Self>,
        uid: u64,
        token: &str,
        outbox: Outbox,
        ended: Arc<tokio::sync::Notify>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let origin = svrkit::context::random_u64().max(1);
        metrics::gauge!("wx_access_long_connections").increment(1.0);
        let first = {
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            let conns = local.entry(uid).or_default();
            conns.push(Connection {
                id,
                origin,
                outbox,
                session: session_digest(token),
                ended,
            });
            conns.len() == 1
        };
        if first {
            self.announce(uid, true).await;
        }
        Registration {
            hub: Arc::clone(self),
            uid,
            id,
            origin,
        }
    }

    /// How many connections `uid` has on this instance.
    pub fn connections_of(&self, uid: u64) -> usize {
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&uid)
            .map_or(0, Vec::len)
    }

    fn unregister(self: &Arc<Self>, uid: u64, id: u64) {
        metrics::gauge!("wx_access_long_connections").decrement(1.0);
        let last = {
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            match local.get_mut(&uid) {
                Some(conns) => {
                    conns.retain(|c| c.id != id);
                    let empty = conns.is_empty();
                    if empty {
                        local.remove(&uid);
                    }
                    empty
                }
                None => false,
            }
        };
        if last {
            let hub = Arc::clone(self);
            tokio::spawn(async move { hub.announce(uid, false).await });
        }
    }

    async fn announce(&self, uid: u64, online: bool) {
        let request = AnnounceRequest {
            uid,
            instance_addr: self.me.to_string(),
            online,
        };
        if let Err(e) = self.owners.announce_with(request, by_uid(uid)).await {
            tracing::debug!(uid, online, error = %e, "presence not announced; the next round retries");
        }
    }

    /// Announces every uid with a connection here: periodically, for owners that forgot
    /// (restarted), and at once whenever the set of access-long instances changes
    /// (`changed`, from the presence channel), since that moves uids to new owners.
    pub async fn reannounce_forever(
        self: Arc<Self>,
        mut changed: tokio::sync::watch::Receiver<u64>,
    ) {
        let mut watching = true;
        loop {
            if watching {
                tokio::select! {
                    _ = tokio::time::sleep(REANNOUNCE) => {}
                    result = changed.changed() => watching = result.is_ok(),
                }
            } else {
                tokio::time::sleep(REANNOUNCE).await;
            }
            let uids: Vec<u64> = self
                .local
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .keys()
                .copied()
                .collect();
            for uid in uids {
                self.announce(uid, true).await;
            }
        }
    }

    /// Queues the event on `uid`'s connections here but the one named `except` (0: none);
    /// returns how many took it.
    fn deliver_here(&self, uid: u64, kind: &str, body: &str, except: u64) -> u32 {
        let body: Value = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
        let frame = json!({ "push": kind, "body": body }).to_string();
        let local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        let mut delivered = 0;
        // A session's end goes only to its own connections, which then close.
        let ending = (kind == SESSION_ENDED).then(|| {
            body["session"]
                .as_str()
                .and_then(|d| d.parse::<u64>().ok())
                .unwrap_or(0)
        });
        for conn in local.get(&uid).into_iter().flatten() {
            if except != 0 && conn.origin == except {
                continue;
            }
            if let Some(session) = ending {
                if conn.session == session {
                    let _ = conn.outbox.try_send(frame.clone());
                    conn.ended.notify_one();
                    delivered += 1;
                }
                continue;
            }
            let id = conn.id;
            match conn.outbox.try_send(frame.clone()) {
                Ok(()) => delivered += 1,
                Err(_) => {
                    metrics::counter!("wx_access_push_dropped_total").increment(1);
                    tracing::warn!(
                        uid,
                        connection = id,
                        "push dropped: the connection is not reading"
                    );
                }
            }
        }
        metrics::counter!("wx_access_push_delivered_total", "kind" => kind.to_string())
            .increment(u64::from(delivered));
        delivered
    }

    fn peer(&self, addr: SocketAddr) -> PushClient {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(addr)
            .or_insert_with(|| PushClient::new(Channel::lazy([addr])))
            .clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.uid, self.id);
    }
}

/// The `wx.access.Push` service of one instance.
#[derive(Debug, Clone)]
pub struct PushService {
    hub: Arc<Hub>,
    /// Where clients open this instance's WebSocket.
    websocket_url: String,
}

impl PushService {
    /// The service over `hub`, telling clients to connect to `websocket_url`.
    pub fn new(hub: Arc<Hub>, websocket_url: String) -> PushService {
        PushService { hub, websocket_url }
    }
}

impl Push for PushService {
    async fn deliver(&self, request: DeliverRequest) -> Result<DeliverReply, Status> {
        let event = request
            .event
            .ok_or_else(|| Status::invalid_argument("no event"))?;
        let mut holders: Vec<SocketAddr> = self
            .hub
            .presence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&request.uid)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        if std::time::Instant::now() < self.hub.warm_until {
            // Just started: what this owner has heard may be partial (see WARMUP).
            for addr in self.hub.instances.addresses() {
                if !holders.contains(&addr) {
                    holders.push(addr);
                }
            }
            if !holders.contains(&self.hub.me) {
                holders.push(self.hub.me);
            }
        }
        let mut delivered = 0;
        for addr in holders {
            if addr == self.hub.me {
                delivered += self.hub.deliver_here(
                    request.uid,
                    &event.kind,
                    &event.json,
                    request.except_connection,
                );
                continue;
            }
            let forward = DeliverRequest {
                uid: request.uid,
                event: Some(event.clone()),
                except_connection: request.except_connection,
            };
            match self.hub.peer(addr).deliver_local(forward).await {
                Ok(reply) => delivered += reply.delivered,
                Err(e) if e.code() == Code::Unavailable => {
                    // That instance is gone: forget it held anything.
                    if let Some(set) = self
                        .hub
                        .presence
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_mut(&request.uid)
                    {
                        set.remove(&addr);
                    }
                }
                Err(e) => tracing::debug!(%addr, error = %e, "forward failed"),
            }
        }
        tracing::debug!(uid = request.uid, kind = %event.kind, delivered, "delivered");
        Ok(DeliverReply { delivered })
    }

    async fn deliver_local(&self, request: DeliverRequest) -> Result<DeliverReply, Status> {
        let event = request
            .event
            .ok_or_else(|| Status::invalid_argument("no event"))?;
        Ok(DeliverReply {
            delivered: self.hub.deliver_here(
                request.uid,
                &event.kind,
                &event.json,
                request.except_connection,
            ),
        })
    }

    async fn endpoint(&self, _: EndpointRequest) -> Result<EndpointReply, Status> {
        Ok(EndpointReply {
            websocket_url: self.websocket_url.clone(),
        })
    }

    async fn announce(&self, request: AnnounceRequest) -> Result<AnnounceReply, Status> {
        let addr: SocketAddr = request
            .instance_addr
            .parse()
            .map_err(|_| Status::invalid_argument("instance_addr is not an address"))?;
        let mut presence = self
            .hub
            .presence
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if request.online {
            presence.entry(request.uid).or_default().insert(addr);
        } else if let Some(set) = presence.get_mut(&request.uid) {
            set.remove(&addr);
            if set.is_empty() {
                presence.remove(&request.uid);
            }
        }
        Ok(AnnounceReply {})
    }
}
