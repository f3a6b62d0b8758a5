//! Malformed input from a live socket: each case gets the precise status, or a goaway
//! with a reason and a closed connection — and the server keeps serving everyone else.

use crate::common;

use bytes::{BufMut, BytesMut};
use common::{Raw, TestServer, echo_body, start};
use echo::{EchoClient, EchoReply, EchoRequest, EchoServer, EchoService};
use prost::Message;
use svrkit::protocol::{self, FrameKind, GoAway, GoAwayReason, RequestHeader, ResponseHeader};
use svrkit::{Channel, Code, Server};

async fn echo_server() -> TestServer {
    start(
        Server::builder()
            .max_frame_size(64 * 1024)
            .add_service(EchoServer::new(EchoService::new("s"))),
    )
    .await
}

fn echo_header() -> RequestHeader<'static> {
    RequestHeader {
        service: "svrkit.demo.Echo",
        method: "Echo",
        timeout_us: 5_000_000,
        ..RequestHeader::default()
    }
}

/// A fresh, well-behaved client still gets answers.
async fn assert_still_serving(server: &TestServer) {
    let client = EchoClient::new(Channel::lazy([server.addr]));
    let reply = client
        .echo(EchoRequest {
            payload: b"still here".to_vec().into(),
            delay_ms: 0,
        })
        .await
        .expect("server keeps serving");
    assert_eq!(reply.payload, b"still here".to_vec());
}

/// Reads frames until a goaway, then expects the connection to close.
async fn expect_goaway_and_close(raw: &mut Raw, reason: GoAwayReason) -> String {
    let frame = raw.next_frame().await.expect("a goaway frame before close");
    assert_eq!(frame.kind, FrameKind::GoAway);
    let goaway = GoAway::decode(&frame.header).expect("goaway header");
    assert_eq!(goaway.reason, reason, "{}", goaway.message);
    let message = goaway.message.to_string();
    assert!(
        raw.next_frame().await.is_none(),
        "connection closed after goaway"
    );
    message
}

async fn expect_status(raw: &mut Raw, id: u64) -> (Code, String) {
    let frame = raw.next_frame().await.expect("a response");
    assert_eq!((frame.kind, frame.id), (FrameKind::Response, id));
    let header = ResponseHeader::decode(&frame.header).expect("response header");
    (Code::from_u32(header.code), header.message.to_string())
}

#[tokio::test]
async fn garbage_instead_of_a_preface_gets_a_protocol_error_goaway() {
    let server = echo_server().await;
    let mut raw = Raw::connect_bare(server.addr).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let message = expect_goaway_and_close(&mut raw, GoAwayReason::ProtocolError).await;
    assert!(message.contains("preface"), "{message}");
    assert_still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_protocol_version_is_refused() {
    let server = echo_server().await;
    let mut raw = Raw::connect_bare(server.addr).await;
    raw.send(b"SVRK\x09\0\0\0").await;
    let message = expect_goaway_and_close(&mut raw, GoAwayReason::ProtocolError).await;
    assert!(message.contains("version 9"), "{message}");
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_length_gets_frame_too_large_before_any_body_is_sent() {
    let server = echo_server().await;
    let mut raw = Raw::connect(server.addr).await;
    // Announce 1 GiB; send only the head.
    let mut head = BytesMut::new();
    head.put_u32(1 << 30);
    head.put_slice(&[1, 0, 0, 0]);
    head.put_u64(1);
    raw.send(&head).await;
    let message = expect_goaway_and_close(&mut raw, GoAwayReason::FrameTooLarge).await;
    assert!(message.contains("exceeds the limit"), "{message}");
    assert_still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_frames_after_a_valid_preface_close_only_that_connection() {
    let server = echo_server().await;
    let mut bystander = Raw::connect(server.addr).await;
    let mut raw = Raw::connect(server.addr).await;
    // A frame of an undefined kind.
    let mut frame = BytesMut::new();
    protocol::encode_frame_head(&mut frame, FrameKind::Ping, 1, 0, 0);
    frame[4] = 0x7f;
    raw.send(&frame).await;
    let message = expect_goaway_and_close(&mut raw, GoAwayReason::ProtocolError).await;
    assert!(message.contains("unknown frame kind 127"), "{message}");
    // The other connection is untouched.
    bystander
        .request(1, &echo_header(), &echo_body(b"ok"))
        .await;
    assert_eq!(expect_status(&mut bystander, 1).await.0, Code::Ok);
    server.shutdown().await;
}

#[tokio::test]
async fn a_truncated_frame_then_hang_up_leaves_the_server_serving() {
    let server = echo_server().await;
    let mut raw = Raw::connect(server.addr).await;
    let mut frame = BytesMut::new();
    let body = echo_body(b"cut");
    let header = echo_header();
    protocol::encode_frame_head(
        &mut frame,
        FrameKind::Request,
        1,
        header.encoded_len(),
        body.len(),
    );
    header.encode(&mut frame);
    frame.put_slice(&body);
    raw.send(&frame[..frame.len() - 3]).await;
    drop(raw);
    assert_still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_services_and_methods_are_unimplemented_and_the_connection_lives_on() {
    let server = echo_server().await;
    let mut raw = Raw::connect(server.addr).await;
    let body = echo_body(b"x");

    raw.request(
        1,
        &RequestHeader {
            service: "no.Such",
            ..echo_header()
        },
        &body,
    )
    .await;
    let (code, message) = expect_status(&mut raw, 1).await;
    assert_eq!(code, Code::Unimplemented);
    assert!(message.contains("unknown service no.Such"), "{message}");

    raw.request(
        2,
        &RequestHeader {
            method: "Nope",
            ..echo_header()
        },
        &body,
    )
    .await;
    let (code, message) = expect_status(&mut raw, 2).await;
    assert_eq!(code, Code::Unimplemented);
    assert!(
        message.contains("unknown method svrkit.demo.Echo/Nope"),
        "{message}"
    );

    raw.request(3, &echo_header(), &body).await;
    assert_eq!(expect_status(&mut raw, 3).await.0, Code::Ok);
    server.shutdown().await;
}

#[tokio::test]
async fn undecodable_bodies_and_headers_are_invalid_argument() {
    let server = echo_server().await;
    let mut raw = Raw::connect(server.addr).await;

    // Field 1 (bytes) announcing 200 bytes with 2 present.
    raw.request(1, &echo_header(), &[0x0a, 200, 1, 2]).await;
    let (code, message) = expect_status(&mut raw, 1).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("undecodable EchoRequest"), "{message}");

    // A header that is not protobuf.
    let mut frame = BytesMut::new();
    protocol::encode_frame_head(&mut frame, FrameKind::Request, 2, 3, 0);
    frame.put_slice(&[0x0a, 0x50, 0xff]);
    raw.send(&frame).await;
    let (code, message) = expect_status(&mut raw, 2).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("malformed request header"), "{message}");

    // Metadata past its bounds: a bad key, then more than 8 KiB.
    for (id, (key, len)) in [(10, ("Tenant", 1)), (11, ("big", 9 * 1024))] {
        let mut header = Vec::new();
        echo_header().encode(&mut header);
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, &key.to_string(), &mut entry);
        prost::encoding::bytes::encode(2, &vec![7u8; len], &mut entry);
        prost::encoding::encode_key(13, prost::encoding::WireType::LengthDelimited, &mut header);
        prost::encoding::encode_varint(entry.len() as u64, &mut header);
        header.extend_from_slice(&entry);
        let mut frame = BytesMut::new();
        protocol::encode_frame_head(&mut frame, FrameKind::Request, id, header.len(), 0);
        frame.put_slice(&header);
        raw.send(&frame).await;
        let (code, message) = expect_status(&mut raw, id).await;
        assert_eq!(code, Code::InvalidArgument);
        assert!(message.contains("request metadata"), "{message}");
    }

    // Same connection, still fine.
    raw.request(3, &echo_header(), &echo_body(b"fine")).await;
    let frame = raw.next_frame().await.expect("response");
    assert_eq!(
        ResponseHeader::decode(&frame.header).expect("header").code,
        0
    );
    assert_eq!(
        EchoReply::decode(frame.body).expect("body").payload,
        b"fine".to_vec()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let server = echo_server().await;
    let mut raw = Raw::connect(server.addr).await;
    let mut frame = BytesMut::new();
    protocol::encode_frame_head(&mut frame, FrameKind::Ping, 0xabcd, 0, 0);
    raw.send(&frame).await;
    let pong = raw.next_frame().await.expect("pong");
    assert_eq!((pong.kind, pong.id), (FrameKind::Pong, 0xabcd));
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted_on_both_sides() {
    let server = echo_server().await;
    // Client limit: refused locally, never sent.
    let small = EchoClient::new(Channel::builder().max_frame_size(1024).lazy([server.addr]));
    let big = EchoRequest {
        payload: vec![7u8; 4096].into(),
        delay_ms: 0,
    };
    let err = small.echo(big.clone()).await.expect_err("too big to send");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.is_not_processed());

    // Server limit (64 KiB): the server answers with goaway and closes; the client's next
    // call reconnects and succeeds.
    let client = EchoClient::new(Channel::lazy([server.addr]));
    let huge = EchoRequest {
        payload: vec![7u8; 100 * 1024].into(),
        delay_ms: 0,
    };
    let err = client.echo(huge).await.expect_err("server refuses");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("FrameTooLarge"), "{err}");
    let reply = client.echo(big).await.expect("a 4 KiB call fits");
    assert_eq!(reply.payload.len(), 4096);
    server.shutdown().await;
}
