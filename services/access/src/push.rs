//! Pushes to live connections, across access-long instances.
//!
//! A user's connections may sit on any instance. Each instance tells the *presence owner*
//! of a uid — the access-long instance owning the uid on the consistent-hash ring of
//! `wx.access.Push` instances — when it holds the uid's first connection and when it
//! closed the last (`Announce`), and repeats what it holds (one request per owner) every
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use svrkit::{Channel, Code, Status};
use wx_api::access::push_server::Push;
use wx_api::access::{
    AnnounceReply, AnnounceRequest, DeliverReply, DeliverRequest, EndpointReply, EndpointRequest,
    Event, PushClient,
};
use wx_api::by_uid;

use crate::outbox::Outbox;

/// How often an instance repeats the presence it holds.
pub const REANNOUNCE: Duration = Duration::from_secs(30);
/// How long after it starts an owner sends pushes to every instance: two presence
/// rounds, so every other instance has repeated what it holds at least once.
pub const WARMUP: Duration = Duration::from_secs(2 * REANNOUNCE.as_secs());
/// The first pause before a refused announcement is tried again (doubled per attempt).
pub const ANNOUNCE_RETRY: Duration = Duration::from_millis(200);
/// Attempts to repeat a refused announcement before leaving it to the next round (the
/// bound doubles up to [`ANNOUNCE_RETRY_MAX`]: about 20 s of attempts in all).
const ANNOUNCE_ATTEMPTS: u32 = 8;
/// The largest bound of the pause before a repeated announcement.
const ANNOUNCE_RETRY_MAX: Duration = Duration::from_secs(5);
/// The first pause before a shed forward is tried again (doubled per attempt).
const FORWARD_RETRY: Duration = Duration::from_millis(40);
/// Attempts of one forward: pauses of 20–40, 40–80 and 80–160 ms fit a push's deadline.
const FORWARD_ATTEMPTS: u32 = 4;
/// The first pause of a forward repeated after the push was answered (doubled per
/// attempt: about 6 s of attempts in all).
const LATE_RETRY: Duration = Duration::from_millis(200);
/// Attempts of a forward repeated after the push was answered.
const LATE_ATTEMPTS: u32 = 6;
/// The most uids one announcement carries.
pub const MAX_ANNOUNCE_BATCH: usize = 4_096;
/// Refused announcements and shed forwards being repeated at once, at most; past it an
/// announcement waits for the next round and a forward is dropped.
const MAX_RETRIES: usize = 65_536;
/// Frames queued for one connection before pushes to it are dropped (a stalled client).
pub const QUEUE: usize = 256;

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
    /// Refused announcements and shed forwards being repeated ([`MAX_RETRIES`]).
    retrying: AtomicUsize,
    /// The first and the largest bound of the pause before a repeated announcement
    /// ([`ANNOUNCE_RETRY`], [`ANNOUNCE_RETRY_MAX`]).
    announce_retry: (Duration, Duration),
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
            retrying: AtomicUsize::new(0),
            announce_retry: (ANNOUNCE_RETRY, ANNOUNCE_RETRY_MAX),
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

    /// Tells `uid`'s owner whether this instance holds a connection of it. A refusal
    /// (the owner shedding load, or restarting) is tried again soon in the background
    /// ([`Hub::announce_again`]) rather than a [`REANNOUNCE`] later: until the owner
    /// hears it, pushes to the uid miss this instance.
    async fn announce(self: &Arc<Self>, uid: u64, online: bool) {
        let Err(e) = self.try_announce(uid, online).await else {
            return;
        };
        let retrying = self.retrying.fetch_add(1, Ordering::Relaxed);
        if retrying >= MAX_RETRIES {
            self.retrying.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(uid, online, error = %e, "presence not announced; the next round repeats it");
            return;
        }
        tracing::debug!(uid, online, error = %e, "presence not announced; trying again");
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            hub.announce_again(uid, online).await;
            hub.retrying.fetch_sub(1, Ordering::Relaxed);
        });
    }

    async fn try_announce(&self, uid: u64, online: bool) -> Result<(), Status> {
        let request = AnnounceRequest {
            uid,
            instance_addr: self.me.to_string(),
            online,
            more_uids: Vec::new(),
        };
        self.owners
            .announce_with(request, by_uid(uid))
            .await
            .map(drop)
    }

    /// Repeats a refused announcement after a pause drawn at random from the upper half
    /// of a bound that starts at [`ANNOUNCE_RETRY`] and doubles ([`ANNOUNCE_ATTEMPTS`]
    /// times at most): instances refused together come back spread out. Stops when the
    /// news is stale (the uid's first connection already closed, or a new one opened).
    async fn announce_again(&self, uid: u64, online: bool) {
        let (mut bound, max) = self.announce_retry;
        for _ in 0..ANNOUNCE_ATTEMPTS {
            tokio::time::sleep(upper_half_jitter(bound)).await;
            if (self.connections_of(uid) > 0) != online {
                return;
            }
            match self.try_announce(uid, online).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(uid, online, error = %e, "presence still not announced");
                }
            }
            bound = (bound * 2).min(max);
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
            self.reannounce(uids).await;
        }
    }

    /// Repeats that this instance holds `uids`: one request per owner (per
    /// [`MAX_ANNOUNCE_BATCH`] uids), not one per uid. A batch refused is left to the next
    /// round; the uids announced one by one when they connected were retried already.
    async fn reannounce(&self, uids: Vec<u64>) {
        let mut by_owner: HashMap<Option<String>, Vec<u64>> = HashMap::new();
        for uid in uids {
            by_owner
                .entry(self.instances.owner_of(uid))
                .or_default()
                .push(uid);
        }
        for uids in by_owner.into_values() {
            for batch in uids.chunks(MAX_ANNOUNCE_BATCH) {
                let request = AnnounceRequest {
                    uid: batch[0],
                    instance_addr: self.me.to_string(),
                    online: true,
                    more_uids: batch[1..].to_vec(),
                };
                if let Err(e) = self.owners.announce_with(request, by_uid(batch[0])).await {
                    tracing::debug!(error = %e, uids = batch.len(), "presence round refused; the next one repeats it");
                }
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

    /// Passes a push on to the instance at `addr`; how many connections took it. A
    /// forward that instance refused without running it (shedding load, say in a sign-in
    /// storm) is tried again after short jittered pauses within the push's deadline
    /// ([`FORWARD_ATTEMPTS`]), then in the background for a few seconds more
    /// ([`LATE_ATTEMPTS`]): a storm on one gateway must not silently drop the pushes it
    /// holds. An instance that cannot be reached and has left the registry held nothing
    /// any more: it is forgotten.
    async fn forward(
        self: &Arc<Self>,
        addr: SocketAddr,
        uid: u64,
        except: u64,
        event: &Event,
    ) -> u32 {
        match self
            .try_forward(addr, uid, except, event, FORWARD_ATTEMPTS, FORWARD_RETRY)
            .await
        {
            Ok(delivered) => delivered,
            Err(()) => {
                if self.retrying.fetch_add(1, Ordering::Relaxed) >= MAX_RETRIES {
                    self.retrying.fetch_sub(1, Ordering::Relaxed);
                    return 0;
                }
                let (hub, event) = (Arc::clone(self), event.clone());
                tokio::spawn(async move {
                    let late = hub
                        .try_forward(addr, uid, except, &event, LATE_ATTEMPTS, LATE_RETRY)
                        .await;
                    if late.is_err() {
                        metrics::counter!("wx_access_push_forward_failed_total").increment(1);
                    }
                    hub.retrying.fetch_sub(1, Ordering::Relaxed);
                });
                0
            }
        }
    }

    /// Up to `attempts` forwards, pausing a random time in the upper half of a bound that
    /// starts at `first` and doubles; `Err` when every attempt was shed (worth trying
    /// later), `Ok(0)` when it failed otherwise.
    async fn try_forward(
        &self,
        addr: SocketAddr,
        uid: u64,
        except: u64,
        event: &Event,
        attempts: u32,
        first: Duration,
    ) -> Result<u32, ()> {
        let mut pause = first;
        for attempt in 1..=attempts {
            let forward = DeliverRequest {
                uid,
                event: Some(event.clone()),
                except_connection: except,
            };
            let e = match self.peer(addr).deliver_local(forward).await {
                Ok(reply) => return Ok(reply.delivered),
                Err(e) => e,
            };
            if e.code() == Code::Unavailable && !self.instances.addresses().contains(&addr) {
                if let Some(set) = self
                    .presence
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_mut(&uid)
                {
                    set.remove(&addr);
                }
                return Ok(0);
            }
            if !(e.is_not_processed() || matches!(e.code(), Code::Overloaded | Code::Unavailable)) {
                tracing::debug!(%addr, error = %e, "forward failed");
                return Ok(0);
            }
            if attempt == attempts {
                tracing::debug!(%addr, error = %e, attempts, "forward shed every time");
                break;
            }
            tokio::time::sleep(upper_half_jitter(pause)).await;
            pause *= 2;
        }
        Err(())
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

/// A random pause in the upper half of `bound`: callers refused together come back
/// spread out, none sooner than half the bound.
fn upper_half_jitter(bound: Duration) -> Duration {
    let half = bound.as_micros() as u64 / 2;
    Duration::from_micros(half + svrkit::context::random_u64() % half.max(1))
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
        if holders.contains(&self.hub.me) {
            delivered += self.hub.deliver_here(
                request.uid,
                &event.kind,
                &event.json,
                request.except_connection,
            );
        }
        // To every other holder at once, each retried while it sheds (see `forward`).
        let forwards = holders
            .into_iter()
            .filter(|addr| *addr != self.hub.me)
            .map(|addr| {
                Hub::forward(
                    &self.hub,
                    addr,
                    request.uid,
                    request.except_connection,
                    &event,
                )
            });
        for reply in futures_util::future::join_all(forwards).await {
            delivered += reply;
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
        if request.more_uids.len() >= MAX_ANNOUNCE_BATCH {
            return Err(Status::invalid_argument(format!(
                "an announcement carries at most {MAX_ANNOUNCE_BATCH} uids"
            )));
        }
        let mut presence = self
            .hub
            .presence
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for uid in std::iter::once(request.uid).chain(request.more_uids) {
            if request.online {
                presence.entry(uid).or_default().insert(addr);
            } else if let Some(set) = presence.get_mut(&uid) {
                set.remove(&addr);
                if set.is_empty() {
                    presence.remove(&uid);
                }
            }
        }
        Ok(AnnounceReply {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use svrkit::{Code, Server};
    use wx_api::access::push_server::PushServer;
    use wx_api::access::{EndpointReply, EndpointRequest};

    /// An owner that refuses the first `refuse` announcements as a server shedding load
    /// does, then takes them; wakes `accepted` when one is taken.
    #[derive(Clone)]
    struct Owner {
        calls: Arc<AtomicU32>,
        refuse: u32,
        accepted: Arc<tokio::sync::Notify>,
        /// The uids of each announcement taken.
        taken: Arc<Mutex<Vec<Vec<u64>>>>,
    }

    impl Owner {
        fn refusing(refuse: u32) -> Owner {
            Owner {
                calls: Arc::default(),
                refuse,
                accepted: Arc::default(),
                taken: Arc::default(),
            }
        }

        /// Serves this owner on loopback; its address.
        async fn serve(&self) -> SocketAddr {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("test setup");
            let addr = listener.local_addr().expect("test setup");
            tokio::spawn(
                Server::builder()
                    .without_admission()
                    .add_service(PushServer::new(self.clone()))
                    .serve(listener, std::future::pending()),
            );
            addr
        }
    }

    impl Push for Owner {
        async fn deliver(&self, _: DeliverRequest) -> Result<DeliverReply, Status> {
            Ok(DeliverReply::default())
        }
        async fn deliver_local(&self, _: DeliverRequest) -> Result<DeliverReply, Status> {
            if self.calls.fetch_add(1, Ordering::Relaxed) < self.refuse {
                return Err(Status::new(Code::Overloaded, "shedding"));
            }
            self.accepted.notify_one();
            Ok(DeliverReply { delivered: 1 })
        }
        async fn announce(&self, request: AnnounceRequest) -> Result<AnnounceReply, Status> {
            if self.calls.fetch_add(1, Ordering::Relaxed) < self.refuse {
                return Err(Status::new(Code::Overloaded, "shedding"));
            }
            assert!(request.online);
            let mut uids = vec![request.uid];
            uids.extend(request.more_uids);
            self.taken.lock().expect("not poisoned").push(uids);
            self.accepted.notify_one();
            Ok(AnnounceReply::default())
        }
        async fn endpoint(&self, _: EndpointRequest) -> Result<EndpointReply, Status> {
            Ok(EndpointReply::default())
        }
    }

    #[tokio::test]
    async fn a_refused_announcement_is_repeated_within_a_second_not_a_round_later() {
        let owner = Owner::refusing(2);
        let addr = owner.serve().await;
        let channel = Channel::builder().plaintext().lazy([addr]);
        let hub = Hub::new(addr, channel);
        let (outbox, _inbox) = crate::outbox::outbox(1);
        let _registration = hub.register(5, "7.token", outbox, Arc::default()).await;
        // Retries come after 100–200 ms and 200–400 ms; the next round would be 30 s away.
        tokio::time::timeout(Duration::from_secs(10), owner.accepted.notified())
            .await
            .expect("the owner heard of uid 5 again after refusing it");
        assert!(owner.calls.load(Ordering::Relaxed) >= 3);
        wait_for_no_retries(&hub).await;
    }

    /// Waits until `hub` repeats no announcement (each retry ends by itself).
    async fn wait_for_no_retries(hub: &Hub) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while hub.retrying.load(Ordering::Relaxed) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "retries end by themselves"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_retry_stops_when_its_news_is_stale() {
        let owner = Owner::refusing(u32::MAX);
        let addr = owner.serve().await;
        let mut hub = Hub::new(addr, Channel::builder().plaintext().lazy([addr]));
        // The same schedule, a hundred times faster.
        Arc::get_mut(&mut hub)
            .expect("no other reference yet")
            .announce_retry = (ANNOUNCE_RETRY / 100, ANNOUNCE_RETRY_MAX / 100);
        let (outbox, _inbox) = crate::outbox::outbox(1);
        let registration = hub.register(5, "7.token", outbox, Arc::default()).await;
        assert_eq!(hub.retrying.load(Ordering::Relaxed), 1);
        // The connection closes before the retry: "online" is stale and is not repeated;
        // "offline" is refused too and retried on its own.
        drop(registration);
        wait_for_no_retries(&hub).await;
        // One online and one offline refusal, the offline one followed by its attempts.
        assert!(owner.calls.load(Ordering::Relaxed) <= 2 + ANNOUNCE_ATTEMPTS);
    }

    #[tokio::test]
    async fn a_round_repeats_every_uid_in_one_request_per_owner() {
        let owner = Owner::refusing(0);
        let addr = owner.serve().await;
        let hub = Hub::new(addr, Channel::builder().plaintext().lazy([addr]));
        let mut held = Vec::new();
        for uid in 1..=5 {
            let (outbox, inbox) = crate::outbox::outbox(1);
            held.push((
                hub.register(uid, "7.token", outbox, Arc::default()).await,
                inbox,
            ));
        }
        assert_eq!(
            owner.taken.lock().expect("not poisoned").len(),
            5,
            "one each on connecting"
        );
        let uids: Vec<u64> = (1..=5).collect();
        hub.reannounce(uids.clone()).await;
        let taken = owner.taken.lock().expect("not poisoned").clone();
        assert_eq!(taken.len(), 6, "the round is one request");
        let mut round = taken[5].clone();
        round.sort_unstable();
        assert_eq!(round, uids);
    }

    #[tokio::test]
    async fn an_owner_records_a_batch_and_refuses_one_too_large() {
        let hub = Hub::new(
            "127.0.0.1:1".parse().expect("test setup"),
            Channel::builder()
                .plaintext()
                .lazy(["127.0.0.1:1".parse().expect("test setup")]),
        );
        let service = PushService::new(Arc::clone(&hub), String::new());
        let request = |more: Vec<u64>| AnnounceRequest {
            uid: 1,
            instance_addr: "127.0.0.2:9".into(),
            online: true,
            more_uids: more,
        };
        service
            .announce(request(vec![2, 3]))
            .await
            .expect("test setup");
        {
            let presence = hub.presence.lock().expect("not poisoned");
            assert!((1..=3).all(|uid| presence[&uid].len() == 1));
        }
        let too_many = service
            .announce(request((0..MAX_ANNOUNCE_BATCH as u64).collect()))
            .await
            .expect_err("refused");
        assert_eq!(too_many.code(), Code::InvalidArgument);
        assert_eq!(
            hub.presence.lock().expect("not poisoned").len(),
            3,
            "nothing of it recorded"
        );
    }

    /// The owner's side of a push whose uid is held on the instance `holder` serves.
    async fn push_through(holder: &Owner) -> (u32, Arc<Hub>) {
        let at = holder.serve().await;
        let owner = Hub::new(
            "127.0.0.1:1".parse().expect("test setup"),
            Channel::builder().plaintext().lazy([at]),
        );
        owner
            .presence
            .lock()
            .expect("test setup")
            .entry(9)
            .or_default()
            .insert(at);
        let service = PushService::new(Arc::clone(&owner), String::new());
        let reply = service
            .deliver(DeliverRequest {
                uid: 9,
                event: Some(Event {
                    kind: "message".into(),
                    json: "{}".into(),
                }),
                except_connection: 0,
            })
            .await
            .expect("test setup");
        (reply.delivered, owner)
    }

    #[tokio::test]
    async fn a_forward_the_holder_shed_is_tried_again() {
        let holder = Owner::refusing(2);
        let (delivered, owner) = push_through(&holder).await;
        assert_eq!(delivered, 1, "the third attempt got through");
        assert_eq!(holder.calls.load(Ordering::Relaxed), 3);
        assert_eq!(
            owner.presence.lock().expect("not poisoned")[&9].len(),
            1,
            "still a holder"
        );
        // One that sheds longer than the push's deadline gets it late, in the background.
        let holder = Owner::refusing(FORWARD_ATTEMPTS + 1);
        let (delivered, owner) = push_through(&holder).await;
        assert_eq!(delivered, 0, "not within the push");
        assert_eq!(holder.calls.load(Ordering::Relaxed), FORWARD_ATTEMPTS);
        tokio::time::timeout(Duration::from_secs(10), holder.accepted.notified())
            .await
            .expect("delivered late");
        assert_eq!(holder.calls.load(Ordering::Relaxed), FORWARD_ATTEMPTS + 2);
        wait_for_no_retries(&owner).await;
        assert_eq!(
            owner.presence.lock().expect("not poisoned")[&9].len(),
            1,
            "nothing forgotten"
        );
    }
}
