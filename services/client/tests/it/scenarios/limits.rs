//! Per-user rate limits at the access tier.

use serde_json::json;
use wx_client::Ws;

use crate::harness::{Backend, call, refused, unique};

/// Each user has their own request budget on each gateway (`burst` requests here, and
/// practically no refill): past it, 429 `rate_limited`; other users go on.
pub async fn each_user_is_rate_limited(backend: &Backend, burst: usize) {
    let http = &backend.http;
    let a = backend.user(&unique("greedy")).await;
    let b = backend.user(&unique("patient")).await;
    for _ in 0..burst {
        call(http, "friends.list", json!({}), Some(&a.token)).await;
    }
    let limited = refused(
        http,
        "friends.list",
        json!({}),
        Some(&a.token),
        429,
        "resource_exhausted",
    )
    .await;
    assert_eq!(limited.reason(), "rate_limited");
    // The long connection is limited the same way.
    let mut ws = Ws::connect(backend.ws[0], &a.token)
        .await
        .expect("connect")
        .expect("auth");
    for _ in 0..burst {
        let answer = ws.call("friends.list", json!({})).await.expect("answer");
        assert_eq!(answer["ok"], true, "{answer}");
    }
    let answer = ws.call("friends.list", json!({})).await.expect("answer");
    assert_eq!(answer["error"]["reason"], "rate_limited", "{answer}");
    // Another user is not affected.
    call(http, "friends.list", json!({}), Some(&b.token)).await;
}
