//! One WebSocket session driven by arbitrary bytes: split at NUL into frames (text when
//! UTF-8, binary otherwise), the first preceded by a valid auth frame when `auth_first`,
//! sent to access-long's endpoint; every frame the server sends back must be a JSON
//! object. Shared by the WebSocket property test and the `ws_session` fuzz target.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Runs one session; returns how many frames the server answered with.
pub(crate) async fn drive(addr: SocketAddr, input: &[u8], auth_first: bool) -> usize {
    let url = format!("ws://{addr}/v1/ws");
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        panic!("access-long refused a WebSocket");
    };
    let mut sent = 0;
    if auth_first {
        let auth = r#"{"op":"auth","token":"7.00112233445566778899aabbccddeeff"}"#;
        ws.send(Message::text(auth)).await.expect("send");
        sent += 1;
    }
    for frame in input.split(|b| *b == 0).take(8) {
        let message = match std::str::from_utf8(frame) {
            Ok(text) => Message::text(text),
            Err(_) => Message::binary(frame.to_vec()),
        };
        if ws.send(message).await.is_err() {
            break;
        }
        sent += 1;
    }
    // Every frame is answered (a result or an error), or the server closes after a
    // failed authentication; the timeout only bounds a session that breaks that.
    let mut answered = 0;
    let mut closed = false;
    while answered < sent {
        let message = match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(message))) => message,
            // The connection ended (closed or reset): nothing more will come.
            Ok(Some(Err(_)) | None) => {
                closed = true;
                break;
            }
            Err(_) => break,
        };
        match message {
            Message::Text(text) => {
                let value: serde_json::Value =
                    serde_json::from_str(text.as_str()).expect("the server sends JSON");
                assert!(value.is_object(), "{value}");
                answered += 1;
            }
            Message::Close(_) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(
        answered == sent || closed,
        "{answered} of {sent} frames answered and the connection still open"
    );
    answered
}
