//! The "sync" push, coalesced per user: while a push to a user is on its way, further
//! requests for that user become one more push after it, however many there were. Pushes
//! are best effort — a lost one loses nothing, because the next sync finds everything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use wx_api::access::{DeliverRequest, Event, PushClient};

/// Sends coalesced `sync` pushes.
#[derive(Debug, Clone)]
pub struct Notifier {
    push: PushClient,
    /// Users with a push on its way, and whether another was asked for meanwhile.
    pending: Arc<Mutex<HashMap<u64, bool>>>,
}

/// The event a device gets: "there is something to sync".
fn sync_event() -> Event {
    Event {
        kind: "sync".to_string(),
        json: "{}".to_string(),
    }
}

impl Notifier {
    /// Pushes through `push`.
    pub fn new(push: PushClient) -> Notifier {
        Notifier {
            push,
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, bool>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells `uid`'s live connections to sync, soon.
    pub fn notify(&self, uid: u64) {
        {
            let mut pending = self.lock();
            if let Some(again) = pending.get_mut(&uid) {
                *again = true;
                metrics::counter!("wx_message_pushes_coalesced_total").increment(1);
                return;
            }
            pending.insert(uid, false);
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                // Routed by uid to the presence owner, who knows every connection.
                let sent = this
                    .push
                    .deliver_with(
                        DeliverRequest {
                            uid,
                            event: Some(sync_event()),
                        },
                        wx_api::by_uid(uid),
                    )
                    .await;
                metrics::counter!("wx_message_pushes_total").increment(1);
                match sent {
                    Ok(reply) => tracing::debug!(uid, connections = reply.delivered, "sync pushed"),
                    Err(status) => {
                        tracing::debug!(uid, %status, "sync push failed; the next sync finds it");
                    }
                }
                let mut pending = this.lock();
                match pending.get_mut(&uid) {
                    Some(again) if *again => *again = false,
                    _ => {
                        pending.remove(&uid);
                        return;
                    }
                }
            }
        });
    }
}
