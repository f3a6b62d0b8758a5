//! HTTP GET for admin endpoints (loopback, small JSON answers), through hyper's client.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The most bytes read of an answer.
const MAX_ANSWER: usize = 4 << 20;

/// `GET path` at `addr`: the status code and body, or `None` when nothing answers
/// properly within a second (or the answer is over 4 MiB, or not UTF-8).
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let fetch = async {
        let response = client
            .get(format!("http://{addr}{path}").parse().ok()?)
            .await
            .ok()?;
        let code = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .ok()?
            .to_bytes();
        Some((code, String::from_utf8(body.to_vec()).ok()?))
    };
    tokio::time::timeout(Duration::from_secs(1), fetch)
        .await
        .ok()
        .flatten()
}

/// `GET path` at `addr` as JSON, when it answers 200.
pub(crate) async fn get_json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    match get(addr, path).await? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}
