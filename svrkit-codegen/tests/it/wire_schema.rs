//! svrkit-core encodes frame headers by hand for speed. This test holds that codec to the
//! normative schema in `idl/svrkit/protocol.proto`: every field, set through reflection on
//! the schema, must decode through the hand codec to the same value, and back.

use std::path::Path;

use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use svrkit::protocol::{GoAway, GoAwayReason, RequestHeader, ResponseHeader};

fn schema(message: &str) -> MessageDescriptor {
    let idl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../idl");
    let pool = protox::compile(["svrkit/protocol.proto"], [idl])
        .map(|fds| prost_reflect::DescriptorPool::from_file_descriptor_set(fds).expect("pool"))
        .expect("protocol.proto compiles");
    pool.get_message_by_name(message)
        .expect("message in schema")
}

fn set(msg: &mut DynamicMessage, field: &str, value: Value) {
    msg.set_field_by_name(field, value);
}

#[test]
fn request_header_matches_the_schema_both_ways() {
    let mut msg = DynamicMessage::new(schema("svrkit.protocol.RequestHeader"));
    set(
        &mut msg,
        "service",
        Value::String("svrkit.demo.Echo".into()),
    );
    set(&mut msg, "method", Value::String("Echo".into()));
    set(&mut msg, "timeout_us", Value::U64(123_456));
    set(&mut msg, "trace_id", Value::U64(u64::MAX - 1));
    set(&mut msg, "span_id", Value::U64(77));
    set(&mut msg, "caller", Value::String("account".into()));
    set(&mut msg, "business_priority", Value::U32(9));
    set(&mut msg, "uid", Value::U64(1 << 40));
    set(&mut msg, "user_priority", Value::U32(100));
    set(&mut msg, "gray_tag", Value::String("gray".into()));
    set(&mut msg, "attempt", Value::U32(3));
    // Explicit presence: a routing key of 0 is still sent.
    set(&mut msg, "routing_key", Value::U64(0));
    set(
        &mut msg,
        "metadata",
        Value::Map(
            [
                ("tenant", &b"acme"[..]),
                ("authorization", &b"\x00\xffbearer"[..]),
            ]
            .into_iter()
            .map(|(k, v)| {
                (
                    prost_reflect::MapKey::String(k.into()),
                    Value::Bytes(prost::bytes::Bytes::from_static(v)),
                )
            })
            .collect(),
        ),
    );
    set(&mut msg, "trace_id_high", Value::U64(0x4bf9_2f35_77b3_4da6));
    let bytes = msg.encode_to_vec();
    let mut metadata = svrkit::metadata::Metadata::new();
    metadata
        .insert("authorization", &b"\x00\xffbearer"[..])
        .expect("key");
    metadata.insert("tenant", "acme").expect("key");
    let expected = RequestHeader {
        service: "svrkit.demo.Echo",
        method: "Echo",
        timeout_us: 123_456,
        trace_id: u64::MAX - 1,
        span_id: 77,
        caller: "account",
        business_priority: 9,
        uid: 1 << 40,
        user_priority: 100,
        gray_tag: "gray",
        attempt: 3,
        routing_key: Some(0),
        metadata: Some(std::sync::Arc::new(metadata)),
        trace_id_high: 0x4bf9_2f35_77b3_4da6,
    };
    assert_eq!(
        RequestHeader::decode(&bytes).expect("hand codec reads schema bytes"),
        expected
    );
    assert_eq!(
        msg.descriptor().fields().count(),
        14,
        "a new schema field needs codec support"
    );

    let mut hand = Vec::new();
    expected.encode(&mut hand);
    let back =
        DynamicMessage::decode(msg.descriptor(), hand.as_slice()).expect("schema reads hand bytes");
    assert_eq!(back, msg);
}

#[test]
fn response_header_and_goaway_match_the_schema() {
    let mut msg = DynamicMessage::new(schema("svrkit.protocol.ResponseHeader"));
    set(&mut msg, "code", Value::U32(17));
    set(&mut msg, "message", Value::String("overloaded".into()));
    set(&mut msg, "admission_business", Value::U32(4));
    set(&mut msg, "admission_user", Value::U32(64));
    set(&mut msg, "not_processed", Value::Bool(true));
    set(&mut msg, "passed_on", Value::Bool(true));
    set(&mut msg, "reason", Value::String("not_friend".into()));
    set(
        &mut msg,
        "details",
        Value::Bytes(prost::bytes::Bytes::from_static(b"\x08\x01")),
    );
    let expected = ResponseHeader {
        code: 17,
        message: "overloaded",
        admission_business: 4,
        admission_user: 64,
        not_processed: true,
        passed_on: true,
        reason: "not_friend",
        details: b"\x08\x01",
    };
    assert_eq!(
        ResponseHeader::decode(&msg.encode_to_vec()).expect("decode"),
        expected
    );
    let mut hand = Vec::new();
    expected.encode(&mut hand);
    assert_eq!(
        DynamicMessage::decode(msg.descriptor(), hand.as_slice()).expect("decode"),
        msg
    );

    let mut msg = DynamicMessage::new(schema("svrkit.protocol.GoAway"));
    set(&mut msg, "reason", Value::EnumNumber(2));
    set(&mut msg, "message", Value::String("too big".into()));
    let expected = GoAway {
        reason: GoAwayReason::FrameTooLarge,
        message: "too big",
    };
    assert_eq!(
        GoAway::decode(&msg.encode_to_vec()).expect("decode"),
        expected
    );
    let mut hand = Vec::new();
    expected.encode(&mut hand);
    assert_eq!(
        DynamicMessage::decode(msg.descriptor(), hand.as_slice()).expect("decode"),
        msg
    );
}
