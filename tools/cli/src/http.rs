//! A minimal HTTP/1.1 GET for admin endpoints (loopback, tiny JSON answers).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most bytes read of an answer.
const MAX_ANSWER: u64 = 4 << 20;

/// `GET path` at `addr`: the status code and body, or `None` when nothing answers
/// properly within a second.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        // An admin answer is a few kilobytes; a larger one is not read whole.
        (&mut stream)
            .take(MAX_ANSWER)
            .read_to_end(&mut raw)
            .await
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
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
