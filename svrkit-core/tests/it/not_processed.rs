//! A handler that answers "not mine" (`Status::not_mine`) makes the client retry even a
//! non-idempotent method on another instance, within the attempt limit; an ordinary
//! failure of that method is never retried, nor one that passes on a locally "not
//! processed" status from a call of its own (it did process its request).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use svrkit::codegen::{BoxFuture, Bytes, MethodDesc, ServiceDesc, ServiceHandler};
use svrkit::{CallOptions, Channel, Code, Server, Status};
use tokio::net::TcpListener;

const PUT: MethodDesc = MethodDesc {
    service: "test.Owner",
    method: "Put",
    idempotent: false,
    timeout: None,
    priority: 0,
    stale_read: false,
};
static SERVICE: ServiceDesc = ServiceDesc {
    name: "test.Owner",
    methods: &[PUT],
};

/// How an instance answers.
#[derive(Clone, Copy)]
enum Answer {
    /// With its name.
    Serve,
    /// `Status::not_mine`.
    NotMine,
    /// A plain failure after running.
    Fail,
    /// A failure it got from a call of its own that never reached that callee.
    PassOnNotProcessed,
}

/// Answers with its own name when it owns the request, else as told.
struct Owner {
    name: &'static str,
    answer: Answer,
    calls: Arc<AtomicU32>,
}

impl ServiceHandler for Owner {
    fn descriptor(&self) -> &'static ServiceDesc {
        &SERVICE
    }
    fn call(
        &self,
        _method: &'static MethodDesc,
        _body: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (name, answer) = (self.name, self.answer);
        Box::pin(async move {
            match answer {
                Answer::Serve => Ok(Bytes::from_static(name.as_bytes())),
                Answer::NotMine => Err(Status::not_mine("not mine")),
                Answer::Fail => Err(Status::unavailable("failed")),
                Answer::PassOnNotProcessed => {
                    Err(Status::unavailable("next hop refused").with_not_processed())
                }
            }
        })
    }
}

async fn serve(
    name: &'static str,
    answer: Answer,
) -> (
    std::net::SocketAddr,
    Arc<AtomicU32>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let calls = Arc::new(AtomicU32::new(0));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let owner = Owner {
        name,
        answer,
        calls: Arc::clone(&calls),
    };
    tokio::spawn(Server::builder().add_service(owner).serve(listener, async {
        let _ = stopped.await;
    }));
    (addr, calls, stop)
}

async fn put(channel: &Channel) -> Result<Bytes, Status> {
    channel
        .call(svrkit::client::RpcRequest {
            method: (&PUT).into(),
            body: Bytes::new(),
            options: CallOptions::new(),
        })
        .await
        .map(|r| r.body)
}

#[tokio::test]
async fn not_mine_is_retried_on_another_instance_and_plain_errors_are_not() {
    let (refuser, refused, _a) = serve("refuser", Answer::NotMine).await;
    let (owner, owned, _b) = serve("owner", Answer::Serve).await;
    let channel = Channel::builder()
        .balance(svrkit::balance::Balance::RoundRobin)
        .lazy([refuser, owner]);
    for _ in 0..4 {
        assert_eq!(put(&channel).await.expect("served"), "owner");
    }
    assert_eq!(owned.load(Ordering::SeqCst), 4);
    assert!(refused.load(Ordering::SeqCst) >= 1, "the refuser was asked");

    // Every instance refuses: the caller gets the status, after a bounded number of tries.
    let (a, a_calls, _c) = serve("a", Answer::NotMine).await;
    let (b, b_calls, _d) = serve("b", Answer::NotMine).await;
    let channel = Channel::lazy([a, b]);
    let status = put(&channel).await.expect_err("nobody owns it");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.is_not_processed());
    let tries = a_calls.load(Ordering::SeqCst) + b_calls.load(Ordering::SeqCst);
    assert!((2..=3).contains(&tries), "{tries} tries");

    // A non-idempotent method that failed after running is not repeated, whether its
    // failure was its own or one it passed on from a call that never reached its callee.
    for answer in [Answer::Fail, Answer::PassOnNotProcessed] {
        let (e, e_calls, _e) = serve("e", answer).await;
        let (f, f_calls, _f) = serve("f", answer).await;
        let channel = Channel::lazy([e, f]);
        let status = put(&channel).await.expect_err("failed");
        assert!(!status.is_not_processed());
        assert_eq!(
            e_calls.load(Ordering::SeqCst) + f_calls.load(Ordering::SeqCst),
            1
        );
    }
}
