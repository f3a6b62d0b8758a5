//! Frame headers: `RequestHeader`, `ResponseHeader` and `GoAway`, encoded as protobuf.
//!
//! Field numbers and types follow `idl/svrkit/protocol.proto`. Zero values and empty
//! strings are not written (proto3 implicit presence). Unknown fields are skipped, so a
//! newer peer may add fields without breaking this one.

use std::sync::Arc;

use crate::metadata::{Metadata, MetadataError};
use bytes::BufMut;
use prost::encoding::{
    DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint,
    encoded_len_varint, key_len, skip_field,
};

/// Why a header could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The bytes are not valid protobuf.
    #[error("malformed header: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A known field arrived with the wrong wire type.
    #[error("header field {tag} has the wrong wire type")]
    WireType {
        /// The field number.
        tag: u32,
    },
    /// A string field is not UTF-8.
    #[error("header field {tag} is not valid UTF-8")]
    Utf8 {
        /// The field number.
        tag: u32,
    },
    /// A length-delimited field runs past the end of the header.
    #[error("header field {tag} runs past the end of the header")]
    Truncated {
        /// The field number.
        tag: u32,
    },
    /// The request metadata breaks a bound (see [`crate::metadata`]).
    #[error("request metadata: {0}")]
    Metadata(#[from] MetadataError),
}

/// The header of a request frame. Strings borrow from the frame they were decoded from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeader<'a> {
    /// 1: fully qualified service name, e.g. `svrkit.demo.Echo`.
    pub service: &'a str,
    /// 2: method name as written in the IDL, e.g. `Echo`.
    pub method: &'a str,
    /// 3: remaining time until the caller's deadline, in microseconds; 0 means none.
    pub timeout_us: u64,
    /// 4: trace id shared by every call of one top-level request; 0 means none yet.
    pub trace_id: u64,
    /// 5: span id of the caller's current work (the parent of the server's span).
    pub span_id: u64,
    /// 6: name of the calling service; empty for clients outside svrkit.
    pub caller: &'a str,
    /// 7: business priority, 1 (most important) ..= 255; 0 means not stamped.
    pub business_priority: u32,
    /// 8: the user id the request acts for; 0 means none.
    pub uid: u64,
    /// 9: user priority, 1 ..= 128 (lower is more important); 0 means not stamped.
    pub user_priority: u32,
    /// 10: gray-release tag selecting gray config or instances; empty means stable.
    pub gray_tag: &'a str,
    /// 11: attempt number, 1 for the first try; 0 is read as 1.
    pub attempt: u32,
    /// 12: the key the caller routed by (a uid, a section…), when it routed by one;
    /// written whenever present, zero included. A sharded server refuses keys it does not
    /// own.
    pub routing_key: Option<u64>,
    /// 13: request metadata (`map<string, bytes>`), bounded as [`crate::metadata`] says;
    /// `None` when there is none (decoding allocates only then).
    pub metadata: Option<Arc<Metadata>>,
    /// 14: the high 64 bits of a 128-bit trace id from outside (W3C trace context); 0
    /// for svrkit's own 64-bit ids.
    pub trace_id_high: u64,
}

/// The header of a response frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseHeader<'a> {
    /// 1: status code (`Code` as `u32`); 0 is ok.
    pub code: u32,
    /// 2: status message; empty on success.
    pub message: &'a str,
    /// 3: the server's current admission level, business part (0: admits everything).
    pub admission_business: u32,
    /// 4: the server's current admission level, user part.
    pub admission_user: u32,
    /// 5: the handler did not act on the request (it is not this instance's to serve, e.g.
    /// a key it does not own; `Status::not_mine`): the client may retry any method on
    /// another instance.
    pub not_processed: bool,
    /// 6: the handler passed on the failure of a call of its own (`Status::is_passed_on`):
    /// only the caller next to a failure retries it, so the client must not.
    pub passed_on: bool,
    /// 7: a machine-readable reason for the failure (`Status::reason`); empty when none.
    pub reason: &'a str,
    /// 8: machine-readable detail of the failure (`Status::details`); empty when none.
    pub details: &'a [u8],
}

/// Why a server sent goaway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum GoAwayReason {
    /// Graceful shutdown: requests up to the frame's id will still be answered.
    Shutdown = 0,
    /// The peer broke the protocol (bad preface, malformed frame).
    ProtocolError = 1,
    /// A frame exceeded the maximum frame size.
    FrameTooLarge = 2,
    /// The connection was idle too long.
    Idle = 3,
}

impl GoAwayReason {
    /// The reason for a wire value; unknown values read as a protocol error.
    pub fn from_u32(value: u32) -> GoAwayReason {
        match value {
            0 => GoAwayReason::Shutdown,
            2 => GoAwayReason::FrameTooLarge,
            3 => GoAwayReason::Idle,
            _ => GoAwayReason::ProtocolError,
        }
    }
}

/// The header of a goaway frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoAway<'a> {
    /// 1: why the connection is going away.
    pub reason: GoAwayReason,
    /// 2: human-readable detail.
    pub message: &'a str,
}

fn str_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
    }
}

fn put_str(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.put_slice(value.as_bytes());
    }
}

fn varint_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

fn put_varint(tag: u32, value: u64, buf: &mut impl BufMut) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

fn fixed64_len(tag: u32, value: u64) -> usize {
    if value == 0 { 0 } else { key_len(tag) + 8 }
}

fn put_fixed64(tag: u32, value: u64, buf: &mut impl BufMut) {
    if value != 0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.put_u64_le(value);
    }
}

fn bytes_len(tag: u32, value: &[u8]) -> usize {
    if value.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
    }
}

fn put_bytes(tag: u32, value: &[u8], buf: &mut impl BufMut) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.put_slice(value);
    }
}

/// The encoded length of one metadata entry message (without its own key and length).
fn entry_len(key: &str, value: &[u8]) -> usize {
    str_len(1, key) + bytes_len(2, value)
}

/// The encoded length of metadata as repeated field `tag`.
fn metadata_len(tag: u32, metadata: Option<&Metadata>) -> usize {
    metadata.map_or(0, |m| {
        m.iter()
            .map(|(k, v)| {
                let len = entry_len(k, v);
                key_len(tag) + encoded_len_varint(len as u64) + len
            })
            .sum()
    })
}

fn put_metadata(tag: u32, metadata: Option<&Metadata>, buf: &mut impl BufMut) {
    for (key, value) in metadata.into_iter().flat_map(Metadata::iter) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(entry_len(key, value) as u64, buf);
        put_str(1, key, buf);
        put_bytes(2, value, buf);
    }
}

/// A cursor over header bytes that hands out borrowed field values.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn next_key(&mut self) -> Result<Option<(u32, WireType)>, HeaderError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        Ok(Some(decode_key(&mut self.buf)?))
    }

    fn varint(&mut self, tag: u32, wire: WireType) -> Result<u64, HeaderError> {
        if wire != WireType::Varint {
            return Err(HeaderError::WireType { tag });
        }
        Ok(decode_varint(&mut self.buf)?)
    }

    fn varint_u32(&mut self, tag: u32, wire: WireType) -> Result<u32, HeaderError> {
        // proto3 uint32 takes the low 32 bits of the varint.
        Ok(self.varint(tag, wire)? as u32)
    }

    fn fixed64(&mut self, tag: u32, wire: WireType) -> Result<u64, HeaderError> {
        if wire != WireType::SixtyFourBit {
            return Err(HeaderError::WireType { tag });
        }
        let (value, rest) = self
            .buf
            .split_first_chunk::<8>()
            .ok_or(HeaderError::Truncated { tag })?;
        self.buf = rest;
        Ok(u64::from_le_bytes(*value))
    }

    fn str(&mut self, tag: u32, wire: WireType) -> Result<&'a str, HeaderError> {
        let value = self.bytes(tag, wire)?;
        std::str::from_utf8(value).map_err(|_| HeaderError::Utf8 { tag })
    }

    fn bytes(&mut self, tag: u32, wire: WireType) -> Result<&'a [u8], HeaderError> {
        if wire != WireType::LengthDelimited {
            return Err(HeaderError::WireType { tag });
        }
        let len = decode_varint(&mut self.buf)?;
        if len > self.buf.len() as u64 {
            return Err(HeaderError::Truncated { tag });
        }
        let (value, rest) = self.buf.split_at(len as usize);
        self.buf = rest;
        Ok(value)
    }

    /// One map entry (`key` = 1, `value` = 2) into `metadata`; a later entry with the same
    /// key replaces an earlier one, as protobuf maps do.
    fn metadata_entry(
        &mut self,
        tag: u32,
        wire: WireType,
        metadata: &mut Option<Arc<Metadata>>,
    ) -> Result<(), HeaderError> {
        let mut entry = Reader {
            buf: self.bytes(tag, wire)?,
        };
        let (mut key, mut value): (&str, &[u8]) = ("", &[]);
        while let Some((field, wire)) = entry.next_key()? {
            match field {
                1 => key = entry.str(tag, wire)?,
                2 => value = entry.bytes(tag, wire)?,
                _ => entry.skip(field, wire)?,
            }
        }
        let metadata = Arc::make_mut(metadata.get_or_insert_with(Arc::default));
        metadata.insert(key, bytes::Bytes::copy_from_slice(value))?;
        Ok(())
    }

    fn skip(&mut self, tag: u32, wire: WireType) -> Result<(), HeaderError> {
        Ok(skip_field(
            wire,
            tag,
            &mut self.buf,
            DecodeContext::default(),
        )?)
    }
}

impl<'a> RequestHeader<'a> {
    /// Bytes [`encode`](Self::encode) will write.
    pub fn encoded_len(&self) -> usize {
        str_len(1, self.service)
            + str_len(2, self.method)
            + varint_len(3, self.timeout_us)
            + fixed64_len(4, self.trace_id)
            + fixed64_len(5, self.span_id)
            + str_len(6, self.caller)
            + varint_len(7, u64::from(self.business_priority))
            + varint_len(8, self.uid)
            + varint_len(9, u64::from(self.user_priority))
            + str_len(10, self.gray_tag)
            + varint_len(11, u64::from(self.attempt))
            + self.routing_key.map_or(0, |_| key_len(12) + 8)
            + metadata_len(13, self.metadata.as_deref())
            + fixed64_len(14, self.trace_id_high)
    }

    /// Writes the header as protobuf.
    pub fn encode(&self, buf: &mut impl BufMut) {
        put_str(1, self.service, buf);
        put_str(2, self.method, buf);
        put_varint(3, self.timeout_us, buf);
        put_fixed64(4, self.trace_id, buf);
        put_fixed64(5, self.span_id, buf);
        put_str(6, self.caller, buf);
        put_varint(7, u64::from(self.business_priority), buf);
        put_varint(8, self.uid, buf);
        put_varint(9, u64::from(self.user_priority), buf);
        put_str(10, self.gray_tag, buf);
        put_varint(11, u64::from(self.attempt), buf);
        if let Some(key) = self.routing_key {
            encode_key(12, WireType::SixtyFourBit, buf);
            buf.put_u64_le(key);
        }
        put_metadata(13, self.metadata.as_deref(), buf);
        put_fixed64(14, self.trace_id_high, buf);
    }

    /// Reads a header, borrowing its strings from `buf`.
    pub fn decode(buf: &'a [u8]) -> Result<RequestHeader<'a>, HeaderError> {
        let mut r = Reader { buf };
        let mut h = RequestHeader::default();
        while let Some((tag, wire)) = r.next_key()? {
            match tag {
                1 => h.service = r.str(tag, wire)?,
                2 => h.method = r.str(tag, wire)?,
                3 => h.timeout_us = r.varint(tag, wire)?,
                4 => h.trace_id = r.fixed64(tag, wire)?,
                5 => h.span_id = r.fixed64(tag, wire)?,
                6 => h.caller = r.str(tag, wire)?,
                7 => h.business_priority = r.varint_u32(tag, wire)?,
                8 => h.uid = r.varint(tag, wire)?,
                9 => h.user_priority = r.varint_u32(tag, wire)?,
                10 => h.gray_tag = r.str(tag, wire)?,
                11 => h.attempt = r.varint_u32(tag, wire)?,
                12 => h.routing_key = Some(r.fixed64(tag, wire)?),
                13 => r.metadata_entry(tag, wire, &mut h.metadata)?,
                14 => h.trace_id_high = r.fixed64(tag, wire)?,
                _ => r.skip(tag, wire)?,
            }
        }
        Ok(h)
    }
}

impl<'a> ResponseHeader<'a> {
    /// Bytes [`encode`](Self::encode) will write.
    pub fn encoded_len(&self) -> usize {
        varint_len(1, u64::from(self.code))
            + str_len(2, self.message)
            + varint_len(3, u64::from(self.admission_business))
            + varint_len(4, u64::from(self.admission_user))
            + varint_len(5, u64::from(self.not_processed))
            + varint_len(6, u64::from(self.passed_on))
            + str_len(7, self.reason)
            + bytes_len(8, self.details)
    }

    /// Writes the header as protobuf.
    pub fn encode(&self, buf: &mut impl BufMut) {
        put_varint(1, u64::from(self.code), buf);
        put_str(2, self.message, buf);
        put_varint(3, u64::from(self.admission_business), buf);
        put_varint(4, u64::from(self.admission_user), buf);
        put_varint(5, u64::from(self.not_processed), buf);
        put_varint(6, u64::from(self.passed_on), buf);
        put_str(7, self.reason, buf);
        put_bytes(8, self.details, buf);
    }

    /// Reads a header, borrowing its message from `buf`.
    pub fn decode(buf: &'a [u8]) -> Result<ResponseHeader<'a>, HeaderError> {
        let mut r = Reader { buf };
        let mut h = ResponseHeader::default();
        while let Some((tag, wire)) = r.next_key()? {
            match tag {
                1 => h.code = r.varint_u32(tag, wire)?,
                2 => h.message = r.str(tag, wire)?,
                3 => h.admission_business = r.varint_u32(tag, wire)?,
                4 => h.admission_user = r.varint_u32(tag, wire)?,
                5 => h.not_processed = r.varint_u32(tag, wire)? != 0,
                6 => h.passed_on = r.varint_u32(tag, wire)? != 0,
                7 => h.reason = r.str(tag, wire)?,
                8 => h.details = r.bytes(tag, wire)?,
                _ => r.skip(tag, wire)?,
            }
        }
        Ok(h)
    }
}

impl<'a> GoAway<'a> {
    /// Bytes [`encode`](Self::encode) will write.
    pub fn encoded_len(&self) -> usize {
        varint_len(1, self.reason as u64) + str_len(2, self.message)
    }

    /// Writes the header as protobuf.
    pub fn encode(&self, buf: &mut impl BufMut) {
        put_varint(1, self.reason as u64, buf);
        put_str(2, self.message, buf);
    }

    /// Reads a header, borrowing its message from `buf`.
    pub fn decode(buf: &'a [u8]) -> Result<GoAway<'a>, HeaderError> {
        let mut r = Reader { buf };
        let mut g = GoAway {
            reason: GoAwayReason::Shutdown,
            message: "",
        };
        while let Some((tag, wire)) = r.next_key()? {
            match tag {
                1 => g.reason = GoAwayReason::from_u32(r.varint_u32(tag, wire)?),
                2 => g.message = r.str(tag, wire)?,
                _ => r.skip(tag, wire)?,
            }
        }
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_request() -> RequestHeader<'static> {
        RequestHeader {
            service: "svrkit.demo.Echo",
            method: "Echo",
            timeout_us: 500_000,
            trace_id: u64::MAX,
            span_id: 42,
            caller: "access-short",
            business_priority: 3,
            uid: 10_086,
            user_priority: 128,
            gray_tag: "canary",
            attempt: 2,
            routing_key: Some(7),
            metadata: Some(Arc::new({
                let mut m = Metadata::new();
                m.insert("tenant", "acme").expect("key");
                m
            })),
            trace_id_high: 0x4bf9_2f35_77b3_4da6,
        }
    }

    #[test]
    fn request_header_round_trips_with_exact_length() {
        let zero_key = RequestHeader {
            routing_key: Some(0),
            ..RequestHeader::default()
        };
        for h in [full_request(), RequestHeader::default(), zero_key] {
            let mut buf = Vec::new();
            h.encode(&mut buf);
            assert_eq!(buf.len(), h.encoded_len());
            assert_eq!(RequestHeader::decode(&buf), Ok(h));
        }
    }

    /// Encodes `entries` as metadata map entries (field 13), as any protobuf encoder would.
    fn with_entries(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (key, value) in entries {
            let len = entry_len(key, value);
            encode_key(13, WireType::LengthDelimited, &mut buf);
            encode_varint(len as u64, &mut buf);
            put_str(1, key, &mut buf);
            put_bytes(2, value, &mut buf);
        }
        buf
    }

    #[test]
    fn metadata_out_of_bounds_is_refused_and_a_repeated_key_replaces() {
        let repeated = with_entries(&[("a", b"1"), ("b", b"2"), ("a", b"3")]);
        let h = RequestHeader::decode(&repeated).expect("decodes");
        let m = h.metadata.expect("metadata");
        assert_eq!(
            (m.len(), m.get_str("a"), m.get_str("b")),
            (2, Some("3"), Some("2"))
        );

        let keys: Vec<String> = (0..=crate::metadata::MAX_ENTRIES)
            .map(|i| format!("k{i}"))
            .collect();
        for bad in [
            with_entries(&[("Tenant", b"x")]),
            with_entries(&[("", b"x")]),
            with_entries(&[("big", &[0u8; crate::metadata::MAX_TOTAL_LEN])]),
            with_entries(
                &keys
                    .iter()
                    .map(|k| (k.as_str(), &b""[..]))
                    .collect::<Vec<_>>(),
            ),
        ] {
            assert!(
                matches!(RequestHeader::decode(&bad), Err(HeaderError::Metadata(_))),
                "{:?}",
                RequestHeader::decode(&bad)
            );
        }
    }

    #[test]
    fn response_and_goaway_round_trip() {
        let r = ResponseHeader {
            code: 17,
            message: "shed",
            admission_business: 9,
            admission_user: 64,
            not_processed: true,
            passed_on: true,
            reason: "not_friend",
            details: b"\x08\x01",
        };
        let mut buf = Vec::new();
        r.encode(&mut buf);
        assert_eq!(buf.len(), r.encoded_len());
        assert_eq!(ResponseHeader::decode(&buf), Ok(r));

        let g = GoAway {
            reason: GoAwayReason::FrameTooLarge,
            message: "too big",
        };
        let mut buf = Vec::new();
        g.encode(&mut buf);
        assert_eq!(buf.len(), g.encoded_len());
        assert_eq!(GoAway::decode(&buf), Ok(g));
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut buf = Vec::new();
        full_request().encode(&mut buf);
        // Field 99, varint 5, then field 100, a 3-byte string.
        encode_key(99, WireType::Varint, &mut buf);
        encode_varint(5, &mut buf);
        put_str(100, "new", &mut buf);
        assert_eq!(RequestHeader::decode(&buf), Ok(full_request()));
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        // Service field announcing 10 bytes with only 2 present.
        assert_eq!(
            RequestHeader::decode(&[0x0a, 10, b'a', b'b']),
            Err(HeaderError::Truncated { tag: 1 })
        );
        // Service as a varint: wrong wire type.
        assert_eq!(
            RequestHeader::decode(&[0x08, 1]),
            Err(HeaderError::WireType { tag: 1 })
        );
        // Invalid UTF-8 in the method.
        assert_eq!(
            RequestHeader::decode(&[0x12, 1, 0xff]),
            Err(HeaderError::Utf8 { tag: 2 })
        );
        // A fixed64 cut short.
        assert_eq!(
            RequestHeader::decode(&[0x21, 1, 2]),
            Err(HeaderError::Truncated { tag: 4 })
        );
        assert!(RequestHeader::decode(&[0xff]).is_err());
    }
}
