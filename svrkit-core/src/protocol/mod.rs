//! The svrkit wire protocol, version 1 (documented byte by byte in `docs/PROTOCOL.md`).
//!
//! A connection starts with an 8-byte client preface, then carries length-prefixed
//! frames in both directions. Every frame has a 16-byte fixed head followed by a
//! protobuf header and an opaque body:
//!
//! ```text
//! | length u32 | kind u8 | flags u8 | header_len u16 | request_id u64 | header | body |
//! ```
//!
//! The header codec here is written by hand over `prost::encoding` rather than derived:
//! decoding borrows strings straight out of the received frame, so the server routes a
//! request without a single allocation for its header. `idl/svrkit/protocol.proto` is the
//! normative schema; a test in `svrkit-codegen` checks this codec against it.

mod frame;
mod header;

pub use frame::{
    FRAME_HEAD_LEN, Frame, FrameError, FrameKind, MAX_HEADER_LEN, PREFACE, PREFACE_LEN,
    PROTOCOL_VERSION, PrefaceError, check_preface, decode_frame, encode_frame_head,
};
pub use header::{GoAway, GoAwayReason, HeaderError, RequestHeader, ResponseHeader};

/// The default limit on a frame's length field: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;
