//! What the gateway stamps on the requests it sends down: checked by recording servers
//! that stand where account and contact run and note the context each request carried.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use access::{Caller, Gateway, Limits};
use serde_json::json;
use svrkit::overload::user_priority;
use svrkit::{Channel, Context, Server, Status};
use tokio::net::TcpListener;
use wx_api::account::account_server::{Account, AccountServer};
use wx_api::account::*;
use wx_api::contact::contact_server::{Contact, ContactServer};
use wx_api::contact::*;

/// (uid, business priority, user priority, remaining deadline) of each request seen.
type Seen = Arc<Mutex<Vec<(u64, u32, u32, Option<Duration>)>>>;

#[derive(Clone, Default)]
struct Recorder(Seen);

impl Recorder {
    fn record(&self) {
        let ctx = Context::current();
        self.0.lock().expect("lock").push((
            ctx.uid(),
            ctx.business_priority(),
            ctx.user_priority(),
            ctx.remaining(),
        ));
    }
}

macro_rules! recording {
    ($($method:ident: $request:ty => $reply:ty),* $(,)?) => {
        $(
            async fn $method(&self, _request: $request) -> Result<$reply, Status> {
                self.record();
                Ok(<$reply>::default())
            }
        )*
    };
}

impl Account for Recorder {
    recording! {
        register: RegisterRequest => RegisterReply,
        login: LoginRequest => LoginReply,
        login_challenge: LoginChallengeRequest => LoginChallengeReply,
        logout: LogoutRequest => LogoutReply,
        verify_token: VerifyTokenRequest => VerifyTokenReply,
        get_profiles: GetProfilesRequest => GetProfilesReply,
        update_profile: UpdateProfileRequest => Profile,
        find_user: FindUserRequest => Profile,
        exists: ExistsRequest => ExistsReply,
    }
}

impl Contact for Recorder {
    recording! {
        request: FriendRequest => RelationReply,
        accept: PeerRequest => RelationReply,
        reject: PeerRequest => RelationReply,
        remove: PeerRequest => RelationReply,
        block: PeerRequest => RelationReply,
        unblock: PeerRequest => RelationReply,
        list_friends: ListFriendsRequest => ListFriendsReply,
        list_requests: ListFriendsRequest => ListRequestsReply,
        check: CheckRequest => CheckReply,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_the_uid_the_user_priority_and_the_actions_business_priority() {
    let seen = Seen::default();
    let recorder = Recorder(Arc::clone(&seen));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        Server::builder()
            .add_service(AccountServer::new(recorder.clone()))
            .add_service(ContactServer::new(recorder))
            .serve(listener, std::future::pending()),
    );
    let gateway = Gateway::new(
        access::clients::Clients::over(&Channel::lazy([addr]), false),
        Limits::default(),
    );
    let user = Caller::User { uid: 42 };
    gateway
        .act(user, "friends.list", json!({}), None)
        .await
        .expect("friends.list");
    gateway
        .act(user, "friends.request", json!({ "peer": 7 }), None)
        .await
        .expect("friends.request");
    // Check's IDL priority is 20; the action table reads it as contact browsing (40).
    gateway
        .act(user, "relation.check", json!({ "peers": [7] }), None)
        .await
        .expect("relation.check");
    let anonymous = Caller::Anonymous {
        ip: [127, 0, 0, 1].into(),
    };
    gateway
        .act(
            anonymous,
            "login",
            json!({ "name": "ann", "password": "x" }),
            None,
        )
        .await
        .expect("login");
    let seen = seen.lock().expect("lock").clone();
    let limit = Limits::default().timeout;
    let uids: Vec<u64> = seen.iter().map(|s| s.0).collect();
    let business: Vec<u32> = seen.iter().map(|s| s.1).collect();
    let users: Vec<u32> = seen.iter().map(|s| s.2).collect();
    assert_eq!(uids, [42, 42, 42, 0]);
    // Reads 40, contact changes 30, signing in 10: the action table, not the IDL default.
    assert_eq!(business, [40, 30, 40, 10]);
    assert_eq!(users[..3], [user_priority(42); 3]);
    for (_, _, _, remaining) in &seen {
        let remaining = remaining.expect("a deadline travels with every request");
        assert!(remaining <= limit && remaining > Duration::ZERO);
    }
    // Unknown actions and missing users never reach a service.
    let unknown = gateway
        .act(user, "friends.teleport", json!({}), None)
        .await
        .expect_err("unknown");
    assert_eq!(unknown.reason.as_deref(), Some("unknown_action"));
    let anonymous_list = gateway
        .act(anonymous, "friends.list", json!({}), None)
        .await
        .expect_err("needs a user");
    assert_eq!(anonymous_list.reason.as_deref(), Some("token_missing"));
    assert_eq!(seen.len(), 4);
}
