//! `wx.contact.Contact`: the relation chain between users.
//!
//! Each user's edges live on their own `contactstore` shard, so a relation between two
//! users is two edges on (usually) two shards: friendship is FRIEND on both sides, a
//! request is REQUEST_SENT on the asker's side and REQUEST_RECEIVED on the other's, a
//! block is BLOCKED on the blocker's side only (the blocked user's side shows nothing, so
//! a block is not revealed). Every write names the edge version it read; a concurrent
//! change makes it fail with ABORTED rather than overwrite.
//!
//! The two writes of an action are not one transaction. Every action writes the other
//! user's edge first and the acting user's last, so if it stops in between, the acting
//! user still sees the state that offers the action, and repeating it finishes the job
//! (repeated writes are idempotent).
//!
//! Events for the other user (a request arrived, a request was accepted) go out through
//! the access tier's `Push` service; a failed push is logged, never fails the action.

use svrkit::{Code, Status};
use wx_api::access::{DeliverRequest, Event, PushClient};
use wx_api::account::{AccountClient, ExistsRequest, GetProfilesRequest};
use wx_api::contact::contact_server::Contact;
use wx_api::contact::{
    CheckReply, CheckRequest, Friend, FriendRequest, ListFriendsReply, ListFriendsRequest,
    ListRequestsReply, PeerRequest, PendingRequest, Relation, RelationReply,
};
use wx_api::storage::{
    ContactStoreClient, Edge, EdgeState, GetEdgesRequest, ListEdgesRequest, PutEdgeRequest,
};
use wx_api::{MAX_FRIENDS, acting_user, by_uid, retry_on_conflict};

/// How many times a friend request reads the edges again after losing a race for them.
const REQUEST_ATTEMPTS: usize = 4;

/// The contact service.
#[derive(Debug, Clone)]
pub struct ContactService {
    store: ContactStoreClient,
    account: AccountClient,
    push: Option<PushClient>,
    max_friends: u32,
}

/// Two users and the edges between them.
#[derive(Debug)]
struct Pair {
    me: u64,
    peer: u64,
    mine: Side,
    theirs: Side,
}

impl Pair {
    /// Fails unless `peer` has a request pending with the acting user.
    fn pending(&self) -> Result<(), Status> {
        if self.mine.state == EdgeState::RequestReceived {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "no pending request from user {}",
                self.peer
            )))
        }
    }
}

/// One side's edge as read, with the version a write must name.
#[derive(Debug, Clone, Default)]
struct Side {
    state: EdgeState,
    version: u64,
    greeting: String,
}

fn relation_of(state: EdgeState) -> Relation {
    match state {
        EdgeState::None => Relation::None,
        EdgeState::Friend => Relation::Friend,
        EdgeState::RequestSent => Relation::RequestSent,
        EdgeState::RequestReceived => Relation::RequestReceived,
        EdgeState::Blocked => Relation::Blocked,
    }
}

impl ContactService {
    /// The service over its store, the account service (existence, profiles) and,
    /// optionally, the push service.
    pub fn new(
        store: ContactStoreClient,
        account: AccountClient,
        push: Option<PushClient>,
    ) -> ContactService {
        ContactService {
            store,
            account,
            push,
            max_friends: MAX_FRIENDS,
        }
    }

    /// Lowers the friend ceiling (5,000 by default), for tests and small deployments.
    pub fn max_friends(mut self, max: u32) -> ContactService {
        self.max_friends = max.clamp(1, MAX_FRIENDS);
        self
    }

    async fn side(&self, owner: u64, peer: u64) -> Result<Side, Status> {
        let edges = self
            .store
            .get_edges_with(
                GetEdgesRequest {
                    owner,
                    peers: vec![peer],
                },
                by_uid(owner),
            )
            .await?
            .edges;
        Ok(edges
            .into_iter()
            .next()
            .map(|e| Side {
                state: e.state(),
                version: e.version,
                greeting: e.greeting,
            })
            .unwrap_or_default())
    }

    async fn put(
        &self,
        owner: u64,
        peer: u64,
        state: EdgeState,
        greeting: &str,
        expected: u64,
    ) -> Result<(), Status> {
        self.store
            .put_edge_with(
                PutEdgeRequest {
                    edge: Some(Edge {
                        owner,
                        peer,
                        state: state as i32,
                        greeting: greeting.to_string(),
                        updated_ms: 0,
                        version: 0,
                    }),
                    expected_version: expected,
                    max_friends: self.max_friends,
                },
                by_uid(owner),
            )
            .await
            .map(|_| ())
    }

    async fn push(&self, uid: u64, kind: &str, body: serde_json::Value) {
        let Some(push) = &self.push else {
            return;
        };
        let request = DeliverRequest {
            uid,
            event: Some(Event {
                kind: kind.to_string(),
                json: body.to_string(),
            }),
            except_connection: 0,
        };
        if let Err(e) = push.deliver_with(request, by_uid(uid)).await {
            tracing::debug!(uid, kind, error = %e, "push not delivered");
        }
    }

    /// The acting user, `peer`, and the edges between them both ways.
    async fn pair(&self, peer: u64) -> Result<Pair, Status> {
        let me = acting_user()?;
        let peer = Self::peer_of(me, peer)?;
        let (mine, theirs) = tokio::try_join!(self.side(me, peer), self.side(peer, me))?;
        Ok(Pair {
            me,
            peer,
            mine,
            theirs,
        })
    }

    fn peer_of(me: u64, peer: u64) -> Result<u64, Status> {
        if peer == 0 || peer == me {
            return Err(Status::invalid_argument("name another user"));
        }
        Ok(peer)
    }

    fn reply(peer: u64, relation: Relation) -> RelationReply {
        RelationReply {
            peer,
            relation: relation as i32,
        }
    }

    /// Both sides become friends (the caller checked the request is pending).
    async fn befriend(&self, me: u64, mine: &Side, peer: u64, theirs: &Side) -> Result<(), Status> {
        // Their side first, ours last: if we stop in between, we still see their request
        // and accepting again completes the friendship.
        if theirs.state != EdgeState::Friend {
            self.put(peer, me, EdgeState::Friend, "", theirs.version)
                .await?;
        }
        if let Err(e) = self
            .put(me, peer, EdgeState::Friend, "", mine.version)
            .await
        {
            // A lost race (ABORTED: our side changed since we read it, as when they accept
            // or ask at the same moment) is left for the caller to read again; their side
            // may already be the friendship they completed.
            if e.code() == Code::Aborted {
                return Err(e);
            }
            // Our side refused (our friend ceiling, say): their side goes back to waiting.
            let now = self.side(peer, me).await?;
            if now.state == EdgeState::Friend && theirs.state != EdgeState::Friend {
                let _ = self
                    .put(peer, me, theirs.state, &theirs.greeting, now.version)
                    .await;
            }
            return Err(e);
        }
        Ok(())
    }

    /// One attempt of a friend request from `me` to `peer` (`retried`: after losing a
    /// race for the edges).
    async fn request_once(
        &self,
        me: u64,
        peer: u64,
        greeting: &str,
        retried: bool,
    ) -> Result<RelationReply, Status> {
        let (mine, theirs) = tokio::try_join!(self.side(me, peer), self.side(peer, me))?;
        if theirs.state == EdgeState::Blocked {
            // Answered as any request is, so the block is not revealed: the asker's side
            // says "sent", the blocker never hears of it.
            if mine.state == EdgeState::None {
                self.put(me, peer, EdgeState::RequestSent, greeting, mine.version)
                    .await?;
            }
            return Ok(Self::reply(peer, Relation::RequestSent));
        }
        // They asked first, so asking back is accepting. That includes a request they made
        // while we blocked them, which we never heard of (our side is NONE).
        let they_asked = mine.state == EdgeState::RequestReceived
            || (mine.state == EdgeState::None && theirs.state == EdgeState::RequestSent);
        match mine.state {
            EdgeState::Blocked => Err(Status::failed_precondition(format!(
                "you blocked user {peer}; unblock them first"
            ))),
            // Friends by a race this request lost (the other side accepted meanwhile).
            EdgeState::Friend if retried => Ok(Self::reply(peer, Relation::Friend)),
            EdgeState::Friend => Err(Status::already_exists(format!(
                "you and user {peer} are friends already"
            ))),
            EdgeState::RequestSent => Ok(Self::reply(peer, Relation::RequestSent)),
            _ if they_asked => {
                self.befriend(me, &mine, peer, &theirs).await?;
                self.push(peer, "friend_accepted", serde_json::json!({ "by": me }))
                    .await;
                Ok(Self::reply(peer, Relation::Friend))
            }
            // NONE here: RECEIVED went to the arm above.
            EdgeState::None | EdgeState::RequestReceived => {
                self.put(
                    peer,
                    me,
                    EdgeState::RequestReceived,
                    greeting,
                    theirs.version,
                )
                .await?;
                self.put(me, peer, EdgeState::RequestSent, greeting, mine.version)
                    .await?;
                self.push(
                    peer,
                    "friend_request",
                    serde_json::json!({ "from": me, "greeting": greeting }),
                )
                .await;
                Ok(Self::reply(peer, Relation::RequestSent))
            }
        }
    }

    /// Removes the edges between the acting user `me` and `peer`: theirs first (unless it
    /// is their block, which stays), ours last, so repeating the action finishes the job.
    async fn clear(&self, me: u64, mine: &Side, peer: u64, theirs: &Side) -> Result<(), Status> {
        if theirs.state != EdgeState::None && theirs.state != EdgeState::Blocked {
            self.put(peer, me, EdgeState::None, "", theirs.version)
                .await?;
        }
        if mine.state != EdgeState::None {
            self.put(me, peer, EdgeState::None, "", mine.version)
                .await?;
        }
        Ok(())
    }
}

impl Contact for ContactService {
    async fn request(&self, request: FriendRequest) -> Result<RelationReply, Status> {
        let me = acting_user()?;
        let peer = Self::peer_of(me, request.peer)?;
        if request.greeting.chars().count() > 200 {
            return Err(Status::invalid_argument(
                "a greeting has at most 200 characters",
            ));
        }
        let exists = self
            .account
            .exists(ExistsRequest { uids: vec![peer] })
            .await?
            .exists;
        if exists.first() != Some(&true) {
            return Err(Status::not_found(format!("no user {peer}")).with_reason("unknown_user"));
        }
        // Two people who ask each other at once both read "nothing yet" and race for the
        // same edges: the loser reads again, finds the other's request and accepts it.
        let mut retried = false;
        retry_on_conflict(REQUEST_ATTEMPTS, || {
            let again = std::mem::replace(&mut retried, true);
            self.request_once(me, peer, &request.greeting, again)
        })
        .await
    }

    async fn accept(&self, request: PeerRequest) -> Result<RelationReply, Status> {
        let p = self.pair(request.peer).await?;
        p.pending()?;
        self.befriend(p.me, &p.mine, p.peer, &p.theirs).await?;
        self.push(p.peer, "friend_accepted", serde_json::json!({ "by": p.me }))
            .await;
        Ok(Self::reply(p.peer, Relation::Friend))
    }

    async fn reject(&self, request: PeerRequest) -> Result<RelationReply, Status> {
        let p = self.pair(request.peer).await?;
        p.pending()?;
        self.clear(p.me, &p.mine, p.peer, &p.theirs).await?;
        Ok(Self::reply(p.peer, Relation::None))
    }

    async fn remove(&self, request: PeerRequest) -> Result<RelationReply, Status> {
        let p = self.pair(request.peer).await?;
        if p.mine.state != EdgeState::Friend {
            return Err(Status::failed_precondition(format!(
                "you and user {} are not friends",
                p.peer
            )));
        }
        self.clear(p.me, &p.mine, p.peer, &p.theirs).await?;
        Ok(Self::reply(p.peer, Relation::None))
    }

    async fn block(&self, request: PeerRequest) -> Result<RelationReply, Status> {
        let Pair {
            me,
            peer,
            mine,
            theirs,
        } = self.pair(request.peer).await?;
        if mine.state == EdgeState::Blocked {
            return Ok(Self::reply(peer, Relation::Blocked));
        }
        // A friendship or pending request ends on their side; ours becomes the block.
        if theirs.state != EdgeState::None && theirs.state != EdgeState::Blocked {
            self.put(peer, me, EdgeState::None, "", theirs.version)
                .await?;
        }
        self.put(me, peer, EdgeState::Blocked, "", mine.version)
            .await?;
        Ok(Self::reply(peer, Relation::Blocked))
    }

    async fn unblock(&self, request: PeerRequest) -> Result<RelationReply, Status> {
        let me = acting_user()?;
        let peer = Self::peer_of(me, request.peer)?;
        let mine = self.side(me, peer).await?;
        if mine.state != EdgeState::Blocked {
            return Err(Status::failed_precondition(format!(
                "you have not blocked user {peer}"
            )));
        }
        self.put(me, peer, EdgeState::None, "", mine.version)
            .await?;
        Ok(Self::reply(peer, Relation::None))
    }

    async fn list_friends(&self, request: ListFriendsRequest) -> Result<ListFriendsReply, Status> {
        let me = acting_user()?;
        if request.owner != 0 && request.owner != me {
            return Err(Status::permission_denied(
                "a friends list is private to its owner",
            ));
        }
        let limit = match request.limit {
            0 => MAX_FRIENDS,
            n => n.min(MAX_FRIENDS),
        };
        let edges = self
            .store
            .list_edges_with(
                ListEdgesRequest {
                    owner: me,
                    state: EdgeState::Friend as i32,
                    after_peer: request.after,
                    limit,
                },
                by_uid(me),
            )
            .await?
            .edges;
        if edges.is_empty() {
            return Ok(ListFriendsReply::default());
        }
        // One batched profile call for the whole page.
        let profiles = self
            .account
            .get_profiles(GetProfilesRequest {
                uids: edges.iter().map(|e| e.peer).collect(),
            })
            .await?
            .profiles;
        let friends = edges
            .iter()
            .filter_map(|e| {
                let profile = profiles.iter().find(|p| p.uid == e.peer)?.clone();
                Some(Friend {
                    profile: Some(profile),
                    since_ms: e.updated_ms,
                })
            })
            .collect();
        Ok(ListFriendsReply { friends })
    }

    async fn list_requests(
        &self,
        request: ListFriendsRequest,
    ) -> Result<ListRequestsReply, Status> {
        let me = acting_user()?;
        if request.owner != 0 && request.owner != me {
            return Err(Status::permission_denied(
                "friend requests are private to their owner",
            ));
        }
        let edges = self
            .store
            .list_edges_with(
                ListEdgesRequest {
                    owner: me,
                    state: EdgeState::RequestReceived as i32,
                    after_peer: request.after,
                    limit: request.limit.min(MAX_FRIENDS),
                },
                by_uid(me),
            )
            .await?
            .edges;
        let profiles = if edges.is_empty() {
            Vec::new()
        } else {
            self.account
                .get_profiles(GetProfilesRequest {
                    uids: edges.iter().map(|e| e.peer).collect(),
                })
                .await?
                .profiles
        };
        let requests = edges
            .into_iter()
            .map(|e| PendingRequest {
                from: e.peer,
                profile: profiles.iter().find(|p| p.uid == e.peer).cloned(),
                greeting: e.greeting,
                sent_ms: e.updated_ms,
            })
            .collect();
        Ok(ListRequestsReply { requests })
    }

    async fn check(&self, request: CheckRequest) -> Result<CheckReply, Status> {
        let me = acting_user()?;
        if request.peers.len() > MAX_FRIENDS as usize {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_FRIENDS} peers per call"
            )));
        }
        let edges = match self
            .store
            .get_edges_with(
                GetEdgesRequest {
                    owner: me,
                    peers: request.peers.clone(),
                },
                by_uid(me),
            )
            .await
        {
            Ok(reply) => reply.edges,
            Err(e) if e.code() == Code::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let relations = request
            .peers
            .iter()
            .map(|peer| {
                edges
                    .iter()
                    .find(|e| e.peer == *peer)
                    .map_or(Relation::None, |e| relation_of(e.state())) as i32
            })
            .collect();
        Ok(CheckReply { relations })
    }
}
