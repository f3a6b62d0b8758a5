//! The byte-level example in docs/PROTOCOL.md, checked against the codec.

use bytes::{BufMut, BytesMut};
use svrkit::protocol::{self, FrameKind, RequestHeader, ResponseHeader};

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

#[test]
fn the_documented_request_and_response_bytes_are_what_the_codec_writes() {
    let header = RequestHeader {
        service: "svrkit.demo.Echo",
        method: "Echo",
        timeout_us: 500_000,
        ..RequestHeader::default()
    };
    let body = [0x0a, 0x02, b'h', b'i'];
    let mut buf = BytesMut::new();
    protocol::encode_frame_head(
        &mut buf,
        FrameKind::Request,
        1,
        header.encoded_len(),
        body.len(),
    );
    header.encode(&mut buf);
    buf.put_slice(&body);
    let documented = hex("00 00 00 2c 01 00 00 1c 00 00 00 00 00 00 00 01
         0a 10 73 76 72 6b 69 74 2e 64 65 6d 6f 2e 45 63 68 6f
         12 04 45 63 68 6f 18 a0 c2 1e 0a 02 68 69");
    assert_eq!(&buf[..], &documented[..]);

    let ok = ResponseHeader::default();
    let mut buf = BytesMut::new();
    protocol::encode_frame_head(
        &mut buf,
        FrameKind::Response,
        1,
        ok.encoded_len(),
        body.len(),
    );
    ok.encode(&mut buf);
    buf.put_slice(&body);
    assert_eq!(
        &buf[..],
        &hex("00 00 00 10 02 00 00 00 00 00 00 00 00 00 00 01 0a 02 68 69")[..]
    );

    let mut wire = BytesMut::from(&documented[..]);
    let frame = protocol::decode_frame(&mut wire, 1024)
        .expect("valid")
        .expect("whole");
    assert_eq!(
        RequestHeader::decode(&frame.header).expect("header"),
        header
    );
}
