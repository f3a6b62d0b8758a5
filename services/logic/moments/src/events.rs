//! Moments notifications (`moment` events) to the live connections of the users they
//! concern: a new post to the friends whose timelines it reached, a like or a comment to
//! the post's author (and a reply to the comment's author). Best effort: a lost event
//! loses nothing, since reading the timeline or the post finds everything. At most
//! [`IN_FLIGHT`] pushes are on their way at once; events beyond that are dropped and
//! counted, so a 5,000-friend post cannot flood the access tier.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::Semaphore;
use wx_api::access::{DeliverRequest, Event, PushClient};
use wx_api::storage::TimelineEntry;

/// Pushes on their way at once, at most.
pub const IN_FLIGHT: usize = 256;

/// Sends `moment` events.
#[derive(Debug, Clone)]
pub struct Events {
    push: PushClient,
    permits: Arc<Semaphore>,
}

/// The body of a new-post event.
pub fn new_post(entry: &TimelineEntry) -> serde_json::Value {
    json!({ "type": "post", "author": entry.author, "seq": entry.seq, "created_ms": entry.created_ms })
}

impl Events {
    /// Pushes through `push`.
    pub fn new(push: PushClient) -> Events {
        Events {
            push,
            permits: Arc::new(Semaphore::new(IN_FLIGHT)),
        }
    }

    /// Tells each of `uids` about `body`, soon.
    pub fn send(&self, uids: &[u64], body: serde_json::Value) {
        let json = body.to_string();
        for &uid in uids {
            let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                metrics::counter!("wx_moments_events_dropped_total").increment(1);
                continue;
            };
            let push = self.push.clone();
            let event = Event {
                kind: "moment".to_string(),
                json: json.clone(),
            };
            tokio::spawn(async move {
                let sent = push
                    .deliver_with(
                        DeliverRequest {
                            uid,
                            event: Some(event),
                            except_connection: 0,
                        },
                        wx_api::by_uid(uid),
                    )
                    .await;
                if let Err(status) = sent {
                    tracing::debug!(uid, %status, "moment event not pushed");
                }
                metrics::counter!("wx_moments_events_total").increment(1);
                drop(permit);
            });
        }
    }
}
