//! Only the caller next to a failure retries it, and the failure's reason and details
//! reach the first caller unchanged. A chain client → front → middle → back,
//! three instances per tier, with every back instance failing an idempotent method: the
//! middle's channel retries the back (3 attempts), the front and the client pass the
//! failure on untouched. Without the `passed_on` flag each hop would retry the one below
//! and the back would see 3 × 3 × 3 = 27 attempts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use svrkit::codegen::{BoxFuture, Bytes, MethodDesc, ServiceDesc, ServiceHandler};
use svrkit::{CallOptions, Channel, Code, Server, Status};
use tokio::net::TcpListener;

const GET: MethodDesc = MethodDesc {
    service: "test.Hop",
    method: "Get",
    idempotent: true,
    timeout: None,
    priority: 0,
    stale_read: false,
};
static SERVICE: ServiceDesc = ServiceDesc {
    name: "test.Hop",
    methods: &[GET],
};

/// An instance of one tier: it forwards to the next tier, or fails with `code`.
struct Hop {
    next: Option<Channel>,
    code: Code,
    calls: Arc<AtomicU32>,
}

impl ServiceHandler for Hop {
    fn descriptor(&self) -> &'static ServiceDesc {
        &SERVICE
    }
    fn call(
        &self,
        _method: &'static MethodDesc,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (next, code) = (self.next.clone(), self.code);
        Box::pin(async move {
            match next {
                Some(next) => get(&next, body).await,
                None => Err(Status::new(code, "the disk is gone")
                    .with_reason("disk_gone")
                    .with_details(Bytes::from_static(b"\x08\x2a"))),
            }
        })
    }
}

async fn get(channel: &Channel, body: Bytes) -> Result<Bytes, Status> {
    channel
        .call(svrkit::client::RpcRequest {
            method: (&GET).into(),
            body,
            options: CallOptions::new(),
        })
        .await
        .map(|r| r.body)
}

/// Three instances of a tier, counting their calls together. The servers stop when the
/// returned senders are dropped.
async fn tier(
    next: Option<&Channel>,
    code: Code,
) -> (
    Channel,
    Arc<AtomicU32>,
    Vec<tokio::sync::oneshot::Sender<()>>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let mut addrs = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.push(listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let hop = Hop {
            next: next.cloned(),
            code,
            calls: Arc::clone(&calls),
        };
        tokio::spawn(Server::builder().add_service(hop).serve(listener, async {
            let _ = stopped.await;
        }));
        stops.push(stop);
    }
    let channel = Channel::builder().max_attempts(3).lazy(addrs);
    (channel, calls, stops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_three_hops_down_is_retried_only_by_the_hop_above_it() {
    for code in [Code::Unavailable, Code::Overloaded] {
        let (back, back_calls, _b) = tier(None, code).await;
        let (middle, middle_calls, _m) = tier(Some(&back), Code::Ok).await;
        let (front, front_calls, _f) = tier(Some(&middle), Code::Ok).await;

        let status = get(&front, Bytes::from_static(b"x"))
            .await
            .expect_err("the back fails");
        assert_eq!(status.code(), code);
        assert_eq!(status.message(), "the disk is gone");
        // The reason and details cross every hop with it.
        assert_eq!(status.reason(), Some("disk_gone"));
        assert_eq!(&status.details()[..], b"\x08\x2a");
        assert!(status.is_passed_on(), "it came back from a call");
        assert_eq!(
            (
                front_calls.load(Ordering::SeqCst),
                middle_calls.load(Ordering::SeqCst),
                back_calls.load(Ordering::SeqCst),
            ),
            (1, 1, 3),
            "{code:?}: only the middle retries the back, on each of its instances"
        );

        // The front and middle instances stay healthy in their callers' eyes: the next
        // call goes through as before.
        let status = get(&front, Bytes::from_static(b"y"))
            .await
            .expect_err("the back still fails");
        assert_eq!(status.code(), code);
        assert_eq!(
            (
                front_calls.load(Ordering::SeqCst),
                middle_calls.load(Ordering::SeqCst)
            ),
            (2, 2)
        );
    }
}
