//! Property tests of what the network hands a server — the stable-toolchain smoke run of
//! the fuzz targets' properties (`svrkit-core/fuzz`), in every suite run: arbitrary bytes
//! never panic a decoder, whatever decodes re-encodes to its reported length and decodes
//! back to itself, and every header and frame round-trips.

use bytes::BytesMut;
use proptest::prelude::*;
use svrkit::protocol::{self, FrameKind, GoAway, GoAwayReason, RequestHeader, ResponseHeader};

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9_./ -]{0,40}").expect("a regex")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn request_headers_round_trip(
        service in text(), method in text(), caller in text(), gray in text(),
        timeout_us: u64, trace_id: u64, span_id: u64, uid: u64,
        business: u32, user: u32, attempt: u32, routing_key: Option<u64>, trace_id_high: u64,
        entries in proptest::collection::vec(
            ("[a-z0-9._-]{1,64}", proptest::collection::vec(any::<u8>(), 0..64)),
            0..8,
        ),
    ) {
        let mut metadata = svrkit::metadata::Metadata::new();
        for (key, value) in entries {
            metadata.insert(&key, value).expect("within the bounds");
        }
        let header = RequestHeader {
            service: &service, method: &method, timeout_us, trace_id, span_id,
            caller: &caller, business_priority: business, uid, user_priority: user,
            gray_tag: &gray, attempt, routing_key,
            metadata: (!metadata.is_empty()).then(|| std::sync::Arc::new(metadata)),
            trace_id_high,
        };
        let mut buf = Vec::new();
        header.encode(&mut buf);
        prop_assert_eq!(buf.len(), header.encoded_len());
        prop_assert_eq!(RequestHeader::decode(&buf), Ok(header));
    }

    #[test]
    fn response_headers_round_trip(
        code: u32, message in text(), business: u32, user: u32, not_processed: bool,
        passed_on: bool, reason in text(), details in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let header = ResponseHeader {
            code, message: &message, admission_business: business, admission_user: user,
            not_processed, passed_on, reason: &reason, details: &details,
        };
        let mut buf = Vec::new();
        header.encode(&mut buf);
        prop_assert_eq!(buf.len(), header.encoded_len());
        prop_assert_eq!(ResponseHeader::decode(&buf), Ok(header));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_what_decodes_round_trips(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(h) = RequestHeader::decode(&data) {
            let mut out = Vec::new();
            h.encode(&mut out);
            prop_assert_eq!(out.len(), h.encoded_len());
            prop_assert_eq!(RequestHeader::decode(&out), Ok(h));
        }
        if let Ok(h) = ResponseHeader::decode(&data) {
            let mut out = Vec::new();
            h.encode(&mut out);
            prop_assert_eq!(ResponseHeader::decode(&out), Ok(h));
        }
        let _ = GoAway::decode(&data);
        let _ = svrkit::tls::uri_sans(&data);
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(frame)) = protocol::decode_frame(&mut buf, 256) {
            prop_assert!(frame.header.len() + frame.body.len() <= 256);
        }
    }

    #[test]
    fn frames_round_trip(id: u64, header in proptest::collection::vec(any::<u8>(), 0..64), body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut buf = BytesMut::new();
        protocol::encode_frame_head(&mut buf, FrameKind::Request, id, header.len(), body.len());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&body);
        let frame = protocol::decode_frame(&mut buf, 1 << 20).expect("valid").expect("complete");
        prop_assert_eq!(frame.id, id);
        prop_assert_eq!(&frame.header[..], &header[..]);
        prop_assert_eq!(&frame.body[..], &body[..]);
        prop_assert!(buf.is_empty());
    }
}

#[test]
fn goaway_round_trips() {
    let g = GoAway {
        reason: GoAwayReason::Shutdown,
        message: "bye",
    };
    let mut buf = Vec::new();
    g.encode(&mut buf);
    assert_eq!(GoAway::decode(&buf), Ok(g));
}
