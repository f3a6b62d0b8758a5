//! The generator's clients: one WebSocket per user, answers matched by id and counted,
//! the product client's admission hint honoured; and the sign-up of every user.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wx_client::{AdmitHint, Http};

use crate::backend::{call, sign_up};

use super::mix::{BANDS, GIVE_UP, MIX, User, frame_of};
use super::report::Tally;

/// The parts of an answer the generator reads (the result itself is skipped unparsed).
#[derive(serde::Deserialize)]
pub(super) struct Answer {
    pub(super) id: Option<u64>,
    #[serde(default)]
    pub(super) ok: bool,
    pub(super) error: Option<AnswerError>,
    /// The gateway's hint while it sheds: the least important business priority it
    /// admits from this user.
    pub(super) admit: Option<u32>,
}

#[derive(serde::Deserialize)]
pub(super) struct AnswerError {
    pub(super) code: String,
    pub(super) reason: Option<String>,
}

impl AnswerError {
    /// How a refusal is counted: its code, and its reason when it has one of its own.
    pub(super) fn key(self) -> String {
        match self.reason {
            Some(reason) if reason != self.code => format!("{}/{reason}", self.code),
            _ => self.code,
        }
    }
}

/// A request waiting for its answer: its mix kind, when it was sent, and whether it was
/// sent while measuring.
pub(super) type Waiting = (usize, Instant, bool);

/// A user's WebSocket, split: frames go out through `send`, answers are matched by id.
pub(super) struct Conn {
    pub(super) send: tokio::sync::mpsc::UnboundedSender<(String, Instant)>,
    pub(super) waiting: Arc<Mutex<HashMap<u64, Waiting>>>,
    /// What the gateway's answers said about admission (the product client's logic).
    pub(super) hint: Arc<Mutex<AdmitHint>>,
}

/// What every connection reports answers to.
pub(super) struct Collector {
    pub(super) tally: Mutex<Tally>,
    /// Whether requests sent now are measured.
    pub(super) measuring: std::sync::atomic::AtomicBool,
    /// Whether clients hold back what the gateway says it would shed.
    pub(super) honour_admit: bool,
}

/// Locks `m`, whatever a panicking holder left.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) async fn connect(
    ws: SocketAddr,
    user: &User,
    collector: Arc<Collector>,
) -> anyhow::Result<Conn> {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{ws}/v1/ws")).await?;
    let auth = json!({ "op": "auth", "token": user.token }).to_string();
    socket.send(Message::Text(auth.into())).await?;
    let hello: Value = match socket.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str(text.as_str())?,
        other => bail!("auth refused: {other:?}"),
    };
    if hello["ok"] != true {
        bail!("auth refused: {hello}");
    }
    // The hint is in business priorities: the mix must use the gateway's.
    for kind in &MIX {
        if hello["priorities"][kind.action] != kind.priority {
            bail!(
                "the gateway gives {} priority {}, the mix {}",
                kind.action,
                hello["priorities"][kind.action],
                kind.priority
            );
        }
    }
    let (mut sink, mut stream) = socket.split();
    let (send, mut outgoing) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    tokio::spawn(async move {
        while let Some((frame, made)) = outgoing.recv().await {
            // As any client does, a request given up on is not sent any more.
            if made.elapsed() > GIVE_UP {
                continue;
            }
            if sink.send(Message::Text(frame.into())).await.is_err() {
                return;
            }
        }
    });
    let waiting: Arc<Mutex<HashMap<u64, Waiting>>> = Arc::default();
    let hint: Arc<Mutex<AdmitHint>> = Arc::default();
    let band = user.band;
    {
        let (waiting, hint) = (Arc::clone(&waiting), Arc::clone(&hint));
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(frame) = serde_json::from_str::<Answer>(text.as_str()) else {
                    continue;
                };
                let Some(id) = frame.id else {
                    continue; // a push
                };
                let Some((kind, sent, measured)) = lock(&waiting).remove(&id) else {
                    continue;
                };
                let refused = frame
                    .error
                    .as_ref()
                    .is_some_and(|e| e.reason.as_deref() == Some("edge_shed"));
                lock(&hint).observe(
                    u64::from(MIX[kind].priority),
                    frame.admit.map(u64::from),
                    refused,
                    Instant::now(),
                );
                let took = sent.elapsed();
                let ok = frame.ok && took <= GIVE_UP;
                if measured {
                    let mut t = lock(&collector.tally);
                    if ok {
                        t.ok[kind] += 1;
                        t.band_ok[band] += 1;
                        t.latencies_us[kind].push(took.as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        let code = frame
                            .error
                            .map_or_else(|| "late".to_string(), AnswerError::key);
                        *t.refusals.entry((kind, code)).or_default() += 1;
                    }
                }
            }
        });
    }
    Ok(Conn {
        send,
        waiting,
        hint,
    })
}

impl Conn {
    /// Sends request `n` of `kind` for `user`, unless the gateway's hint says it would be
    /// shed (then it counts as refused, `held_back`); counts it as sent when measuring.
    pub(super) fn request(&self, id: u64, kind: usize, user: &User, collector: &Collector) {
        let measured = collector.measuring.load(Ordering::Relaxed);
        let held_back = collector.honour_admit
            && lock(&self.hint).holds_back(u64::from(MIX[kind].priority), Instant::now());
        if measured {
            let mut t = lock(&collector.tally);
            t.sent[kind] += 1;
            t.band_sent[user.band] += 1;
            if held_back {
                *t.refusals
                    .entry((kind, "held_back".to_string()))
                    .or_default() += 1;
            }
        }
        if held_back {
            return;
        }
        let frame = frame_of(id, kind, user);
        lock(&self.waiting).insert(id, (kind, Instant::now(), measured));
        let _ = self.send.send((frame, Instant::now()));
    }
}

/// Registers `count` users in befriended pairs; returns them signed in.
pub(super) async fn register(api: Http, count: usize) -> anyhow::Result<Vec<User>> {
    let run = svrkit::context::random_u64() & 0xff_ffff;
    let next = Arc::new(AtomicUsize::new(0));
    let pairs = count / 2;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let p = next.fetch_add(1, Ordering::Relaxed);
                if p >= pairs {
                    return anyhow::Ok(mine);
                }
                let mut pair = Vec::new();
                for side in ["a", "b"] {
                    let name = format!("ov{side}{p}_{run:x}");
                    let (uid, token) = sign_up(&api, &name).await?;
                    pair.push((name, uid, token));
                }
                let (a, b) = (&pair[0], &pair[1]);
                call(&api, "friends.request", json!({ "peer": b.1 }), Some(&a.2)).await?;
                call(&api, "friends.accept", json!({ "peer": a.1 }), Some(&b.2)).await?;
                for (me, friend) in [(a, b.1), (b, a.1)] {
                    let band = (svrkit::overload::user_priority(me.1).clamp(1, 128) as usize - 1)
                        * BANDS
                        / 128;
                    mine.push(User {
                        uid: me.1,
                        name: me.0.clone(),
                        friend,
                        token: me.2.clone(),
                        band,
                    });
                }
            }
        });
    }
    let mut users = Vec::with_capacity(count);
    while let Some(joined) = workers.join_next().await {
        users.extend(joined.context("a registering task failed")??);
    }
    users.sort_by_key(|u| u.uid);
    Ok(users)
}
