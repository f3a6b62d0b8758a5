//! A load-balancing strategy of the user's own plugs into a channel: it sees the
//! candidates the channel narrowed (with their weights and zones from the registry's
//! records) and its choice is where calls go.

use std::sync::{Arc, Mutex};

use svrkit::balance::{Balancer, Call, Candidate};
use svrkit::client::Target;
use svrkit::codegen::{BoxFuture, Bytes, MethodDesc, ServiceDesc, ServiceHandler};
use svrkit::{CallOptions, Channel, Server, Status};
use tokio::net::TcpListener;

const WHO: MethodDesc = MethodDesc {
    service: "test.Who",
    method: "Who",
    idempotent: true,
    timeout: None,
    priority: 0,
    stale_read: false,
};
static SERVICE: ServiceDesc = ServiceDesc {
    name: "test.Who",
    methods: &[WHO],
};

/// Answers with its name.
struct Named(&'static str);

impl ServiceHandler for Named {
    fn descriptor(&self) -> &'static ServiceDesc {
        &SERVICE
    }
    fn call(&self, _: &'static MethodDesc, _: Bytes) -> BoxFuture<'static, Result<Bytes, Status>> {
        let name = self.0;
        Box::pin(async move { Ok(Bytes::from_static(name.as_bytes())) })
    }
}

/// What a strategy was offered for one call: (name, weight, zone) of each candidate.
type Offer = Vec<(String, u32, String)>;

/// Always the heaviest candidate; records what it was offered.
#[derive(Debug, Default, Clone)]
struct Heaviest {
    offered: Arc<Mutex<Vec<Offer>>>,
}

impl Balancer for Heaviest {
    fn choose(&self, _call: &Call<'_>, candidates: &[Candidate<'_>]) -> usize {
        self.offered.lock().expect("lock").push(
            candidates
                .iter()
                .map(|c| (c.name.to_string(), c.weight, c.zone.to_string()))
                .collect(),
        );
        candidates
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| c.weight)
            .map_or(0, |(i, _)| i)
    }
}

#[tokio::test]
async fn a_users_strategy_decides_where_calls_go() {
    let mut targets = Vec::new();
    for (name, weight) in [("light", 10), ("heavy", 500), ("middle", 100)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(
            Server::builder()
                .add_service(Named(name))
                .serve(listener, std::future::pending()),
        );
        targets.push(Target {
            name: name.to_string(),
            weight,
            zone: "z1".to_string(),
            ..Target::stable(addr)
        });
    }
    let strategy = Heaviest::default();
    let channel = Channel::builder()
        .balancer(strategy.clone())
        .targets(targets);
    for _ in 0..5 {
        let reply = channel
            .call(svrkit::client::RpcRequest {
                method: (&WHO).into(),
                body: Bytes::new(),
                options: CallOptions::new(),
            })
            .await
            .expect("call");
        assert_eq!(reply.body, "heavy");
    }
    let offered = strategy.offered.lock().expect("lock").clone();
    assert_eq!(offered.len(), 5);
    let mut first = offered[0].clone();
    first.sort();
    assert_eq!(
        first,
        [
            ("heavy".to_string(), 500, "z1".to_string()),
            ("light".to_string(), 10, "z1".to_string()),
            ("middle".to_string(), 100, "z1".to_string()),
        ]
    );
}
