//! The "sync" push, coalesced per user: while a push to a user is on its way, further
//! requests for that user become one more push after it, however many there were. Pushes
//! are best effort — a lost one loses nothing, because the next sync finds everything.
//!
//! A push may skip one connection: the one the change came through, which has its answer
//! (`except`, see [`wx_api::ORIGIN_CONNECTION`]). Coalesced requests skip a connection
//! only if every one of them skips it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use wx_api::access::{DeliverRequest, Event, PushClient};

/// Sends coalesced `sync` pushes.
#[derive(Debug, Clone)]
pub struct Notifier {
    push: PushClient,
    /// Users with a push on its way, and the push asked for meanwhile, if any: the
    /// connection it skips (0: none).
    pending: Arc<Mutex<HashMap<u64, Option<u64>>>>,
}

/// The event a device gets: "there is something to sync".
fn sync_event() -> Event {
    Event {
        kind: "sync".to_string(),
        json: "{}".to_string(),
    }
}

/// The connection one push skips for the push asked for so far (`next`) and another one
/// skipping `except`: only what both skip (0: none).
fn merged(next: Option<u64>, except: u64) -> u64 {
    match next {
        Some(skips) if skips != except => 0,
        _ => except,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Option<u64>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells `uid`'s live connections to sync, soon, but the connection `except` (0:
    /// every one).
    pub fn notify(&self, uid: u64, except: u64) {
        {
            let mut pending = self.lock();
            if let Some(next) = pending.get_mut(&uid) {
                *next = Some(merged(*next, except));
                metrics::counter!("wx_message_pushes_coalesced_total").increment(1);
                return;
            }
            pending.insert(uid, None);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut except = except;
            loop {
                // Routed by uid to the presence owner, who knows every connection.
                let sent = this
                    .push
                    .deliver_with(
                        DeliverRequest {
                            uid,
                            event: Some(sync_event()),
                            except_connection: except,
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
                match pending.get_mut(&uid).and_then(Option::take) {
                    Some(next) => except = next,
                    None => {
                        pending.remove(&uid);
                        return;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::merged;

    #[test]
    fn coalesced_pushes_skip_only_what_all_skip() {
        assert_eq!(merged(None, 7), 7);
        assert_eq!(merged(Some(7), 7), 7);
        assert_eq!(merged(Some(7), 8), 0);
        assert_eq!(merged(Some(7), 0), 0);
        assert_eq!(merged(Some(0), 7), 0);
        assert_eq!(merged(None, 0), 0);
    }
}
