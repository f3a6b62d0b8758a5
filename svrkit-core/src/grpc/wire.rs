//! The gRPC envelope both ways: status codes, `grpc-timeout`, `grpc-message`,
//! `grpc-status-details-bin`, message framing, and the request header fields as HTTP/2
//! headers (see the table in [`super`]).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message;

use crate::context::TraceParent;
use crate::metadata::Metadata;
use crate::protocol::RequestHeader;
use crate::status::{Code, MAX_DETAILS_LEN, MAX_REASON_LEN, Status};

/// The content type of gRPC requests and answers.
pub(crate) const CONTENT_TYPE: &str = "application/grpc";
/// The length prefix of one gRPC message: a compressed flag and a big-endian length.
pub(crate) const PREFIX_LEN: usize = 5;
/// The longest `grpc-message` sent (a longer message is cut on a character boundary).
const MAX_MESSAGE_LEN: usize = 4 * 1024;

/// The `google.rpc.ErrorInfo` domain of svrkit's reasons.
pub(crate) const DOMAIN: &str = "svrkit";
const ERROR_INFO_URL: &str = "type.googleapis.com/google.rpc.ErrorInfo";
const BYTES_VALUE_URL: &str = "type.googleapis.com/google.protobuf.BytesValue";

/// The gRPC code of a svrkit code: the same number for gRPC's 0 ..= 16;
/// `OVERLOADED` becomes `RESOURCE_EXHAUSTED` (with the `svrkit-code` trailer).
pub fn to_grpc_code(code: Code) -> u32 {
    match code {
        Code::Overloaded => Code::ResourceExhausted.as_u32(),
        code => code.as_u32(),
    }
}

/// The svrkit code of a gRPC code; numbers gRPC does not define read as `UNKNOWN`.
pub fn from_grpc_code(code: u32) -> Code {
    match code {
        0..=16 => Code::from_u32(code),
        _ => Code::Unknown,
    }
}

/// `grpc-timeout` for `timeout`: at most 8 digits, in the finest unit that fits.
pub fn encode_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    for (unit, per) in [
        ('n', 1u128),
        ('u', 1_000),
        ('m', 1_000_000),
        ('S', 1_000_000_000),
        ('M', 60_000_000_000),
    ] {
        // Round up: a deadline sent must not be earlier than the caller's.
        let value = nanos.div_ceil(per);
        if value <= MAX {
            return format!("{value}{unit}");
        }
    }
    format!("{}H", (nanos.div_ceil(3_600_000_000_000)).min(MAX))
}

/// The duration a `grpc-timeout` value names, or `None` when it is not one (1 to 8
/// digits and a unit of `H`, `M`, `S`, `m`, `u` or `n`).
pub fn decode_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-message`'s percent-encoding: bytes outside printable ASCII, and `%`, as `%XX`.
pub(crate) fn encode_message(message: &str) -> String {
    let message = truncate(message, MAX_MESSAGE_LEN);
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `grpc-message`; a malformed escape is kept as written, as gRPC asks.
pub(crate) fn decode_message(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%'
            && let Some(hex) = value.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

use crate::server::truncate;

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub(crate) code: i32,
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) details: Vec<prost_types::Any>,
}

/// `google.rpc.ErrorInfo` (its metadata map is not used).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ErrorInfo {
    #[prost(string, tag = "1")]
    pub(crate) reason: String,
    #[prost(string, tag = "2")]
    pub(crate) domain: String,
}

/// `google.protobuf.BytesValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BytesValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) value: Bytes,
}

/// Frames one message: the 5-byte prefix (not compressed) and the message.
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + message.len());
    buf.put_u8(0);
    buf.put_u32(message.len() as u32);
    buf.put_slice(message);
    buf.freeze()
}

/// Why the messages of a gRPC body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UnframeError {
    /// A message is compressed (svrkit does not compress).
    Compressed,
    /// A message is larger than the limit.
    TooLarge(usize),
}

/// Takes the next complete message off `buf`, if it holds one.
pub(crate) fn unframe(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, UnframeError> {
    let Some(prefix) = buf.first_chunk::<PREFIX_LEN>() else {
        return Ok(None);
    };
    if prefix[0] != 0 {
        return Err(UnframeError::Compressed);
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > max {
        return Err(UnframeError::TooLarge(len));
    }
    if buf.len() < PREFIX_LEN + len {
        return Ok(None);
    }
    let _ = buf.split_to(PREFIX_LEN);
    Ok(Some(buf.split_to(len).freeze()))
}

fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The trailers of an answer: `grpc-status` and, for a failure, its message, details and
/// svrkit's flags; always the server's admission level.
pub(crate) fn status_trailers(result: Result<(), &Status>, level: (u32, u32)) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    let code = result.err().map_or(Code::Ok, Status::code);
    trailers.insert("grpc-status", HeaderValue::from(to_grpc_code(code) as u16));
    if let Err(status) = result {
        if !status.message().is_empty() {
            trailers.insert(
                "grpc-message",
                header_value(&encode_message(status.message())),
            );
        }
        if code == Code::Overloaded {
            trailers.insert("svrkit-code", HeaderValue::from_static("overloaded"));
        }
        let mut details = Vec::new();
        if let Some(reason) = status.reason() {
            details.push(prost_types::Any {
                type_url: ERROR_INFO_URL.to_string(),
                value: ErrorInfo {
                    reason: reason.to_string(),
                    domain: DOMAIN.to_string(),
                }
                .encode_to_vec(),
            });
        }
        if !status.details().is_empty() && status.details().len() <= MAX_DETAILS_LEN {
            details.push(prost_types::Any {
                type_url: BYTES_VALUE_URL.to_string(),
                value: BytesValue {
                    value: status.details().clone(),
                }
                .encode_to_vec(),
            });
        }
        if !details.is_empty() {
            let rpc = RpcStatus {
                code: to_grpc_code(code) as i32,
                message: truncate(status.message(), MAX_MESSAGE_LEN).to_string(),
                details,
            };
            trailers.insert(
                "grpc-status-details-bin",
                header_value(&STANDARD_NO_PAD.encode(rpc.encode_to_vec())),
            );
        }
        // A "not mine" passed on from a call of the handler's own is not about this
        // request (as in svrkit's own response header).
        let passed_on = status.is_passed_on();
        if passed_on {
            trailers.insert("svrkit-passed-on", HeaderValue::from_static("1"));
        } else if status.is_not_mine() {
            trailers.insert("svrkit-not-processed", HeaderValue::from_static("1"));
        }
    }
    if level != (0, 0) {
        trailers.insert(
            "svrkit-admission",
            header_value(&format!("{},{}", level.0, level.1)),
        );
    }
    trailers
}

/// What an answer's trailers (or a trailers-only answer's headers) said.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    /// `grpc-status`, or `None` when it is missing.
    pub(crate) code: Option<Code>,
    pub(crate) message: String,
    pub(crate) reason: String,
    pub(crate) details: Bytes,
    pub(crate) not_processed: bool,
    pub(crate) passed_on: bool,
    pub(crate) admission: (u32, u32),
}

/// Reads an answer's status from its trailers.
pub(crate) fn read_trailers(trailers: &HeaderMap) -> Answer {
    let mut answer = Answer {
        code: trailers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .map(from_grpc_code),
        ..Answer::default()
    };
    if answer.code == Some(Code::ResourceExhausted)
        && trailers.get("svrkit-code").map(HeaderValue::as_bytes) == Some(b"overloaded")
    {
        answer.code = Some(Code::Overloaded);
    }
    if let Some(message) = trailers.get("grpc-message") {
        answer.message = decode_message(message.as_bytes());
    }
    if let Some(details) = trailers.get("grpc-status-details-bin")
        && let Ok(raw) = decode_base64(details.as_bytes())
        && let Ok(rpc) = RpcStatus::decode(&raw[..])
    {
        for any in rpc.details {
            if any.type_url == ERROR_INFO_URL
                && let Ok(info) = ErrorInfo::decode(&any.value[..])
                && info.reason.len() <= MAX_REASON_LEN
            {
                answer.reason = info.reason;
            } else if any.type_url == BYTES_VALUE_URL
                && let Ok(value) = BytesValue::decode(&any.value[..])
                && value.value.len() <= MAX_DETAILS_LEN
            {
                answer.details = value.value;
            }
        }
    }
    answer.not_processed = trailers.contains_key("svrkit-not-processed");
    answer.passed_on = trailers.contains_key("svrkit-passed-on");
    if let Some(level) = trailers
        .get("svrkit-admission")
        .and_then(|v| v.to_str().ok())
        && let Some((b, u)) = level.split_once(',')
        && let (Ok(b), Ok(u)) = (b.parse(), u.parse())
    {
        answer.admission = (b, u);
    }
    answer
}

/// Base64 as gRPC sends binary values: with or without padding.
fn decode_base64(value: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    let trimmed: &[u8] = match value.iter().rposition(|&b| b != b'=') {
        Some(end) => &value[..=end],
        None => &[],
    };
    STANDARD_NO_PAD.decode(trimmed)
}

/// Header names a gRPC request carries that are not metadata.
fn reserved(name: &str) -> bool {
    name.starts_with("grpc-")
        || name.starts_with("svrkit-")
        || matches!(
            name,
            "content-type"
                | "te"
                | "user-agent"
                | "traceparent"
                | "tracestate"
                | "content-length"
                | "accept-encoding"
                | "host"
        )
}

/// The fields of a svrkit request header read from a gRPC request's headers, owned, so
/// a [`RequestHeader`] can borrow from them.
#[derive(Debug, Default)]
pub(crate) struct RequestHead {
    pub(crate) timeout: Option<Duration>,
    trace: Option<TraceParent>,
    caller: String,
    uid: u64,
    business_priority: u32,
    user_priority: u32,
    gray_tag: String,
    attempt: u32,
    routing_key: Option<u64>,
    metadata: Option<Arc<Metadata>>,
}

fn number<T: std::str::FromStr>(value: &HeaderValue, name: &str) -> Result<T, Status> {
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Status::invalid_argument(format!("{name} is not a valid number")))
}

impl RequestHead {
    /// Reads the request header fields and metadata out of `headers`; a field of the
    /// wrong form or metadata out of bounds is `INVALID_ARGUMENT`.
    pub(crate) fn read(headers: &HeaderMap) -> Result<RequestHead, Status> {
        let mut head = RequestHead::default();
        let mut metadata = Metadata::new();
        for (name, value) in headers {
            let key = name.as_str();
            match key {
                "grpc-timeout" => {
                    let timeout =
                        value
                            .to_str()
                            .ok()
                            .and_then(decode_timeout)
                            .ok_or_else(|| {
                                Status::invalid_argument("grpc-timeout is not a valid timeout")
                            })?;
                    head.timeout = Some(timeout);
                }
                "traceparent" => head.trace = value.to_str().ok().and_then(TraceParent::parse),
                "svrkit-caller" => {
                    head.caller = truncate(value.to_str().unwrap_or(""), 256).to_string();
                }
                "svrkit-uid" => head.uid = number(value, key)?,
                "svrkit-business-priority" => {
                    head.business_priority = number(value, key)?;
                    if head.business_priority > 255 {
                        return Err(Status::invalid_argument(
                            "svrkit-business-priority must be 1 to 255",
                        ));
                    }
                }
                "svrkit-user-priority" => {
                    head.user_priority = number(value, key)?;
                    if head.user_priority > 128 {
                        return Err(Status::invalid_argument(
                            "svrkit-user-priority must be 1 to 128",
                        ));
                    }
                }
                "svrkit-gray" => {
                    head.gray_tag = truncate(value.to_str().unwrap_or(""), 256).to_string();
                }
                "svrkit-attempt" => head.attempt = number(value, key)?,
                "svrkit-routing-key" => head.routing_key = Some(number(value, key)?),
                _ if reserved(key) => {}
                _ => {
                    let value = if key.ends_with("-bin") {
                        Bytes::from(decode_base64(value.as_bytes()).map_err(|_| {
                            Status::invalid_argument(format!("metadata {key} is not base64"))
                        })?)
                    } else {
                        Bytes::copy_from_slice(value.as_bytes())
                    };
                    metadata
                        .insert(key, value)
                        .map_err(|e| Status::invalid_argument(format!("request metadata: {e}")))?;
                }
            }
        }
        if !metadata.is_empty() {
            head.metadata = Some(Arc::new(metadata));
        }
        Ok(head)
    }

    /// The request header for `service`/`method` with these fields.
    pub(crate) fn header<'a>(&'a self, service: &'a str, method: &'a str) -> RequestHeader<'a> {
        let (trace_id, trace_id_high, span_id) = match self.trace {
            Some(parent) => (
                parent.trace_id as u64,
                (parent.trace_id >> 64) as u64,
                parent.parent_id,
            ),
            None => (0, 0, 0),
        };
        RequestHeader {
            service,
            method,
            timeout_us: self.timeout.map_or(0, |t| {
                u64::try_from(t.as_micros()).unwrap_or(u64::MAX).max(1)
            }),
            trace_id,
            span_id,
            caller: &self.caller,
            business_priority: self.business_priority,
            uid: self.uid,
            user_priority: self.user_priority,
            gray_tag: &self.gray_tag,
            attempt: self.attempt,
            routing_key: self.routing_key,
            metadata: self.metadata.clone(),
            trace_id_high,
        }
    }
}

/// The headers of a gRPC request carrying `header` (a svrkit client calling over gRPC),
/// with `timeout` left until the deadline.
pub(crate) fn request_headers(
    header: &RequestHeader<'_>,
    timeout: Option<Duration>,
) -> Result<HeaderMap, Status> {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static(CONTENT_TYPE));
    headers.insert("te", HeaderValue::from_static("trailers"));
    headers.insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
    if let Some(timeout) = timeout {
        headers.insert("grpc-timeout", header_value(&encode_timeout(timeout)));
    }
    if header.trace_id != 0 && header.span_id != 0 {
        let parent = TraceParent {
            trace_id: (u128::from(header.trace_id_high) << 64) | u128::from(header.trace_id),
            parent_id: header.span_id,
            sampled: true,
        };
        headers.insert("traceparent", header_value(&parent.to_string()));
    }
    let text = |value: &str| {
        HeaderValue::from_str(value)
            .map_err(|_| Status::invalid_argument(format!("{value:?} is not a valid header")))
    };
    if !header.caller.is_empty() {
        headers.insert("svrkit-caller", text(header.caller)?);
    }
    let numbers = [
        ("svrkit-uid", header.uid),
        (
            "svrkit-business-priority",
            u64::from(header.business_priority),
        ),
        ("svrkit-user-priority", u64::from(header.user_priority)),
        ("svrkit-attempt", u64::from(header.attempt)),
    ];
    for (name, value) in numbers {
        if value != 0 {
            headers.insert(name, HeaderValue::from(value));
        }
    }
    if let Some(key) = header.routing_key {
        headers.insert("svrkit-routing-key", HeaderValue::from(key));
    }
    if !header.gray_tag.is_empty() {
        headers.insert("svrkit-gray", text(header.gray_tag)?);
    }
    if let Some(metadata) = &header.metadata {
        for (key, value) in metadata.iter() {
            if reserved(key) {
                return Err(Status::invalid_argument(format!(
                    "metadata key {key:?} is reserved in gRPC"
                ))
                .with_not_processed());
            }
            let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                Status::invalid_argument(format!("metadata key {key:?} is not a header name"))
            })?;
            let value = if key.ends_with("-bin") {
                header_value(&STANDARD.encode(value))
            } else {
                HeaderValue::from_bytes(value).map_err(|_| {
                    Status::invalid_argument(format!(
                        "metadata {key} is not printable ASCII; name it {key}-bin to send bytes over gRPC"
                    ))
                    .with_not_processed()
                })?
            };
            headers.append(name, value);
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_trip_and_never_shrink() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_micros(1500),
            Duration::from_millis(250),
            Duration::from_secs(3),
            Duration::from_secs(100_000_000),
        ] {
            let encoded = encode_timeout(d);
            let back = decode_timeout(&encoded).expect("valid");
            assert!(back >= d, "{d:?} -> {encoded} -> {back:?}");
            assert!(encoded.len() <= 9, "{encoded}");
        }
        assert_eq!(decode_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(decode_timeout("1H"), Some(Duration::from_secs(3600)));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S", "１S"] {
            assert_eq!(decode_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn messages_are_percent_encoded_and_decoded() {
        let message = "no user named \"bö\" (100%)\n";
        let encoded = encode_message(message);
        assert!(encoded.is_ascii() && !encoded.contains('\n'), "{encoded}");
        assert_eq!(decode_message(encoded.as_bytes()), message);
        assert_eq!(decode_message(b"50%-off %zz"), "50%-off %zz");
    }

    #[test]
    fn a_status_survives_the_trailers_with_reason_details_and_flags() {
        let status = Status::failed_precondition("wrong password")
            .with_reason("wrong_password")
            .with_details(Bytes::from_static(b"\x08\x03"));
        let trailers = status_trailers(Err(&status), (12, 40));
        let answer = read_trailers(&trailers);
        assert_eq!(answer.code, Some(Code::FailedPrecondition));
        assert_eq!(answer.message, "wrong password");
        assert_eq!(answer.reason, "wrong_password");
        assert_eq!(&answer.details[..], b"\x08\x03");
        assert_eq!(answer.admission, (12, 40));
        assert!(!answer.not_processed && !answer.passed_on);

        let shed = status_trailers(Err(&Status::overloaded("shed")), (1, 1));
        assert_eq!(
            shed["grpc-status"], "8",
            "RESOURCE_EXHAUSTED for other clients"
        );
        assert_eq!(read_trailers(&shed).code, Some(Code::Overloaded));
        let mine = status_trailers(Err(&Status::not_mine("elsewhere")), (0, 0));
        assert!(read_trailers(&mine).not_processed);
        assert!(!mine.contains_key("svrkit-admission"));
        let ok = status_trailers(Ok(()), (0, 0));
        assert_eq!(read_trailers(&ok).code, Some(Code::Ok));
        assert_eq!(from_grpc_code(99), Code::Unknown);
    }

    #[test]
    fn frames_are_bounded_and_compression_refused() {
        let mut buf = BytesMut::from(&frame(b"hello")[..]);
        buf.extend_from_slice(&frame(b"")[..3]);
        assert_eq!(
            unframe(&mut buf, 16).expect("ok").as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(unframe(&mut buf, 16), Ok(None), "incomplete");
        let mut big = BytesMut::from(&frame(&[0; 32])[..]);
        assert_eq!(unframe(&mut big, 16), Err(UnframeError::TooLarge(32)));
        let mut compressed = BytesMut::from(&[1u8, 0, 0, 0, 0][..]);
        assert_eq!(unframe(&mut compressed, 16), Err(UnframeError::Compressed));
    }

    #[test]
    fn request_fields_and_metadata_cross_as_headers_both_ways() {
        let mut metadata = Metadata::new();
        metadata.insert("tenant", &b"acme"[..]).expect("valid");
        metadata
            .insert("token-bin", &[0u8, 255, 7][..])
            .expect("valid");
        let sent = RequestHeader {
            service: "s.S",
            method: "M",
            trace_id: 7,
            trace_id_high: 9,
            span_id: 11,
            caller: "gateway",
            uid: 42,
            business_priority: 3,
            user_priority: 77,
            attempt: 2,
            routing_key: Some(0),
            gray_tag: "gray",
            metadata: Some(Arc::new(metadata)),
            ..RequestHeader::default()
        };
        let headers = request_headers(&sent, Some(Duration::from_millis(250))).expect("valid");
        let head = RequestHead::read(&headers).expect("valid");
        let got = head.header("s.S", "M");
        assert_eq!(got.timeout_us, 250_000);
        assert_eq!(
            RequestHeader {
                timeout_us: 0,
                ..got
            },
            sent
        );

        let mut bad = HeaderMap::new();
        bad.insert("svrkit-user-priority", HeaderValue::from_static("500"));
        assert!(RequestHead::read(&bad).is_err());
        let mut bad = HeaderMap::new();
        bad.insert("grpc-timeout", HeaderValue::from_static("soon"));
        assert_eq!(
            RequestHead::read(&bad).expect_err("bad").code(),
            Code::InvalidArgument
        );
        let mut too_many = HeaderMap::new();
        for i in 0..=crate::metadata::MAX_ENTRIES {
            too_many.insert(
                HeaderName::from_bytes(format!("k{i}").as_bytes()).expect("name"),
                HeaderValue::from_static("v"),
            );
        }
        assert!(
            RequestHead::read(&too_many).is_err(),
            "metadata bounds hold"
        );
    }
}
