//! A gateway whose every downstream service is one in-process server answering each
//! method at once with an empty reply: the gateway's own work — parsing a client's JSON,
//! checking it, building requests, turning replies into JSON — runs for real, and nothing
//! downstream can fail or slow it. Shared by the action property test and the
//! `gateway_actions` fuzz target (`services/fuzz`), which includes this file.

use std::sync::Arc;

use access::{Gateway, Limits};
use svrkit::{Channel, Server, Status};
use tokio::net::TcpListener;
use wx_api::access::push_server::{Push, PushServer};
use wx_api::access::*;
use wx_api::account::account_server::{Account, AccountServer};
use wx_api::account::*;
use wx_api::contact::contact_server::{Contact, ContactServer};
use wx_api::contact::*;
use wx_api::message::message_server::{Message, MessageServer};
use wx_api::message::*;
use wx_api::moments::moments_server::{Moments, MomentsServer};
use wx_api::moments::*;

/// Answers every method with its reply type's default value; `Moments/Timeline` and
/// `Message/Send` first wait for a permit of `timelines` and `sends` when there is one (a
/// downstream that is slow to answer, held by the test).
#[derive(Clone, Default)]
pub(crate) struct Answering {
    pub(crate) timelines: Option<Arc<tokio::sync::Semaphore>>,
    pub(crate) sends: Option<Arc<tokio::sync::Semaphore>>,
}

macro_rules! answering {
    ($($method:ident: $request:ty => $reply:ty),* $(,)?) => {
        $(
            async fn $method(&self, _request: $request) -> Result<$reply, Status> {
                Ok(<$reply>::default())
            }
        )*
    };
}

impl Account for Answering {
    /// Any token of user 7 is valid for an hour.
    async fn verify_token(&self, request: VerifyTokenRequest) -> Result<VerifyTokenReply, Status> {
        let valid = request.token.starts_with("7.");
        Ok(VerifyTokenReply {
            state: if valid {
                TokenState::Valid as i32
            } else {
                TokenState::Invalid as i32
            },
            uid: if valid { 7 } else { 0 },
            expires_ms: wx_api::now_ms() + 3_600_000,
        })
    }

    answering! {
        register: RegisterRequest => RegisterReply,
        login: LoginRequest => LoginReply,
        login_challenge: LoginChallengeRequest => LoginChallengeReply,
        logout: LogoutRequest => LogoutReply,
        get_profiles: GetProfilesRequest => GetProfilesReply,
        update_profile: UpdateProfileRequest => Profile,
        find_user: FindUserRequest => Profile,
        exists: ExistsRequest => ExistsReply,
    }
}

impl Contact for Answering {
    answering! {
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

impl Message for Answering {
    async fn send(&self, _request: SendRequest) -> Result<SendReply, Status> {
        if let Some(gate) = &self.sends {
            let _permit = gate.acquire().await;
        }
        Ok(SendReply::default())
    }

    answering! {
        sync: SyncRequest => SyncReply,
        create_group: CreateGroupRequest => GroupInfo,
        add_members: AddMembersRequest => GroupInfo,
        leave_group: LeaveGroupRequest => LeaveGroupReply,
        send_group: SendGroupRequest => SendReply,
        get_group_info: GroupInfoRequest => GroupInfo,
    }
}

impl Moments for Answering {
    async fn timeline(&self, _request: TimelineRequest) -> Result<PostsReply, Status> {
        if let Some(gate) = &self.timelines {
            let _permit = gate.acquire().await;
        }
        Ok(PostsReply::default())
    }

    answering! {
        post: PostRequest => PostReply,
        delete: PostRef => DeleteReply,
        album: AlbumRequest => PostsReply,
        get: PostRef => PostView,
        like: PostRef => LikeReply,
        unlike: PostRef => LikeReply,
        comment: CommentRequest => CommentView,
        uncomment: UncommentRequest => DeleteReply,
    }
}

impl Push for Answering {
    answering! {
        deliver: DeliverRequest => DeliverReply,
        deliver_local: DeliverRequest => DeliverReply,
        announce: AnnounceRequest => AnnounceReply,
        endpoint: EndpointRequest => EndpointReply,
    }
}

/// Starts the answering server on loopback and a gateway over it, with no rate limit.
pub(crate) async fn gateway() -> Arc<Gateway> {
    gateway_over(answering_server().await)
}

/// Starts the answering server on loopback; its address.
pub(crate) async fn answering_server() -> std::net::SocketAddr {
    answering_server_with(Answering::default()).await
}

/// Starts `answering` as a server on loopback; its address.
pub(crate) async fn answering_server_with(answering: Answering) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        Server::builder()
            .without_admission()
            .add_service(AccountServer::new(answering.clone()))
            .add_service(ContactServer::new(answering.clone()))
            .add_service(MessageServer::new(answering.clone()))
            .add_service(MomentsServer::new(answering.clone()))
            .add_service(PushServer::new(answering))
            .serve(listener, std::future::pending()),
    );
    addr
}

/// A gateway whose services are all at `addr`, with no rate limit.
pub(crate) fn gateway_over(addr: std::net::SocketAddr) -> Arc<Gateway> {
    gateway_limited(addr, Limits::default().max_in_flight)
}

/// A gateway whose services are all at `addr`, with no rate limit, running at most
/// `max_in_flight` requests at once.
pub(crate) fn gateway_limited(addr: std::net::SocketAddr, max_in_flight: usize) -> Arc<Gateway> {
    gateway_with(
        addr,
        Limits {
            max_in_flight,
            ..Limits::default()
        },
    )
}

/// A gateway whose services are all at `addr`, with `limits` but no rate limit.
pub(crate) fn gateway_with(addr: std::net::SocketAddr, limits: Limits) -> Arc<Gateway> {
    let channel = Channel::builder().plaintext().lazy([addr]);
    Arc::new(Gateway::new(
        access::clients::Clients::over(&channel, true),
        Limits {
            rate_per_sec: 1e12,
            burst: 1e12,
            ..limits
        },
    ))
}

/// One gateway for the whole process (started on first use, in the caller's runtime).
pub(crate) async fn gateway_once() -> Arc<Gateway> {
    static GATEWAY: tokio::sync::OnceCell<Arc<Gateway>> = tokio::sync::OnceCell::const_new();
    Arc::clone(GATEWAY.get_or_init(gateway).await)
}

/// Serves access-long's WebSocket endpoint over the answering server on loopback; its
/// address. Tokens of user 7 (`7.…`) authenticate.
pub(crate) async fn websocket() -> std::net::SocketAddr {
    websocket_with(Answering::default(), Limits::default().max_in_flight).await
}

/// As [`websocket`], over `answering`, the gateway running at most `max_in_flight`
/// requests at once.
pub(crate) async fn websocket_with(
    answering: Answering,
    max_in_flight: usize,
) -> std::net::SocketAddr {
    websocket_limited(
        answering,
        Limits {
            max_in_flight,
            ..Limits::default()
        },
    )
    .await
}

/// As [`websocket`], over `answering`, the gateway with `limits` (but no rate limit).
pub(crate) async fn websocket_limited(
    answering: Answering,
    limits: Limits,
) -> std::net::SocketAddr {
    let services = answering_server_with(answering).await;
    let gateway = gateway_with(services, limits);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hub = access::push::Hub::new(services, Channel::builder().plaintext().lazy([services]));
    tokio::spawn(access::ws::serve(
        listener,
        gateway,
        hub,
        access::edge::EdgeLimits::default(),
        None,
        std::future::pending(),
    ));
    addr
}

/// One multi-threaded runtime for a test process's harness (property tests run their
/// cases synchronously and block on it).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
    })
}
