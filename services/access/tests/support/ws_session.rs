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
    if auth_first {
        let auth = r#"{"op":"auth","token":"7.00112233445566778899aabbccddeeff"}"#;
        ws.send(Message::text(auth)).await.expect("send");
    }
    for frame in input.split(|b| *b == 0).take(8) {
        let message = match std::str::from_utf8(frame) {
            Ok(text) => Message::text(text),
            Err(_) => Message::binary(frame.to_vec()),
        };
        if ws.send(message).await.is_err() {
            break;
        }
    }
    let mut answered = 0;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(50), ws.next()).await
    {
        match message {
            Message::Text(text) => {
                let value: serde_json::Value =
                    serde_json::from_str(text.as_str()).expect("the server sends JSON");
                assert!(value.is_object(), "{value}");
                answered += 1;
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    answered
}
